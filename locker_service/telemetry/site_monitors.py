"""A hot-holding monitor for each food-safety profile: a kiosk's alerts judge its readings by
its site's floor and grace (`locker_service.foodsafety.profiles`), the ceiling being the
service's (`LOCKER_HOLD_CEILING_C`: the equipment's, not the food's)."""

from __future__ import annotations

from locker_service.config import Settings
from locker_service.foodsafety import profiles
from locker_service.kiosk_link.directory import KioskRef
from locker_service.telemetry.monitor import HoldingMonitor


class SiteMonitors:
    """Called with a kiosk: the monitor of its site's profile. All are made at once, so a
    ceiling at or below a profile's floor fails the service's start, not its first reading."""

    def __init__(self, settings: Settings) -> None:
        self._monitors: dict[str, HoldingMonitor] = {}
        for name in profiles.PROFILE_NAMES:
            rules = profiles.for_site(settings, name)
            self._monitors[name] = HoldingMonitor(
                floor_c=rules.floor_c, ceiling_c=settings.hold_ceiling_c, grace_s=rules.grace_s
            )

    def __call__(self, kiosk: KioskRef) -> HoldingMonitor:
        # A name the database holds but this version does not know: the service's own rules.
        return self._monitors.get(kiosk.food_profile) or self._monitors["custom"]
