"""One kiosk's events put back in the order its bridge numbered them (`Event.seq`, ADR 0066).

The broker does not always deliver a burst in the order it was sent. Mosquitto sends a
subscriber at most `max_inflight_messages` (20) unacknowledged QoS 1 messages and queues the
rest; the service acknowledges an event only once it is handled, so a burst fills that window,
and a message that arrives as a slot frees can overtake the queued ones (seen: a kiosk's 30th
door event handled before its 21st). The bridge numbers its events in its outbox; the sequencer
hands a kiosk's events on in that order. An event that arrives after a gap is held until the
missing one comes, or until the gap has stayed open `wait_s` (an event the broker refused, one
dropped as malformed or by a full outbox never comes); later arrivals do not prolong the wait,
only the kiosk's own earlier events still waiting to be handled do (`touch`). Then what is held
goes on in order and the late one, if it ever comes, is handled when it arrives.

A replica that takes a kiosk's lease starts after the last event recorded for the kiosk
(`after`, ADR 0080): another replica may have gone on with the kiosk meanwhile, so an event
numbered at or before that one is stale (recorded already, or one only a lost holder heard) and
would be recorded out of order; the lanes drop it (`stale`). The next number is awaited as any
gap is.

Pure: the caller says what time it is (the event loop's clock). Tested without a broker.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")

GAP_WAIT_S = 5.0  # how long a gap may stay open with nothing new from the kiosk
RECORDED_WINDOW = 20  # the last events recorded for a kiosk that `last_recorded` looks at


def is_stale(seq: int | None, after: int | None) -> bool:
    """An event numbered at or before `after`, the last one recorded when the lease was taken.

    Number 1 is never stale: it is a bridge whose outbox started again (a new disk)."""
    return seq is not None and after is not None and 1 < seq <= after


def last_recorded(seqs_newest_first: list[int | None]) -> int | None:
    """The number a new holder starts after, from the kiosk's last recorded events (newest
    first, `RECORDED_WINDOW` of them): the highest, since a scan has a lane of its own and may
    be recorded ahead of an earlier door event, but none from before an outbox that started
    again (number 1). None when none is numbered."""
    highest: int | None = None
    for seq in seqs_newest_first:
        if seq is None:
            continue
        highest = seq if highest is None else max(highest, seq)
        if seq == 1:
            break
    return highest


class Sequencer(Generic[T]):
    """The events of one kiosk, in: any order; out: the bridge's order."""

    def __init__(self, wait_s: float = GAP_WAIT_S, *, after: int | None = None) -> None:
        self.wait_s = wait_s
        # The number expected next; None until the first when there is nothing to start after.
        self._next: int | None = None if after is None else after + 1
        self._after = after  # what the lease was taken after: at or before it is stale
        self._held: dict[int, T] = {}
        self._gap_since = 0.0  # when the current gap opened (or its wait was started again)

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def handed_on(self) -> int | None:
        """The number it has gone on after, in order (None before the first numbered one)."""
        return None if self._next is None else self._next - 1

    def stale(self, seq: int | None) -> bool:
        """Numbered at or before what the lease was taken after: never to be handled."""
        return is_stale(seq, self._after)

    def offer(self, seq: int | None, item: T, now: float) -> list[T]:
        """Take one event; returns the events that may be handled now, in order."""
        if seq is None:  # a bridge that does not number its events: arrival order
            return [item]
        if self._next is None or seq == self._next:
            self._next = seq + 1
            ready = [item, *self._consecutive()]
            if self._held:
                self._gap_since = now  # the next missing one: a wait of its own
            return ready
        if seq < self._next:
            # Late (its gap was given up), a redelivery of one handled already (the handler
            # knows it by its id), or the first of a bridge whose outbox started again.
            if seq == 1:
                self._next = 2
                self._after = None  # what came before belongs to the old outbox
            return [item]
        if seq in self._held:  # a redelivery of one held: handled (and ignored) at once
            return [item]
        if not self._held:
            self._gap_since = now
        self._held[seq] = item
        return []

    def holds(self, seq: int | None) -> bool:
        return seq is not None and seq in self._held

    def replace(self, seq: int, item: T) -> T:
        """Keep `item` (a redelivery, e.g. after a reconnect) in place of the held copy of
        `seq`; returns the copy it replaces."""
        old = self._held[seq]
        self._held[seq] = item
        return old

    def deadline(self) -> float | None:
        """When to give the current gap up, if something is held."""
        return self._gap_since + self.wait_s if self._held else None

    def touch(self, now: float) -> None:
        """The kiosk's earlier events are still being handled: the missing one may be queued
        in the broker behind their acknowledgements, so the gap's wait starts again."""
        self._gap_since = now

    def give_up(self, now: float) -> list[T]:
        """Past the deadline: skip the gap and hand on what follows it, in order."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return []
        self._next = min(self._held)
        self._gap_since = now  # a further gap gets a wait of its own
        return self._consecutive()

    def flush(self) -> list[T]:
        """Everything held, in order; the sequencer starts again from the next arrival."""
        out = [self._held[seq] for seq in sorted(self._held)]
        self._held.clear()
        self._next = None
        return out

    def _consecutive(self) -> list[T]:
        out: list[T] = []
        assert self._next is not None
        while self._next in self._held:
            out.append(self._held.pop(self._next))
            self._next += 1
        return out
