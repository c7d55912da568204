"""The pure checks of kiosk reports and the reconciliation rules (no I/O, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from locker_service.compartments.lifecycle import CompartmentState
from locker_service.kiosks import checks
from locker_service.kiosks.checks import BoardView, Mismatch, OrderFacts, Repair

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- a cycle ends no earlier than its time ---------------------------------------------------


def test_a_cycle_reported_done_one_second_in_is_impossible() -> None:
    verdict = checks.cycle_completion(at(1), at(0), at(1800), tolerance_s=5)
    assert verdict is not None
    assert "1.0 s after it started" in verdict.claim
    assert "1800.0 s" in verdict.known and "tolerance 5.0 s" in verdict.known


def test_a_cycle_may_end_within_the_tolerance_of_its_end() -> None:
    assert checks.cycle_completion(at(1795), at(0), at(1800), tolerance_s=5) is None
    assert checks.cycle_completion(at(1794.9), at(0), at(1800), tolerance_s=5) is not None
    assert checks.cycle_completion(at(4000), at(0), at(1800), tolerance_s=5) is None


def test_under_a_time_scale_the_tolerance_is_at_least_a_board_step() -> None:
    # a 15 s cycle (30 minutes at time scale 120): the scaled 5 s are 0.04 s, less than a step
    assert checks.cycle_completion(at(14.8), at(0), at(15), tolerance_s=0.04) is None
    assert checks.cycle_completion(at(1), at(0), at(15), tolerance_s=0.04) is not None


def test_no_running_cycle_cannot_end() -> None:
    verdict = checks.cycle_completion(at(1), None, None, tolerance_s=5)
    assert verdict is not None and "no cycle" in verdict.known


@given(
    elapsed_s=st.floats(min_value=0, max_value=7200),
    duration_s=st.floats(min_value=1, max_value=3600),
    tolerance_s=st.floats(min_value=0, max_value=60),
)
def test_completion_is_believed_exactly_from_end_minus_tolerance(
    elapsed_s: float, duration_s: float, tolerance_s: float
) -> None:
    verdict = checks.cycle_completion(at(elapsed_s), at(0), at(duration_s), tolerance_s=tolerance_s)
    # The tolerance is never less than the floor (a board step under a high time scale).
    floor_s = max(tolerance_s, checks.CYCLE_END_FLOOR_S)
    earliest = at(duration_s) - timedelta(seconds=floor_s)
    assert (verdict is None) == (at(elapsed_s) >= earliest)


# -- food in and out -------------------------------------------------------------------------


def test_a_later_snapshot_that_says_otherwise_contradicts_the_report() -> None:
    board = BoardView(door_open=False, occupied=True, at=at(10))
    assert checks.emptied(at(5), board) is not None  # the board saw food after the "empty"
    assert checks.emptied(at(15), board) is None  # an older snapshot is no evidence
    assert checks.deposit(at(5), board) is None  # it agrees
    empty_later = BoardView(door_open=False, occupied=False, at=at(10))
    assert checks.deposit(at(5), empty_later) is not None
    assert checks.deposit(at(5), BoardView(False, False, None)) is None  # no snapshot yet


def test_food_taken_needs_a_door_that_opened_for_it() -> None:
    board = BoardView(door_open=False, occupied=True, at=at(0))
    verdict = checks.removal(at(60), board, None, who="order R-1")
    assert verdict is not None and "no door opening for order R-1" in verdict.known
    # opened at 30 s, the door shut with nothing inside at 60 s
    assert checks.removal(at(60), board, at(30), who="order R-1") is None


def test_food_taken_after_the_door_shut_on_it_again_is_impossible() -> None:
    # opened at 30 s, the board saw the door shut on the food at 40 s: latched again
    shut_on_food = BoardView(door_open=False, occupied=True, at=at(40))
    verdict = checks.removal(at(60), shut_on_food, at(30), who="order R-1")
    assert verdict is not None and "shut on the food" in verdict.known
    # the door still open at the last snapshot: the closing says how it ended
    still_open = BoardView(door_open=True, occupied=True, at=at(40))
    assert checks.removal(at(60), still_open, at(30), who="order R-1") is None


def test_an_impossible_report_says_what_was_claimed_and_what_is_known() -> None:
    verdict = checks.Impossible("the food was taken out", "no door opening is on record")
    assert verdict.message("door_closed") == (
        "reported door_closed (the food was taken out), but no door opening is on record: "
        "nothing was changed"
    )


# -- reconciliation --------------------------------------------------------------------------

S = CompartmentState


@pytest.mark.parametrize(
    ("state", "door_open", "occupied", "expected"),
    [
        (S.RESERVED, False, True, Mismatch.FOOD_IN_RESERVED),
        (S.RESERVED, False, False, None),  # unlocked, the courier not there yet
        (S.RESERVED, True, True, None),  # the door is open: its closing decides
        (S.AWAITING_PICKUP, False, False, Mismatch.FOOD_GONE),
        (S.AWAITING_PICKUP, False, True, None),
        (S.DISINFECTING, False, False, Mismatch.FOOD_GONE),
        (S.OCCUPIED, False, False, Mismatch.FOOD_GONE),
        (S.AVAILABLE, False, True, Mismatch.FOOD_IN_FREE),
        (S.AVAILABLE, False, False, None),
        (S.CLEANING, False, False, None),
        (S.OUT_OF_SERVICE, False, True, None),
    ],
)
def test_which_snapshots_disagree_with_the_state(
    state: CompartmentState, door_open: bool, occupied: bool, expected: Mismatch | None
) -> None:
    assert checks.look_at_snapshot(state, door_open, occupied) is expected


def test_food_deposited_while_away_is_deposited() -> None:
    facts = OrderFacts("assigned", since=at(0), unlocked_at=None)
    assert checks.reconcile(Mismatch.FOOD_IN_RESERVED, at(20), facts) is Repair.DEPOSIT
    # a snapshot from before the drop-off's unlock cannot show the courier's food
    assert checks.reconcile(Mismatch.FOOD_IN_RESERVED, at(-60), facts) is Repair.WAIT
    # food behind a reserved door with no drop-off waiting for it
    assert (
        checks.reconcile(Mismatch.FOOD_IN_RESERVED, at(20), OrderFacts(None, None, None))
        is Repair.ALERT
    )


def test_food_taken_while_away_is_picked_up_only_with_an_unlock_on_record() -> None:
    unlocked = OrderFacts("ready", since=at(0), unlocked_at=at(100))
    assert checks.reconcile(Mismatch.FOOD_GONE, at(130), unlocked) is Repair.PICK_UP
    assert checks.reconcile(Mismatch.FOOD_GONE, at(30), unlocked) is Repair.WAIT
    never = OrderFacts("ready", since=at(0), unlocked_at=None)
    assert checks.reconcile(Mismatch.FOOD_GONE, at(130), never) is Repair.ALERT


def test_food_gone_during_the_hold_or_after_expiry_follows_an_opening_on_record() -> None:
    for state in ("deposited", "disinfecting", "expired"):
        facts = OrderFacts(state, since=at(0), unlocked_at=at(50))
        assert checks.reconcile(Mismatch.FOOD_GONE, at(60), facts) is Repair.EMPTIED
        unopened = OrderFacts(state, since=at(0), unlocked_at=None)
        assert checks.reconcile(Mismatch.FOOD_GONE, at(60), unopened) is Repair.ALERT


def test_food_in_a_free_compartment_is_for_an_operator() -> None:
    facts = OrderFacts(None, None, None)
    assert checks.reconcile(Mismatch.FOOD_IN_FREE, at(0), facts) is Repair.ALERT


def test_food_in_a_compartment_whose_drop_off_the_door_timer_released_is_that_drop_off() -> None:
    released = OrderFacts("created", since=at(0), unlocked_at=None)  # unlocked at 0 s
    assert checks.reconcile(Mismatch.FOOD_IN_FREE, at(20), released) is Repair.REDEPOSIT
    # a snapshot older than that drop-off's unlock shows someone else's things
    assert checks.reconcile(Mismatch.FOOD_IN_FREE, at(-60), released) is Repair.ALERT
