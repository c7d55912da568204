"""Prometheus figures of the service's edges: MQTT link, telemetry ingest, notification outbox.

Read at scrape time from the running components (their plain counters), summed over every
running set of edges in the process, and served with the service's other metrics at /metrics.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from locker_service.metrics import REGISTRY

if TYPE_CHECKING:
    from locker_service.runtime import Edges

# A purchaser at the kiosk waits on a scan: tens of milliseconds are worth telling apart.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
MESSAGE_WAIT_S = Histogram(
    "locker_kiosk_message_wait_seconds",
    "From a kiosk message's arrival to its handling starting, by lane (scans, other)",
    ["lane"],
    buckets=LATENCY_BUCKETS_S,
    registry=REGISTRY,
)
SCAN_DECISION_S = Histogram(
    "locker_scan_decision_seconds",
    "From a scan's handling starting to its decision committed (the unlock leaves next)",
    buckets=LATENCY_BUCKETS_S,
    registry=REGISTRY,
)
TELEMETRY_LAG_S = Histogram(
    "locker_telemetry_lag_seconds",
    "From a telemetry batch's timestamp to its readings being stored (publish to queryable)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)


class EdgesCollector(Collector):
    def __init__(self) -> None:
        self._edges: weakref.WeakSet[Edges] = weakref.WeakSet()

    def add(self, edges: Edges) -> None:
        self._edges.add(edges)

    def discard(self, edges: Edges) -> None:
        self._edges.discard(edges)

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
        commands = CounterMetricFamily("locker_kiosk_commands", "Commands sent to kiosks")
        stored = CounterMetricFamily("locker_telemetry_readings_stored", "Readings stored")
        dropped = CounterMetricFamily(
            "locker_telemetry_readings_dropped", "Readings not stored, by reason", labels=["reason"]
        )
        buffered = GaugeMetricFamily(
            "locker_telemetry_readings_buffered", "Readings waiting to be written"
        )
        sent = CounterMetricFamily("locker_notifications_sent", "Purchaser messages delivered")
        failed = CounterMetricFamily(
            "locker_notification_failed_attempts", "Delivery attempts that failed"
        )
        kinds: dict[str, int] = {}
        totals = dict.fromkeys(
            ("connected", "malformed", "errors", "commands", "stored", "unknown", "overflow",
             "buffered", "sent", "failed"),
            0,
        )  # fmt: skip
        for edges in list(self._edges):
            link = edges.link
            if link is not None:
                totals["connected"] += int(link.ready)
                for kind, n in link.counters.received.items():
                    kinds[kind] = kinds.get(kind, 0) + n
                totals["malformed"] += link.counters.dropped_malformed
                totals["errors"] += link.counters.handler_errors
                totals["commands"] += link.counters.commands_sent
            ingest = edges.ingest
            totals["stored"] += ingest.counters.stored
            totals["unknown"] += ingest.counters.dropped_unknown_kiosk
            totals["overflow"] += ingest.counters.dropped_overflow
            totals["buffered"] += ingest.buffered_rows
            if edges.outbox is not None:
                totals["sent"] += edges.outbox.sent
                totals["failed"] += edges.outbox.failed_attempts
        connected.add_metric([], totals["connected"])
        for kind, n in sorted(kinds.items()):
            received.add_metric([kind], n)
        malformed.add_metric([], totals["malformed"])
        handler_errors.add_metric([], totals["errors"])
        commands.add_metric([], totals["commands"])
        stored.add_metric([], totals["stored"])
        dropped.add_metric(["unknown_kiosk"], totals["unknown"])
        dropped.add_metric(["overflow"], totals["overflow"])
        buffered.add_metric([], totals["buffered"])
        sent.add_metric([], totals["sent"])
        failed.add_metric([], totals["failed"])
        yield from (connected, received, malformed, handler_errors, commands, stored, dropped)
        yield from (buffered, sent, failed)


COLLECTOR = EdgesCollector()
REGISTRY.register(COLLECTOR)
