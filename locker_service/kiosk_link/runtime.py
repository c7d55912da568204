"""Starting and stopping the service's edges together: the kiosk link, the telemetry ingest
with its hot-holding alerts, and the notification outbox worker. Called from `lifespan`."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from locker_service.context import ServiceContext
from locker_service.kiosk_link.directory import KioskDirectory
from locker_service.kiosk_link.handler import KioskHandler
from locker_service.kiosk_link.lease_keeper import LeaseKeeper
from locker_service.kiosk_link.link import KioskLink
from locker_service.kiosk_link.metrics import COLLECTOR, MESSAGE_WAIT_S, TELEMETRY_LAG_S
from locker_service.notifications.worker import OutboxWorker
from locker_service.telemetry.alerts import AlertServiceSink
from locker_service.telemetry.ingest import TelemetryIngest
from locker_service.telemetry.monitor import HoldingMonitor
from locker_service.telemetry.retention import RetentionLoop

log = logging.getLogger(__name__)


@dataclass(eq=False)  # identity: kept in the metrics collector's weak set
class Edges:
    ingest: TelemetryIngest
    retention: RetentionLoop
    link: KioskLink | None
    outbox: OutboxWorker | None
    leases: LeaseKeeper | None = None

    async def stop(self) -> None:
        COLLECTOR.discard(self)
        # Leases first, while the link still runs: the kiosks are handed over (each once its
        # next holder listens) and their queues drained. Then the link: no new telemetry
        # arrives while the ingest writes what it holds.
        if self.leases is not None:
            await self.leases.stop()
        if self.link is not None:
            await self.link.stop()
        await self.ingest.stop()
        await self.retention.stop()
        if self.outbox is not None:
            await self.outbox.stop()


async def start_edges(ctx: ServiceContext, handler: KioskHandler) -> Edges:
    """Start what the settings enable and register it in `ctx` (`/readyz`, the story)."""
    settings = ctx.settings
    directory = KioskDirectory(ctx.sessionmaker)
    monitor = HoldingMonitor(
        floor_c=settings.hold_floor_c,
        ceiling_c=settings.hold_ceiling_c,
        grace_s=settings.scaled(settings.hold_floor_grace_s),
    )
    ingest = TelemetryIngest(
        ctx.engine,
        directory,
        monitor=monitor,
        alerts=AlertServiceSink(
            ctx.sessionmaker, ctx.hub, settings.hold_floor_c, settings.hold_ceiling_c
        ),
        lag_observer=TELEMETRY_LAG_S.observe,
    )
    await ingest.start()
    ctx.components["telemetry_ingest"] = ingest
    retention = RetentionLoop(ctx.engine, settings.telemetry_retention_days)
    await retention.start()
    edges = Edges(ingest, retention, None, None)
    COLLECTOR.add(edges)
    try:
        if settings.kiosk_link_enabled:
            leases = LeaseKeeper(
                ctx.sessionmaker,
                settings.replica_id,
                ttl_s=settings.lease_ttl_s,
                renew_s=settings.lease_renew_s,
            )
            link = KioskLink(
                settings,
                handler,
                ctx.hub,
                telemetry=ingest,
                sites=directory,
                wait_observer=lambda lane, s: MESSAGE_WAIT_S.labels(lane).observe(s),
                leases=leases,
            )
            await link.start()
            edges.link = link
            edges.leases = leases
            # After the link connected: the first round subscribes to the kiosks it takes.
            await leases.start()
            ctx.components["kiosk_leases"] = leases
            ctx.commander = link
            ctx.components["kiosk_link"] = link
        if settings.notify_enabled:
            outbox = OutboxWorker(ctx.sessionmaker, settings)
            await outbox.start()
            edges.outbox = outbox
            ctx.components["notification_outbox"] = outbox
    except BaseException:
        await edges.stop()
        raise
    return edges
