"""The offline supply's look for changes (ADR 0081): each second it reads the facts of the kiosks
a change touched, not of every kiosk it holds; what its stamps cannot show (a replica whose
clock is far behind) reaches the kiosk with the refresh. On SQLite and PostgreSQL, with the
kiosk link's side played by the test (the link over a real broker: test_offline_pickup.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from firmware_bridge import contract
from firmware_bridge.contract.offline import FREE_FAILURES_MAX, RULE_S_MAX, RULE_S_MIN
from locker_service.alerts.service import raise_alert
from locker_service.db import create_engine, create_sessionmaker, session_scope
from locker_service.models import Alert, Compartment, Order, Site, utcnow
from locker_service.orders import codes
from locker_service.orders import repository as orders
from locker_service.orders.schemas import FAULT_NOTICE
from locker_service.pickup.service import rules_of
from locker_service.pickup.supply import (
    NOT_SUPPLIED_ALERT,
    OFF_REPEAT_S,
    SupplyLoop,
    code_rules,
    not_supplied_key,
)
from locker_service.sites import service as admin
from tests.locker_service.conftest import make_settings

pytestmark = pytest.mark.timeout(60)

REFRESH_S = 30.0


@dataclass
class Link:
    """The kiosk link's side: every kiosk online, every supply kept."""

    statuses: dict[str, contract.KioskStatus]
    supplies: list[tuple[str, contract.OfflineSupply]] = field(default_factory=list)
    ready: bool = True
    refusing: str | None = None  # why the broker does not take a supply now
    failing: bool = False  # the link raises (a bug, a connection torn down meanwhile)

    def handled_kiosks(self) -> frozenset[str] | None:
        return None

    def kiosk_statuses(self) -> Mapping[str, contract.KioskStatus]:
        return self.statuses

    def supply(self, kiosk_id: str, supply: contract.OfflineSupply) -> str | None:
        if self.failing:
            raise RuntimeError("the link failed")
        if self.refusing is None:
            self.supplies.append((kiosk_id, supply))
        return self.refusing

    def last(self, kiosk_id: str) -> contract.OfflineSupply:
        return [s for k, s in self.supplies if k == kiosk_id][-1]

    def sent_to(self) -> list[str]:
        return [k for k, _ in self.supplies]


@dataclass
class Fleet:
    sessionmaker: async_sessionmaker[AsyncSession]
    link: Link
    loop: SupplyLoop
    clock: list[float]
    orders: dict[str, uuid.UUID]  # kiosk -> its ready order
    sites: dict[str, int]
    compartments: dict[str, int]  # kiosk -> its compartment 1's id


async def _ready_order(session: AsyncSession, secret: str, site_id: int, c: Compartment) -> Order:
    merchant = await admin.create_merchant(session, f"m-{uuid.uuid4().hex[:6]}")
    order_id, salt = uuid.uuid4(), codes.new_salt()
    token = codes.pickup_token(secret, order_id, salt)
    now = utcnow()
    order = Order(
        id=order_id,
        merchant_id=merchant.id,
        external_ref=uuid.uuid4().hex,
        request_hash="0" * 64,
        site_id=site_id,
        purchaser_name="Ana",
        purchaser_contact="json://127.0.0.1:9/",
        size=c.size,
        temperature_class="hot",
        state="ready",
        compartment_id=c.id,
        token_salt=salt,
        pickup_token_hash=codes.token_hash(token),
        code_hash=codes.code_hash(secret, codes.fallback_code(secret, token)),
        ready_at=now,
        hold_until=now + timedelta(hours=1),
    )
    session.add(order)
    return order


@pytest.fixture
async def fleet(database_url: str) -> AsyncIterator[Fleet]:
    """Kiosks a1 and a2 at site A, b1 at site B; a ready order in a1 and in b1."""
    settings = make_settings(database_url, offline_supply_refresh_s=REFRESH_S)
    engine = create_engine(database_url)
    sessionmaker = create_sessionmaker(engine)
    tag = uuid.uuid4().hex[:6]
    sites: dict[str, int] = {}
    compartments: dict[str, int] = {}
    orders: dict[str, uuid.UUID] = {}
    async with session_scope(sessionmaker) as session:
        for site, kiosks in (("A", ("a1", "a2")), ("B", ("b1",))):
            sites[site] = (await admin.create_site(session, f"{site}-{tag}", site)).id
            for kiosk in kiosks:
                made = await admin.create_kiosk(session, f"{site}-{tag}", kiosk, "Lobby", "M:2")
                compartments[kiosk] = await session.scalar(
                    select(Compartment.id).where(
                        Compartment.kiosk_id == made.id, Compartment.number == 1
                    )
                )
        for kiosk, site in (("a1", "A"), ("b1", "B")):
            c = await session.get(Compartment, compartments[kiosk])
            assert c is not None
            orders[kiosk] = (await _ready_order(session, settings.secret_key, sites[site], c)).id
    statuses = {k: contract.KioskStatus(state="online") for k in ("a1", "a2", "b1")}
    link = Link(statuses)
    clock = [1000.0]
    loop = SupplyLoop(settings, sessionmaker, link, monotonic=lambda: clock[0])
    try:
        yield Fleet(sessionmaker, link, loop, clock, orders, sites, compartments)
    finally:
        await engine.dispose()


async def _round(fleet: Fleet) -> tuple[int, list[str]]:
    """One look: how many kiosks' facts it read, and whom it sent a supply."""
    read, sent = fleet.loop.facts_read, len(fleet.link.supplies)
    await fleet.loop.round()
    return fleet.loop.facts_read - read, sorted(fleet.link.sent_to()[sent:])


async def _change_order(
    fleet: Fleet, kiosk: str, stamp_behind_s: float = 0.0, **values: object
) -> None:
    """As a step does: the values, the version bumped, stamped (by a clock `stamp_behind_s`
    behind this one)."""
    async with session_scope(fleet.sessionmaker) as session:
        await session.execute(
            update(Order)
            .where(Order.id == fleet.orders[kiosk])
            .values(
                version=Order.version + 1,
                updated_at=utcnow() - timedelta(seconds=stamp_behind_s),
                **values,
            )
        )


async def test_each_look_reads_only_the_kiosks_a_change_touched(fleet: Fleet) -> None:
    assert await _round(fleet) == (3, ["a1", "a2", "b1"])  # the first look: every kiosk
    assert await _round(fleet) == (0, [])  # nothing changed, no refresh due: nothing read

    await _change_order(fleet, "a1", code_used_at=utcnow())  # a pickup claimed its code
    assert await _round(fleet) == (1, ["a1"])
    assert [o.used for o in fleet.link.last("a1").orders] == [True]

    async with session_scope(fleet.sessionmaker) as session:
        await session.execute(
            update(Site).where(Site.id == fleet.sites["B"]).values(kill_switch_engaged=True)
        )
    assert await _round(fleet) == (1, ["b1"])
    assert fleet.link.last("b1").frozen

    # Moved to a2's compartment: a1 no longer lists it, a2 does.
    await _change_order(fleet, "a1", compartment_id=fleet.compartments["a2"])
    assert await _round(fleet) == (2, ["a1", "a2"])
    assert fleet.link.last("a1").orders == []
    assert [o.order_id for o in fleet.link.last("a2").orders] == [str(fleet.orders["a1"])]

    await _change_order(fleet, "b1", state="picked_up")  # a step out of ready
    assert await _round(fleet) == (1, ["b1"])
    assert fleet.link.last("b1").orders == []

    fleet.link.statuses["a2"] = contract.KioskStatus(state="online")  # its bridge restarted
    assert await _round(fleet) == (1, ["a2"])
    assert await _round(fleet) == (0, [])


async def test_a_fault_that_holds_her_food_reaches_its_kiosk_at_once_held(fleet: Fleet) -> None:
    """As `fault_with_food` writes it: the compartment's fault, her notice, and the order
    stamped without a new version (no step of its lifecycle). ADR 0128."""
    assert await _round(fleet) == (3, ["a1", "a2", "b1"])
    assert [o.held for o in fleet.link.last("a1").orders] == [False]
    async with session_scope(fleet.sessionmaker) as session:
        await session.execute(
            update(Compartment)
            .where(Compartment.id == fleet.compartments["a1"])
            .values(fault="heating_watchdog")
        )
        await session.execute(
            update(Order).where(Order.id == fleet.orders["a1"]).values(updated_at=utcnow())
        )
    assert await _round(fleet) == (1, ["a1"])  # within the overlap, at the same version
    assert [o.held for o in fleet.link.last("a1").orders] == [True]
    async with session_scope(fleet.sessionmaker) as session:  # cleared, after her notice
        orders.add_notice(
            session, fleet.orders["a1"], "kiosk", "a1", FAULT_NOTICE, "told", {"fault": "x"}
        )
        await session.execute(
            update(Compartment).where(Compartment.id == fleet.compartments["a1"]).values(fault=None)
        )
        await session.execute(
            update(Order).where(Order.id == fleet.orders["a1"]).values(updated_at=utcnow())
        )
    assert await _round(fleet) == (1, [])  # read: still held, nothing new to send
    fleet.clock[0] += REFRESH_S  # the refresh sends its facts as they are
    assert "a1" in (await _round(fleet))[1]
    assert [o.held for o in fleet.link.last("a1").orders] == [True]  # told: still held


async def test_a_change_stamped_behind_the_overlap_reaches_its_kiosk_with_the_refresh(
    fleet: Fleet,
) -> None:
    await _round(fleet)
    await _change_order(fleet, "b1", stamp_behind_s=3600, code_used_at=utcnow())
    assert await _round(fleet) == (0, [])  # its stamp is an hour behind: not seen
    fleet.clock[0] += REFRESH_S  # each kiosk's refresh reads its facts afresh
    read, sent = await _round(fleet)
    assert read == 3 and sent == ["a1", "a2", "b1"]
    assert [o.used for o in fleet.link.last("b1").orders] == [True]


async def test_a_stamp_from_a_clock_ahead_does_not_hide_the_next_changes(fleet: Fleet) -> None:
    await _round(fleet)
    await _change_order(fleet, "a1", stamp_behind_s=-3600, code_used_at=utcnow())
    assert await _round(fleet) == (1, ["a1"])
    await _change_order(fleet, "b1", code_used_at=utcnow())  # stamped by a right clock
    assert await _round(fleet) == (1, ["b1"])


async def test_a_supply_the_broker_did_not_take_is_read_and_sent_again_next_round(
    fleet: Fleet,
) -> None:
    await _round(fleet)
    await _change_order(fleet, "a1", code_used_at=utcnow())
    fleet.link.refusing = "not connected to the broker"
    assert await _round(fleet) == (1, [])
    fleet.link.refusing = None
    assert await _round(fleet) == (1, ["a1"])  # not left for the refresh
    assert [o.used for o in fleet.link.last("a1").orders] == [True]


async def test_a_round_that_fails_after_its_look_leaves_nothing_for_the_refresh(
    fleet: Fleet,
) -> None:
    await _round(fleet)
    async with session_scope(fleet.sessionmaker) as session:
        await session.execute(
            update(Site).where(Site.id == fleet.sites["A"]).values(kill_switch_engaged=True)
        )
    fleet.link.failing = True
    with pytest.raises(RuntimeError):
        await fleet.loop.round()  # the look saw the switch; nothing reached a kiosk
    fleet.link.failing = False
    read, sent = await _round(fleet)  # every kiosk again, at once
    assert read == 3 and sent == ["a1", "a2", "b1"]
    assert fleet.link.last("a1").frozen and fleet.link.last("a2").frozen


async def test_a_kiosk_the_database_does_not_know_is_not_looked_up_every_second(
    fleet: Fleet,
) -> None:
    fleet.link.statuses["stray"] = contract.KioskStatus(state="online")
    assert await _round(fleet) == (4, ["a1", "a2", "b1"])
    assert await _round(fleet) == (0, [])
    assert "stray" not in fleet.link.sent_to()


async def test_an_order_the_supply_cannot_carry_is_left_out_and_the_rest_still_supplied(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    """A ready order whose stored token hash is not SHA-256, or whose salt is not hex (rows
    written by hand, or by something else than the service), cannot be put in a supply: it
    is left out and logged, and every kiosk still gets its supply, once. One such row had
    failed every kiosk's supply, and the look read every kiosk's facts again each second."""
    await _change_order(fleet, "a1", pickup_token_hash="d4d0b37d4cde156bae86ada0d450c4fe")
    await _change_order(fleet, "b1", token_salt="not hex")
    assert await _round(fleet) == (3, ["a1", "a2", "b1"])
    assert fleet.link.last("a1").orders == [] and fleet.link.last("b1").orders == []
    logged = caplog.text
    assert f"order {fleet.orders['a1']} left out of kiosk a1's" in logged
    assert "token_sha256" in logged
    assert f"order {fleet.orders['b1']} left out of kiosk b1's" in logged
    assert await _round(fleet) == (0, [])  # nothing read again until a change or the refresh
    await _change_order(fleet, "b1", token_salt=codes.new_salt())  # the row put right
    assert await _round(fleet) == (1, ["b1"])
    assert [o.order_id for o in fleet.link.last("b1").orders] == [str(fleet.orders["b1"])]


async def _open_not_supplied(fleet: Fleet) -> dict[str, tuple[str, int | None]]:
    """The open "not supplied" alerts: dedupe key -> (message, compartment id)."""
    async with fleet.sessionmaker() as session:
        rows = await session.execute(
            select(Alert.dedupe_key, Alert.message, Alert.compartment_id).where(
                Alert.kind == NOT_SUPPLIED_ALERT, Alert.state != "resolved"
            )
        )
        return {key: (message, compartment) for key, message, compartment in rows}


async def test_an_order_left_out_of_the_supply_raises_one_alert_until_it_is_supplied_or_gone(
    fleet: Fleet,
) -> None:
    """ADR 0108: the operator is told, once, of each order the kiosk cannot check while cut
    off; the alert resolves once the order is supplied (its row put right), also by a replica
    that takes the kiosk over without the first one's memory, or once the order is no longer
    ready, also while its kiosk is away."""
    async with fleet.sessionmaker() as session:
        good_hash = await session.scalar(
            select(Order.pickup_token_hash).where(Order.id == fleet.orders["a1"])
        )
    await _change_order(fleet, "a1", pickup_token_hash="d4d0b37d4cde156bae86ada0d450c4fe")
    await _change_order(fleet, "b1", token_salt="not hex")
    await _round(fleet)
    alerts = await _open_not_supplied(fleet)
    assert set(alerts) == {not_supplied_key(fleet.orders[k]) for k in ("a1", "b1")}
    assert "compartment 1 of kiosk a1" in alerts[not_supplied_key(fleet.orders["a1"])][0]
    assert alerts[not_supplied_key(fleet.orders["a1"])][1] == fleet.compartments["a1"]
    fleet.clock[0] += REFRESH_S  # the refresh builds every supply again: still left out
    assert await _round(fleet) == (3, ["a1", "a2", "b1"])
    async with fleet.sessionmaker() as session:
        counts = await session.scalars(select(Alert.count).where(Alert.kind == NOT_SUPPLIED_ALERT))
        assert list(counts) == [1, 1]  # raised once each, not again every refresh

    await _change_order(fleet, "b1", token_salt=codes.new_salt())  # the row put right
    await _round(fleet)
    assert set(await _open_not_supplied(fleet)) == {not_supplied_key(fleet.orders["a1"])}

    # A new holder of the kiosks, which never raised the alert: a1's row put right meanwhile.
    other = SupplyLoop(
        fleet.loop.settings, fleet.sessionmaker, fleet.link, monotonic=lambda: fleet.clock[0]
    )
    await _change_order(fleet, "a1", pickup_token_hash=good_hash)
    await other.round()
    assert await _open_not_supplied(fleet) == {}

    # b1's row goes bad again (with a change the kiosk's supply carries: its hold moved); its
    # kiosk goes away and the order expires while it is away.
    later = utcnow() + timedelta(hours=2)
    await _change_order(fleet, "b1", token_salt="not hex", hold_until=later)
    await other.round()
    assert set(await _open_not_supplied(fleet)) == {not_supplied_key(fleet.orders["b1"])}
    fleet.link.statuses["b1"] = contract.KioskStatus(state="offline")
    await _change_order(fleet, "b1", state="expired")
    await other.round()  # no sweep before its refresh
    assert set(await _open_not_supplied(fleet)) == {not_supplied_key(fleet.orders["b1"])}
    fleet.clock[0] += REFRESH_S
    await other.round()
    assert await _open_not_supplied(fleet) == {}


async def test_an_alert_the_loop_did_not_make_or_a_failed_sweep_does_not_fail_its_round(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A "not supplied" alert whose key names no order (raised by hand) is left alone, and a
    sweep that fails is tried at the next refresh: neither fails the round, whose supplies
    stand (a failed round reads and supplies every kiosk again, every second)."""
    hand_made = f"{NOT_SUPPLIED_ALERT}:not-an-order"
    async with session_scope(fleet.sessionmaker) as session:
        kiosk_pk = await session.scalar(
            select(Compartment.kiosk_id).where(Compartment.id == fleet.compartments["a1"])
        )
        await raise_alert(
            session,
            kind=NOT_SUPPLIED_ALERT,
            severity="warning",
            message="by hand",
            dedupe_key=hand_made,
            kiosk_id=kiosk_pk,
        )
    assert await _round(fleet) == (3, ["a1", "a2", "b1"])
    assert set(await _open_not_supplied(fleet)) == {hand_made}

    async def failing() -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(fleet.loop, "_sweep", failing)
    fleet.clock[0] += REFRESH_S
    assert await _round(fleet) == (3, ["a1", "a2", "b1"])  # the refresh, and a failed sweep
    assert await _round(fleet) == (0, [])  # its supplies stand: nothing read or sent again


async def test_with_offline_pickups_off_each_kiosk_is_told_so_and_nothing_is_read(
    fleet: Fleet,
) -> None:
    """A bridge supplied before offline pickups were switched off must forget its list, or it
    takes the silence for being cut off and opens on it (ADR 0077)."""
    async with session_scope(fleet.sessionmaker) as session:  # from before the switch
        await raise_alert(
            session,
            kind=NOT_SUPPLIED_ALERT,
            severity="warning",
            message="left out of a1's supply",
            dedupe_key=not_supplied_key(fleet.orders["a1"]),
        )
    settings = fleet.loop.settings.model_copy(update={"offline_supply_refresh_s": 0.0})
    loop = SupplyLoop(settings, fleet.sessionmaker, fleet.link, monotonic=lambda: fleet.clock[0])
    await loop.round()
    assert sorted(fleet.link.sent_to()) == ["a1", "a2", "b1"]
    assert await _open_not_supplied(fleet) == {}  # nothing is supplied, nor left out
    for _, sent in fleet.link.supplies:
        assert sent.switched_off and sent.orders == []
    assert loop.facts_read == 0  # no order is read, nor sent
    await loop.round()
    assert len(fleet.link.supplies) == 3  # told once, until the repeat is due

    fleet.link.statuses["a2"] = contract.KioskStatus(state="online")  # its bridge restarted
    await loop.round()
    assert fleet.link.sent_to()[3:] == ["a2"]
    fleet.clock[0] += OFF_REPEAT_S
    await loop.round()
    assert sorted(fleet.link.sent_to()[4:]) == ["a1", "a2", "b1"]


def test_the_supply_carries_the_site_s_throttling_within_the_contract_s_bounds() -> None:
    """A service configured otherwise than ADR 0039's defaults sends its own rules, in real
    seconds, for the keypad (ADR 0119); a setting past what the contract carries is sent as its
    bound, which acts the same (a wait of 115 days, a thousand typos free)."""
    settings = make_settings(
        "sqlite+aiosqlite://",
        time_scale=2.0,
        pickup_source_free_failures=2,
        pickup_source_window_s=300.0,
        pickup_source_max_delay_s=60.0,
        pickup_kiosk_free_failures_per_day=10,
        pickup_kiosk_spacing_s=600.0,
    )
    rules = code_rules(rules_of(settings))
    assert rules.source == contract.CodeBackoff(
        window_s=150.0, free=2, first_delay_s=1.0, max_delay_s=30.0
    )
    assert rules.kiosk == contract.CodeBackoff(
        window_s=43200.0, free=10, first_delay_s=300.0, max_delay_s=300.0
    )
    unbounded = make_settings(
        "sqlite+aiosqlite://", pickup_source_free_failures=5000, pickup_kiosk_spacing_s=1e9
    )
    wide = code_rules(rules_of(unbounded))
    assert wide.source.free == FREE_FAILURES_MAX and wide.kiosk.max_delay_s == RULE_S_MAX
    # A time scale that shrinks the first wait below a microsecond (rounded to 0) still makes
    # a supply: the service would not start otherwise.
    fast = code_rules(rules_of(make_settings("sqlite+aiosqlite://", time_scale=1e7)))
    assert fast.source.first_delay_s == RULE_S_MIN
