"""Food-safety profiles: the rules a site holds hot food under, chosen per site.

- `us-fda`: at or above 57 °C (FDA Food Code 3-501.16), held at 63 °C; 4 h from cooking (time
  as a public health control, 3-501.19) and 4 h from ready; below the floor past the grace is
  unsafe at once.
- `uk-fsa`: at or above 63 °C, held at 68 °C; one period below 63 °C of at most 2 h is
  tolerated, a second is unsafe; 4 h from cooking and from ready.
- `cn`: above 60 °C, held at 65 °C; the limit from cooking is the site's to set (default 4 h);
  below the floor past the grace is unsafe at once.
- `custom`: the service's settings (`LOCKER_HOLD_*`, `LOCKER_FOOD_*`): what every site had
  before profiles, and the default.

The grace is the door's recovery: a door opened for a drop-off lets the compartment cool for
a few minutes, and a stretch below the floor shorter than the grace is not an excursion. A
compartment whose temperature is unknown (no reading: a sensor fault, the kiosk offline) for
longer than `unknown_limit_s` cannot show the food was kept hot: unsafe.

`cn`'s limit from cooking is the site's to set (`LOCKER_FOOD_CN_COOKING_LIMIT_S`); a profile's
"floor" is the lowest safe reading (`cn`'s "above 60 °C" is held as a floor of 60.1 °C, one
step of the board's 0.1 °C resolution).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final, Literal

from locker_service.config import Settings

ProfileName = Literal["us-fda", "uk-fsa", "cn", "custom"]
PROFILE_NAMES: Final[tuple[ProfileName, ...]] = ("us-fda", "uk-fsa", "cn", "custom")
DEFAULT_PROFILE: Final[ProfileName] = "custom"  # today's settings: a site keeps its behaviour

HOUR_S = 3600.0


@dataclass(frozen=True, slots=True)
class Profile:
    name: ProfileName
    floor_c: float  # the lowest safe reading
    setpoint_c: float  # what the compartment is held at
    grace_s: float  # a stretch below the floor shorter than this is a door's recovery
    cooking_limit_s: float  # from cooked_at (else from the drop-off) to the deadline
    ready_limit_s: float  # from ready to the deadline (the purchaser's hold)
    excursions_allowed: int  # stretches below the floor past the grace that are tolerated
    excursion_limit_s: float  # the longest a tolerated stretch may last
    unknown_limit_s: float  # the longest the food may go with no reading
    # A compartment is judged against the floor once it has reached it: until then the stretch
    # below is its warm-up (a lobby-cold compartment heats in minutes; the food came hot and
    # its clock from cooking runs regardless), allowed this long from its start.
    warmup_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.setpoint_c < self.floor_c:
            raise ValueError(
                f"profile {self.name}: the setpoint {self.setpoint_c} °C is below its floor "
                f"{self.floor_c} °C"
            )
        for name in ("grace_s", "cooking_limit_s", "ready_limit_s", "unknown_limit_s", "warmup_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"profile {self.name}: {name} must be above 0")
        if self.excursions_allowed < 0 or self.excursion_limit_s < 0:
            raise ValueError(f"profile {self.name}: the excursion rule cannot be negative")


def _built_in(
    name: ProfileName,
    floor_c: float,
    setpoint_c: float,
    excursions_allowed: int = 0,
    excursion_limit_s: float = 0.0,
) -> Profile:
    """What the built-in profiles share: a 15-minute door recovery and silence limit, 4 h from
    cooking and from ready, no excursion tolerated unless the profile says otherwise."""
    return Profile(
        name,
        floor_c=floor_c,
        setpoint_c=setpoint_c,
        grace_s=15 * 60.0,
        cooking_limit_s=4 * HOUR_S,
        ready_limit_s=4 * HOUR_S,
        excursions_allowed=excursions_allowed,
        excursion_limit_s=excursion_limit_s,
        unknown_limit_s=15 * 60.0,
    )


BUILT_IN: Final[dict[ProfileName, Profile]] = {
    "us-fda": _built_in("us-fda", floor_c=57.0, setpoint_c=63.0),
    "uk-fsa": _built_in("uk-fsa", 63.0, 68.0, excursions_allowed=1, excursion_limit_s=2 * HOUR_S),
    "cn": _built_in("cn", floor_c=60.1, setpoint_c=65.0),
}


def profile(name: str, custom: Profile, cn_cooking_limit_s: float | None = None) -> Profile:
    """The profile called `name` (`custom` is the one given, built from the settings)."""
    if name == "custom":
        return custom
    if name not in BUILT_IN:
        raise ValueError(f"unknown food-safety profile {name!r}: one of {', '.join(PROFILE_NAMES)}")
    chosen = BUILT_IN[name]
    if name == "cn" and cn_cooking_limit_s is not None:
        chosen = replace(chosen, cooking_limit_s=cn_cooking_limit_s)
    return chosen


def scaled(chosen: Profile, to_real_s: float) -> Profile:
    """The profile with its durations multiplied by `to_real_s` (`Settings.scaled`'s factor:
    1 in production, small in demos and tests that run the clock fast)."""
    return replace(
        chosen,
        grace_s=chosen.grace_s * to_real_s,
        cooking_limit_s=chosen.cooking_limit_s * to_real_s,
        ready_limit_s=chosen.ready_limit_s * to_real_s,
        excursion_limit_s=chosen.excursion_limit_s * to_real_s,
        unknown_limit_s=chosen.unknown_limit_s * to_real_s,
        warmup_s=chosen.warmup_s * to_real_s,
    )


def custom_of(settings: Settings) -> Profile:
    """The `custom` profile: the service's hold settings, as before profiles."""
    return Profile(
        "custom",
        floor_c=settings.hold_floor_c,
        setpoint_c=settings.hold_setpoint_c,
        grace_s=settings.hold_floor_grace_s,
        cooking_limit_s=settings.food_cooking_limit_s,
        ready_limit_s=settings.hold_limit_s,
        excursions_allowed=settings.food_excursions_allowed,
        excursion_limit_s=settings.food_excursion_limit_s,
        unknown_limit_s=settings.food_unknown_limit_s,
        warmup_s=settings.food_warmup_s,
    )


def nominal(settings: Settings, name: str) -> Profile:
    """A site's profile as written (nominal seconds): what operators are shown."""
    return profile(name, custom_of(settings), settings.food_cn_cooking_limit_s)


# Readings reach the database in batches a few real seconds apart (the bridge's telemetry
# period, the ingest's flush, a broker reconnect), and none of that speeds up under
# LOCKER_TIME_SCALE: a shorter silence is no sign of a sensor or kiosk gone.
UNKNOWN_MIN_REAL_S = 30.0
# A compartment's warm-up starts with a command from the service (a timer claimed, the broker,
# the bridge; after a restart, the service's own start first): real seconds too, which a warm-up
# of 30 nominal minutes at 120x (15 s) can be overrun by on a busy host.
WARMUP_MIN_REAL_S = 30.0


def for_site(settings: Settings, name: str) -> Profile:
    """A site's profile in real seconds (under LOCKER_TIME_SCALE): what the story applies."""
    real = scaled(nominal(settings, name), settings.scaled(1.0))
    return replace(
        real,
        unknown_limit_s=max(real.unknown_limit_s, UNKNOWN_MIN_REAL_S),
        warmup_s=max(real.warmup_s, WARMUP_MIN_REAL_S),
    )
