"""From successive STATUS answers to events and snapshot decisions. Pure: no I/O, no clocks.

The board latches door openings and closings in wrapping 8-bit counters, so the tracker derives
door events from counter differences: a door opened and shut between two polls still yields
both events, in the order they must have happened. Everything else (occupancy, disinfection
cycle, faults) is derived from the change of a flag between two observations.

Door and item events of one poll come in the order they happened: an item can only go in or
out through an open door, so `item_placed` / `item_removed` sits inside the first time the door
was open (`door_opened, item_placed, door_closed`, never `door_opened, door_closed,
item_placed`). Every `door_closed` carries `data.occupied`, the occupancy seen at that poll,
which is the occupancy the events before it add up to: a consumer deciding "shut with nothing
inside" never has to guess.

Whether a cycle completed or was aborted is the board's CYCLE_ABORTED flag (ADR 0012).

A compartment snapshot is due when a discrete field changed (door, lock, occupancy, heater
element, UV lamp, cycle, fault, setpoint), when the temperature moved by `TEMP_STEP_C` since the
last snapshot, or when a running cycle's remaining time crossed a whole minute: never per poll.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hardware.protocol import CompartmentStatus, FaultCode
from hardware.protocol.messages import CompartmentFlags

TEMP_STEP_C = 0.5  # a food-holding dashboard cares about half degrees, not sensor noise
REMAINING_STEP_S = 60  # a cycle's countdown is shown in minutes
COUNTER_MODULUS = 256


@dataclass(frozen=True, slots=True)
class CompartmentView:
    """What the bridge knows of one compartment: a STATUS record, plus when it was seen."""

    n: int
    door_open: bool
    lock_released: bool
    occupied: bool
    heater_on: bool
    uv_on: bool
    disinfecting: bool
    cycle_aborted: bool  # the board's word that the last cycle ended early (PROTOCOL.md)
    remaining_s: int
    temp_dc: int | None
    setpoint_dc: int | None
    fault: int
    opens: int
    closes: int
    seen_at: float  # wall-clock seconds
    boot_id: int = 0  # the board boot this was seen in: counters restart with each boot

    @classmethod
    def of(cls, record: CompartmentStatus, seen_at: float, boot_id: int = 0) -> CompartmentView:
        return cls(
            n=record.number,
            door_open=record.door_open,
            lock_released=record.lock_released,
            occupied=record.occupied,
            heater_on=record.heater_on,
            uv_on=record.uv_on,
            disinfecting=record.disinfecting,
            cycle_aborted=bool(record.flags & CompartmentFlags.CYCLE_ABORTED),
            remaining_s=record.disinfect_remaining_s,
            temp_dc=record.temp_dc,
            setpoint_dc=record.setpoint_dc,
            fault=int(record.fault),
            opens=record.door_open_count,
            closes=record.door_close_count,
            seen_at=seen_at,
            boot_id=boot_id,
        )

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompartmentView:
        values = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        values.setdefault("cycle_aborted", False)
        return cls(**values)

    @property
    def temp_c(self) -> float | None:
        return None if self.temp_dc is None else self.temp_dc / 10

    @property
    def setpoint_c(self) -> float | None:
        return None if self.setpoint_dc is None else self.setpoint_dc / 10

    @property
    def fault_name(self) -> str | None:
        return fault_name(self.fault)

    def discrete(self) -> tuple[object, ...]:
        return (
            self.door_open,
            self.lock_released,
            self.occupied,
            self.heater_on,
            self.uv_on,
            self.disinfecting,
            self.fault,
            self.setpoint_dc,
            self.temp_dc is None,
        )


def holds_food(code: int) -> bool:
    """A latched fault after which the food is not handed out by her code (ADR 0128): any but
    a jammed lock (heater, probe, lamp, or one this version does not know)."""
    return code not in (FaultCode.NONE, FaultCode.LOCK_JAMMED)


def fault_name(code: int) -> str | None:
    try:
        fault = FaultCode(code)
    except ValueError:
        return f"unknown_{code}"
    return None if fault is FaultCode.NONE else fault.name.lower()


@dataclass(frozen=True, slots=True)
class RawEvent:
    """An event before it gets its id and timestamp."""

    type: str
    compartment: int | None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Observation:
    events: list[RawEvent] = field(default_factory=list)
    snapshots: list[CompartmentView] = field(default_factory=list)  # due for publishing
    remember: list[CompartmentView] = field(default_factory=list)  # worth writing to disk


def door_events(prev_open: bool, opens: int, closes: int, now_open: bool) -> list[str]:
    """Door events between two observations, from the latched counter differences.

    Openings and closings alternate, starting from the door's previous state. A flag change
    the counters do not explain (a board that lost its counters) still yields one event.
    """
    events: list[str] = []
    state = prev_open
    while opens or closes:
        if not state and opens:
            events.append("door_opened")
            opens -= 1
            state = True
        elif state and closes:
            events.append("door_closed")
            closes -= 1
            state = False
        elif opens:  # counters out of step with the flag: report what the board counted
            events.append("door_opened")
            opens -= 1
            state = True
        else:
            events.append("door_closed")
            closes -= 1
            state = False
    if state != now_open:
        events.append("door_opened" if now_open else "door_closed")
    return events


def in_physical_order(was_open: bool, door: list[str], item: str | None) -> list[str]:
    """The door events of one poll with the occupancy change (if any) where it can have happened.

    An item passes through an open door, so the change goes into the first stretch of time the
    door was open: at once if it was open at the last poll, else right after the first opening.
    Putting it first makes every later `door_closed` agree with the occupancy seen now. With
    the door shut throughout (a sensor that changed its mind), the change stands alone.
    """
    if item is None:
        return list(door)
    if was_open:
        return [item, *door]
    if "door_opened" in door:
        at = door.index("door_opened") + 1
        return [*door[:at], item, *door[at:]]
    return [*door, item]


class CompartmentTracker:
    """Keeps the last view of every compartment and turns a new STATUS answer into news."""

    def __init__(self) -> None:
        self.boot_id: int | None = None
        self.views: dict[int, CompartmentView] = {}
        self.published: dict[int, CompartmentView] = {}  # as in the last snapshot sent
        self._aborts: dict[int, str] = {}  # compartment -> why the bridge stopped its cycle

    def restore(self, boot_id: int | None, views: dict[int, CompartmentView]) -> None:
        """Start from what a previous run of the bridge saw, so its downtime is reported."""
        self.boot_id = boot_id
        self.views = dict(views)

    def held_by_faults(self) -> frozenset[int]:
        """Compartments whose food is not handed out now: a fault that holds food latched. The
        purchaser was told not to collect it; staff will contact her."""
        return frozenset(
            n
            for n, view in list(self.views.items())  # a copy: the board thread updates it
            if holds_food(view.fault)
        )

    def expect_abort(self, n: int, reason: str) -> None:
        """The bridge itself stopped the cycle of compartment n (abort or override unlock)."""
        self._aborts[n] = reason

    def republish_all(self) -> list[CompartmentView]:
        """Every known compartment, for a fresh broker connection."""
        self.published = dict(self.views)
        return list(self.views.values())

    def observe(self, boot_id: int, records: list[CompartmentStatus], now: float) -> Observation:
        result = Observation()
        if self.boot_id is not None and boot_id != self.boot_id:
            result.events.append(
                RawEvent(
                    "board_rebooted",
                    None,
                    {"boot_id": f"{boot_id:08x}", "previous_boot_id": f"{self.boot_id:08x}"},
                )
            )
        self.boot_id = boot_id
        for record in records:
            view = CompartmentView.of(record, now, boot_id)
            prev = self.views.get(view.n)
            if prev is not None:
                # Per compartment: a paged poll may see some compartments of the new boot
                # only in a later answer, and their counters restarted from zero.
                rebooted = prev.boot_id != view.boot_id
                result.events.extend(self._compare(prev, view, rebooted))
            self.views[view.n] = view
            published = self.published.get(view.n)
            if published is None or _snapshot_due(published, view):
                result.snapshots.append(view)
                self.published[view.n] = view
            if (
                prev is None
                or prev.discrete() != view.discrete()
                or _counters(prev) != _counters(view)
            ):
                result.remember.append(view)
        return result

    def _compare(
        self, prev: CompartmentView, now: CompartmentView, rebooted: bool
    ) -> list[RawEvent]:
        n = now.n
        events: list[RawEvent] = []
        if rebooted:
            # The new boot's counters start afresh: only the flags can be compared.
            opens = closes = 0
        else:
            opens = (now.opens - prev.opens) % COUNTER_MODULUS
            closes = (now.closes - prev.closes) % COUNTER_MODULUS
        door = door_events(prev.door_open, opens, closes, now.door_open)
        item = None
        if now.occupied != prev.occupied:
            item = "item_placed" if now.occupied else "item_removed"
        for kind in in_physical_order(prev.door_open, door, item):
            data = {"occupied": now.occupied} if kind == "door_closed" else {}
            events.append(RawEvent(kind, n, data))
        if prev.fault != now.fault:
            if prev.fault:
                events.append(RawEvent("fault_cleared", n, {"fault": prev.fault_name}))
            if now.fault:
                events.append(RawEvent("fault_raised", n, {"fault": now.fault_name}))
        if now.disinfecting and not prev.disinfecting:
            events.append(RawEvent("disinfection_started", n, {"duration_s": now.remaining_s}))
            self._aborts.pop(n, None)
        elif prev.disinfecting and not now.disinfecting:
            reason = self._abort_reason(prev, now, rebooted, "door_opened" in door)
            if reason is None:
                events.append(RawEvent("disinfection_completed", n))
            else:
                events.append(
                    RawEvent(
                        "disinfection_aborted",
                        n,
                        {"reason": reason, "remaining_s": prev.remaining_s},
                    )
                )
        return events

    def _abort_reason(
        self, prev: CompartmentView, now: CompartmentView, rebooted: bool, door_opened: bool
    ) -> str | None:
        """None when the cycle ran out normally; otherwise why it was stopped.

        The board's CYCLE_ABORTED flag says whether; the reason is the likeliest cause seen.
        """
        commanded = self._aborts.pop(now.n, None)
        if rebooted:
            return "board_rebooted"  # a reboot drops every cycle and the flag with it
        if not now.cycle_aborted:
            return None
        if now.fault:
            return f"fault:{now.fault_name}"
        if commanded is not None:
            return commanded
        if door_opened or now.door_open:
            return "door_opened"
        return "stopped_by_board"


def _counters(view: CompartmentView) -> tuple[int, int]:
    return view.opens, view.closes


def _snapshot_due(published: CompartmentView, now: CompartmentView) -> bool:
    if published.discrete() != now.discrete():
        return True
    if (
        published.temp_dc is not None
        and now.temp_dc is not None
        and abs(now.temp_dc - published.temp_dc) >= TEMP_STEP_C * 10
    ):
        return True
    return now.disinfecting and (
        published.remaining_s // REMAINING_STEP_S != now.remaining_s // REMAINING_STEP_S
    )
