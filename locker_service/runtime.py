"""Starting and stopping what a service process runs beside its routes, together: the kiosk
event handler, the telemetry ingest with its hot-holding alerts and retention, the kiosk link,
the notification outbox worker, the on-call digest and the timer loop. Called from `lifespan`.

This is the top of the service's layers below `main`: the one place that knows every running
part by its type. The context (`locker_service.context`) reaches the ones the story needs (the
kiosk commander, the timer loop's wake-up) through small protocols.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from locker_service.alerts.digest import DigestLoop
from locker_service.context import ServiceContext
from locker_service.haccp.service import SealLoop
from locker_service.kiosk_link.directory import KioskDirectory
from locker_service.kiosk_link.lease_keeper import LeaseKeeper
from locker_service.kiosk_link.link import KioskLink
from locker_service.kiosk_link.metrics import MESSAGE_WAIT_S, TELEMETRY_LAG_S
from locker_service.kiosks.clock_watch import ClockWatch
from locker_service.kiosks.handler import StoryHandler
from locker_service.live.relay import PgRelay
from locker_service.metrics import REGISTRY
from locker_service.notifications.webhooks import WebhookWorker
from locker_service.notifications.worker import OutboxWorker
from locker_service.orders.privacy import PrivacyLoop
from locker_service.pickup.supply import SupplyLoop
from locker_service.telemetry.alerts import AlertServiceSink
from locker_service.telemetry.ingest import TelemetryIngest
from locker_service.telemetry.retention import RetentionLoop
from locker_service.telemetry.site_monitors import SiteMonitors
from locker_service.timer_loop.loop import TimerLoop

log = logging.getLogger(__name__)


@dataclass(eq=False)  # identity: kept in the metrics collector's weak set
class Runtime:
    """The running parts of one service process, each typed; None where settings disable it."""

    ctx: ServiceContext
    story: StoryHandler  # what the kiosk link calls with each kiosk message
    ingest: TelemetryIngest
    retention: RetentionLoop
    privacy: PrivacyLoop
    relay: PgRelay | None = None  # the other replicas' live changes (PostgreSQL)
    link: KioskLink | None = None
    outbox: OutboxWorker | None = None
    digest: DigestLoop | None = None
    timers: TimerLoop | None = None
    leases: LeaseKeeper | None = None
    haccp: SealLoop | None = None  # seals each site's HACCP days (with the timers)
    webhooks: WebhookWorker | None = None  # merchants' order events
    supply: SupplyLoop | None = None  # what each held kiosk needs to decide pickups alone
    clocks: ClockWatch | None = None  # kiosks whose clocks are off, told to operators

    async def stop(self) -> None:
        COLLECTOR.discard(self)
        # Timers first: no new command goes out while the link closes. Then the link: no new
        # telemetry arrives while the ingest writes what it holds.
        if self.timers is not None:
            await self.timers.stop()
            self.ctx.timers = None
        if self.supply is not None:
            await self.supply.stop()
        if self.clocks is not None:
            await self.clocks.stop()
        # Leases next, while the link still runs: the kiosks are handed over (each once its
        # next holder listens) and their queues drained.
        if self.leases is not None:
            await self.leases.stop()
        if self.link is not None:
            await self.link.stop()
        if self.haccp is not None:
            await self.haccp.stop()
        await self.ingest.stop()
        await self.retention.stop()
        await self.privacy.stop()
        if self.relay is not None:
            await self.relay.stop()
        if self.digest is not None:
            await self.digest.stop()
        if self.outbox is not None:
            await self.outbox.stop()
        if self.webhooks is not None:
            await self.webhooks.stop()


async def start_runtime(ctx: ServiceContext) -> Runtime:
    """Start what the settings enable and hand the story its handles in `ctx`."""
    settings = ctx.settings
    directory = KioskDirectory(ctx.sessionmaker)
    ingest = TelemetryIngest(
        ctx.engine,
        directory,
        monitor=SiteMonitors(settings),  # each site's floor and grace (its food-safety profile)
        alerts=AlertServiceSink(ctx.sessionmaker, ctx.hub, settings.time_scale),
        lag_observer=TELEMETRY_LAG_S.observe,
    )
    await ingest.start()
    retention = RetentionLoop(ctx.engine, settings.telemetry_retention_days)
    await retention.start()
    privacy = PrivacyLoop(ctx.engine, settings.purchaser_data_retention_days)
    await privacy.start()
    runtime = Runtime(ctx, StoryHandler(ctx), ingest, retention, privacy)
    COLLECTOR.add(runtime)
    try:
        if ctx.engine.dialect.name == "postgresql":
            relay = PgRelay(ctx.engine, ctx.hub, settings.replica_id)
            await relay.start()
            runtime.relay = relay
        if settings.kiosk_link_enabled:
            leases = LeaseKeeper(
                ctx.lease_sessions,
                settings.replica_id,
                ttl_s=settings.lease_ttl_s,
                renew_s=settings.lease_renew_s,
            )
            ingest.fence_with(leases.fence)  # a holder woken late stores nothing (ADR 0103)
            link = KioskLink(
                settings,
                runtime.story,
                ctx.hub,
                telemetry=ingest,
                sites=directory,
                wait_observer=lambda lane, s: MESSAGE_WAIT_S.labels(lane).observe(s),
                leases=leases,
            )
            await link.start()
            runtime.link = link
            runtime.leases = leases
            # Before the first round: a kiosk it takes is handled at once (ADR 0093), and a
            # scan's unlock needs the link. After the link connected: the round subscribes.
            # The round runs in the background: the API and the timers do not wait for
            # hundreds of takes, and /readyz says 503 until it has ended (ADR 0099).
            ctx.commander = link
            await leases.start(wait=False)
            clocks = ClockWatch(ctx.sessionmaker, ctx.hub, link)
            await clocks.start()
            runtime.clocks = clocks
            # Also with offline pickups off (refresh 0): it then tells each kiosk so.
            supply = SupplyLoop(settings, ctx.sessionmaker, link, hub=ctx.hub)
            await supply.start()
            runtime.supply = supply
        if settings.notify_enabled:
            outbox = OutboxWorker(ctx.sessionmaker, settings, hub=ctx.hub)
            await outbox.start()
            runtime.outbox = outbox
            webhooks = WebhookWorker(ctx.sessionmaker, settings, hub=ctx.hub)
            await webhooks.start()
            runtime.webhooks = webhooks
            if settings.oncall_digest_hour >= 0:
                digest = DigestLoop(ctx.sessionmaker, settings)
                await digest.start()
                runtime.digest = digest
        if settings.timers_enabled:
            timers = TimerLoop(ctx)
            await timers.start()
            runtime.timers = timers
            ctx.timers = timers
            haccp = SealLoop(settings, ctx.sessionmaker)
            await haccp.start()
            runtime.haccp = haccp
    except BaseException:
        await runtime.stop()
        raise
    return runtime


class RuntimeCollector(Collector):
    """The running parts' plain counters, read at scrape time and summed over every runtime in
    the process (tests run several)."""

    def __init__(self) -> None:
        self._runtimes: weakref.WeakSet[Runtime] = weakref.WeakSet()

    def add(self, runtime: Runtime) -> None:
        self._runtimes.add(runtime)

    def discard(self, runtime: Runtime) -> None:
        self._runtimes.discard(runtime)

    def collect(self) -> Iterator[Metric]:
        connected = GaugeMetricFamily(
            "locker_mqtt_connected", "1 when connected to the broker and subscribed"
        )
        received = CounterMetricFamily(
            "locker_mqtt_messages", "Kiosk messages received, by kind", labels=["kind"]
        )
        malformed = CounterMetricFamily(
            "locker_mqtt_malformed", "Kiosk messages dropped as malformed"
        )
        handler_errors = CounterMetricFamily(
            "locker_kiosk_handler_errors", "Kiosk messages whose handling raised"
        )
        handler_retries = CounterMetricFamily(
            "locker_kiosk_handler_retries",
            "Kiosk messages handed to the story again: the database could not be reached, or "
            "lend a connection in time",
        )
        commands = CounterMetricFamily("locker_kiosk_commands", "Commands sent to kiosks")
        reordered = CounterMetricFamily(
            "locker_kiosk_events_held_for_order",
            "Events that arrived ahead of an earlier one of their kiosk and waited for it",
        )
        gaps = CounterMetricFamily(
            "locker_kiosk_event_gaps_skipped", "Missing kiosk events given up on after a wait"
        )
        gaps_asked = CounterMetricFamily(
            "locker_kiosk_event_gaps_asked",
            "Missing kiosk events the kiosk was asked to send again after a wait",
        )
        not_held = CounterMetricFamily(
            "locker_kiosk_events_not_held",
            "Kiosk events this replica did not handle: it does not hold the kiosk's lease, or "
            "lost it while the event waited (fenced out by the new epoch)",
        )
        stale = CounterMetricFamily(
            "locker_kiosk_events_stale",
            "Kiosk events dropped as stale: numbered at or below what the kiosk's record had "
            "reached when this replica took the kiosk's lease",
        )
        replayed = CounterMetricFamily(
            "locker_kiosk_snapshots_replayed",
            "Compartment snapshots from before a lease was taken handed to the story: the kiosk "
            "did not report that compartment afresh when asked (no answer, a report lost, or "
            "the kiosk last heard offline), or an event of it came first",
        )
        snapshot_transactions = CounterMetricFamily(
            "locker_kiosk_snapshot_transactions",
            "Transactions the kiosks' compartment snapshots were handled in: the snapshots of a "
            "kiosk queued together share one (a report of every compartment is usually one)",
        )
        stored = CounterMetricFamily("locker_telemetry_readings_stored", "Readings stored")
        dropped = CounterMetricFamily(
            "locker_telemetry_readings_dropped", "Readings not stored, by reason", labels=["reason"]
        )
        buffered = GaugeMetricFamily(
            "locker_telemetry_readings_buffered", "Readings waiting to be written"
        )
        resent = CounterMetricFamily(
            "locker_telemetry_batches_resent",
            "Telemetry batches kiosks sent again for a replica that had just taken them, by "
            "outcome: stored (nobody had stored them), or repeated (stored already)",
            labels=["outcome"],
        )
        sent = CounterMetricFamily("locker_notifications_sent", "Purchaser messages delivered")
        failed = CounterMetricFamily(
            "locker_notification_failed_attempts", "Delivery attempts that failed"
        )
        kinds: dict[str, int] = {}
        totals = dict.fromkeys(
            ("connected", "malformed", "errors", "commands", "stored", "unknown", "overflow",
             "buffered", "sent", "failed", "reordered", "gaps", "not_held", "stale", "retries",
             "replayed", "snapshot_transactions", "resent_stored", "resent_repeated",
             "readings_not_held", "gaps_asked"),
            0,
        )  # fmt: skip
        for runtime in list(self._runtimes):
            link = runtime.link
            if link is not None:
                totals["connected"] += int(link.ready)
                for kind, n in link.counters.received.items():
                    kinds[kind] = kinds.get(kind, 0) + n
                totals["malformed"] += link.counters.dropped_malformed
                totals["errors"] += link.counters.handler_errors
                totals["retries"] += link.counters.handler_retries
                totals["commands"] += link.counters.commands_sent
                totals["reordered"] += link.counters.events_held_for_order
                totals["gaps"] += link.counters.event_gaps_skipped
                totals["gaps_asked"] += link.counters.event_gaps_asked
                totals["not_held"] += link.counters.dropped_not_held
                totals["stale"] += link.counters.events_stale
                totals["replayed"] += link.counters.snapshots_replayed
                totals["snapshot_transactions"] += link.counters.snapshot_transactions
            ingest = runtime.ingest
            totals["stored"] += ingest.counters.stored
            totals["unknown"] += ingest.counters.dropped_unknown_kiosk
            totals["overflow"] += ingest.counters.dropped_overflow
            totals["readings_not_held"] += ingest.counters.dropped_not_held
            totals["buffered"] += ingest.buffered_rows
            totals["resent_stored"] += ingest.counters.resent_stored
            totals["resent_repeated"] += ingest.counters.resent_repeated
            if runtime.outbox is not None:
                totals["sent"] += runtime.outbox.sent
                totals["failed"] += runtime.outbox.failed_attempts
        connected.add_metric([], totals["connected"])
        for kind, n in sorted(kinds.items()):
            received.add_metric([kind], n)
        malformed.add_metric([], totals["malformed"])
        handler_errors.add_metric([], totals["errors"])
        handler_retries.add_metric([], totals["retries"])
        commands.add_metric([], totals["commands"])
        reordered.add_metric([], totals["reordered"])
        gaps.add_metric([], totals["gaps"])
        gaps_asked.add_metric([], totals["gaps_asked"])
        not_held.add_metric([], totals["not_held"])
        stale.add_metric([], totals["stale"])
        replayed.add_metric([], totals["replayed"])
        snapshot_transactions.add_metric([], totals["snapshot_transactions"])
        stored.add_metric([], totals["stored"])
        dropped.add_metric(["unknown_kiosk"], totals["unknown"])
        dropped.add_metric(["overflow"], totals["overflow"])
        dropped.add_metric(["not_held"], totals["readings_not_held"])  # ADR 0103
        buffered.add_metric([], totals["buffered"])
        resent.add_metric(["stored"], totals["resent_stored"])
        resent.add_metric(["repeated"], totals["resent_repeated"])
        sent.add_metric([], totals["sent"])
        failed.add_metric([], totals["failed"])
        yield from (connected, received, malformed, handler_errors, commands, stored, dropped)
        yield from (buffered, sent, failed, reordered, gaps, gaps_asked, not_held, stale)
        yield handler_retries
        yield from (replayed, snapshot_transactions, resent)


COLLECTOR = RuntimeCollector()
REGISTRY.register(COLLECTOR)
