"""The one background loop: again at once while busy, else wait for a wake or the period; a
failing round is logged and the loop goes on; stop ends it. Driven round by round through the
injected wait, never by real sleeps."""

from __future__ import annotations

import asyncio
import logging

import pytest

from locker_service.background import BackgroundLoop

log = logging.getLogger(__name__)


class Pacer:
    """An injected wait that records each period asked for and returns when the test says."""

    def __init__(self) -> None:
        self.periods: list[float] = []
        self.waiting = asyncio.Event()
        self._go = asyncio.Event()

    async def wait(self, wake: asyncio.Event, timeout_s: float) -> None:
        self.periods.append(timeout_s)
        self.waiting.set()
        go = asyncio.ensure_future(self._go.wait())
        woken = asyncio.ensure_future(wake.wait())
        await asyncio.wait({go, woken}, return_when=asyncio.FIRST_COMPLETED)
        go.cancel()
        woken.cancel()
        self._go.clear()

    async def next_wait(self) -> None:
        await self.waiting.wait()
        self.waiting.clear()

    def period_over(self) -> None:
        self._go.set()


async def test_a_busy_loop_goes_again_at_once_and_an_idle_one_waits_its_period() -> None:
    pacer = Pacer()
    answers = [True, True, False, False]
    rounds: list[int] = []

    async def step() -> bool:
        rounds.append(len(rounds))
        return answers[len(rounds) - 1]

    loop = BackgroundLoop("probe", step, period_s=7.5, log=log, wait=pacer.wait)
    loop.start()
    await pacer.next_wait()
    assert rounds == [0, 1, 2]  # two busy rounds ran back to back, the idle one then waits
    assert pacer.periods == [7.5]
    pacer.period_over()
    await pacer.next_wait()
    assert rounds == [0, 1, 2, 3]
    await loop.stop()
    assert not loop.running


async def test_a_wake_runs_a_round_before_the_period_ends() -> None:
    pacer = Pacer()
    ran = asyncio.Event()

    async def step() -> bool:
        ran.set()
        return False

    loop = BackgroundLoop("probe", step, period_s=3600.0, log=log, wait=pacer.wait)
    loop.start()
    await pacer.next_wait()
    ran.clear()
    loop.wake()
    await pacer.next_wait()
    assert ran.is_set() and loop.rounds == 2
    await loop.stop()


async def test_a_failing_round_is_logged_counted_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pacer = Pacer()
    errors: list[str] = []
    calls = 0

    async def step() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database restarting")
        return False

    loop = BackgroundLoop(
        "probe",
        step,
        period_s=1.0,
        log=log,
        failure=lambda: f"round {calls} failed",
        on_error=lambda: errors.append("counted"),
        wait=pacer.wait,
    )
    with caplog.at_level(logging.ERROR, logger=__name__):
        loop.start()
        await pacer.next_wait()
        pacer.period_over()
        await pacer.next_wait()
    assert calls == 2 and loop.failures == 1 and errors == ["counted"]
    assert [r.getMessage() for r in caplog.records] == ["round 1 failed"]
    await loop.stop()


async def test_stop_ends_a_round_in_progress() -> None:
    started = asyncio.Event()

    async def step() -> bool:
        started.set()
        await asyncio.Event().wait()  # a round that never finishes by itself
        return False

    loop = BackgroundLoop("probe", step, period_s=1.0, log=log)
    loop.start()
    await started.wait()
    await loop.stop()
    assert not loop.running and loop.rounds == 0


@pytest.mark.parametrize("steps_between", [0, 1, 2])
async def test_a_stop_that_meets_a_wake_still_ends_the_loop(steps_between: int) -> None:
    """Python 3.11's `asyncio.wait_for` drops a cancellation that arrives as the awaited event
    is set: the loop went on and `stop()` (the service's shutdown) waited for ever. The real
    wait, not the pacer: woken, then stopped within a few steps of the event loop."""
    idle = asyncio.Event()

    async def step() -> bool:
        idle.set()
        return False

    loop = BackgroundLoop("probe", step, period_s=3600.0, log=log)
    loop.start()
    await idle.wait()
    for _ in range(3):
        await asyncio.sleep(0)  # the loop is in its wait
    loop.wake()
    for _ in range(steps_between):
        await asyncio.sleep(0)
    stopping = asyncio.ensure_future(loop.stop())
    for _ in range(20):
        await asyncio.sleep(0)
    assert stopping.done(), "the cancellation was lost: the loop went on"
