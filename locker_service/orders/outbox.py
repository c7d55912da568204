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

WITH_QR = frozenset({"ready", "reminder"})
# What an order corrected to picked up makes untrue (ADR 0112): withdrawn with the correction,
# and never sent by the worker after it.
UNTRUE_ONCE_COLLECTED = frozenset({"expired", "food_unsafe"})


def dedupe_key(order: Order, kind: str) -> str:
    return f"order:{order.id}:{kind}"


def _text(kind: str, order: Order, where: str, deadline: datetime | None) -> tuple[str, str]:
    by = f" Please collect it before {deadline:%Y-%m-%d %H:%M} UTC." if deadline else ""
    if kind == "ready":
        return (
            f"Your order {order.external_ref} is ready",
            f"Hello {order.purchaser_name}, your order is waiting for you at {where}.{by}",
        )
    if kind == "reminder":
        return (
            f"Reminder: your order {order.external_ref} is waiting",
            f"Hello {order.purchaser_name}, your order is still waiting at {where}.{by}",
        )
    if kind == "expired":
        # Told when the hold runs out, while the food is still behind the locked door: it
        # will be discarded, it has not been yet (ADR 0047).
        return (
            f"Your order {order.external_ref} has expired",
            f"Hello {order.purchaser_name}, your order was not collected in time at {where}. "
            "For food safety it will be discarded; please contact the merchant.",
        )
    if kind == "food_unsafe":
        # Told when the watch finds it, while the food is still behind the locked door.
        why = (order.failure_reason or "").removeprefix("food no longer safe: ")
        return (
            f"Your order {order.external_ref} can no longer be collected",
            f"Hello {order.purchaser_name}, for food safety your order at {where} can no longer "
            f"be collected: {why}. It will be discarded; please contact the merchant.",
        )
    if kind == "collected":  # the expiry was wrong: she collected it in time (ADR 0112)
        at = f" at {order.code_used_at:%Y-%m-%d %H:%M} UTC" if order.code_used_at else ""
        return (
            f"Your order {order.external_ref} was collected",
            f"Hello {order.purchaser_name}, you collected your order at {where}{at}, in time; "
            "the locker could only tell us later. If we told you it had expired or could no "
            "longer be collected, that was wrong: your collection is recorded.",
        )
    if kind == "never_dropped_off":  # the outbox kind column holds 20
        return (
            f"Your order {order.external_ref} has expired",
            f"Hello {order.purchaser_name}, your order was never dropped off at the locker "
            "and has expired. Please contact the merchant.",
        )
    if kind == "fault":
        return (
            f"Your order {order.external_ref}: a fault at the locker",
            f"Hello {order.purchaser_name}, a fault occurred in the compartment holding your "
            f"order at {where}. Do not collect it; staff will contact you.",
        )
    if kind == "lock_jammed":
        return (
            f"Your order {order.external_ref}: the compartment did not open",
            f"Hello {order.purchaser_name}, the lock of your compartment at {where} did not "
            "open. Staff will contact you.",
        )
    if kind == "discarded":  # an operator took it out to discard it (ADR 0120)
        return (
            f"Your order {order.external_ref} can no longer be collected",
            f"Hello {order.purchaser_name}, staff took your order out of the locker at {where} "
            "and discarded it, so it cannot be collected. Please contact the merchant.",
        )
    if kind == "removed_early":
        return (
            f"Your order {order.external_ref} could not be delivered",
            f"Hello {order.purchaser_name}, your order was taken out of the locker at {where} "
            "before it was ready. Please contact the merchant.",
        )
    return (f"Your order {order.external_ref}: {kind}", f"Hello {order.purchaser_name}.")


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
    where: str,
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
