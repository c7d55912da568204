"""Prometheus metrics of the service: the registry, the counters and the state gauges.

Counters are bumped where things happen; the state gauges (orders and compartments per state,
open alerts, pending outbox rows) are set from the database at scrape time by the /metrics
route (`locker_service.api.metrics`), so every replica reports the same truth rather than its
own share of it. This module imports no web framework, so any layer may count.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry()
DROPOFFS = Counter(
    "locker_dropoffs_total", "Drop-off requests by outcome", ["outcome"], registry=REGISTRY
)
PICKUPS = Counter(
    "locker_pickups_total", "Pickup attempts by outcome", ["outcome"], registry=REGISTRY
)
KIOSK_EVENTS = Counter(
    "locker_kiosk_events_total", "Kiosk events handled by type", ["type"], registry=REGISTRY
)
SCANS_IGNORED = Counter(
    "locker_scans_ignored_total",
    "Scan events that opened nothing because of their timestamp (stale: replayed after an "
    "outage; ahead: the kiosk clock is ahead beyond the skew allowance)",
    ["reason"],
    registry=REGISTRY,
)
ORDERS = Gauge("locker_orders", "Orders by state", ["state"], registry=REGISTRY)
COMPARTMENTS = Gauge("locker_compartments", "Compartments by state", ["state"], registry=REGISTRY)
ALERTS_OPEN = Gauge("locker_alerts_open", "Unresolved alerts by kind", ["kind"], registry=REGISTRY)
KIOSKS_ONLINE = Gauge("locker_kiosks_online", "Kiosks reporting online", registry=REGISTRY)
OUTBOX_PENDING = Gauge(
    "locker_outbox_pending", "Purchaser messages not yet sent", registry=REGISTRY
)
