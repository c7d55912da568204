"""Purchaser messages leave the outbox through Apprise and arrive at real receivers.

A local SMTP server (aiosmtpd) and a local HTTP webhook stand in for the purchaser's mailbox and
a messaging gateway. The QR image that arrives is decoded with zxing-cpp and must give back the
order's pickup token; the fallback code in the text must be the order's code.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import io
import json
import re
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import zxingcpp
from aiosmtpd.controller import Controller
from PIL import Image
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from locker_service.config import Settings
from locker_service.contacts.channels import DEDUPE_HEADER
from locker_service.db import create_engine, create_sessionmaker
from locker_service.models import (
    Compartment,
    Kiosk,
    Merchant,
    NotificationOutbox,
    Order,
    OrderEvent,
    Site,
    utcnow,
)
from locker_service.notifications.delivery import DeliveryResult
from locker_service.notifications.worker import OutboxWorker
from locker_service.orders import codes
from locker_service.orders.outbox import Place, enqueue
from tests.locker_service.conftest import make_settings
from tests.support.mosquitto import free_port
from tests.support.threaded_server import serve_in_background

# Both backends in the everyday selection too (tests/conftest.py, ADR 0127): the subject is
# SQL written per backend, the outbox's claim of due messages (SKIP LOCKED on PostgreSQL).
POSTGRES_EVERY_DAY = True

# -- receivers ---------------------------------------------------------------------------------


class SmtpReceiver:
    """An SMTP server on a free local port keeping every message it is given."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.port = free_port()
        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
                assert isinstance(parsed, EmailMessage)
                receiver.messages.append(parsed)
                return "250 OK"

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def url(self, sender: str = "lockers@example.com") -> str:
        return f"mailto://127.0.0.1:{self.port}?from={sender}&to={{to}}"

    def __enter__(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


class WebhookReceiver:
    """An HTTP server answering POSTs with the next scripted status (200 when none is left)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with receiver.lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    if status == 200:
                        receiver.requests.append((dict(self.headers.items()), body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/purchaser"

    def __enter__(self) -> WebhookReceiver:
        serve_in_background(self._server)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def decode_qr(png: bytes) -> str:
    [result] = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    return str(result.text)


def code_in(text: str) -> str:
    match = re.search(r"Pickup code: (\d{4}) (\d{4})", text)
    assert match, text
    return match.group(1) + match.group(2)


# -- data --------------------------------------------------------------------------------------

SECRET = "test-secret-" + "x" * 32
LEASE_S = 60.0  # a lease or backoff no test waits out: its end is set on the row


@dataclass
class ReadyOrder:
    order_id: uuid.UUID
    token: str
    code: str


async def make_order(
    sessionmaker: async_sessionmaker[AsyncSession],
    contact: str,
    *,
    state: str = "ready",
    kinds: tuple[str, ...] = ("ready",),
) -> ReadyOrder:
    tag = uuid.uuid4().hex[:8]
    order_id = uuid.uuid4()
    salt = codes.new_salt()
    token = codes.pickup_token(SECRET, order_id, salt)
    code = codes.fallback_code(SECRET, token)
    async with sessionmaker() as session, session.begin():
        site = Site(code=f"s-{tag}", name="Harbour Tower", timezone="Asia/Shanghai")
        merchant = Merchant(name="Noodle Bar")
        session.add_all([site, merchant])
        await session.flush()
        kiosk = Kiosk(site_id=site.id, code=f"k-{tag}", name="Lobby West")
        session.add(kiosk)
        await session.flush()
        compartment = Compartment(kiosk_id=kiosk.id, number=7, size="M", state="awaiting_pickup")
        session.add(compartment)
        await session.flush()
        order = Order(
            id=order_id,
            merchant_id=merchant.id,
            external_ref=f"ref-{tag}",
            request_hash="0" * 64,
            site_id=site.id,
            purchaser_name="Li Na",
            purchaser_contact=contact,
            size="M",
            temperature_class="hot",
            state=state,
            compartment_id=compartment.id,
            token_salt=salt,
            pickup_token_hash=codes.token_hash(token),
            code_hash=codes.code_hash(SECRET, code),
            hold_until=datetime(2026, 11, 26, 14, 30, tzinfo=UTC),
        )
        session.add(order)
        await session.flush()
        for kind in kinds:
            await enqueue(
                session,
                order,
                kind,
                where=Place("Harbour Tower", "Lobby", 2),
                deadline=order.hold_until,
            )
    return ReadyOrder(order_id, token, code)


async def outbox_rows(sessionmaker: async_sessionmaker[AsyncSession]) -> list[NotificationOutbox]:
    async with sessionmaker() as session:
        return list((await session.scalars(select(NotificationOutbox))).all())


def notify_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "secret_key": SECRET,
        "public_base_url": "https://lockers.example.com",
        "notify_backoff_s": 0.05,
        "notify_backoff_max_s": 0.2,
        "notify_send_timeout_s": 10.0,
    }
    values.update(overrides)
    return make_settings(database_url, **values)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    with SmtpReceiver() as receiver:
        yield receiver


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


async def retry_now(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """The backoff of every pending row has run out (moved on the row, not waited for)."""
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(NotificationOutbox)
            .where(NotificationOutbox.status == "pending")
            .values(next_attempt_at=utcnow())
        )


async def drain(worker: OutboxWorker, rounds: int = 20, pause_s: float = 0.1) -> None:
    """Run rounds until the outbox has nothing due (retries included)."""
    idle = 0
    for _ in range(rounds):
        if await worker.run_once() == 0:
            idle += 1
            if idle >= 3:
                return
        else:
            idle = 0
        await asyncio.sleep(pause_s)


# -- tests -------------------------------------------------------------------------------------


async def test_ready_message_by_email_carries_a_qr_that_decodes_to_the_token(
    engine: AsyncEngine, database_url: str, smtp: SmtpReceiver
) -> None:
    sessionmaker = create_sessionmaker(engine)
    order = await make_order(sessionmaker, "li.na@example.com")
    worker = OutboxWorker(sessionmaker, notify_settings(database_url, notify_email_url=smtp.url()))
    assert await worker.run_once() == 1

    [message] = smtp.messages
    assert message["To"] == "li.na@example.com"
    assert message[DEDUPE_HEADER] == f"order:{order.order_id}:ready"
    text = message.get_body(("plain",))
    assert text is not None
    body = text.get_content()
    assert code_in(body) == order.code
    assert "Harbour Tower, Lobby West, compartment 7" in body
    assert "Collect before: 2026-11-26 22:30 (CST)" in body  # the site's own time zone
    assert f"https://lockers.example.com/p/{order.token}" in body
    [png] = [part for part in message.iter_attachments() if part.get_content_type() == "image/png"]
    scanned = decode_qr(png.get_content())
    assert scanned == order.token
    # What the scanner reads and what the purchaser types match the stored hashes.
    async with sessionmaker() as session:
        stored = await session.get(Order, order.order_id)
    assert stored is not None
    assert codes.token_hash(scanned) == stored.pickup_token_hash
    assert codes.code_hash(SECRET, code_in(body)) == stored.code_hash
    [row] = await outbox_rows(sessionmaker)
    assert (row.status, row.attempts, row.last_error) == ("sent", 1, None)
    assert row.sent_at is not None
    assert order.code not in row.body and order.token not in row.body  # nothing secret stored


async def test_webhook_delivery_and_retries_with_backoff(
    engine: AsyncEngine, database_url: str, webhook: WebhookReceiver
) -> None:
    sessionmaker = create_sessionmaker(engine)
    webhook.statuses = [503, 500]
    order = await make_order(sessionmaker, webhook.url)
    # A backoff far longer than a starved machine takes between the failure and the check that
    # the retry waits; each retry is then made due on the row instead of waited for.
    settings = notify_settings(database_url, notify_backoff_s=LEASE_S, notify_backoff_max_s=LEASE_S)
    worker = OutboxWorker(sessionmaker, settings)
    assert await worker.run_once() == 1
    [row] = await outbox_rows(sessionmaker)
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.last_error and row.next_attempt_at - utcnow() > timedelta(seconds=LEASE_S / 2)
    assert await worker.run_once() == 0  # not due yet: backoff
    for attempt in (2, 3):
        await retry_now(sessionmaker)
        assert await worker.run_once() == 1, f"attempt {attempt}"

    [(headers, payload)] = webhook.requests
    assert headers[DEDUPE_HEADER] == f"order:{order.order_id}:ready"
    assert code_in(payload["message"]) == order.code
    assert payload["title"].startswith("Your order")
    [attachment] = payload["attachments"]
    assert attachment["mimetype"] == "image/png"
    assert decode_qr(base64.b64decode(attachment["base64"])) == order.token
    [row] = await outbox_rows(sessionmaker)
    assert (row.status, row.attempts, row.last_error) == ("sent", 3, None)


async def test_a_receiver_that_never_accepts_fails_after_the_last_attempt(
    engine: AsyncEngine, database_url: str, webhook: WebhookReceiver
) -> None:
    sessionmaker = create_sessionmaker(engine)
    webhook.statuses = [500] * 10
    await make_order(sessionmaker, webhook.url)
    worker = OutboxWorker(sessionmaker, notify_settings(database_url, notify_max_attempts=3))
    await drain(worker)
    [row] = await outbox_rows(sessionmaker)
    assert (row.status, row.attempts) == ("failed", 3)
    assert row.last_error
    assert row.may_have_reached  # the gateway had it: it may have delivered it (ADR 0114)
    assert webhook.requests == [] and webhook.statuses == [500] * 7


async def test_a_crash_after_sending_resends_with_the_same_dedupe_key_once(
    engine: AsyncEngine, database_url: str, webhook: WebhookReceiver
) -> None:
    sessionmaker = create_sessionmaker(engine)
    order = await make_order(sessionmaker, webhook.url)
    # A lease far longer than a starved machine takes between the claim and the check that it
    # still holds; its running out is then made to happen on the row (below), not waited for.
    settings = notify_settings(database_url, notify_lease_s=LEASE_S)

    class CrashAfterSending:
        """Delivers, then the process 'dies' before the outcome is written."""

        def __init__(self, real: Any) -> None:
            self.real = real

        async def send(self, *args: Any) -> Any:
            await self.real.send(*args)
            raise asyncio.CancelledError

    from locker_service.notifications.delivery import AppriseDelivery

    crashing = OutboxWorker(sessionmaker, settings, CrashAfterSending(AppriseDelivery(10)))
    with pytest.raises(asyncio.CancelledError):
        await crashing.run_once()
    [row] = await outbox_rows(sessionmaker)
    assert row.status == "sending"  # leased, outcome never written
    assert not row.may_have_reached

    restarted = OutboxWorker(sessionmaker, settings)
    assert await restarted.run_once() == 0  # the lease still holds
    assert row.locked_until is not None
    assert row.locked_until - utcnow() > timedelta(seconds=LEASE_S / 2)
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(NotificationOutbox)
            .where(NotificationOutbox.id == row.id)
            .values(locked_until=utcnow() - timedelta(seconds=1))
        )  # the lease has run out

    class Refusing:
        async def send(self, *args: Any) -> DeliveryResult:
            return DeliveryResult(False, "refused", handed_over=False)

    # Claimed again after its worker died mid-try: that try may have gone (ADR 0114), whatever
    # the next one does.
    assert await OutboxWorker(sessionmaker, settings, Refusing()).run_once() == 1
    [row] = await outbox_rows(sessionmaker)
    assert (row.status, row.attempts, row.may_have_reached) == ("pending", 2, True)
    await retry_now(sessionmaker)
    assert await restarted.run_once() == 1
    assert await restarted.run_once() == 0
    keys = [headers[DEDUPE_HEADER] for headers, _ in webhook.requests]
    assert keys == [f"order:{order.order_id}:ready"] * 2  # the repeat is recognisable
    [row] = await outbox_rows(sessionmaker)
    assert (row.status, row.attempts) == ("sent", 3)


async def test_a_code_is_not_sent_for_an_order_no_longer_ready_but_the_expiry_notice_is(
    engine: AsyncEngine, database_url: str, webhook: WebhookReceiver
) -> None:
    sessionmaker = create_sessionmaker(engine)
    order = await make_order(
        sessionmaker, webhook.url, state="expired", kinds=("reminder", "expired")
    )
    worker = OutboxWorker(sessionmaker, notify_settings(database_url))
    await drain(worker)
    rows = {row.kind: row for row in await outbox_rows(sessionmaker)}
    assert rows["reminder"].status == "skipped" and "expired" in (rows["reminder"].last_error or "")
    assert rows["expired"].status == "sent"
    [(_, payload)] = webhook.requests
    assert "Pickup code" not in payload["message"] and not payload.get("attachments")
    assert order.code not in payload["message"]
    assert "has expired" in payload["title"]


async def test_her_code_is_not_sent_late_once_a_fault_holds_her_food_for_staff(
    engine: AsyncEngine, database_url: str, webhook: WebhookReceiver
) -> None:
    """Her ready message still queued (a gateway down) when the fault latched: it would reach
    her after "do not collect it", with a code that opens nothing (ADR 0128)."""
    sessionmaker = create_sessionmaker(engine)
    order = await make_order(sessionmaker, webhook.url, kinds=("ready", "fault"))
    async with sessionmaker() as session, session.begin():
        held = await session.get(Order, order.order_id)
        assert held is not None
        await session.execute(
            update(Compartment)
            .where(Compartment.id == held.compartment_id)
            .values(fault="heating_watchdog")
        )
    await drain(OutboxWorker(sessionmaker, notify_settings(database_url)))
    rows = {row.kind: row for row in await outbox_rows(sessionmaker)}
    assert rows["ready"].status == "skipped" and "held" in (rows["ready"].last_error or "")
    assert rows["fault"].status == "sent"
    [(_, payload)] = webhook.requests
    assert order.code not in payload["message"] and not payload.get("attachments")


async def test_a_contact_without_a_channel_fails_at_once(
    engine: AsyncEngine, database_url: str
) -> None:
    sessionmaker = create_sessionmaker(engine)
    await make_order(sessionmaker, "li.na@example.com")  # no e-mail channel configured
    await make_order(sessionmaker, "json://127.0.0.1:9/x")
    worker = OutboxWorker(sessionmaker, notify_settings(database_url, notify_contact_urls=False))
    await drain(worker)
    rows = await outbox_rows(sessionmaker)
    assert {(row.status, row.attempts) for row in rows} == {("failed", 1)}
    assert not any(row.may_have_reached for row in rows)  # nothing left the service (ADR 0114)
    assert {row.last_error for row in rows} == {
        "no e-mail channel configured (LOCKER_NOTIFY_EMAIL_URL)",
        "contacts given as notification URLs are switched off",
    }


@pytest.mark.postgres
async def test_replicas_draining_one_outbox_send_each_message_once(
    pg_database_url: str, webhook: WebhookReceiver
) -> None:
    engines = [create_engine(pg_database_url) for _ in range(3)]
    try:
        sessionmaker = create_sessionmaker(engines[0])
        orders = [await make_order(sessionmaker, webhook.url) for _ in range(30)]
        workers = [
            OutboxWorker(create_sessionmaker(e), notify_settings(pg_database_url)) for e in engines
        ]
        await asyncio.gather(*(drain(w, rounds=40, pause_s=0.02) for w in workers))
        keys = sorted(headers[DEDUPE_HEADER] for headers, _ in webhook.requests)
        assert keys == sorted(f"order:{o.order_id}:ready" for o in orders)
        assert sum(w.sent for w in workers) == 30
        assert sum(1 for w in workers if w.sent) >= 2  # the work was really shared
        assert {row.status for row in await outbox_rows(sessionmaker)} == {"sent"}
    finally:
        for e in engines:
            await e.dispose()


async def test_the_background_worker_picks_up_new_messages(
    engine: AsyncEngine, database_url: str, webhook: WebhookReceiver
) -> None:
    sessionmaker = create_sessionmaker(engine)
    worker = OutboxWorker(sessionmaker, notify_settings(database_url, notify_poll_s=0.05))
    await worker.start()
    try:
        await make_order(sessionmaker, webhook.url)
        worker.wake()
        for _ in range(200):
            if webhook.requests:
                break
            await asyncio.sleep(0.05)
        assert len(webhook.requests) == 1
    finally:
        await worker.stop()


def test_the_migration_counts_every_message_tried_or_resent_as_maybe_seen(
    empty_database_url: str,
) -> None:
    """Migration 0019 (ADR 0114): before it nothing told the tries apart, so a message tried,
    being sent or sent, or resent by an operator (who cleared its attempts), may have reached
    her; one never tried did not."""
    from migrations import downgrade, upgrade
    from tests.locker_service.world import seed

    url = empty_database_url
    upgrade(url)
    order_id = uuid.uuid4()

    async def place() -> None:  # the people and the order, as the models have them now
        engine = create_engine(url)
        try:
            sessionmaker = create_sessionmaker(engine)
            world = await seed(sessionmaker, make_settings(url))
            async with sessionmaker() as session, session.begin():
                session.add(
                    Order(
                        id=order_id,
                        merchant_id=world.merchant_id,
                        external_ref="mig-1",
                        request_hash="h",
                        site_id=world.site_id,
                        purchaser_name="Li Na",
                        purchaser_contact="li.na@example.com",
                        size="M",
                        temperature_class="hot",
                        token_salt="00",
                        pickup_token_hash="a" * 64,
                        code_hash="b" * 64,
                    )
                )
        finally:
            await engine.dispose()

    async def fill() -> dict[str, int]:
        engine = create_engine(url)
        try:
            sessionmaker = create_sessionmaker(engine)
            ids: dict[str, int] = {}
            async with engine.begin() as connection:  # the table as revision 0018 has it
                for kind, status, attempts in (
                    ("ready", "failed", 3),
                    ("reminder", "pending", 0),  # resent: attempts cleared
                    ("expired", "pending", 0),  # never tried
                    ("cancelled", "sent", 1),
                ):
                    ids[kind] = (
                        await connection.execute(
                            text(
                                "INSERT INTO notification_outbox (order_id, kind, channel, "
                                "dedupe_key, subject, body, status, attempts, next_attempt_at, "
                                "created_at) VALUES (:order, :kind, 'c', :key, 's', 'b', "
                                ":status, :attempts, :now, :now) RETURNING id"
                            ),
                            {
                                "order": order_id.hex if "sqlite" in url else order_id,
                                "kind": kind,
                                "key": f"mig:{kind}",
                                "status": status,
                                "attempts": attempts,
                                "now": utcnow(),
                            },
                        )
                    ).scalar_one()
            async with sessionmaker() as session, session.begin():
                session.add(
                    OrderEvent(
                        order_id=order_id,
                        actor_type="operator",
                        action="notification_resent",
                        detail={"notification_id": ids["reminder"], "kind": "reminder"},
                    )
                )
            return ids
        finally:
            await engine.dispose()

    async def flags() -> dict[int, bool]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                rows = await connection.execute(
                    select(NotificationOutbox.id, NotificationOutbox.may_have_reached)
                )
                return {row_id: bool(reached) for row_id, reached in rows}
        finally:
            await engine.dispose()

    asyncio.run(place())
    downgrade(url, "0018")
    ids = asyncio.run(fill())
    upgrade(url)
    found = asyncio.run(flags())
    assert {kind: found[row_id] for kind, row_id in ids.items()} == {
        "ready": True,
        "reminder": True,
        "expired": False,
        "cancelled": True,
    }
