"""One way to run a background loop: a step done again and again in a task of its own.

The timer loop, the notification outbox, the telemetry ingest and its retention all have the
same shape: do a round of work; if it found work, go again at once (a backlog is drained without
waiting); else wait until `wake()` is called or `period_s` has passed. A round that raises is
logged, never ends the loop, and is followed by `error_pause_s` before the usual wait (so a
database that is down is not hammered). `stop()` cancels the task and waits for it.

The wait is injected (`wait=`), so a test can drive the loop round by round on its own clock
rather than on real sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

# Wait until the event is set or `timeout_s` has passed, whichever comes first.
Wait = Callable[[asyncio.Event, float], Awaitable[None]]


async def wait_or_wake(wake: asyncio.Event, timeout_s: float) -> None:
    """Return when `wake` is set or after `timeout_s`; a cancellation always ends the wait.

    Not `asyncio.wait_for`: on Python 3.11 it drops a cancellation that arrives as the event
    is set, and a loop waiting that way outlives its `stop()` (the service's shutdown hung).
    `asyncio.timeout` counts the cancellations it did not cause and passes them on.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await wake.wait()


class BackgroundLoop:
    """Runs `step` until stopped: again at once while it returns True (more work may be
    waiting), otherwise after `period_s` or as soon as `wake()` is called."""

    def __init__(
        self,
        name: str,
        step: Callable[[], Awaitable[bool]],
        *,
        period_s: float,
        log: logging.Logger,
        failure: str | Callable[[], str] = "round failed",
        error_pause_s: float = 0.0,
        on_error: Callable[[], None] | None = None,
        wait: Wait = wait_or_wake,
    ) -> None:
        self.name = name
        self._step = step
        self._period_s = period_s
        self._log = log
        self._failure = failure  # what the log says when a round raises
        self._error_pause_s = error_pause_s
        self._on_error = on_error
        self._wait = wait
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # rounds finished, failed ones included
        self.failures = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Cancel the loop (mid-round if it is in one) and wait until it has ended."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        """Run a round now rather than at the end of the period (new work just arrived)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                busy = await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.failures += 1
                failure = self._failure if isinstance(self._failure, str) else self._failure()
                self._log.exception("%s", failure)
                if self._on_error is not None:
                    self._on_error()
                busy = False
                if self._error_pause_s > 0:
                    await asyncio.sleep(self._error_pause_s)
            self.rounds += 1
            if not busy:
                # Cleared after the wait, not before the step: a wake that came during the
                # round is not lost, the next wait returns at once.
                await self._wait(self._wake, self._period_s)
                self._wake.clear()
