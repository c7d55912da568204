"""What the kiosk link calls when a kiosk reports something: the story implements it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from firmware_bridge import contract


class KioskHandler(Protocol):
    """Called on the event loop, in the order received, one message at a time per kiosk and
    lane: a kiosk's scans have a lane of their own, so a scan may be handled while an earlier
    event of the same kiosk still is (ADR 0043).

    Snapshots queued together are handed over together (`on_snapshots`).

    MQTT delivers at least once: the same status, snapshot or event may arrive again (after a
    reconnect, a redelivery, or from retained state), so implementations are idempotent; events
    carry `event_id` for that. An exception is logged and the message is acknowledged anyway, so a
    payload that always fails cannot block its kiosk.

    With several replicas each call runs under the kiosk's lease: an implementation calls
    `fencing.check_fence(session, kiosk_id)` first in every transaction it opens for the
    message, so a replica that lost the lease changes nothing (ADR 0044).
    """

    async def on_status(self, kiosk_id: str, status: contract.KioskStatus) -> None: ...

    async def on_snapshots(
        self, kiosk_id: str, snaps: Sequence[contract.CompartmentSnapshot]
    ) -> None:
        """Snapshots of the kiosk's compartments, in the order received (usually its report of
        all of them), handled as if one by one, in one transaction (ADR 0095)."""

    async def on_event(self, kiosk_id: str, event: contract.Event) -> None: ...


class TelemetrySink(Protocol):
    """Takes telemetry batches without blocking; the telemetry ingest writes them in batches."""

    def submit(self, kiosk_id: str, telemetry: contract.Telemetry) -> None: ...

    async def store_minutes(self, kiosk_id: str, minutes: contract.TelemetryMinutes) -> None:
        """Store a bucket the kiosk's bridge kept while cut off; return once it is stored (or
        was before: it may come again), since the link acknowledges it then."""

    async def flush(self) -> int:
        """Store every batch submitted so far: a replica giving a kiosk up does so before the
        next holder reads how far its readings go (ADR 0098)."""
        ...


class SiteResolver(Protocol):
    """Which site a kiosk belongs to, so live updates reach only that site's operators."""

    async def site_of(self, kiosk_id: str) -> int | None: ...
