"""Latency histograms of the kiosk path: a message's wait for its lane, a scan's decision, and
telemetry from measurement to stored. Observed where those things happen.

The running parts' plain counters (messages, commands, readings, notifications) are read at
scrape time by `locker_service.runtime.RuntimeCollector`; all are served at /metrics.
"""

from __future__ import annotations

from prometheus_client import Histogram

from locker_service.metrics import REGISTRY

# A purchaser at the kiosk waits on a scan: tens of milliseconds are worth telling apart.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
MESSAGE_WAIT_S = Histogram(
    "locker_kiosk_message_wait_seconds",
    "From a kiosk message's arrival to its handling starting, by lane (scans, minutes, other)",
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
