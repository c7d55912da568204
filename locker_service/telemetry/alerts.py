"""Hot-holding findings turned into operator alerts through the alerts service."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from locker_service.alerts.catalogue import duration, nominal_s
from locker_service.alerts.service import raise_alert, resolve_alerts
from locker_service.db import session_scope
from locker_service.live import LiveHub
from locker_service.telemetry.monitor import Finding
from locker_service.telemetry.repository import compartment_id_of


def describe(finding: Finding, time_scale: float = 1.0) -> str:
    """The alert's message, with the limit crossed (the site's floor, or the ceiling); how
    long is told in story time (the readings' interval times LOCKER_TIME_SCALE), so "for
    5 min" is true of the story in a demo run 60 times faster."""
    where = f"compartment {finding.number} of kiosk {finding.kiosk}"
    reading = f"{finding.temp_c:.1f} °C" if finding.temp_c is not None else "no reading"
    # A bucket the kiosk kept while cut off, or readings it sent again that nobody had heard
    # (ADR 0098), tell their lowest or highest, not the present temperature.
    late = (
        "in readings the service received late"
        if finding.resent
        else "while the kiosk was cut off"
        if finding.kept
        else None
    )
    if finding.kind == "below_floor":
        held_s = nominal_s((finding.at - finding.since).total_seconds(), time_scale)
        low = f"lowest {reading} {late}" if late else f"now {reading}"
        return (
            f"{where} has held food below the {finding.limit_c:g} °C floor for "
            f"{duration(held_s)} ({low})"
        )
    high = f"highest {reading} {late}" if late else f"now {reading}"
    return f"{where} is above the {finding.limit_c:g} °C ceiling ({high})"


class AlertServiceSink:
    """`TemperatureAlerts` backed by `locker_service.alerts.service` (dedupe, live updates)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        hub: LiveHub | None,
        time_scale: float = 1.0,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._hub = hub
        self._time_scale = time_scale

    async def apply(self, findings: Sequence[tuple[Finding, int, int]]) -> None:
        async with session_scope(self._sessionmaker) as session:
            for finding, kiosk_id, site_id in findings:
                if finding.action == "resolve":
                    await resolve_alerts(session, finding.dedupe_key, self._hub)
                    continue
                await raise_alert(
                    session,
                    kind=finding.kind,
                    severity="critical",  # food safety (floor) or overheating (ceiling)
                    message=describe(finding, self._time_scale),
                    dedupe_key=finding.dedupe_key,
                    site_id=site_id,
                    kiosk_id=kiosk_id,
                    compartment_id=await compartment_id_of(session, kiosk_id, finding.number),
                    hub=self._hub,
                )
