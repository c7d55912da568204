"""The outbox worker: drains notification_outbox into Apprise, with retries and backoff.

A message is written to the outbox in the transaction that decided it (the order became ready,
the food waited 30 minutes, the order expired), so a crash loses none. The worker claims due rows
with a lease, sends, and records the outcome. If the process dies between sending and recording,
the lease runs out and the message is sent again: at-least-once. Every copy carries the row's
dedupe key (an `X-Locker-Notification` header for e-mail and webhooks), so a receiver can tell a
repeat from a new message; the key names the order and the kind of message, never the attempt.

Several replicas may run workers at once: claims never overlap (see repository.py).

A purchaser message the worker gives up on (no channel for the contact, or the last attempt
failed) raises a `notification_undeliverable` alert for its order in the transaction that records
the failure: the purchaser was not reached, and an operator can resend it, to a corrected
contact if need be (`locker_service.notifications.resend`). Messages to a site's on-call
(`oncall_*` kinds, ADR 0045) go to the URLs in the row, checked against the target policy
before every send.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from locker_service.alerts.catalogue import UNDELIVERABLE_ALERT
from locker_service.alerts.oncall import is_oncall
from locker_service.alerts.service import raise_alert
from locker_service.background import BackgroundLoop
from locker_service.config import Settings
from locker_service.contacts.channels import NoChannel, channels_for, with_dedupe_header
from locker_service.contacts.policy import ContactPolicy, check_contact
from locker_service.contacts.targets import TargetPolicy, TargetRefused, check_urls, split_urls
from locker_service.live import LiveHub
from locker_service.models import NotificationOutbox, Order, utcnow
from locker_service.notifications import repository
from locker_service.notifications.delivery import (
    AppriseDelivery,
    Attachment,
    Delivery,
    DeliveryResult,
)
from locker_service.notifications.messages import PickupDetails, compose
from locker_service.notifications.qr import qr_png
from locker_service.orders import repository as orders
from locker_service.orders.codes import fallback_code, page_url, pickup_token
from locker_service.orders.lifecycle import OrderState
from locker_service.orders.outbox import UNTRUE_ONCE_COLLECTED, language_of

log = logging.getLogger(__name__)

CLAIM_BATCH = 10  # messages sent concurrently per round; an SMTP relay takes ~10 parallel
QR_ATTACHMENT = "qr"
QR_FILENAME = "pickup-code.png"
COLLECTABLE_STATE = "ready"  # the code opens nothing in any other state: do not send it


@dataclass(frozen=True, slots=True)
class Prepared:
    urls: list[str]
    subject: str
    body: str
    attachments: list[Attachment]


class Skip(Exception):
    """The message should not go out (any more): recorded as `skipped`, never retried."""


class Permanent(Exception):
    """The message can never go out (no channel for the contact): recorded as `failed`."""


def backoff_s(settings: Settings, attempts: int) -> float:
    """Exponential backoff with +-20 % jitter, so retries of many rows do not arrive in step."""
    base = min(settings.notify_backoff_s * 2 ** max(attempts - 1, 0), settings.notify_backoff_max_s)
    return float(base) * random.uniform(0.8, 1.2)


class OutboxWorker:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        delivery: Delivery | None = None,
        hub: LiveHub | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._hub = hub
        self._targets = TargetPolicy.of(
            settings.oncall_schemes, settings.notify_contact_allowed_networks
        )
        self._delivery = delivery or AppriseDelivery(settings.notify_send_timeout_s)
        self.sent = 0
        self.failed_attempts = 0
        self._loop = BackgroundLoop(
            "notification-outbox",
            self._round,
            period_s=settings.notify_poll_s,
            log=log,
            failure="notification outbox round failed",
        )

    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    def wake(self) -> None:
        """Look at the outbox now (e.g. right after a commit that added a message)."""
        self._loop.wake()

    async def _round(self) -> bool:
        return await self.run_once() > 0

    async def run_once(self, now: datetime | None = None) -> int:
        """Claim due messages and send them; returns how many were claimed."""
        now = now or utcnow()
        async with self._sessionmaker() as session, session.begin():
            claimed = await repository.claim_due(
                session, now, self._settings.notify_lease_s, CLAIM_BATCH
            )
        await asyncio.gather(*(self._process(c) for c in claimed))
        return len(claimed)

    async def _process(self, claimed: repository.Claimed) -> None:
        try:
            prepared = await self._prepare(claimed.id)
        except Skip as why:
            await self._finish(claimed, "skipped", str(why))
            return
        except Permanent as why:
            log.warning("notification %s cannot be sent: %s", claimed.id, why)
            await self._finish(claimed, "failed", str(why))
            return
        except Exception as exc:  # e.g. the database went away: retried like a failed send
            log.exception("preparing notification %s failed", claimed.id)
            await self._retry_or_fail(claimed, f"preparing: {type(exc).__name__}: {exc}")
            return
        try:
            async with asyncio.timeout(self._settings.notify_send_timeout_s * 2):
                result = await self._delivery.send(
                    prepared.urls, prepared.subject, prepared.body, prepared.attachments
                )
        except Exception as exc:  # a plugin bug or timeout must not stop the worker
            result = DeliveryResult(False, f"{type(exc).__name__}: {exc}")
        if result.ok:
            self.sent += 1
            await self._finish(claimed, "sent", None)
            return
        await self._retry_or_fail(claimed, result.error, handed_over=result.handed_over)

    async def _retry_or_fail(
        self, claimed: repository.Claimed, error: str | None, *, handed_over: bool = False
    ) -> None:
        self.failed_attempts += 1
        if claimed.attempts >= self._settings.notify_max_attempts:
            log.error("notification %s failed for good: %s", claimed.id, error)
            await self._finish(claimed, "failed", error, handed_over=handed_over)
            return
        delay_s = backoff_s(self._settings, claimed.attempts)
        log.warning(
            "notification %s attempt %d failed (%s); retry in %.0f s",
            claimed.id,
            claimed.attempts,
            error,
            delay_s,
        )
        await self._finish(
            claimed,
            "pending",
            error,
            next_attempt_at=utcnow() + timedelta(seconds=delay_s),
            handed_over=handed_over,
        )

    async def _finish(
        self,
        claimed: repository.Claimed,
        status: str,
        error: str | None,
        next_attempt_at: datetime | None = None,
        handed_over: bool = False,
    ) -> None:
        async with self._sessionmaker() as session, session.begin():
            if not await repository.finish(
                session,
                claimed,
                status=status,
                now=utcnow(),
                error=error,
                next_attempt_at=next_attempt_at,
                handed_over=handed_over,
            ):
                log.warning("notification %s was taken over by another worker", claimed.id)
                return
            if status == "failed":
                await self._not_reached(session, claimed, error)

    async def _not_reached(
        self, session: AsyncSession, claimed: repository.Claimed, error: str | None
    ) -> None:
        """A purchaser message given up on: an operator must know, and can resend it."""
        row = await session.get(NotificationOutbox, claimed.id)
        if row is None or row.order_id is None or is_oncall(row.kind):
            return  # an on-call message that failed is in the log and in the next digest
        order = await session.get(Order, row.order_id)
        if order is None:
            return
        if row.kind in UNTRUE_ONCE_COLLECTED and order.state == OrderState.PICKED_UP:
            # Being sent when the order was corrected to picked up (ADR 0112): withdrawn with
            # the rest, nothing for an operator to resend or be alerted of.
            row.status = "withdrawn"
            return
        await raise_alert(
            session,
            kind=UNDELIVERABLE_ALERT,
            severity="warning",
            message=(
                f"order {order.external_ref}: the purchaser was not reached ({row.kind} message, "
                f"{claimed.attempts} attempts): {(error or 'delivery failed')[:300]}"
            ),
            dedupe_key=f"{UNDELIVERABLE_ALERT}:{row.id}",
            site_id=order.site_id,
            notification_id=row.id,
            hub=self._hub,
        )

    async def _prepare_oncall(self, row: NotificationOutbox) -> Prepared:
        """A message to a site's on-call: its URLs checked again (DNS may have changed since an
        admin set them), a link to the dashboard added."""
        try:
            urls = list(await check_urls(split_urls(row.channel), self._targets))
        except TargetRefused as exc:
            raise Permanent(exc.message) from exc
        if not urls:
            raise Permanent("the site's on-call list is empty")
        dashboard = f"{self._settings.public_base_url.rstrip('/')}/dashboard"
        body = f"{row.body.rstrip()}\n\nDashboard / 控制台: {dashboard}\n"
        return Prepared(
            [with_dedupe_header(url, row.dedupe_key) for url in urls], row.subject, body, []
        )

    async def _prepare(self, outbox_id: int) -> Prepared:
        settings = self._settings
        async with self._sessionmaker() as session:
            row = await session.get(NotificationOutbox, outbox_id)
            assert row is not None
            place = await repository.order_place(session, row.order_id) if row.order_id else None
            held_by = None
            if place is not None and row.attachment == QR_ATTACHMENT:
                fault = place.compartment.fault if place.compartment is not None else None
                held_by = await orders.held_by_fault(session, place.order, fault)
        if is_oncall(row.kind):
            return await self._prepare_oncall(row)
        try:
            urls = channels_for(
                row.channel,
                email_url=settings.notify_email_url,
                sms_url=settings.notify_sms_url,
                allow_contact_urls=settings.notify_contact_urls,
            )
            # Looked at again before every send: the host's DNS may point inward by now.
            await check_contact(row.channel, ContactPolicy.of_settings(settings))
        except NoChannel as exc:
            raise Permanent(str(exc)) from exc
        urls = [with_dedupe_header(url, row.dedupe_key) for url in urls]
        if place is None:
            return Prepared(urls, row.subject, row.body, [])

        order = place.order
        with_code = row.attachment == QR_ATTACHMENT
        if with_code and order.state != COLLECTABLE_STATE:
            raise Skip(f"order is {order.state}, no longer collectable")
        if with_code and held_by is not None:
            # Sent late (a gateway down): not her code after "do not collect it" (ADR 0128).
            raise Skip(f"her food is held for staff after {held_by}")
        if row.kind in UNTRUE_ONCE_COLLECTED and order.state == OrderState.PICKED_UP:
            # Retried when the correction came: not sent after it.
            raise Skip("collected before it expired (ADR 0112): no longer true")
        token = pickup_token(settings.secret_key, order.id, order.token_salt)
        details = PickupDetails(
            site_name=place.site.name,
            kiosk_name=place.kiosk.name if place.kiosk is not None else "",
            compartment=place.compartment.number if place.compartment is not None else None,
            deadline=order.hold_until,
            timezone=place.site.timezone,
            code=fallback_code(settings.secret_key, token) if with_code else None,
            page_url=page_url(settings.public_base_url, token),
            language=language_of(order),
        )
        attachments = [Attachment(QR_FILENAME, qr_png(token), "image/png")] if with_code else []
        return Prepared(urls, row.subject, compose(row.body, details), attachments)
