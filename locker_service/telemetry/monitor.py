"""Hot-holding watch over temperature readings: pure code, no I/O, no clock of its own.

Food held hot must stay at or above the floor (60 °C by default). A holding compartment (one
with a setpoint at or above the floor) that reads below the floor for longer than the grace
period raises a `below_floor` finding; one that reads above the ceiling raises `above_ceiling`
at once. Each is raised once and resolved when the temperature is back in range (with a little
hysteresis, so a reading dithering on the line does not raise and resolve every second) or, for
the floor, when the compartment stops holding.

The board's setpoint alone does not say that holding stopped: on a heater or sensor fault the
board drops it while the food is still inside, and that is when the floor matters most. So a
compartment that was holding stays held while the caller, asked by `needs_food_check`, finds
food behind its door (`food_inside`); it stops holding once the food has left.

Time is the readings' own timestamps, so the grace period means the same under test and in
production and replays give the same answers.

A bridge cut off from the service keeps its readings folded into buckets and sends them once it
is back, usually after its live readings have resumed (`observe_kept`). A bucket is judged by
its lowest temperature against the floor and its highest against the ceiling, so a dip while
offline is not averaged away. One older than the compartment's newest reading is judged on a
watch of its own over the kept buckets; what that raises goes to the compartment's watch, whose
next reading back in range resolves it.

The watch of a compartment lives in this process, but what it decides does not depend on it: the
first time a process sees a compartment (after a restart, or on a second replica), the caller hands
in what the database knows with `carry_over` — when the stretch below the floor began and which
alerts are still open — so a restart neither restarts the grace period nor strands an open alert
that nobody would resolve.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

FLOOR_HYSTERESIS_C = 0.5  # the board's sensor resolution is 0.1 °C; half a degree is noise-proof
CEILING_HYSTERESIS_C = 1.0
FOOD_RECHECK_S = 60.0  # reading time between two asks whether a held compartment has food
# A kept bucket starting more than this many widths after the previous one is not its successor:
# the bridge was in touch (or off) in between, so a stretch below the floor starts afresh.
KEPT_GAP_WIDTHS = 1.5

FindingKind = Literal["below_floor", "above_ceiling"]


@dataclass(frozen=True, slots=True)
class Finding:
    kind: FindingKind
    action: Literal["raise", "resolve"]
    kiosk: str
    number: int
    temp_c: float | None
    since: datetime  # when the condition began
    at: datetime  # the reading that decided it
    limit_c: float  # the floor or the ceiling it crossed (the site's own floor)
    kept: bool = False  # decided by a bucket the bridge kept while cut off (its min or max)
    # Decided by readings the kiosk sent again for a replica that had just taken it, which
    # nobody had heard (docs/adr/0098): judged as kept buckets are, since they come late.
    resent: bool = False

    @property
    def dedupe_key(self) -> str:
        return dedupe_key(self.kind, self.kiosk, self.number)


def dedupe_key(kind: FindingKind, kiosk: str, number: int) -> str:
    """The alert key of one kind of finding on one compartment."""
    return f"{kind}:{kiosk}:{number}"


@dataclass(frozen=True, slots=True)
class Carried:
    """A compartment's watch as the database knows it, for a process that has not seen it yet."""

    below_since: datetime | None = None  # first reading of the stretch below the floor, if any
    floor_raised: bool = False  # a below_floor alert is open
    above_since: datetime | None = None
    ceiling_raised: bool = False  # an above_ceiling alert is open


@dataclass(slots=True)
class _Watch:
    last_ts: datetime | None = None
    below_since: datetime | None = None
    floor_raised: bool = False
    above_since: datetime | None = None
    ceiling_raised: bool = False
    holding: bool = False  # the last reading counted as holding hot food
    food_checked_at: datetime | None = None  # when the caller last said whether food is inside
    food_inside: bool = False


class HoldingMonitor:
    def __init__(self, floor_c: float, ceiling_c: float, grace_s: float) -> None:
        if ceiling_c <= floor_c:
            raise ValueError(f"ceiling {ceiling_c} °C must be above floor {floor_c} °C")
        self.floor_c = floor_c
        self.ceiling_c = ceiling_c
        self.grace_s = grace_s
        self._watches: dict[tuple[str, int], _Watch] = {}
        # The kept buckets' own watch of each compartment (`observe_kept`).
        self._kept: dict[tuple[str, int], _Watch] = {}

    def observe(
        self,
        kiosk: str,
        number: int,
        ts: datetime,
        temp_c: float | None,
        setpoint_c: float | None,
    ) -> list[Finding]:
        watch = self._watches.setdefault((kiosk, number), _Watch())
        if watch.last_ts is not None and ts < watch.last_ts:
            return []  # late, out-of-order reading: the newer one already decided
        return self._judge(watch, kiosk, number, ts, temp_c, temp_c, setpoint_c)

    def observe_kept(
        self,
        kiosk: str,
        number: int,
        start: datetime,
        seconds: float,
        low_c: float | None,
        high_c: float | None,
        setpoint_c: float | None,
        *,
        resent: bool = False,
    ) -> list[Finding]:
        """A bucket of `seconds` from `start` that the kiosk's bridge kept while cut off, with its
        lowest and highest temperature and highest setpoint; or (`resent`) a reading the kiosk
        sent again for a new holder, as a bucket of one reading until the next.

        Every kept bucket goes on the kept buckets' own watch of the compartment, successive
        buckets making one stretch. Newer than anything seen of the compartment, it also goes on
        the compartment's watch like a reading, which decides. Older (the live readings resumed
        first, as they do on reconnection), what the kept watch raises is raised unless the
        compartment's watch has it raised already, and handed to that watch, which resolves it
        at its next reading back in range: a late bucket resolves nothing."""
        key = (kiosk, number)
        watch = self._watches.setdefault(key, _Watch())
        past = self._kept.get(key)
        if past is not None and past.last_ts is not None:
            if start <= past.last_ts:
                return []  # judged already (a bucket delivered again) or out of order
            if (start - past.last_ts).total_seconds() > KEPT_GAP_WIDTHS * seconds:
                past = None  # another time cut off: a stretch of its own
        if past is None:
            past = self._kept[key] = _Watch(holding=watch.holding, food_inside=watch.food_inside)
        late = {"kept": True, "resent": resent}
        raised = self._judge(past, kiosk, number, start, low_c, high_c, setpoint_c, **late)
        if watch.last_ts is None or start > watch.last_ts:
            return self._judge(watch, kiosk, number, start, low_c, high_c, setpoint_c, **late)
        findings: list[Finding] = []
        for found in raised:
            if found.action != "raise":
                continue
            if found.kind == "below_floor":
                if watch.floor_raised:
                    continue
                watch.floor_raised = True
                watch.below_since = watch.below_since or found.since
            else:
                if watch.ceiling_raised:
                    continue
                watch.ceiling_raised = True
                watch.above_since = watch.above_since or found.since
            findings.append(found)
        return findings

    def _judge(
        self,
        watch: _Watch,
        kiosk: str,
        number: int,
        ts: datetime,
        low_c: float | None,
        high_c: float | None,
        setpoint_c: float | None,
        *,
        kept: bool = False,
        resent: bool = False,
    ) -> list[Finding]:
        """The watch's verdict on a reading (low_c = high_c) or a kept bucket at `ts`: the low
        against the floor, the high against the ceiling."""
        watch.last_ts = ts
        if low_c is None or high_c is None:
            return []  # sensor fault: the board reports it as a fault event, not a temperature
        findings: list[Finding] = []

        def finding(
            kind: FindingKind, action: Literal["raise", "resolve"], since: datetime
        ) -> None:
            limit, temp_c = (
                (self.floor_c, low_c) if kind == "below_floor" else (self.ceiling_c, high_c)
            )
            findings.append(
                Finding(kind, action, kiosk, number, temp_c, since, ts, limit, kept, resent)
            )

        board_holding = self.board_holding(setpoint_c)
        if board_holding and watch.food_checked_at is not None and watch.food_checked_at < ts:
            watch.food_checked_at = None  # holding again: a later drop asks afresh
        holding = board_holding or (watch.holding and watch.food_inside)
        watch.holding = holding
        if holding and low_c < self.floor_c:
            if watch.below_since is None:
                watch.below_since = ts
            below_s = (ts - watch.below_since).total_seconds()
            if not watch.floor_raised and below_s >= self.grace_s:
                watch.floor_raised = True
                finding("below_floor", "raise", watch.below_since)
        elif not holding or low_c >= self.floor_c + FLOOR_HYSTERESIS_C:
            if watch.floor_raised:
                finding("below_floor", "resolve", watch.below_since or ts)
            watch.below_since, watch.floor_raised = None, False

        if high_c > self.ceiling_c:
            if watch.above_since is None:
                watch.above_since = ts
            if not watch.ceiling_raised:
                watch.ceiling_raised = True
                finding("above_ceiling", "raise", watch.above_since)
        elif high_c <= self.ceiling_c - CEILING_HYSTERESIS_C:
            if watch.ceiling_raised:
                finding("above_ceiling", "resolve", watch.above_since or ts)
            watch.above_since, watch.ceiling_raised = None, False
        return findings

    def board_holding(self, setpoint_c: float | None) -> bool:
        return setpoint_c is not None and setpoint_c >= self.floor_c

    def needs_food_check(
        self, kiosk: str, number: int, ts: datetime, setpoint_c: float | None
    ) -> bool:
        """The board holds no more (its setpoint dropped: a fault, or the food left) a
        compartment watched as holding: the caller should say whether food is still inside,
        at most once a minute of reading time."""
        watch = self._watches.get((kiosk, number))
        if watch is None or not watch.holding or self.board_holding(setpoint_c):
            return False
        checked = watch.food_checked_at
        return checked is None or (ts - checked).total_seconds() >= FOOD_RECHECK_S

    def food_inside(self, kiosk: str, number: int, ts: datetime, inside: bool) -> None:
        """What the service knows: food is (or is no longer) behind the compartment's door."""
        watch = self._watches.setdefault((kiosk, number), _Watch())
        watch.food_checked_at, watch.food_inside = ts, inside

    def watches(self, kiosk: str, number: int) -> bool:
        return (kiosk, number) in self._watches

    def carry_over(self, kiosk: str, number: int, carried: Carried) -> None:
        """Start watching a compartment from where the database says an earlier watch left off."""
        self._watches[(kiosk, number)] = _Watch(
            below_since=carried.below_since,
            floor_raised=carried.floor_raised,
            above_since=carried.above_since,
            ceiling_raised=carried.ceiling_raised,
            # Below the floor when the process stopped: held, until a check says the food left.
            holding=carried.floor_raised or carried.below_since is not None,
        )

    def forget(self, kiosk: str, number: int) -> None:
        self._watches.pop((kiosk, number), None)
        self._kept.pop((kiosk, number), None)
