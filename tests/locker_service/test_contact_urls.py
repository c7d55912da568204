"""Contact URLs reach only what the operator allows: schemes on the allowlist and global hosts.

Refused at order creation (422, nothing written) and again before each send: a webhook
receiver on this machine stands in for the service's internal neighbours and must hear nothing.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from locker_service.config import Settings
from locker_service.contacts.channels import ContactRefused
from locker_service.contacts.policy import ContactPolicy, check_contact
from locker_service.context import ServiceContext
from locker_service.db import create_sessionmaker
from locker_service.models import Order
from locker_service.notifications.worker import OutboxWorker
from tests.locker_service.conftest import make_settings
from tests.locker_service.test_notifications import (
    WebhookReceiver,
    drain,
    engine,  # noqa: F401 (fixture)
    make_order,
    notify_settings,
    outbox_rows,
    webhook,  # noqa: F401 (fixture)
)
from tests.locker_service.world import World

POLICY = ContactPolicy.of(True, ["mailto", "mailtos", "json", "tgram"])


# -- the pure policy ---------------------------------------------------------------------------


def test_schemes_off_the_allowlist_and_switched_off_urls_are_refused() -> None:
    with pytest.raises(ContactRefused) as refused:
        POLICY.hosts("form://127.0.0.1/x")
    assert refused.value.code == "contact_scheme_not_allowed"
    with pytest.raises(ContactRefused) as off:
        ContactPolicy.of(False, ["json"]).hosts("json://example.com/")
    assert off.value.code == "contact_urls_off"


def test_the_hosts_a_url_connects_to() -> None:
    assert POLICY.hosts("json://hooks.example.com:8080/p") == ["hooks.example.com"]
    assert POLICY.hosts("JSON://[::1]/p") == ["::1"]
    # Apprise's e-mail plugin connects to `smtp=` when given, whatever the host says.
    assert POLICY.hosts("mailto://u:p@example.com?smtp=10.0.0.5&to=a@b.c") == [
        "example.com",
        "10.0.0.5",
    ]
    assert POLICY.hosts("tgram://123456:ABC/4321") == []  # always api.telegram.org


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "0.0.0.0", "100.64.0.1",
     "::1", "fe80::1%eth0", "fd00::1", "::ffff:127.0.0.1", "224.0.0.1"],
)  # fmt: skip
def test_internal_addresses_are_refused(address: str) -> None:
    assert POLICY.refused_address(["93.184.215.14", address]) == address.split("%")[0].replace(
        "::ffff:", ""
    )


def test_allowed_networks_and_global_addresses_pass() -> None:
    allowing = ContactPolicy.of(True, ["json"], ["127.0.0.0/8", "fd00::/8"])
    assert allowing.refused_address(["127.0.0.1", "fd00::7", "93.184.215.14"]) is None
    assert allowing.refused_address(["10.0.0.1"]) == "10.0.0.1"
    assert POLICY.refused_address(["2606:4700::6810:84e5", "8.8.8.8"]) is None


async def test_a_host_that_resolves_inward_later_is_refused_then() -> None:
    """DNS may change between the order and the send: each check resolves again."""
    answers = [["93.184.215.14"], ["127.0.0.1"]]

    async def rebinding(host: str) -> list[str]:
        assert host == "hooks.example.com"
        return answers.pop(0)

    contact = "json://hooks.example.com/p"
    assert await check_contact(contact, POLICY, rebinding) == [contact]
    with pytest.raises(ContactRefused) as refused:
        await check_contact(contact, POLICY, rebinding)
    assert refused.value.code == "contact_address_not_allowed"


def test_settings_read_comma_separated_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKER_NOTIFY_CONTACT_SCHEMES", "mailtos, json")
    monkeypatch.setenv("LOCKER_NOTIFY_CONTACT_ALLOWED_NETWORKS", "127.0.0.1/32,::1/128")
    s = Settings()
    assert s.notify_contact_schemes == ["mailtos", "json"]
    assert s.notify_contact_allowed_networks == ["127.0.0.1/32", "::1/128"]
    monkeypatch.setenv("LOCKER_NOTIFY_CONTACT_ALLOWED_NETWORKS", "not-a-network")
    with pytest.raises(ValueError, match="not-a-network"):
        Settings()
    assert "json" not in Settings.model_fields["notify_contact_schemes"].get_default(
        call_default_factory=True
    )


# -- order creation: a 422 and nothing written -------------------------------------------------


@pytest.fixture
def settings(database_url: str) -> Settings:
    """json:// is on the allowlist here, but no internal network is allowed."""
    return make_settings(database_url, notify_contact_allowed_networks=[])


@pytest.mark.parametrize(
    ("contact", "code"),
    [
        ("json://127.0.0.1:{port}/internal/admin", "contact_address_not_allowed"),
        ("json://localhost:{port}/internal/admin", "contact_address_not_allowed"),
        ("json://[::1]:{port}/x", "contact_address_not_allowed"),
        ("json://2130706433:{port}/x", "contact_address_not_allowed"),  # 127.0.0.1 as a number
        ("mailto://u:p@example.com?smtp=127.0.0.1&to=a@b.c", "contact_address_not_allowed"),
        ("mailto://a@b.c json://127.0.0.1:{port}/x", "contact_address_not_allowed"),
        ("form://127.0.0.1:{port}/x", "contact_scheme_not_allowed"),
        ("xml://hooks.example.com/x", "contact_scheme_not_allowed"),
    ],
)
async def test_order_creation_refuses_a_contact_url_to_an_internal_host(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    webhook: WebhookReceiver,  # noqa: F811
    contact: str,
    code: str,
) -> None:
    body = world.order_body(purchaser_contact=contact.format(port=webhook.port))
    answer = await app_client.post("/api/v1/orders", json=body, headers=world.merchant())
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == code
    async with service.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 0
    assert webhook.requests == []


async def test_a_public_contact_url_is_accepted(
    app_client: httpx.AsyncClient, world: World
) -> None:
    body = world.order_body(purchaser_contact=f"json://93.184.215.14/{uuid.uuid4().hex}")
    answer = await app_client.post("/api/v1/orders", json=body, headers=world.merchant())
    assert answer.status_code == 201, answer.text


# -- delivery: the send fails without a connection ---------------------------------------------


async def test_delivery_to_an_internal_host_fails_without_a_request(
    engine: AsyncEngine,  # noqa: F811
    database_url: str,
    webhook: WebhookReceiver,  # noqa: F811
) -> None:
    sessionmaker = create_sessionmaker(engine)
    await make_order(sessionmaker, webhook.url)  # written before the network was disallowed
    worker = OutboxWorker(
        sessionmaker, notify_settings(database_url, notify_contact_allowed_networks=[])
    )
    await drain(worker)
    [row] = await outbox_rows(sessionmaker)
    assert (row.status, row.attempts) == ("failed", 1)
    assert "internal address (127.0.0.1)" in (row.last_error or "")
    assert webhook.requests == []
    # The same message with the network allowed does arrive: the receiver would have heard.
    await make_order(sessionmaker, webhook.url)
    await drain(OutboxWorker(sessionmaker, notify_settings(database_url)))
    assert len(webhook.requests) == 1
