"""What a kiosk reports, checked against what the service knows (pure, no I/O; ADR 0037).

A kiosk's report is a claim, not a fact: anyone holding the kiosk's broker credentials can
publish on its topics, and a confused bridge can replay the wrong thing. Before a report moves an
order, it is held against three things the kiosk cannot forge after the fact: the service's own
clock and the cycle it started (a cycle cannot end before its time), the service's own record of
the openings it commanded (food leaves a locked compartment only through a door the service
opened for that order), and the board's last snapshot (a snapshot taken after the report that
says otherwise contradicts it). A report that fails is `Impossible`: the caller raises an alert
and changes nothing.

Reconciliation (`look_at_snapshot`, `reconcile`) is the same knowledge used the other way round:
after a gap in events, the board's retained snapshot says where the food is, and an order whose
state disagrees is moved where the board and the service's own records agree it must be.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from locker_service.compartments.lifecycle import KIOSK_CLOCK_SKEW, CompartmentState
from locker_service.orders.lifecycle import OrderState

# The same allowance as for explaining a door opening.
CLOCK_SKEW = KIOSK_CLOCK_SKEW
# Wall-clock floor of the cycle-end tolerance: a board counts its cycle in steps (the simulator
# steps 0.1 s of wall clock at any time scale), so a cycle may end up to one step before its
# exact time; under a large time scale the scaled tolerance alone would be shorter than a step.
CYCLE_END_FLOOR_S = 0.25


@dataclass(frozen=True, slots=True)
class Impossible:
    """A report the service's knowledge rules out: what was claimed, and what is known."""

    claim: str
    known: str

    def message(self, report: str) -> str:
        return f"reported {report} ({self.claim}), but {self.known}: nothing was changed"


@dataclass(frozen=True, slots=True)
class BoardView:
    """The compartment as the board's last snapshot showed it, before the report at hand."""

    door_open: bool
    occupied: bool
    at: datetime | None  # the snapshot's stamp (kiosk clock); None: no snapshot yet


def _s(value: float) -> str:
    return f"{value:.1f} s"


def _hms(at: datetime) -> str:
    return at.strftime("%H:%M:%S.%f")[:-3]


# -- reports ---------------------------------------------------------------------------------


def cycle_completion(
    now: datetime,
    started_at: datetime | None,
    ends_at: datetime | None,
    *,
    tolerance_s: float,
) -> Impossible | None:
    """A cycle may be reported complete from its own end time minus `tolerance_s` (real s;
    never less than `CYCLE_END_FLOOR_S`).

    The service records the cycle before it commands it, so the board's cycle starts later than
    `started_at` and ends later than `ends_at`; only the board's timer running fast or the host
    clock being stepped can make a true report early, and the tolerance covers those.
    """
    if started_at is None or ends_at is None:
        return Impossible("a cycle ended", "no cycle is running in it")
    tolerance_s = max(tolerance_s, CYCLE_END_FLOOR_S)
    earliest = ends_at - timedelta(seconds=tolerance_s)
    if now >= earliest:
        return None
    ran_s = (now - started_at).total_seconds()
    runs_s = (ends_at - started_at).total_seconds()
    return Impossible(
        f"the cycle ended {_s(ran_s)} after it started",
        f"the cycle runs {_s(runs_s)} (until {ends_at:%H:%M:%S} UTC, tolerance {_s(tolerance_s)})",
    )


def contradicted(
    claimed_occupied: bool, report_at: datetime, board: BoardView
) -> Impossible | None:
    """A snapshot taken after the report that says the opposite about the food rules it out."""
    if board.at is None or board.at <= report_at or board.occupied == claimed_occupied:
        return None
    said = "food inside" if claimed_occupied else "nothing inside"
    shows = "food inside" if board.occupied else "nothing inside"
    return Impossible(
        f"{said} at {_hms(report_at)}",
        f"the board's snapshot of {_hms(board.at)} shows {shows}",
    )


def deposit(report_at: datetime, board: BoardView) -> Impossible | None:
    """A deposit needs the occupancy sensor to say food is inside (the report's own reading,
    not contradicted by a later snapshot)."""
    return contradicted(True, report_at, board)


def emptied(report_at: datetime, board: BoardView) -> Impossible | None:
    """A door shut on an empty compartment: not contradicted by a later snapshot."""
    return contradicted(False, report_at, board)


def removal(
    report_at: datetime, board: BoardView, opened_at: datetime | None, *, who: str
) -> Impossible | None:
    """Food taken out needs a door that opened for it (`opened_at`: when the door the service
    commanded opened, None if it never did) and the board saying empty.

    A snapshot after that opening showing the door shut with the food inside means the door
    shut on the food again; the lock latches as it shuts, so the food cannot have left since
    without another opening.
    """
    if opened_at is None:
        return Impossible("the food was taken out", f"no door opening for {who} is on record")
    if (
        board.at is not None
        and board.at >= opened_at
        and not board.door_open
        and board.occupied
        and board.at < report_at
    ):
        return Impossible(
            "the food was taken out",
            f"the board showed the door shut on the food at {_hms(board.at)} after its last "
            "opening, and it has not opened since",
        )
    return emptied(report_at, board)


# -- reconciliation --------------------------------------------------------------------------


class Mismatch(StrEnum):
    """What a snapshot shows that the compartment's state does not expect."""

    FOOD_IN_RESERVED = "food_in_reserved"  # food behind a shut door of a drop-off
    FOOD_GONE = "food_gone"  # an empty compartment that should hold food
    FOOD_IN_FREE = "food_in_free"  # food in a compartment the service thinks is free


_HOLDING = frozenset(
    {CompartmentState.OCCUPIED, CompartmentState.DISINFECTING, CompartmentState.AWAITING_PICKUP}
)


def look_at_snapshot(state: str, door_open: bool, occupied: bool) -> Mismatch | None:
    """Does this snapshot disagree with the compartment's state? Decided from the row alone, so
    the snapshots that agree (nearly all of them) cost no query."""
    if door_open:
        return None  # someone is at the door: its closing will say what happened
    if state == CompartmentState.RESERVED and occupied:
        return Mismatch.FOOD_IN_RESERVED
    if state in _HOLDING and not occupied:
        return Mismatch.FOOD_GONE
    if state == CompartmentState.AVAILABLE and occupied:
        return Mismatch.FOOD_IN_FREE
    return None


class Repair(StrEnum):
    DEPOSIT = "deposit"
    REDEPOSIT = "redeposit"  # a drop-off the door timer gave up on while its events were lost
    PICK_UP = "pick_up"
    EMPTIED = "emptied"  # taken out during the hold through an opening on record
    ALERT = "alert"  # the snapshot cannot be explained: tell an operator, change nothing
    WAIT = "wait"  # the snapshot predates what it would explain: a newer one will come


@dataclass(frozen=True, slots=True)
class OrderFacts:
    """What the service's records say about the order in a mismatched compartment."""

    state: str | None  # None: no order in the compartment (an expired one still counts)
    # assigned_at (drop-off); ready_at, deposited_at or closed_at (holding); for food in a free
    # compartment, the unlock of a drop-off there that its door timer released.
    since: datetime | None
    unlocked_at: datetime | None  # the latest opening commanded for it since `since`


def reconcile(mismatch: Mismatch, snapshot_at: datetime, order: OrderFacts) -> Repair:
    """Where the order must be, given a snapshot that disagrees with its compartment.

    Food deposited while the service was away: snapshot occupied, door shut, order assigned ->
    deposit; if the drop-off's door timer ran first (a restart runs due timers before the
    broker has handed over what the kiosk said meanwhile) and released the order, the food in
    the free compartment is that drop-off's -> deposit it again. Food taken while it was away:
    snapshot empty, door shut, order ready with an unlock for it on record -> pick up. Anything
    else the snapshot cannot explain -> alert.
    """
    if mismatch is Mismatch.FOOD_IN_RESERVED:
        if order.state != OrderState.ASSIGNED or order.since is None:
            return Repair.ALERT
        # A snapshot older than the drop-off's unlock cannot show the courier's food.
        return Repair.DEPOSIT if snapshot_at >= order.since - CLOCK_SKEW else Repair.WAIT
    if mismatch is Mismatch.FOOD_GONE:
        if order.unlocked_at is None:
            return Repair.ALERT
        if snapshot_at < order.unlocked_at - CLOCK_SKEW:
            return Repair.WAIT
        if order.state == OrderState.READY:
            return Repair.PICK_UP
        if order.state in (OrderState.DEPOSITED, OrderState.DISINFECTING, OrderState.EXPIRED):
            return Repair.EMPTIED  # as the door's closing would have: the order's story ends
        return Repair.ALERT
    if order.state == OrderState.CREATED and order.since is not None:
        return Repair.REDEPOSIT if snapshot_at >= order.since - CLOCK_SKEW else Repair.ALERT
    return Repair.ALERT
