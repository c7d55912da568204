"""The garbage collector's settings and pauses (ADR 0084): every collection timed by generation,
and a served process that froze its start-up, set its generations and reports both."""

from __future__ import annotations

import gc
import math
from pathlib import Path

import httpx
import pytest
from prometheus_client.core import Metric

from locker_service.heap import PAUSE_BUCKETS_S, YOUNG_OBJECTS, PauseCollector
from tests.locker_service.served import merchant_service


def samples(metrics: list[Metric], name: str) -> dict[tuple[str, str], float]:
    """(generation, le or "") -> value of the samples called `name`."""
    return {
        (s.labels.get("generation", ""), s.labels.get("le", "")): s.value
        for metric in metrics
        for s in metric.samples
        if s.name == name
    }


def test_every_collection_is_timed_under_its_generation_while_installed() -> None:
    meter = PauseCollector()
    gc.disable()  # only the collections asked for below (callbacks still run for them)
    try:
        meter.install()
        meter.install()  # once only: a second install does not count twice
        try:
            gc.collect(0)
            gc.collect(2)
            gc.collect(2)
        finally:
            meter.uninstall()
        gc.collect(2)  # not counted: uninstalled
    finally:
        gc.enable()
    metrics = list(meter.collect())
    counts = samples(metrics, "locker_gc_pause_seconds_count")
    assert counts[("0", "")] == 1 and counts[("2", "")] == 2 and counts[("1", "")] == 0
    sums = samples(metrics, "locker_gc_pause_seconds_sum")
    longest = samples(metrics, "locker_gc_pause_longest_seconds")
    assert 0 < longest[("2", "")] <= sums[("2", "")] and sums[("1", "")] == 0
    buckets = samples(metrics, "locker_gc_pause_seconds_bucket")
    full = [buckets[("2", repr(bound))] for bound in PAUSE_BUCKETS_S] + [buckets[("2", "+Inf")]]
    assert full == sorted(full) and full[-1] == 2  # cumulative, ending at the count
    # A starved machine can make a collection outlast the last bound: then only +Inf holds both.
    bounds = (*PAUSE_BUCKETS_S, math.inf)
    under = next(b for b, n in zip(bounds, full, strict=True) if n == 2)
    assert longest[("2", "")] <= under  # the longest is inside the bucket that holds them all


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_served_process_freezes_its_start_up_and_reports_its_pauses(
    tmp_path: Path,
) -> None:
    service, _world = await merchant_service(tmp_path)
    await service.start()
    try:
        async with httpx.AsyncClient(base_url=service.url) as client:
            text = (await client.get("/metrics")).text
    finally:
        service.kill()
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("locker_gc_")
    }
    assert values["locker_gc_frozen_objects"] > 50_000  # the imported code and the app
    assert values['locker_gc_threshold{generation="0"}'] == YOUNG_OBJECTS
    assert values['locker_gc_pause_seconds_count{generation="2"}'] >= 1  # settle()'s own
    assert values['locker_gc_pause_seconds_count{generation="0"}'] >= 1
