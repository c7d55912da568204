"""The state asks of a takeover, paced (ADR 0105).

A replica that takes a kiosk's lease asks the kiosk for its state and for what its record
lacks (`KioskLink.ask_state`, ADR 0091, 0092, 0098). Each answer is a burst: the status, a
snapshot per compartment, the events and telemetry sent again. A takeover takes hundreds of
leases within a second or two (ADR 0105), and their answers all at once would queue every
other kiosk's scans behind thousands of snapshots. So `ASKS_AT_ONCE` asks are under way at a
time, in the order the kiosks were taken, and the others wait their turn; a kiosk that sends
an event while it waits, or held events waiting for a gap when it was taken, is asked at once,
since those events wait for what it is to send again (the sequencer's gap, ADR 0092). A turn
ends after `TURN_S` even if its ask has not: a kiosk that does not answer holds up the others
only that long.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

Ask = Callable[[], Coroutine[Any, Any, None]]

# State asks under way at once. Each is the kiosk's answer and then the wait for its snapshots
# (`REPORTED_SNAPSHOTS_WAIT_S`), so a loaded replica gets the next answers only as it handles
# these: about 40 kiosks a second in a takeover here, with 4 as with 8 (ADR 0105).
ASKS_AT_ONCE = 4
# A turn ends with its ask, or after this long: a kiosk that does not answer (offline, though
# its last status said otherwise) holds a turn for a second, not for the ask's 10 s timeout.
TURN_S = 1.0


class StateAsks:
    """The asks of one link: those under way, and those waiting their turn in order."""

    def __init__(self, at_once: int | None = None, turn_s: float = TURN_S) -> None:
        self._at_once = ASKS_AT_ONCE if at_once is None else at_once
        self._turn_s = turn_s
        self._waiting: dict[str, Ask] = {}  # in the order added
        self._running: set[asyncio.Task[None]] = set()
        self._in_turn: set[asyncio.Task[None]] = set()  # those whose turn has not ended

    def add(self, kiosk_id: str, ask: Ask) -> None:
        """Ask the kiosk (`ask()`) in its turn. One still waiting from an earlier take is
        replaced, and keeps its place."""
        self._waiting[kiosk_id] = ask
        self._start_more()

    def hurry(self, kiosk_id: str) -> None:
        """The kiosk is asked now if it is waiting its turn, whatever is under way."""
        ask = self._waiting.pop(kiosk_id, None)
        if ask is not None:
            self._start(kiosk_id, ask)

    def discard(self, kiosk_id: str) -> None:
        """The kiosk is not asked, if it is still waiting its turn (its lease released)."""
        self._waiting.pop(kiosk_id, None)

    def waiting(self) -> list[str]:
        """The kiosks waiting their turn, in order."""
        return list(self._waiting)

    def cancel(self) -> None:
        self._waiting.clear()
        for task in self._running:
            task.cancel()

    def _start_more(self) -> None:
        while self._waiting and len(self._in_turn) < self._at_once:
            kiosk_id = next(iter(self._waiting))
            self._start(kiosk_id, self._waiting.pop(kiosk_id))

    def _start(self, kiosk_id: str, ask: Ask) -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(ask(), name=f"kiosk-report-state-{kiosk_id}")
        self._running.add(task)
        self._in_turn.add(task)
        task.add_done_callback(self._done)
        loop.call_later(self._turn_s, self._turn_over, task)

    def _turn_over(self, task: asyncio.Task[None]) -> None:
        if task in self._in_turn:
            self._in_turn.discard(task)
            self._start_more()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._turn_over(task)
