"""The bridge's offline book (pure, on an injected clock): what a kiosk cut off from the service
opens alone, what it refuses, and what a stolen disk gives away (docs/adr/0077)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from firmware_bridge.contract import CodeBackoff, CodeRules, OfflineOrder, OfflineSupply
from firmware_bridge.contract.codes import code_mac, token_hash
from firmware_bridge.contract.offline import encode_key
from firmware_bridge.offline import (
    DAY_FREE_FAILURES,
    DAY_S,
    EPOCHS_WENT_BACK_S,
    FREE_FAILURES,
    MAX_DELAY_S,
    MISSED_SUPPLIES,
    SILENCE_MARGIN_S,
    OfflineBook,
    Opened,
    Refused,
)
from firmware_bridge.store import BridgeStore

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = T0

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)


class Order:
    """An order as the service knows it: its secrets, and what it sends the kiosk."""

    def __init__(self, order_id: str, compartment: int, code: str) -> None:
        self.order_id = order_id
        self.compartment = compartment
        self.code = code
        self.token = secrets.token_urlsafe(32)

    def supplied(
        self,
        key: bytes,
        *,
        deadline: datetime | None = None,
        used: bool = False,
        held: bool = False,
    ) -> OfflineOrder:
        return OfflineOrder(
            order_id=self.order_id,
            compartment=self.compartment,
            token_sha256=token_hash(self.token),
            code_mac=code_mac(key, self.code),
            deadline=deadline or T0 + timedelta(hours=2),
            used=used,
            held=held,
        )


def supply(
    orders: list[Order],
    *,
    issued_at: datetime = T0,
    frozen: bool = False,
    used: frozenset[str] = frozenset(),
    deadlines: dict[str, datetime] | None = None,
    key: bytes | None = None,
    lease: tuple[int, int] | None = None,
    code_failures: int = 0,
    rules: CodeRules | None = None,
    held: frozenset[str] | set[str] = frozenset(),
) -> OfflineSupply:
    key = key or secrets.token_bytes(32)
    deadlines = deadlines or {}
    return OfflineSupply(
        supply_id=secrets.token_hex(8),
        issued_at=issued_at,
        refresh_s=30.0,
        frozen=frozen,
        code_key=encode_key(key),
        epoch=lease[0] if lease else None,
        seq=lease[1] if lease else None,
        code_failures=code_failures,
        code_rules=rules,
        orders=[
            o.supplied(
                key,
                deadline=deadlines.get(o.order_id),
                used=o.order_id in used,
                held=o.order_id in held,
            )
            for o in orders
        ],
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BridgeStore]:
    s = BridgeStore(tmp_path / "bridge.sqlite3")
    yield s
    s.close()


def book_on(store: BridgeStore, clock: Clock) -> OfflineBook:
    return OfflineBook(store, monotonic=lambda: clock.mono, now=lambda: clock.wall)


ALICE = Order("ord-alice", 3, "12345678")
BOB = Order("ord-bob", 5, "87654321")


def test_a_token_and_a_code_open_their_own_compartment_once(
    store: BridgeStore, clock: Clock
) -> None:
    book = book_on(store, clock)
    assert book.take(supply([ALICE, BOB]))
    assert book.decide_token(ALICE.token) == Opened("ord-alice", 3, "qr")
    again = book.decide_token(ALICE.token)
    assert isinstance(again, Refused) and again.error == "code_used"
    # Her typed code is the same pickup: used too.
    used = book.decide_code(ALICE.code)
    assert isinstance(used, Refused) and used.error == "code_used"
    assert book.decide_code(BOB.code) == Opened("ord-bob", 5, "code")


def test_a_compartment_held_by_a_fault_opens_nothing_and_keeps_her_code(
    store: BridgeStore, clock: Clock
) -> None:
    book = book_on(store, clock)
    book.take(supply([ALICE, BOB]))
    for decision in (book.decide_token(ALICE.token, {3}), book.decide_code(ALICE.code, {3})):
        assert isinstance(decision, Refused) and decision.error == "compartment_fault"
    assert book.decide_code(BOB.code, {3}) == Opened("ord-bob", 5, "code")  # not his
    # Not counted as a guess, not used: once the fault is cleared her code opens.
    assert book.decide_token(ALICE.token) == Opened("ord-alice", 3, "qr")


def test_a_fault_seen_since_it_was_listed_holds_it_until_the_service_lists_it_no_more(
    store: BridgeStore, clock: Clock
) -> None:
    """A board restart clears the fault without anyone having looked at the food; a supply
    made before the service heard of the fault does not free it either (ADR 0128)."""
    book = book_on(store, clock)
    book.take(supply([ALICE, BOB]))
    book.fault_seen(3)
    held = book.decide_token(ALICE.token)  # the fault cleared since: nothing latched now
    assert isinstance(held, Refused) and held.error == "compartment_fault"
    # Sent before the service heard of the fault:
    assert book.take(supply([ALICE, BOB], issued_at=T0 + timedelta(minutes=1)))
    held = book.decide_code(ALICE.code)
    assert isinstance(held, Refused) and held.error == "compartment_fault"
    assert book.decide_token(BOB.token) == Opened("ord-bob", 5, "qr")
    # Kept on disk: a bridge restarted while cut off still holds it.
    again = book_on(store, clock)
    held = again.decide_token(ALICE.token)
    assert isinstance(held, Refused) and held.error == "compartment_fault"


def test_a_fault_seen_before_her_order_was_first_listed_holds_it_too(
    store: BridgeStore, clock: Clock
) -> None:
    """Her food was ready at the service, and its supply on the way, when the board latched
    the fault: that supply, the first to list her order, was made before the service heard of
    the fault. Neither a supply in between that lists no order there nor a restart of the
    bridge (the fault is kept on its disk) ends it."""
    book = book_on(store, clock)
    book.take(supply([BOB]))
    book.fault_seen(3)
    book = book_on(store, clock)  # restarted
    assert book.take(supply([BOB], issued_at=T0 + timedelta(seconds=30)))
    book = book_on(store, clock)  # restarted again
    assert book.take(supply([ALICE, BOB], issued_at=T0 + timedelta(minutes=1)))
    for decision in (book.decide_token(ALICE.token), book.decide_code(ALICE.code)):
        assert isinstance(decision, Refused) and decision.error == "compartment_fault"
    assert book.decide_token(BOB.token) == Opened("ord-bob", 5, "qr")


def test_a_door_opened_while_the_fault_is_latched_still_holds_what_is_inside(
    store: BridgeStore, clock: Clock
) -> None:
    """Staff looking in, or a drop-off racing the fault: the latched fault is still there."""
    book = book_on(store, clock)
    book.fault_seen(3)
    book.door_opened(3, fault_latched=True)
    restarted = book_on(store, clock)
    assert restarted.take(supply([ALICE]))
    held = restarted.decide_token(ALICE.token)
    assert isinstance(held, Refused) and held.error == "compartment_fault"


def test_a_fault_kept_on_disk_holds_a_listed_order_whose_row_was_not_marked_yet(
    store: BridgeStore, clock: Clock
) -> None:
    """The power went between the two writes of `fault_seen` (the compartment's, then its
    orders'): a bridge restarted cut off still refuses her code."""
    book_on(store, clock).take(supply([ALICE]))
    store.set_offline_meta("faulted", "3")
    held = book_on(store, clock).decide_token(ALICE.token)
    assert isinstance(held, Refused) and held.error == "compartment_fault"


def test_food_put_in_after_a_fault_is_not_held_by_it(store: BridgeStore, clock: Clock) -> None:
    """The door opened since the fault (the courier's drop-off of the next food): what is
    inside now has not been through it. Also after a restart."""
    book = book_on(store, clock)
    book.fault_seen(3)
    book.fault_seen(5)
    book.door_opened(3)
    restarted = book_on(store, clock)
    restarted.door_opened(5)
    assert restarted.take(supply([ALICE, BOB]))
    assert restarted.decide_token(ALICE.token) == Opened("ord-alice", 3, "qr")
    assert restarted.decide_code(BOB.code) == Opened("ord-bob", 5, "code")


def test_the_service_s_word_that_her_food_is_held_is_kept(store: BridgeStore, clock: Clock) -> None:
    book = book_on(store, clock)
    book.take(supply([ALICE], held={"ord-alice"}))
    held = book.decide_token(ALICE.token)
    assert isinstance(held, Refused) and held.error == "compartment_fault"


def test_a_code_given_back_opens_again_and_nothing_else_does(
    store: BridgeStore, clock: Clock
) -> None:
    book = book_on(store, clock)
    book.take(supply([ALICE, BOB]))
    assert isinstance(book.decide_code(ALICE.code), Opened)
    book.give_back("ord-alice")  # the latch did not release
    assert book.decide_token(ALICE.token) == Opened("ord-alice", 3, "qr")
    unknown = book.decide_token(secrets.token_urlsafe(32))
    assert isinstance(unknown, Refused) and unknown.error == "invalid_code"
    wrong = book.decide_code("00000000")
    assert isinstance(wrong, Refused) and wrong.error == "invalid_code"


def test_wrong_codes_are_throttled_and_a_right_one_waits_too(
    store: BridgeStore, clock: Clock
) -> None:
    book = book_on(store, clock)
    book.take(supply([ALICE]))
    for i in range(FREE_FAILURES):
        refused = book.decide_code(f"{i:08d}")
        assert isinstance(refused, Refused) and refused.error == "invalid_code"
    # The free failures are spent: even her right code waits, so guessing gains nothing.
    locked = book.decide_code(ALICE.code)
    assert isinstance(locked, Refused) and locked.error == "locked_out"
    assert locked.retry_after_s is not None and 0 < locked.retry_after_s <= 2.0
    clock.advance(locked.retry_after_s + 0.01)
    assert book.decide_code("99999999") == Refused(
        "invalid_code", "this code does not open anything here"
    )
    second = book.decide_code(ALICE.code)
    assert isinstance(second, Refused) and second.error == "locked_out"
    assert second.retry_after_s is not None and 2.0 < second.retry_after_s <= 4.0  # doubled
    # QR tokens are 256 bits: not throttled.
    assert isinstance(book.decide_token(ALICE.token), Opened)


def test_the_keypad_s_day_goes_on_from_the_service_s_count(
    store: BridgeStore, clock: Clock, tmp_path: Path
) -> None:
    """A day of guessing online, then the kiosk cut off: its keypad goes on from the service's
    count of the day's wrong codes, not from nothing, so the day's bound holds (ADR 0116)."""
    book = book_on(store, clock)
    book.take(supply([ALICE], code_failures=DAY_FREE_FAILURES - 1))
    wrong = book.decide_code("00000000")  # the day's last free one
    assert isinstance(wrong, Refused) and wrong.error == "invalid_code"
    locked = book.decide_code(ALICE.code)
    assert isinstance(locked, Refused) and locked.error == "locked_out"
    assert locked.retry_after_s == pytest.approx(MAX_DELAY_S)  # one try per spacing now
    # A kiosk with a clean day: the same one wrong code costs nothing.
    other = BridgeStore(tmp_path / "other.sqlite3")
    try:
        fresh = book_on(other, clock)
        fresh.take(supply([BOB]))
        fresh.decide_code("00000000")
        assert fresh.decide_code(BOB.code) == Opened("ord-bob", 5, "code")
    finally:
        other.close()


def test_the_service_s_count_leaves_the_keypad_s_day_a_day_after_its_supply(
    store: BridgeStore, clock: Clock
) -> None:
    """The service's count covers the day before its supply: cut off for longer than a day, the
    keypad no longer holds it against the typos of the next (ADR 0116's consequence, ADR 0119)."""
    book = book_on(store, clock)
    late = {"ord-bob": T0 + timedelta(days=2)}  # still hers to collect after the weekend
    book.take(supply([ALICE, BOB], code_failures=DAY_FREE_FAILURES, deadlines=late))
    book.decide_code("00000000")
    locked = book.decide_code(ALICE.code)
    assert isinstance(locked, Refused) and locked.retry_after_s == pytest.approx(MAX_DELAY_S)
    clock.advance(DAY_S - 60)  # cut off; within the day the count still stands
    book.decide_code("00000001")
    locked = book.decide_code(ALICE.code)
    assert isinstance(locked, Refused) and locked.error == "locked_out"
    clock.advance(61 + MAX_DELAY_S)  # a day after the supply: its count has left the day
    for i in range(2, FREE_FAILURES):  # typos again (one of its own still within the day)
        wrong = book.decide_code(f"{i:08d}")
        assert isinstance(wrong, Refused) and wrong.error == "invalid_code", i
    assert book.decide_code(BOB.code) == Opened("ord-bob", 5, "code")


def test_the_keypad_s_own_refusals_count_all_day_through_supplies_and_a_restart(
    store: BridgeStore, clock: Clock, tmp_path: Path
) -> None:
    """The service's count is of its screen and scanner; the keypad's own refusals are added to
    it for the whole day, whatever supplies come, and a restart keeps them (ADR 0116)."""
    book = book_on(store, clock)
    book.take(supply([ALICE, BOB], code_failures=DAY_FREE_FAILURES - 4))
    clock.advance(200)  # cut off
    for i in range(3):
        book.decide_code(f"{i:08d}")
    clock.advance(30)
    book.take(supply([ALICE, BOB], issued_at=T0 + timedelta(seconds=230), code_failures=36))
    store.close()
    again_store = BridgeStore(tmp_path / "bridge.sqlite3")
    try:
        again = book_on(again_store, clock)  # restarted: a supply brings the verifiers back
        again.take(supply([ALICE, BOB], issued_at=T0 + timedelta(seconds=260), code_failures=36))
        wrong = again.decide_code("00000009")  # 36 + 3 + this one: the day's budget spent
        assert isinstance(wrong, Refused) and wrong.error == "invalid_code"
        locked = again.decide_code(BOB.code)
        assert isinstance(locked, Refused) and locked.error == "locked_out"
    finally:
        again_store.close()


def rules(*, typos: int, day: int, first_s: float = 10.0, spacing_s: float = 900.0) -> CodeRules:
    """A site's throttling (real seconds): `typos` free per 10 minutes, `day` free a day."""
    return CodeRules(
        source=CodeBackoff(window_s=600, free=typos, first_delay_s=first_s, max_delay_s=300),
        kiosk=CodeBackoff(window_s=86400, free=day, first_delay_s=spacing_s, max_delay_s=spacing_s),
    )


def test_the_keypad_applies_the_rules_the_service_sends(
    store: BridgeStore, clock: Clock, tmp_path: Path
) -> None:
    """A site configured stricter or looser than ADR 0039's defaults: its keypad, cut off,
    throttles as its screen does, by the rules each supply carries (ADR 0119)."""
    book = book_on(store, clock)
    book.take(supply([ALICE], code_failures=3, rules=rules(typos=2, day=6)))
    for i in range(2):
        assert book.decide_code(f"{i:08d}") == Refused(
            "invalid_code", "this code does not open anything here"
        )
    locked = book.decide_code(ALICE.code)  # two typos free here, not five
    assert isinstance(locked, Refused) and locked.error == "locked_out"
    assert locked.retry_after_s == pytest.approx(10.0)  # the site's first wait
    clock.advance(10.01)
    book.decide_code("00000003")  # 3 of its own and 3 at the screen: the site's day is spent
    locked = book.decide_code(ALICE.code)
    assert isinstance(locked, Refused) and locked.retry_after_s == pytest.approx(900.0)
    # Looser: ten typos free, where the defaults would have locked the keypad after five.
    other = BridgeStore(tmp_path / "other.sqlite3")
    try:
        loose = book_on(other, clock)
        loose.take(supply([BOB], rules=rules(typos=10, day=100)))
        for i in range(FREE_FAILURES + 4):
            wrong = loose.decide_code(f"{i:08d}")
            assert isinstance(wrong, Refused) and wrong.error == "invalid_code", i
        assert loose.decide_code(BOB.code) == Opened("ord-bob", 5, "code")
    finally:
        other.close()


def test_a_restart_keeps_as_many_refusals_as_the_site_s_day_allows(
    store: BridgeStore, clock: Clock, tmp_path: Path
) -> None:
    """A day budget larger than the refusals kept by default: restarts, each followed by a
    supply, still remember the day's, so they give no free tries back (ADR 0119)."""
    site = rules(typos=3, day=93, first_s=1.0, spacing_s=60.0)
    book = book_on(store, clock)
    book.take(supply([ALICE], rules=site))
    refused = 0
    while refused < 90:  # the typos' doubling waited out between them
        wrong = book.decide_code(f"{refused:08d}")
        assert isinstance(wrong, Refused)
        if wrong.error == "locked_out":
            assert wrong.retry_after_s is not None
            clock.advance(wrong.retry_after_s + 0.01)
        else:
            refused += 1
    for _restart in range(2):
        store.close()
        store = BridgeStore(tmp_path / "bridge.sqlite3")
        book = book_on(store, clock)
        clock.advance(1.0)
        book.take(supply([ALICE], issued_at=clock.wall, rules=site))
    try:
        clock.advance(601.0)  # the typos' window is over; the day's is not
        for i in range(2):
            wrong = book.decide_code(f"{i:08d}")
            assert isinstance(wrong, Refused) and wrong.error == "invalid_code", i
            clock.advance(1.01)
        book.decide_code("00000099")  # the day's 93rd
        locked = book.decide_code(ALICE.code)
        assert isinstance(locked, Refused) and locked.retry_after_s == pytest.approx(60.0)
    finally:
        store.close()


def test_an_order_past_its_deadline_or_a_frozen_site_opens_nothing(
    store: BridgeStore, clock: Clock
) -> None:
    book = book_on(store, clock)
    book.take(supply([ALICE, BOB], deadlines={"ord-alice": T0 + timedelta(minutes=5)}))
    clock.advance(301)
    late = book.decide_token(ALICE.token)
    assert isinstance(late, Refused) and late.error == "code_expired"
    assert isinstance(book.decide_token(BOB.token), Opened)
    book.take(supply([ALICE, BOB], issued_at=T0 + timedelta(minutes=6), frozen=True))
    frozen = book.decide_code(BOB.code)
    assert isinstance(frozen, Refused) and frozen.error == "kill_switch_engaged"


def test_a_use_here_survives_a_supply_that_has_not_heard_of_it(
    store: BridgeStore, clock: Clock
) -> None:
    book = book_on(store, clock)
    book.take(supply([ALICE]))
    assert isinstance(book.decide_token(ALICE.token), Opened)
    # The next supply was made before the service got the offline_pickup event.
    book.take(supply([ALICE], issued_at=T0 + timedelta(seconds=30)))
    refused = book.decide_token(ALICE.token)
    assert isinstance(refused, Refused) and refused.error == "code_used"
    # The service had heard and says used: still used. Then the order is gone: gone here too.
    book.take(supply([ALICE], issued_at=T0 + timedelta(seconds=60), used=frozenset({"ord-alice"})))
    assert isinstance(book.decide_token(ALICE.token), Refused)
    book.take(supply([], issued_at=T0 + timedelta(seconds=90)))
    gone = book.decide_token(ALICE.token)
    assert isinstance(gone, Refused) and gone.error == "invalid_code"


def test_an_older_supply_than_the_last_is_ignored(store: BridgeStore, clock: Clock) -> None:
    book = book_on(store, clock)
    assert book.take(supply([ALICE], issued_at=T0 + timedelta(seconds=30)))
    # Delivered late, made before the one above, when Bob's order was still ready.
    assert not book.take(supply([ALICE, BOB], issued_at=T0))
    late = book.decide_token(BOB.token)
    assert isinstance(late, Refused) and late.error == "invalid_code"


def test_an_older_supply_still_says_the_service_is_there(store: BridgeStore, clock: Clock) -> None:
    """A replica that has just taken the kiosk stamps its supplies by a clock behind the last
    sender's: they change no order, but the kiosk must not decide alone while connected."""
    book = book_on(store, clock)
    assert book.take(supply([ALICE], issued_at=T0 + timedelta(minutes=5)))
    silence = MISSED_SUPPLIES * 30.0 + SILENCE_MARGIN_S
    for n in range(1, 4):  # the new holder's supplies, every refresh, by its slow clock
        clock.advance(silence - 1)
        assert not book.take(supply([ALICE, BOB], issued_at=T0 + timedelta(seconds=30 * n)))
        assert not book.cut_off(connected=True)
    assert book.lists_token(ALICE.token) and not book.lists_token(BOB.token)


def test_supplies_sent_under_leases_are_ordered_by_the_lease_not_the_clocks(
    store: BridgeStore, clock: Clock
) -> None:
    """Replica A held the kiosk at epoch 3; B took it over at epoch 4 with a clock a minute
    behind A's. B's supplies are the newer whatever their stamps say, and a late one of A's
    (sent before it noticed the loss, by its fast clock) changes nothing (ADR 0115)."""
    book = book_on(store, clock)
    assert book.take(supply([ALICE, BOB], issued_at=T0 + timedelta(minutes=1), lease=(3, 7)))
    # B's first supply: Bob's order was collected meanwhile; stamped earlier by B's slow clock.
    clock.advance(1)
    assert book.take(supply([ALICE], issued_at=T0 + timedelta(seconds=2), lease=(4, 1)))
    assert not book.lists_token(BOB.token)
    # A's last supply, delivered late, stamped later by its fast clock: Bob's order again.
    clock.advance(1)
    assert not book.take(supply([ALICE, BOB], issued_at=T0 + timedelta(minutes=2), lease=(3, 8)))
    assert not book.lists_token(BOB.token)
    # One sender's supplies within its epoch: by its own count, not by its clock (set back).
    clock.advance(30)
    assert book.take(supply([ALICE], issued_at=T0, lease=(4, 2)))
    assert not book.take(supply([ALICE, BOB], issued_at=T0 + timedelta(minutes=3), lease=(4, 1)))
    assert not book.lists_token(BOB.token)
    # The epochs gone back (the database restored from a backup): lower ones are refused while
    # the holder of the larger one could still be supplying, then taken, whatever the clocks.
    clock.advance(EPOCHS_WENT_BACK_S - 1)
    assert not book.take(supply([ALICE, BOB], issued_at=T0 + timedelta(minutes=4), lease=(1, 1)))
    clock.advance(2)
    restored = T0 - timedelta(minutes=5)  # and by a clock behind every other
    assert book.take(supply([ALICE, BOB], issued_at=restored, lease=(1, 2)))
    assert book.lists_token(BOB.token)
    # A sender without a lease (a service without kiosk leases) is ordered by its clock.
    assert not book.take(supply([ALICE], issued_at=restored - timedelta(seconds=1)))
    assert book.take(supply([ALICE], issued_at=restored + timedelta(seconds=1)))
    assert not book.lists_token(BOB.token)
    with pytest.raises(ValidationError, match="both its lease's epoch and its seq"):
        OfflineSupply.model_validate({**supply([ALICE]).model_dump(mode="json"), "epoch": 4})


def test_a_supply_that_switches_offline_pickups_off_leaves_nothing_to_decide_alone(
    store: BridgeStore, clock: Clock, tmp_path: Path
) -> None:
    """Offline pickups switched off at the service: a bridge supplied before forgets its list,
    on disk too, and does not take the silence that follows for being cut off."""
    book = book_on(store, clock)
    book.take(supply([ALICE], frozen=False))
    off = OfflineSupply(
        supply_id="off", issued_at=T0 + timedelta(seconds=1), refresh_s=0, code_key="A" * 43
    )
    assert off.switched_off and book.take(off)
    clock.advance(3600)
    assert not book.cut_off(connected=True) and not book.cut_off(connected=False)
    assert book.ready == 0 and not book.knows_codes and not book.lists_token(ALICE.token)
    store.close()
    again_store = BridgeStore(tmp_path / "bridge.sqlite3")
    try:  # restarted: still nothing to decide on
        again = book_on(again_store, clock)
        assert not again.cut_off(connected=False) and again.ready == 0
        # Switched on again: the next supply with a period is taken as ever.
        assert again.take(supply([BOB], issued_at=T0 + timedelta(seconds=2)))
        assert again.cut_off(connected=False) and again.lists_token(BOB.token)
    finally:
        again_store.close()
    with pytest.raises(ValidationError, match="lists no order"):
        OfflineSupply.model_validate(
            {**off.model_dump(mode="json"), "orders": [supply([ALICE]).orders[0].model_dump()]}
        )


def test_after_a_restart_qr_still_opens_but_codes_wait_for_the_service(
    store: BridgeStore, clock: Clock, tmp_path: Path
) -> None:
    book = book_on(store, clock)
    book.take(supply([ALICE, BOB]))
    assert isinstance(book.decide_token(BOB.token), Opened)
    store.close()

    again_store = BridgeStore(tmp_path / "bridge.sqlite3")
    try:
        again = book_on(again_store, clock)
        assert again.cut_off(connected=False)  # supplied before: decides alone
        assert not again.knows_codes
        assert again.decide_token(ALICE.token) == Opened("ord-alice", 3, "qr")
        used = again.decide_token(BOB.token)  # the use before the restart was kept on disk
        assert isinstance(used, Refused) and used.error == "code_used"
        no_codes = again.decide_code(ALICE.code)
        assert isinstance(no_codes, Refused) and no_codes.error == "offline_codes_unavailable"
    finally:
        again_store.close()


def test_after_a_restart_with_its_clock_set_back_the_kiosk_opens_nothing_alone(
    store: BridgeStore, clock: Clock, tmp_path: Path
) -> None:
    """A PC that loses power with the network loses its clock too (a flat battery): its
    monotonic deadlines are gone with the restart, and its wall clock is behind a time it had
    seen pass, so no deadline can be judged: nothing opens alone until a supply comes."""
    book = book_on(store, clock)
    clock.advance(20 * 60)
    seen = T0 + timedelta(minutes=20)  # the last supply's time
    book.take(supply([ALICE, BOB], issued_at=seen, deadlines={ALICE.order_id: seen}))
    store.close()

    again_store = BridgeStore(tmp_path / "bridge.sqlite3")
    try:
        clock.advance(3600)  # an hour later, ALICE's deadline long past...
        clock.wall = T0 - timedelta(days=400)  # ...but the clock restarts at its BIOS date
        again = book_on(again_store, clock)
        for order in (ALICE, BOB):
            refused = again.decide_token(order.token)
            assert isinstance(refused, Refused) and refused.error == "offline_clock_unreliable"
        clock.wall = seen - timedelta(seconds=60)  # behind by a PC's usual skew: trusted
        assert again.decide_token(BOB.token) == Opened("ord-bob", 5, "qr")
        clock.wall = seen + timedelta(hours=1)  # right again: ALICE's deadline is judged
        refused = again.decide_token(ALICE.token)
        assert isinstance(refused, Refused) and refused.error == "code_expired"
    finally:
        again_store.close()


def test_a_copied_disk_holds_no_token_code_or_code_verifier(
    store: BridgeStore, clock: Clock, tmp_path: Path
) -> None:
    key = secrets.token_bytes(32)
    book = book_on(store, clock)
    book.take(supply([ALICE, BOB], key=key))
    book.decide_token(ALICE.token)
    store.close()
    disk = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert token_hash(ALICE.token).encode() in disk  # it is there: the check below can fail
    for secret in (
        ALICE.token,
        BOB.token,
        ALICE.code,
        BOB.code,
        code_mac(key, ALICE.code),
        code_mac(key, BOB.code),
        encode_key(key),
    ):
        assert secret.encode() not in disk, secret
    assert key not in disk


def test_when_the_kiosk_decides_alone(store: BridgeStore, clock: Clock) -> None:
    book = book_on(store, clock)
    # Never supplied (a service without offline pickups): scans go to the service as ever.
    assert not book.cut_off(connected=False)
    book.take(supply([ALICE]))
    assert not book.cut_off(connected=True)
    assert book.cut_off(connected=False)  # the broker is gone
    silence = MISSED_SUPPLIES * 30.0 + SILENCE_MARGIN_S
    clock.advance(silence - 0.5)
    assert not book.cut_off(connected=True)
    clock.advance(1.0)
    assert book.cut_off(connected=True)  # the broker is up, the service is not
    book.take(supply([ALICE], issued_at=T0 + timedelta(seconds=silence)))
    assert not book.cut_off(connected=True)


def test_a_wall_clock_running_behind_does_not_stretch_a_deadline(
    store: BridgeStore, clock: Clock
) -> None:
    book = book_on(store, clock)
    book.take(supply([ALICE], deadlines={"ord-alice": T0 + timedelta(minutes=5)}))
    clock.mono += 301  # five minutes pass, but the PC's wall clock stands still
    late = book.decide_token(ALICE.token)
    assert isinstance(late, Refused) and late.error == "code_expired"


def test_a_door_opened_since_the_list_makes_its_order_unusable_offline(
    store: BridgeStore, clock: Clock, tmp_path: Path
) -> None:
    book = book_on(store, clock)
    book.take(supply([ALICE, BOB]))
    # Collected online (or the compartment given to another order) and the next supply has
    # not come: the list is out of date for compartment 3 only.
    book.door_opened(ALICE.compartment)
    stale = book.decide_token(ALICE.token)
    assert isinstance(stale, Refused) and stale.error == "opened_since_offline"
    # A supply made before the service heard of the opening lists it again: still refused.
    book.take(supply([ALICE, BOB], issued_at=T0 + timedelta(seconds=30)))
    assert isinstance(book.decide_code(ALICE.code), Refused)
    assert book.decide_token(BOB.token) == Opened("ord-bob", 5, "qr")
    # Kept on disk: a restart does not forget it.
    store.close()
    again_store = BridgeStore(tmp_path / "bridge.sqlite3")
    try:
        again = book_on(again_store, clock)
        refused = again.decide_token(ALICE.token)
        assert isinstance(refused, Refused) and refused.error == "opened_since_offline"
    finally:
        again_store.close()


def test_a_fresh_command_counts_as_hearing_from_the_service(
    store: BridgeStore, clock: Clock
) -> None:
    book = book_on(store, clock)
    book.take(supply([ALICE]))
    clock.advance(MISSED_SUPPLIES * 30.0 + SILENCE_MARGIN_S - 1)
    book.heard()  # the service sent a command: it is there, supplies or not
    clock.advance(2)
    assert not book.cut_off(connected=True)
    assert book.lists_token(ALICE.token) and not book.lists_token(BOB.token)


def test_refusals_kept_on_a_damaged_or_set_back_disk_never_stop_the_bridge(
    store: BridgeStore, clock: Clock
) -> None:
    """The keypad's refusals read back at a start (ADR 0116): an unreadable one (not a time, or
    one without its zone) is left out instead of stopping the bridge; one in the future (the
    clock set back since) counts from now, and is kept so."""
    ahead = T0 + timedelta(hours=2)
    earlier = T0 - timedelta(minutes=1)
    kept = f"junk,2026-12-04T11:00:00,{ahead.isoformat()},{earlier.isoformat()},"
    store.set_offline_meta("code_failures", kept)
    book = book_on(store, clock)
    book.take(supply([ALICE], code_failures=DAY_FREE_FAILURES - 2))  # with the two: spent
    locked = book.decide_code(ALICE.code)
    assert isinstance(locked, Refused) and locked.error == "locked_out"
    assert locked.retry_after_s == pytest.approx(MAX_DELAY_S)  # from the one counted now
    assert store.offline_meta()["code_failures"] == f"{earlier.isoformat()},{T0.isoformat()}"


def test_faulted_compartments_kept_on_a_damaged_disk_never_stop_the_bridge(
    store: BridgeStore, clock: Clock
) -> None:
    """An unreadable compartment is left out; the readable ones still hold their food."""
    store.set_offline_meta("faulted", f"junk,3,-1,0,256,\u00b2,{'9' * 5000},")
    book = book_on(store, clock)
    book.take(supply([ALICE, BOB]))
    held = book.decide_token(ALICE.token)
    assert isinstance(held, Refused) and held.error == "compartment_fault"
    assert book.decide_token(BOB.token) == Opened("ord-bob", 5, "qr")
    assert store.offline_meta()["faulted"] == "3"


@pytest.mark.parametrize(
    "key, value",
    [("refresh_s", "junk"), ("refresh_s", "nan"), ("wall_floor", "2026-12-04T11:00:00")],
)
def test_a_damaged_offline_list_on_disk_decides_nothing_alone_until_a_supply(
    store: BridgeStore, clock: Clock, key: str, value: str
) -> None:
    """The period or the clock's floor unreadable at a start (a damaged file): the bridge starts,
    decides nothing alone (fail closed) and takes the next supply as ever."""
    book = book_on(store, clock)
    assert book.take(supply([ALICE]))
    store.set_offline_meta(key, value)
    again = book_on(store, clock)
    assert not again.cut_off(connected=False)
    assert again.take(supply([ALICE], issued_at=T0 + timedelta(seconds=1)))
    assert again.cut_off(connected=False)
    assert again.decide_token(ALICE.token) == Opened("ord-alice", 3, "qr")
