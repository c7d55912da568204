"""The service process's heap: the garbage collector set for a long-lived heap, and its pauses.

A replica holds state for every kiosk it serves (a lane, a sequencer, the last snapshot and the
hot-holding watch of each compartment): some 300,000 objects at 1,000 kiosks, 130,000 of them
left by importing the service. CPython's full collection walks all of them and holds the
event loop while it does: 120-190 ms at 1,000 kiosks on this machine, every 15-22 s, and a
scan that arrives meanwhile waits it out (ADR 0084). Two settings, made once by `lockerctl
serve` before it starts serving (`settle`):

- everything alive at start-up (the imported code, the app) is moved out of the collector's
  sight with `gc.freeze()`, after one full collection so that no garbage is frozen with it;
- the youngest generation is ten times CPython's default (`YOUNG_OBJECTS`), so the objects of
  one message (ORM rows, a session, a payload), which live across a database round trip and are
  then dropped, die young instead of being promoted; promotions are what start full
  collections, and with this setting they nearly stop.

`PauseCollector` reports on `/metrics` how long each generation's collections held the process
(`locker_gc_pause_seconds`), the longest of each (`locker_gc_pause_longest_seconds`) and how many
objects were frozen at start-up (`locker_gc_frozen_objects`), and the generations' thresholds
(`locker_gc_threshold`). Tests build many apps in one process and call neither.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from locker_service.metrics import REGISTRY

YOUNG_OBJECTS = 7_000  # allocations, net, between collections of the youngest generation
OLDER_RATIO = 10  # younger collections between two of the next generation (CPython's default)
PAUSE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
GENERATIONS = (0, 1, 2)


def settle() -> None:
    """Freeze what start-up left alive and set the generations (once, before serving)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_OBJECTS, OLDER_RATIO, OLDER_RATIO)


class PauseCollector(Collector):
    """Times every collection through `gc.callbacks` while installed; read at scrape time.

    The callback runs inside the collector, in whichever thread allocated last: it only does
    arithmetic on plain lists (no lock, so no thread can be stuck on one it already holds)."""

    def __init__(self) -> None:
        self._started: float | None = None  # the collection under way, if one is
        self._buckets = [[0] * (len(PAUSE_BUCKETS_S) + 1) for _ in GENERATIONS]
        self._sums = [0.0 for _ in GENERATIONS]
        self._longest = [0.0 for _ in GENERATIONS]

    def install(self) -> None:
        if self._timed not in gc.callbacks:
            gc.callbacks.append(self._timed)

    def uninstall(self) -> None:
        if self._timed in gc.callbacks:
            gc.callbacks.remove(self._timed)

    def _timed(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        if self._started is None:
            return  # installed while a collection was under way: its start was not seen
        pause, self._started = time.perf_counter() - self._started, None
        generation = info["generation"]
        self._sums[generation] += pause
        if pause > self._longest[generation]:
            self._longest[generation] = pause
        buckets = self._buckets[generation]
        for i, bound in enumerate(PAUSE_BUCKETS_S):
            if pause <= bound:
                buckets[i] += 1
                break
        else:
            buckets[-1] += 1

    def collect(self) -> Iterator[Metric]:
        pauses = HistogramMetricFamily(
            "locker_gc_pause_seconds",
            "How long the garbage collector held the process, by generation (2: a full one)",
            labels=["generation"],
        )
        longest = GaugeMetricFamily(
            "locker_gc_pause_longest_seconds",
            "The longest pause of each generation's collections since the process started",
            labels=["generation"],
        )
        for generation in GENERATIONS:
            counts, running = self._buckets[generation], 0
            cumulative = []
            for bound, n in zip((*PAUSE_BUCKETS_S, float("inf")), counts, strict=True):
                running += n
                cumulative.append((_bound(bound), running))
            pauses.add_metric([str(generation)], cumulative, self._sums[generation])
            longest.add_metric([str(generation)], self._longest[generation])
        frozen = GaugeMetricFamily(
            "locker_gc_frozen_objects",
            "Objects alive at start-up that the garbage collector no longer walks (gc.freeze)",
        )
        frozen.add_metric([], gc.get_freeze_count())
        thresholds = GaugeMetricFamily(
            "locker_gc_threshold",
            "When each generation is collected: net allocations for generation 0, collections "
            "of the generation below for the others (gc.get_threshold)",
            labels=["generation"],
        )
        for generation, threshold in zip(GENERATIONS, gc.get_threshold(), strict=True):
            thresholds.add_metric([str(generation)], threshold)
        yield from (pauses, longest, frozen, thresholds)


def _bound(seconds: float) -> str:
    return "+Inf" if seconds == float("inf") else repr(seconds)


PAUSES = PauseCollector()  # installed by `lockerctl serve`; read by every scrape
REGISTRY.register(PAUSES)
