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

Across a change of holder the order is kept by what is recorded (ADR 0080): a replica that takes
a kiosk's lease learns, per lane, the highest number recorded for the kiosk (`RecordedUpTo`);
an event at or below it in its lane (`RecordedUpTo.stale`) is recorded already, or was heard
only by a holder that lost the kiosk while another went on after it, and is never handed to the
story.

Pure: the caller says what time it is (the event loop's clock). Tested without a broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

GAP_WAIT_S = 5.0  # how long a gap may stay open with nothing new from the kiosk
# The kiosk's newest recorded events a new holder looks at: enough to find both lanes' newest
# (a scan comes with every pickup) over what another holder records while one sleeps past its
# TTL; a scan older than that is refused by its age anyway (ADR 0034).
RECORDED_WINDOW = 50


@dataclass(frozen=True, slots=True)
class RecordedUpTo:
    """The highest numbers recorded for a kiosk when its lease was taken, per lane: scans have
    a lane of their own (ADR 0043), so a scan may be recorded ahead of an earlier door event
    that is still to be handled, and the other way round. None: nothing numbered recorded."""

    scans: int | None = None
    others: int | None = None
    # The highest number up to which every number from the lower lane's record on is recorded:
    # below it nothing is missing (ADR 0092). None: as high as the higher lane's record.
    complete_to: int | None = None

    @property
    def resend_after(self) -> int | None:
        """The number after which a new holder asks the kiosk to send its events again, and
        just after which its order starts (ADR 0092): the higher lane's record, or below it
        where a number between the two lanes' records is missing (a door event the old holder
        had not recorded while a later scan was). None: nothing numbered recorded."""
        known = [n for n in (self.scans, self.others) if n is not None]
        if not known:
            return None
        return self.complete_to if self.complete_to is not None else max(known)

    def stale(self, seq: int | None, *, scan: bool) -> bool:
        """At or below what is recorded in its lane. Number 1 never is: a bridge whose outbox
        started again (a new disk)."""
        up_to = self.scans if scan else self.others
        return seq is not None and up_to is not None and 1 < seq <= up_to


def recorded_up_to(newest_first: list[tuple[int | None, bool]]) -> RecordedUpTo:
    """From the kiosk's newest recorded events, `(seq, is a scan)` newest first: the highest
    number per lane, none from before an outbox that started again (number 1)."""
    highest: dict[bool, int] = {}
    seen: set[int] = set()
    for seq, scan in newest_first:
        if seq is None:
            continue  # a bridge that did not number its events
        highest[scan] = max(seq, highest.get(scan, seq))
        seen.add(seq)
        if seq == 1:
            break
    if not highest:
        return RecordedUpTo()
    complete_to = min(highest.values())
    while complete_to + 1 in seen:
        complete_to += 1
    return RecordedUpTo(scans=highest.get(True), others=highest.get(False), complete_to=complete_to)


class Sequencer(Generic[T]):
    """The events of one kiosk, in: any order; out: the bridge's order."""

    def __init__(self, wait_s: float = GAP_WAIT_S, start: int | None = None) -> None:
        """`start`: the number expected first (a new holder that asked the kiosk to send
        again what its record lacks, ADR 0092); None: the first event given, whatever it is."""
        self.wait_s = wait_s
        self._next: int | None = start  # the number expected next; None until the first
        self._held: dict[int, T] = {}
        self._gap_since = 0.0  # when the current gap opened (or its wait was started again)
        self._asked = False  # the kiosk was asked to send the current gap's events again

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def started(self) -> bool:
        """It knows the number it expects next."""
        return self._next is not None

    def offer(self, seq: int | None, item: T, now: float) -> list[T]:
        """Take one event; returns the events that may be handled now, in order."""
        if seq is None:  # a bridge that does not number its events: arrival order
            return [item]
        if self._next is None or seq == self._next:
            self._next = seq + 1
            self._asked = False
            ready = [item, *self._consecutive()]
            if self._held:
                self._gap_since = now  # the next missing one: a wait of its own
            return ready
        if seq < self._next:
            # Late (its gap was given up), a redelivery of one handled already (the handler
            # knows it by its id), or the first of a bridge whose outbox started again.
            if seq == 1:
                self._next = 2
                self._asked = False
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
        self._asked = False
        self._gap_since = now  # a further gap gets a wait of its own
        return self._consecutive()

    @property
    def expected(self) -> int | None:
        """The number expected next: every one below it has been handed on (None before the
        first)."""
        return self._next

    def flush(self) -> list[T]:
        """Everything held, in order; the sequencer starts again from the next arrival."""
        out = [self._held[seq] for seq in sorted(self._held)]
        self._held.clear()
        self._next = None
        self._asked = False
        return out

    def ask(self) -> int | None:
        """The number the current gap waits for, the first time it is asked about: the kiosk
        is then asked to send again its events from it on. None once asked already, until a
        gap opens again (even at the same number: a bridge whose outbox started again), or
        when nothing is missing."""
        if self._asked or not self._held or self._next is None:
            return None
        self._asked = True
        return self._next

    def _consecutive(self) -> list[T]:
        out: list[T] = []
        assert self._next is not None
        while self._next in self._held:
            out.append(self._held.pop(self._next))
            self._next += 1
        return out
