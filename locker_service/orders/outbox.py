"""Writing purchaser messages into the notification outbox, in the deciding transaction.

The row holds everything but secrets: the worker (locker_service.notifications) re-derives the
pickup token and fallback code with `locker_service.orders.codes` when it sends, adding the link,
the code and the QR image (`attachment = "qr"`). The dedupe key names the order and the kind of
message, so a retried decision never makes a second row and a crash never loses one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.models import NotificationOutbox, Order, utcnow

RESUMED = "resumed"  # codes open again after a kill switch: her hold given back (ADR 0123)
WITH_QR = frozenset({"ready", "reminder", RESUMED})
# What an order corrected to picked up makes untrue (ADR 0112): withdrawn with the correction,
# and never sent by the worker after it.
UNTRUE_ONCE_COLLECTED = frozenset({"expired", "food_unsafe"})


def dedupe_key(order: Order, kind: str) -> str:
    return f"order:{order.id}:{kind}"


@dataclass(frozen=True)
class Place:
    """Where her food is: told in her language (`place_words`)."""

    site: str
    kiosk: str
    compartment: int


def place_words(place: Place | None, language: str) -> str:
    if language == "zh-Hans":
        return f"{place.site} {place.kiosk} {place.compartment} 号柜格" if place else "取餐柜"
    return (
        f"{place.site}, {place.kiosk}, compartment {place.compartment}" if place else "the locker"
    )


# Each message in each language (web/i18n.LANGUAGES; ADR 0122): (subject, body). The fields:
# {ref}, {name}, {where} (`place_words`), {by} (the deadline sentence, or nothing), {why} (the
# order's reason, as the service states it), {at} (when her code was used).
MESSAGES: dict[str, dict[str, tuple[str, str]]] = {
    "en": {
        "ready": (
            "Your order {ref} is ready",
            "Hello {name}, your order is waiting for you at {where}.{by}",
        ),
        "reminder": (
            "Reminder: your order {ref} is waiting",
            "Hello {name}, your order is still waiting at {where}.{by}",
        ),
        RESUMED: (
            "Your order {ref} can be collected again",
            "Hello {name}, openings at the locker were paused for a while; they work again, "
            "and your order is waiting for you at {where}.{by}",
        ),
        # Told when the hold runs out, while the food is still behind the locked door: it
        # will be discarded, it has not been yet (ADR 0047).
        "expired": (
            "Your order {ref} has expired",
            "Hello {name}, your order was not collected in time at {where}. For food safety it "
            "will be discarded; please contact the merchant.",
        ),
        # Told when the watch finds it, while the food is still behind the locked door.
        "food_unsafe": (
            "Your order {ref} can no longer be collected",
            "Hello {name}, for food safety your order at {where} can no longer be collected: "
            "{why}. It will be discarded; please contact the merchant.",
        ),
        # The expiry was wrong: she collected it in time (ADR 0112).
        "collected": (
            "Your order {ref} was collected",
            "Hello {name}, you collected your order at {where}{at}, in time; the locker could "
            "only tell us later. If we told you it had expired or could no longer be collected, "
            "that was wrong: your collection is recorded.",
        ),
        "never_dropped_off": (  # the outbox kind column holds 20
            "Your order {ref} has expired",
            "Hello {name}, your order was never dropped off at the locker and has expired. "
            "Please contact the merchant.",
        ),
        "fault": (
            "Your order {ref}: a fault at the locker",
            "Hello {name}, a fault occurred in the compartment holding your order at {where}. "
            "Do not collect it; staff will contact you.",
        ),
        "lock_jammed": (
            "Your order {ref}: the compartment did not open",
            "Hello {name}, the lock of your compartment at {where} did not open. Staff will "
            "contact you.",
        ),
        # An operator took it out to discard it (ADR 0120).
        "discarded": (
            "Your order {ref} can no longer be collected",
            "Hello {name}, staff took your order out of the locker at {where} and discarded "
            "it, so it cannot be collected. Please contact the merchant.",
        ),
        # Staff took it out while looking in, which was to leave it there (ADR 0129).
        "taken_out": (
            "Your order {ref} can no longer be collected from the locker",
            "Hello {name}, staff took your order out of the locker at {where}, so it cannot be "
            "collected there. Please contact the merchant.",
        ),
        "removed_early": (
            "Your order {ref} could not be delivered",
            "Hello {name}, your order was taken out of the locker at {where} before it was "
            "ready. Please contact the merchant.",
        ),
    },
    "zh-Hans": {
        "ready": ("您的订单 {ref} 已可取餐", "{name}，您好：您的订单已在{where}等您。{by}"),
        "reminder": (
            "提醒：您的订单 {ref} 仍在等您",
            "{name}，您好：您的订单仍在{where}等您。{by}",
        ),
        RESUMED: (
            "您的订单 {ref} 可以再次取餐",
            "{name}，您好：取餐柜曾暂停开柜，现已恢复，您的订单正在{where}等您。{by}",
        ),
        "expired": (
            "您的订单 {ref} 已过期",
            "{name}，您好：您在{where}的订单未在规定时间内取走。出于食品安全，餐品将被丢弃；"
            "请联系商家。",
        ),
        "food_unsafe": (
            "您的订单 {ref} 已无法取餐",
            "{name}，您好：出于食品安全，您在{where}的订单已无法取餐（{why}）。餐品将被丢弃；"
            "请联系商家。",
        ),
        "collected": (
            "您的订单 {ref} 已取走",
            "{name}，您好：您已{at}在{where}按时取走订单，取餐柜稍后才告知我们。如果我们曾告诉"
            "您订单已过期或无法取餐，那是错误的：您的取餐已记录。",
        ),
        "never_dropped_off": (
            "您的订单 {ref} 已过期",
            "{name}，您好：您的订单从未送达取餐柜，已过期。请联系商家。",
        ),
        "fault": (
            "您的订单 {ref}：取餐柜出现故障",
            "{name}，您好：存放您订单的柜格（{where}）出现故障。请勿取餐，工作人员会与您联系。",
        ),
        "lock_jammed": (
            "您的订单 {ref}：柜门未能打开",
            "{name}，您好：您在{where}的柜门未能打开。工作人员会与您联系。",
        ),
        "discarded": (
            "您的订单 {ref} 已无法取餐",
            "{name}，您好：工作人员已将您在{where}的订单从取餐柜取出并丢弃，无法再取餐。"
            "请联系商家。",
        ),
        "taken_out": (
            "您的订单 {ref} 已无法从取餐柜取餐",
            "{name}，您好：工作人员已将您在{where}的订单从取餐柜取出，无法在柜中取餐。请联系商家。",
        ),
        "removed_early": (
            "您的订单 {ref} 未能送达",
            "{name}，您好：您在{where}的订单在可取餐前被从取餐柜中取出。请联系商家。",
        ),
    },
}
_DEADLINE = {
    "en": " Please collect it before {:%Y-%m-%d %H:%M} UTC.",
    "zh-Hans": "请在 {:%Y-%m-%d %H:%M}（UTC）前取餐。",
}
_USED_AT = {"en": " at {:%Y-%m-%d %H:%M} UTC", "zh-Hans": "于 {:%Y-%m-%d %H:%M}（UTC）"}
_OTHER = {
    "en": ("Your order {ref}: {kind}", "Hello {name}."),
    "zh-Hans": ("您的订单 {ref}：{kind}", "{name}，您好。"),
}


def language_of(order: Order) -> str:
    """Her language, English for one this version does not know."""
    language = order.purchaser_language or "en"
    return language if language in MESSAGES else "en"


def _text(
    kind: str, order: Order, where: Place | None, deadline: datetime | None
) -> tuple[str, str]:
    language = language_of(order)
    used = order.code_used_at if kind == "collected" else None
    values = {
        "ref": order.external_ref,
        "name": order.purchaser_name,
        "where": place_words(where, language),
        "by": _DEADLINE[language].format(deadline) if deadline else "",
        "why": (order.failure_reason or "").removeprefix("food no longer safe: "),
        "at": _USED_AT[language].format(used) if used else "",
        "kind": kind,
    }
    subject, body = MESSAGES[language].get(kind, _OTHER[language])
    return subject.format(**values), body.format(**values)


@dataclass(frozen=True)
class Withdrawn:
    """What `withdraw` did: whether one of the messages may have reached the purchaser, and
    the ids of those given up on before (an operator's "not reached" alert names each)."""

    may_have_reached: bool
    given_up: list[int]


async def withdraw(session: AsyncSession, order: Order, kinds: Iterable[str]) -> Withdrawn:
    """Withdraw the order's messages of these kinds not being sent now: they go no further (no
    retry, no operator's resend). One being sent or sent, or with a try handed to a provider (a
    try that timed out may have arrived), may have reached her; a try that ended before (no
    channel for her contact) did not. One being sent is skipped by the worker if it fails."""
    keys = [dedupe_key(order, kind) for kind in kinds]
    rows = (
        await session.execute(
            select(
                NotificationOutbox.id,
                NotificationOutbox.status,
                NotificationOutbox.may_have_reached,
            )
            .where(NotificationOutbox.dedupe_key.in_(keys))
            .with_for_update()
        )
    ).all()
    stopped = [row_id for row_id, status, _ in rows if status in ("pending", "failed")]
    if stopped:
        await session.execute(
            update(NotificationOutbox)
            .where(
                NotificationOutbox.id.in_(stopped),
                NotificationOutbox.status.in_(("pending", "failed")),
            )
            .values(status="withdrawn", locked_until=None)
            .execution_options(synchronize_session=False)
        )
    return Withdrawn(
        may_have_reached=any(
            reached or status in ("sending", "sent") for _, status, reached in rows
        ),
        given_up=[row_id for row_id, status, _ in rows if status == "failed"],
    )


async def enqueue(
    session: AsyncSession,
    order: Order,
    kind: str,
    *,
    where: Place | None,
    deadline: datetime | None,
) -> NotificationOutbox | None:
    """Add the message once; None if a message of this kind exists for the order already."""
    key = dedupe_key(order, kind)
    if await session.scalar(
        select(NotificationOutbox.id).where(NotificationOutbox.dedupe_key == key)
    ):
        return None
    subject, body = _text(kind, order, where, deadline)
    row = NotificationOutbox(
        order_id=order.id,
        kind=kind,
        channel=order.purchaser_contact,
        dedupe_key=key,
        subject=subject,
        body=body,
        attachment="qr" if kind in WITH_QR else None,
        status="pending",
        attempts=0,
        next_attempt_at=utcnow(),
    )
    session.add(row)
    await session.flush()
    return row
