"""Sending a purchaser message again: the operator's answer to "the purchaser was not reached".

The outbox row the worker gave up on goes back to `pending` with its attempts cleared, to the
same contact or to a corrected one (which then becomes the order's contact, so later messages
reach her too). The step is audited on the order, and the alert that said she was not reached is
resolved: if the new try fails as well, the worker raises a new one.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.alerts.catalogue import UNDELIVERABLE_ALERT
from locker_service.alerts.service import resolve_alerts
from locker_service.config import Settings
from locker_service.contacts.channels import ContactRefused, NoChannel, channels_for
from locker_service.contacts.policy import ContactPolicy
from locker_service.contacts.policy import check_contact as check_contact_urls
from locker_service.errors import Conflict, NotFound, Unprocessable
from locker_service.live import LiveHub
from locker_service.models import NotificationOutbox, Order, utcnow
from locker_service.orders import repository as orders

RESENDABLE = frozenset({"failed"})  # pending or sending: on its way; sent; skipped: moot


async def purchaser_message(
    session: AsyncSession, notification_id: int
) -> tuple[NotificationOutbox, Order]:
    row = await session.get(NotificationOutbox, notification_id)
    order = await session.get(Order, row.order_id) if row and row.order_id else None
    if row is None or order is None:
        raise NotFound(f"no purchaser message {notification_id}")
    return row, order


async def check_contact(contact: str, settings: Settings) -> str:
    """The corrected contact if this deployment can reach it; Unprocessable naming why not."""
    contact = contact.strip()
    try:
        channels_for(
            contact,
            email_url=settings.notify_email_url,
            sms_url=settings.notify_sms_url,
            allow_contact_urls=settings.notify_contact_urls,
        )
    except NoChannel as exc:
        raise Unprocessable(str(exc), code="contact_unreachable") from None
    # The same check as at the order's creation and before every send: a contact the outbox
    # would refuse must not be accepted here (and the alert resolved) only to fail again.
    try:
        await check_contact_urls(contact, ContactPolicy.of_settings(settings))
    except ContactRefused as exc:
        raise Unprocessable(str(exc), code=exc.code) from None
    return contact


async def resend(
    session: AsyncSession,
    row: NotificationOutbox,
    order: Order,
    *,
    operator_id: int,
    contact: str | None,
    settings: Settings,
    hub: LiveHub | None,
) -> NotificationOutbox:
    if row.status not in RESENDABLE:
        raise Conflict(f"the message is {row.status}, not failed", code="not_failed")
    changed = False
    if contact is not None:
        contact = await check_contact(contact, settings)
        changed = contact != row.channel
        row.channel = contact
        order.purchaser_contact = contact
    row.status = "pending"
    row.attempts = 0
    row.next_attempt_at = utcnow()
    row.locked_until = None
    row.last_error = None
    orders.add_event(
        session,
        order.id,
        "operator",
        str(operator_id),
        "notification_resent",
        {"notification_id": row.id, "kind": row.kind, "contact_changed": changed},
    )
    await resolve_alerts(session, f"{UNDELIVERABLE_ALERT}:{row.id}", hub)
    await session.flush()
    return row
