"""Telemetry through a broker outage: the bridge keeps its readings folded into buckets on its
disk and, once the broker is back, sends every bucket once, oldest first, with its min, mean
and max, and forgets each only once the broker acknowledged it."""

from __future__ import annotations

import itertools
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from firmware_bridge import contract
from tests.firmware_bridge.conftest import Kiosk
from tests.firmware_bridge.harness import Observer


@pytest.mark.slow  # a broker outage of real seconds
def test_readings_kept_through_a_broker_outage_arrive_once_each_when_it_is_back(
    durable_kiosk: Kiosk, monkeypatch: pytest.MonkeyPatch
) -> None:
    kiosk = durable_kiosk
    bridge, broker, settings = kiosk.bridge, kiosk.broker, kiosk.settings
    # Persistent, on a broker that keeps sessions: what the bridge sends before this observer
    # is back after the broker's restart waits for it.
    obs = Observer(broker.host, broker.port, settings.kiosk_id, persistent=True).start()
    kept: set[int] = set()  # the start of every bucket the bridge folded a reading into
    keep = bridge.store.keep_telemetry

    def recording(*args: Any, **kwargs: Any) -> int:
        start = keep(*args, **kwargs)
        kept.add(start)
        return start

    monkeypatch.setattr(bridge.store, "keep_telemetry", recording)
    period_s = settings.scaled(settings.telemetry_period_s)
    width_s = settings.scaled(settings.telemetry_bucket_s)
    try:
        # Compartment 1 heats up through the outage: its temperatures move within a bucket.
        reply = kiosk.observer.final_reply(
            kiosk.observer.command("set_heater", 1, {"setpoint_c": 65.0}).request_id
        )
        assert reply["status"] == "succeeded"
        obs.wait(lambda: obs.on(obs.topics.telemetry), "live telemetry before the outage")
        broker.stop()
        obs.wait(lambda: not bridge.link.connected.is_set(), "the bridge to see the outage")

        def closed_buckets() -> int:
            return len(bridge.store.kept_buckets(-1, int(time.time() * 1000), 100))

        obs.wait(lambda: closed_buckets() >= 3, "three buckets kept and closed", timeout_s=30)
        broker.start()
        obs.wait(lambda: bridge.link.connected.is_set(), "the bridge back", timeout_s=40)
        obs.wait(
            lambda: bridge.store.kept_bucket_count() == 0,
            "every kept bucket acknowledged and gone from the disk",
            timeout_s=30,
        )
        obs.wait(
            lambda: len(obs.on(obs.topics.telemetry_minutes)) >= len(kept),
            "every bucket at the observer",
            timeout_s=30,
        )

        minutes = [
            contract.TelemetryMinutes.model_validate(m)
            for m in obs.on(obs.topics.telemetry_minutes)
        ]
        starts = [round(m.minute.timestamp() * 1000) for m in minutes]
        assert len(kept) >= 3
        assert starts == sorted(kept)  # every bucket, each once, oldest first
        assert bridge.link.buckets_sent == len(kept)
        # No hole: one bucket after the other, from right after the last live reading.
        assert all(b - a == round(width_s * 1000) for a, b in itertools.pairwise(starts))
        live = [datetime.fromisoformat(t["ts"]) for t in obs.on(obs.topics.telemetry)]
        last_live = max(ts for ts in live if ts < minutes[0].minute + timedelta(seconds=width_s))
        assert minutes[0].minute <= last_live + timedelta(seconds=2 * period_s)
        for m in minutes:
            assert m.seconds == width_s
            assert [r.n for r in m.readings] == list(range(1, 13))
            for r in m.readings:
                assert r.min_c is not None and r.mean_c is not None and r.max_c is not None
                assert 10.0 < r.min_c <= r.mean_c <= r.max_c < 90.0
                assert 1 <= r.count <= width_s / period_s + 1 and r.faulted == 0
        heated = [m.readings[0] for m in minutes]
        assert all(r.setpoint_c == 65.0 for r in heated)
        assert any(
            r.max_c is not None and r.min_c is not None and r.max_c > r.min_c for r in heated
        )
        assert heated[-1].mean_c is not None and heated[0].mean_c is not None
        assert heated[-1].mean_c > heated[0].mean_c  # it warmed up while the broker was away
        # Back in touch, readings are published live again and no longer kept.
        published = len(obs.on(obs.topics.telemetry))
        obs.wait(lambda: len(obs.on(obs.topics.telemetry)) > published + 1, "live telemetry again")
        assert bridge.store.kept_bucket_count() == 0
    finally:
        obs.stop()
