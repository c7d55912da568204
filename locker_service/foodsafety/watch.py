"""The watch over one order's food: its temperature excursions and its clock. Pure.

The timer loop folds the compartment's readings into a `Watch` as they come (from the
drop-off on), saves it on the order, and acts on the `Unsafe` verdict it returns. A verdict
names the moment the profile's limit was passed, not the moment it was noticed, so the record
says exactly when the food stopped being safe.

- Warm-up: until the compartment first reaches the floor after the drop-off, the stretch below
  it is allowed the profile's `warmup_s`, not the grace.
- Below the floor: a stretch starts at the first reading under the floor and ends at a reading
  back at the floor plus `HYSTERESIS_C` (a reading dithering on the line is one stretch, not
  many). A stretch longer than the grace is an excursion; more excursions than the profile
  allows, or a tolerated one longer than its limit, is unsafe.
- Unknown: a run of readings without a temperature (a sensor fault), or no reading at all
  (the kiosk offline) for longer than `unknown_limit_s`, is unsafe: nothing shows the food was
  kept hot.
- The clock: the deadline is the earliest of the profile's limits; past it, the food's time is up.
- Late readings: the watch counts the readings it folded (one per timestamp), so the timer loop
  can tell when readings older than the last one folded were stored since (a kiosk's telemetry
  sent again after a takeover, ADR 0098) and fold the food's record again from the drop-off
  (`stale`, ADR 0101).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from locker_service.foodsafety.profiles import Profile

HYSTERESIS_C = 0.5  # the board reads 0.1 °C; half a degree is noise-proof


@dataclass(frozen=True, slots=True)
class Unsafe:
    at: datetime  # when the profile's limit was passed
    why: str  # in words a purchaser and an inspector can read


@dataclass(slots=True)
class Watch:
    """What has been seen of one order's food so far (saved on the order as JSON)."""

    last_ts: datetime | None = None  # the last reading folded in
    below_since: datetime | None = None  # the current stretch below the floor began
    excursions: int = 0  # stretches below the floor that outlasted the grace
    counted: bool = False  # the current stretch is one of them
    warmed: bool = False  # the compartment has reached the floor since the drop-off
    unknown_since: datetime | None = None  # the current run of readings with no temperature
    min_c: float | None = None
    max_c: float | None = None
    readings: int = 0  # readings folded in, one per timestamp

    def to_json(self) -> dict[str, Any]:
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Watch:
        if not data:
            return cls()

        def when(key: str) -> datetime | None:
            value = data.get(key)
            return datetime.fromisoformat(value) if value is not None else None

        return cls(
            last_ts=when("last_ts"),
            below_since=when("below_since"),
            excursions=int(data.get("excursions", 0)),
            counted=bool(data.get("counted", False)),
            warmed=bool(data.get("warmed", False)),
            unknown_since=when("unknown_since"),
            min_c=data.get("min_c"),
            max_c=data.get("max_c"),
            readings=int(data.get("readings", 0)),
        )

    def stale(self, stamps: int) -> bool:
        """More readings are stored up to `last_ts` (`stamps`: their distinct timestamps after
        the drop-off) than were folded in: some came late, between readings already folded."""
        return stamps > self.readings


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds < 7200 else f"{seconds / 3600:g} h"


def fold(
    watch: Watch, profile: Profile, readings: Iterable[tuple[datetime, float | None]]
) -> Unsafe | None:
    """Fold readings (oldest first; older than the last one folded are skipped) into `watch`;
    the verdict, if one of them made the food unsafe."""
    grace = timedelta(seconds=profile.grace_s)
    unknown_limit = timedelta(seconds=profile.unknown_limit_s)
    for ts, temp_c in readings:
        if watch.last_ts is not None and ts <= watch.last_ts:
            continue
        gap = silent_since(watch, profile, ts)  # nothing came between the two readings
        if gap is not None:
            return gap
        watch.last_ts = ts
        watch.readings += 1
        if temp_c is None:
            watch.unknown_since = watch.unknown_since or ts
            if ts - watch.unknown_since > unknown_limit:
                return Unsafe(
                    watch.unknown_since + unknown_limit,
                    f"temperature unknown for more than {_minutes(profile.unknown_limit_s)} "
                    "(a sensor fault)",
                )
            continue
        watch.unknown_since = None
        watch.min_c = temp_c if watch.min_c is None else min(watch.min_c, temp_c)
        watch.max_c = temp_c if watch.max_c is None else max(watch.max_c, temp_c)
        if temp_c < profile.floor_c:
            watch.below_since = watch.below_since or ts
        elif temp_c >= profile.floor_c + HYSTERESIS_C:
            watch.below_since, watch.counted = None, False
        if temp_c >= profile.floor_c and not watch.warmed:
            watch.warmed = True  # the warm-up is over, and was no excursion
            watch.below_since, watch.counted = None, False
        if watch.warmed:
            verdict = _excursion(watch, profile, ts, grace)
        else:
            verdict = _warm_up(watch, profile, ts)
        if verdict is not None:
            return verdict
    return None


def _warm_up(watch: Watch, profile: Profile, ts: datetime) -> Unsafe | None:
    """Before the compartment first reaches the floor: unsafe only past the warm-up."""
    if watch.below_since is None:
        return None
    limit = timedelta(seconds=max(profile.warmup_s, profile.grace_s))
    if ts - watch.below_since <= limit:
        return None
    return Unsafe(
        watch.below_since + limit,
        f"not brought up to {profile.floor_c:g} °C within {_minutes(limit.total_seconds())} "
        "of the drop-off",
    )


def _excursion(watch: Watch, profile: Profile, ts: datetime, grace: timedelta) -> Unsafe | None:
    if watch.below_since is None or ts - watch.below_since <= grace:
        return None
    below = f"below {profile.floor_c:g} °C"
    if not watch.counted:
        watch.counted = True
        watch.excursions += 1
        if watch.excursions > profile.excursions_allowed:
            if profile.excursions_allowed == 0:
                why = f"{below} for more than {_minutes(profile.grace_s)}"
            else:
                why = f"{below} a second time ({profile.excursions_allowed} period allowed)"
            return Unsafe(watch.below_since + grace, why)
    limit = timedelta(seconds=profile.excursion_limit_s)
    if ts - watch.below_since > limit:
        return Unsafe(
            watch.below_since + limit,
            f"{below} for more than {_minutes(profile.excursion_limit_s)}",
        )
    return None


def silent_since(watch: Watch, profile: Profile, now: datetime) -> Unsafe | None:
    """No reading at all since the last one, for longer than the profile allows (the kiosk
    offline, or its telemetry lost)."""
    if watch.last_ts is None:
        return None
    limit = timedelta(seconds=profile.unknown_limit_s)
    if now - watch.last_ts > limit:
        return Unsafe(
            watch.last_ts + limit,
            f"no temperature reading for more than {_minutes(profile.unknown_limit_s)}",
        )
    return None


def deadline(profile: Profile, clock_start: datetime) -> datetime:
    """When the food's time is up, counted from cooking (or the drop-off)."""
    return clock_start + timedelta(seconds=profile.cooking_limit_s)


def hold_until(profile: Profile, ready_at: datetime, food_deadline: datetime | None) -> datetime:
    """The purchaser's deadline: the hold after ready, or the food's own, whichever is first."""
    hold = ready_at + timedelta(seconds=profile.ready_limit_s)
    return hold if food_deadline is None else min(hold, food_deadline)
