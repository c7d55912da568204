"""Kiosk messages to the story: one queue and worker per kiosk and lane, acks after handling,
and what the kiosk's lease standing lets this replica do with each message.

Each kiosk has two lanes: its scans, and everything else (status, snapshots, other events). A
worker hands its lane's messages to the handler one at a time in arrival order and acknowledges
each once the handler is done, so a service killed mid-message gets it again (at least once);
a run of snapshots queued one behind the other (a kiosk's report) goes as one, for one
transaction (ADR 0095).

With leases (ADR 0044) only the holder hands a kiosk's messages to the story, each under the
lease's fence. Status and snapshots of a kiosk held elsewhere only feed the live hub; events of
one whose lease this replica awaits are kept until the lease is taken, and then join the
kiosk's order (ADR 0092). The last status and snapshots of every kiosk are remembered, so
taking a lease can hand them to the story (`reconcile_kiosk`; the snapshots by
`replay_unheard_snapshots` for the compartments the kiosk does not report afresh, ADR 0093):
the reconciliation a resubscription would bring.

Events go into the lanes in the order the kiosk's bridge numbered them, not the order the
broker delivered them (`sequencer.py`, ADR 0066). A replica that takes a kiosk's lease is told
how far the kiosk's record goes (ADR 0080); an event at or below that in its lane (still
arriving, or queued from before the take: a replica that slept through a takeover and got its
kiosk back) is stale: acknowledged and dropped, never recorded out of order, and never the
number the kiosk's order starts from. The kiosk is asked to send again its events after the
record, and the order starts just after it (ADR 0092). A numbered event kept back, for a
missing one or for the take, is acknowledged at once: the kiosk can send it again.

The telemetry a kiosk's bridge kept while cut off (`TelemetryMinutes`, QoS 1) has a third lane,
so a long backlog never holds up a door event: each bucket is handed to the telemetry sink and
acknowledged once stored. Storing a bucket is idempotent, so whichever replica it reaches stores
it, lease or not; acknowledged unstored, it would be lost.

A message whose handling finds the database unreachable, or no pooled connection free in time,
is handed to the story again after a growing pause, in its place and unacknowledged, while this
replica holds the kiosk (ADR 0085): dropped, a kiosk's status would leave it offline in the
service until its next one, and an event would be missing from its story.

Everything here runs on the event loop and does no I/O of its own: tested without a broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import BaseModel

from firmware_bridge import contract
from firmware_bridge.contract import MessageKind
from locker_service.db import database_away
from locker_service.kiosk_link.connection import NOTHING_TO_ACK, Delivery
from locker_service.kiosk_link.counters import LinkCounters
from locker_service.kiosk_link.fencing import CURRENT_FENCE, Fence, LeaseLost
from locker_service.kiosk_link.handler import KioskHandler, TelemetrySink
from locker_service.kiosk_link.lease_keeper import Standing
from locker_service.kiosk_link.live import LivePublisher
from locker_service.kiosk_link.sequencer import GAP_WAIT_S, RecordedUpTo, Sequencer

log = logging.getLogger(__name__)

# A message whose handling found the database unreachable, or its pool with no connection to
# lend in time, is handed to the story again after these pauses (doubling), at most for as long.
RETRY_FIRST_S = 0.2
RETRY_MAX_PAUSE_S = 5.0
RETRY_FOR_S = 120.0  # past a failover (tens of seconds); a lease lost in between ends it sooner
# A kiosk's snapshots queued together are handled in one transaction, up to this many (a bank
# has up to 255 compartments; a transaction's row locks are held until its commit).
SNAPSHOTS_AT_ONCE = 32
SCAN_LANE = "/scans"  # a suffix no kiosk id has: "/" cannot occur in an MQTT topic level
MINUTES_LANE = "/minutes"


class LeaseStanding(Protocol):
    """What the lanes ask of the lease keeper (implemented by `lease_keeper.LeaseKeeper`)."""

    def standing(self, kiosk_id: str) -> Standing: ...

    def fence(self, kiosk_id: str) -> Fence | None: ...

    async def changed(self) -> None: ...

    def noticed(self, kiosk_id: str) -> None: ...

    def wake(self) -> None: ...


@dataclass(slots=True)
class Inbound:
    """One validated message waiting for its kiosk's worker, with what is needed to ack it."""

    kiosk_id: str
    kind: MessageKind
    payload: BaseModel
    delivery: Delivery
    received_at: float = field(default_factory=time.perf_counter)
    # Judged stale or not on arrival, under the kiosk's take numbered here (ADR 0080).
    verdict: tuple[int, bool] | None = None


def lane_of(item: Inbound) -> str:
    """The queue a message waits in: each kiosk has two, one for its scans and one for the rest.

    A purchaser waits on a scan, so it must not wait behind the snapshots, status and door
    events her kiosk sent just before (each a transaction, a run of snapshots one). The events a
    scan causes (the door opening) come after its unlock, which leaves only once the scan's
    decision has committed, so they cannot overtake it; scans keep their order among themselves,
    so a code scanned twice opens once and refuses once, in that order (ADR 0043).
    """
    if isinstance(item.payload, contract.Event) and item.payload.type == "scan":
        return item.kiosk_id + SCAN_LANE
    if isinstance(item.payload, contract.TelemetryMinutes):
        return item.kiosk_id + MINUTES_LANE
    return item.kiosk_id


class LaneQueue(asyncio.Queue[Inbound]):
    """A lane's queue, whose worker can look at the message next in it. Its deque keeps the
    name `asyncio.Queue` reads (`qsize`, `empty`), as the standard library's own queues do."""

    def _init(self, maxsize: int) -> None:
        self._queue: deque[Inbound] = deque()

    def _put(self, item: Inbound) -> None:
        self._queue.append(item)

    def _get(self) -> Inbound:
        return self._queue.popleft()

    def take_snapshots_behind(self, batch: list[Inbound]) -> None:
        """Take the snapshots queued right behind the batch's first into it, at most
        `SNAPSHOTS_AT_ONCE`, each of a compartment not in it yet; anything else stays in the
        queue, next. A compartment's second snapshot starts the next run: in one transaction it
        would be judged against its first as it stands unflushed, which a refresh (the latch's
        give-back) or a savepoint's rollback would discard."""
        snapshot_type = contract.CompartmentSnapshot
        numbers = {s.payload.n for s in batch if isinstance(s.payload, snapshot_type)}
        while len(batch) < SNAPSHOTS_AT_ONCE and self._queue:
            snapshot = self._queue[0].payload
            if not isinstance(snapshot, snapshot_type) or snapshot.n in numbers:
                return
            numbers.add(snapshot.n)
            batch.append(self.get_nowait())


class Lanes:
    """The kiosks' lanes of one replica, and the last retained state each kiosk reported."""

    def __init__(
        self,
        handler: KioskHandler,
        live: LivePublisher,
        ack: Callable[[Delivery], None],
        counters: LinkCounters,
        *,
        telemetry: TelemetrySink | None = None,
        leases: LeaseStanding | None = None,
        wait_observer: Callable[[str, float], None] | None = None,
        gap_wait_s: float = GAP_WAIT_S,
        ask_again: Callable[[str, int], None] | None = None,
    ) -> None:
        self._handler = handler
        self._live = live
        self._ack = ack
        self._counters = counters
        self._telemetry = telemetry
        self._leases = leases
        self._wait_observer = wait_observer  # (lane, seconds a message waited for its worker)
        self._queues: dict[str, LaneQueue] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._kiosk_status: dict[str, contract.KioskStatus] = {}
        # The last snapshot of every compartment, by kiosk, and the compartments whose last one
        # the story has not been handed (it came while the kiosk was not held here): replayed
        # once this replica has taken the kiosk's lease and asked for its state afresh.
        self._snapshots: dict[str, dict[int, contract.CompartmentSnapshot]] = {}
        self._unheard: dict[str, set[int]] = {}
        self._all_heard: dict[str, asyncio.Event] = {}  # for `snapshots_heard`
        self._gap_wait_s = gap_wait_s
        # Asks the kiosk to send again the events it keeps after a number (ADR 0092), once per
        # gap whose wait ran out, before the gap is given up: one the broker lost on the way.
        self._ask_again = ask_again
        self._sequencers: dict[str, Sequencer[Inbound]] = {}
        self._gap_timers: dict[str, asyncio.TimerHandle] = {}
        # Messages being handed to the story now, per kiosk (waiting for the database included).
        self._in_hand: dict[str, int] = {}
        # Kiosks whose last message was given up on after RETRY_FOR_S: their next ones get one
        # try each until one goes through, so a fault taken for the database being away holds
        # a kiosk back once, not once per message.
        self._gave_up: set[str] = set()
        # How far each kiosk's record went when this replica took its lease (ADR 0080), as
        # events arriving since are judged against it (`_recorded`, until an event numbered 1
        # arrives) and as the worker judges those that came before the take (`_recorded_queued`,
        # until it reaches an event numbered 1); the takes of each kiosk, counted.
        self._recorded: dict[str, RecordedUpTo] = {}
        self._recorded_queued: dict[str, RecordedUpTo] = {}
        self._takes: dict[str, int] = {}
        self._restarted_awaiting: set[str] = set()  # an event numbered 1 came before the take
        # Events of a kiosk whose lease this replica awaits (or has not yet decided), in
        # arrival order (the numbered ones acknowledged: `_acked_while_kept`): the take puts
        # them in the kiosk's new order (ADR 0092), with those the kiosk sends again; a task
        # hands them to the worker if it does not come.
        self._before_take: dict[str, list[Inbound]] = {}
        self._take_waiters: dict[str, asyncio.Task[None]] = {}
        self._stopped = False

    def kiosk_status(self, kiosk_id: str) -> contract.KioskStatus | None:
        return self._kiosk_status.get(kiosk_id)

    def kiosk_statuses(self) -> Mapping[str, contract.KioskStatus]:
        return self._kiosk_status

    def standing(self, kiosk_id: str) -> Standing:
        return "held" if self._leases is None else self._leases.standing(kiosk_id)

    def admit(self, kiosk_id: str, kind: MessageKind, model: BaseModel, delivery: Delivery) -> None:
        """Take a validated status, snapshot, event or telemetry batch of a kiosk."""
        if self._leases is not None:
            self._leases.noticed(kiosk_id)  # a kiosk created since the last round: look now
        standing = self.standing(kiosk_id)
        if isinstance(model, contract.Telemetry):
            # Only the holder writes. What reaches nobody at a handover (QoS 0) the new holder
            # asks for again (ADR 0098): sent again, a batch is old news for the screens.
            if self._telemetry is not None and standing in ("held", "releasing"):
                self._telemetry.submit(kiosk_id, model)
            if not model.resent:
                self._live.publish(kiosk_id, "telemetry", model)
            return
        if isinstance(model, contract.TelemetryMinutes):
            self._enqueue(Inbound(kiosk_id, kind, model, delivery))
            return
        if isinstance(model, contract.KioskStatus):
            self._kiosk_status[kiosk_id] = model
            self._forget_beyond_the_board(kiosk_id)
        elif isinstance(model, contract.CompartmentSnapshot):
            self._snapshots.setdefault(kiosk_id, {})[model.n] = model
            if standing == "held":
                self._heard(kiosk_id, model.n)
            else:
                self._unheard.setdefault(kiosk_id, set()).add(model.n)
                self._forget_beyond_the_board(kiosk_id)
        if standing == "foreign" or (standing != "held" and kind != "event"):
            # Status and snapshots of a kiosk this replica does not hold (yet) only feed the
            # live hub: the holder has them (retained), and on taking a lease this replica
            # hands the last ones it saw to the story (`reconcile_kiosk`, the snapshots
            # unheard since by `replay_unheard_snapshots`), so they need not wait
            # unacknowledged in the broker's in-flight window. Events of an awaited kiosk
            # do wait. A releasing holder still handles the events the broker sent before its
            # unsubscription was confirmed; the next holder listens already, so the overlap is
            # handled once (by `event_id`).
            self._ack(delivery)
            if kind == "event":
                self._drop_not_held(kiosk_id, model)
                if standing == "foreign":
                    self._forget_order(kiosk_id)
                    self._restarted_awaiting.discard(kiosk_id)  # the holder records it
            else:
                self._live.publish(kiosk_id, kind, model)
            return
        item = Inbound(kiosk_id, kind, model, delivery)
        if isinstance(model, contract.Event):
            self._in_order(item, model.seq)
        else:
            self._enqueue(item)

    def reconcile_kiosk(self, kiosk_id: str, recorded: RecordedUpTo | None = None) -> int | None:
        """Held just now, with the kiosk's record `recorded` so far: hand the story the kiosk's
        last retained status; its snapshots wait for `replay_unheard_snapshots`, as the kiosk
        asked for its state sends them afresh. Returns the number after which the kiosk is to
        send its kept events again (ADR 0092), if the record has one: the kiosk's order then
        starts just after it, so what they fill in is handled before what follows."""
        # Held again: the bridge's numbers are followed afresh, past those given to the worker
        # already; what waited for a gap, or for the take, joins the new order.
        given, held = self._stop_order(kiosk_id)
        before_take = held + self._before_take.pop(kiosk_id, [])
        self._takes[kiosk_id] = self._takes.get(kiosk_id, 0) + 1  # earlier verdicts lapse
        restarted = kiosk_id in self._restarted_awaiting
        self._restarted_awaiting.discard(kiosk_id)
        if recorded is None:
            self._recorded_queued.pop(kiosk_id, None)
        else:
            self._recorded_queued[kiosk_id] = recorded
        resend_after = None
        if recorded is None or restarted:
            # After an outbox that started again, new arrivals are not the old record's.
            self._recorded.pop(kiosk_id, None)
        else:
            self._recorded[kiosk_id] = recorded
            resend_after = recorded.resend_after
        if resend_after is not None:
            # Events given to the worker already (a replica that held the kiosk, lost it while
            # asleep, and took it back) are not waited for again.
            start = max(resend_after + 1, given or 0)
            self._sequencers[kiosk_id] = Sequencer(self._gap_wait_s, start=start)
        for item in before_take:  # in arrival order, judged by the worker as before the take
            self._offer(item)
        status = self._kiosk_status.get(kiosk_id)
        if status is not None:
            self._enqueue(Inbound(kiosk_id, "status", status, NOTHING_TO_ACK))
        return resend_after

    def replay_unheard_snapshots(self, kiosk_id: str) -> None:
        """Hand the story the last snapshot seen of each compartment of a kiosk held here
        that came while it was not held, and none has come since: the retained copies that
        came before the take, for compartments the kiosk did not report afresh (it did not
        answer, or the broker's queue dropped a report)."""
        if self.standing(kiosk_id) != "held":
            return  # not ours (any more): the holder hands its own
        for n in sorted(self._unheard.get(kiosk_id, ())):
            self._replay(kiosk_id, n)

    def _copy_ahead_of(self, kiosk_id: str, n: int) -> None:
        """An event of compartment `n` going to the worker, whose copy from before the take is
        still listed: the copy goes first, as it did when the take handed them all on; handed
        on after it (its fresh report lost), an older copy would undo the event, a door it
        opened shut again. Whatever the stamps say: a kiosk stamps a poll's snapshot before
        that poll's events, and its clock can be set back; a copy newer than the event (one
        sent again, ADR 0092) is followed by the event as after 0091's take."""
        unheard = self._unheard.get(kiosk_id)
        if unheard is not None and n in unheard and self.standing(kiosk_id) == "held":
            self._replay(kiosk_id, n)

    def _replay(self, kiosk_id: str, n: int) -> None:
        unheard = self._unheard.get(kiosk_id)
        if unheard is None or n not in unheard:
            return
        snapshot = self._snapshots.get(kiosk_id, {}).get(n)
        if snapshot is not None:
            self._counters.snapshots_replayed += 1
            self._enqueue(Inbound(kiosk_id, "snapshot", snapshot, NOTHING_TO_ACK))
        self._heard(kiosk_id, n)

    async def snapshots_heard(self, kiosk_id: str) -> None:
        """Return once every compartment of the kiosk whose last snapshot came while it was not
        held here has had a snapshot since (nothing for `replay_unheard_snapshots`)."""
        while kiosk_id in self._unheard:
            await self._all_heard.setdefault(kiosk_id, asyncio.Event()).wait()

    def _forget_beyond_the_board(self, kiosk_id: str) -> None:
        """A retained snapshot of a compartment the kiosk's board no longer has (a bank refitted
        smaller, its old topic never cleared) will never be reported afresh: it is not waited
        for, nor handed to the story, once the kiosk's status says how many it has."""
        status = self._kiosk_status.get(kiosk_id)
        unheard = self._unheard.get(kiosk_id)
        if status is None or status.compartments is None or not unheard:
            return
        for n in [n for n in unheard if n > status.compartments]:
            self._heard(kiosk_id, n)

    def _heard(self, kiosk_id: str, n: int) -> None:
        unheard = self._unheard.get(kiosk_id)
        if unheard is None:
            return
        unheard.discard(n)
        if not unheard:
            del self._unheard[kiosk_id]
            event = self._all_heard.pop(kiosk_id, None)
            if event is not None:
                event.set()

    def waits_for_gap(self, kiosk_id: str) -> bool:
        """Some of the kiosk's events wait for a number missing before them."""
        sequencer = self._sequencers.get(kiosk_id)
        return sequencer is not None and sequencer.held > 0

    async def drain_kiosk(self, kiosk_id: str) -> None:
        """Return when every message of the kiosk taken so far has been handled (those held
        for a gap included: they go on in order), and its telemetry stored: the next holder
        asks the kiosk for the readings after those stored (ADR 0098), and one still in this
        replica's buffer then would be stored twice."""
        self._forget_order(kiosk_id)
        for lane in (kiosk_id, kiosk_id + SCAN_LANE):
            queue = self._queues.get(lane)
            if queue is not None:
                await queue.join()
        if self._telemetry is not None:
            try:
                await self._telemetry.flush()
            except Exception:  # the database away: the lease is freed all the same
                log.warning(
                    "could not store kiosk %s's telemetry before its release",
                    kiosk_id,
                    exc_info=True,
                )

    async def stop(self) -> None:
        """Stop the workers; what waits in their queues stays unacknowledged for the broker."""
        for timer in self._gap_timers.values():
            timer.cancel()
        self._gap_timers.clear()
        self._sequencers.clear()
        self._stopped = True  # nothing more is kept for a take
        waiters = list(self._take_waiters.values())  # each takes itself out as it ends
        for waiter in waiters:
            waiter.cancel()
        for waiter in waiters:
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
        self._take_waiters.clear()
        self._before_take.clear()
        for task in self._workers.values():
            task.cancel()
        for task in self._workers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()
        self._queues.clear()

    def _drop_not_held(self, kiosk_id: str, model: BaseModel) -> None:
        self._counters.dropped_not_held += 1
        log.debug("dropped %s of kiosk %s: its lease is not held here", model, kiosk_id)

    def _stale(self, item: Inbound) -> bool:
        """An event at or below what its lane had recorded when this replica took the lease:
        as judged on arrival under the current take, else (it came before the take, or under
        an earlier one) against the take's record, which an event numbered 1 ends as the worker
        reaches it."""
        event = item.payload
        if not isinstance(event, contract.Event) or event.seq is None:
            return False
        if item.verdict is not None and item.verdict[0] == self._takes.get(item.kiosk_id, 0):
            return item.verdict[1]
        if event.seq == 1:
            # A bridge whose outbox started again: the old outbox's numbers no longer count.
            self._recorded_queued.pop(item.kiosk_id, None)
            return False
        return _passed(self._recorded_queued.get(item.kiosk_id), event)

    def _drop_stale(self, item: Inbound) -> None:
        self._counters.events_stale += 1
        log.info(
            "kiosk %s: event #%s dropped: the kiosk's record had gone past it when this replica "
            "took its lease",
            item.kiosk_id,
            item.payload.seq if isinstance(item.payload, contract.Event) else "?",
        )

    # -- the bridge's order ------------------------------------------------------------------

    def _in_order(self, item: Inbound, seq: int | None) -> None:
        kiosk_id, event = item.kiosk_id, item.payload
        standing = self.standing(kiosk_id)
        if seq == 1:
            # A bridge whose outbox started again: the old outbox's record no longer counts.
            self._recorded.pop(kiosk_id, None)
            if standing not in ("held", "releasing"):
                self._restarted_awaiting.add(kiosk_id)
        elif standing in ("held", "releasing") and isinstance(event, contract.Event):
            # Judged now, once: an event numbered 1 arriving later changes nothing for it.
            stale = _passed(self._recorded.get(kiosk_id), event)
            item.verdict = (self._takes.get(kiosk_id, 0), stale)
            sequencer = self._sequencers.get(kiosk_id)
            if stale and (sequencer is None or not sequencer.started):
                # The worker drops it: it must not become the number the sequencer starts
                # from, or the next new event would wait for a gap the record has filled.
                # Once the order has a start (ADR 0092) it takes its place there, so that
                # what follows it does not wait for it; the worker drops it all the same.
                self._enqueue(item)
                return
        if kiosk_id in self._before_take or (
            standing in ("unsettled", "awaited") and self._leases is not None
        ):
            # Behind those kept already, whatever the standing says by now: the take, or the
            # task that waits for the standing to settle, hands them all on in arrival order.
            self._wait_for_take(item)
            return
        self._offer(item)

    def _wait_for_take(self, item: Inbound) -> None:
        """Keep an event of a kiosk whose lease is not (yet) this replica's until the take
        (`reconcile_kiosk`) or, if the lease goes elsewhere, give it to the worker to drop."""
        if self._stopped:
            return  # left unacknowledged: the broker has it for the next run
        kiosk_id, seq = item.kiosk_id, getattr(item.payload, "seq", None)
        self._acked_while_kept(item)
        waiting = self._before_take.setdefault(kiosk_id, [])
        for i, other in enumerate(waiting):
            if seq is not None and getattr(other.payload, "seq", None) == seq:
                waiting[i] = _fuller(other, item)  # sent again: one copy kept in its place
                return
        waiting.append(item)
        if kiosk_id not in self._take_waiters:
            self._take_waiters[kiosk_id] = asyncio.get_running_loop().create_task(
                self._until_taken(kiosk_id), name=f"kiosk-take-{kiosk_id}"
            )

    async def _until_taken(self, kiosk_id: str) -> None:
        try:
            standing = await self._standing_settled(kiosk_id)
        finally:
            self._take_waiters.pop(kiosk_id, None)
        for item in self._before_take.pop(kiosk_id, []):  # the take would have taken them
            if standing in ("held", "releasing"):
                self._offer(item)
            else:
                self._enqueue(item)  # held elsewhere: dropped and acknowledged

    def _offer(self, item: Inbound) -> None:
        """Into the kiosk's order: handed to the worker once the events before it were."""
        seq = getattr(item.payload, "seq", None)
        sequencer = self._sequencers.get(item.kiosk_id)
        if sequencer is None:
            sequencer = self._sequencers[item.kiosk_id] = Sequencer(self._gap_wait_s)
        if seq is not None and sequencer.holds(seq):
            # Sent again (a reconnect re-sends what was not acknowledged, or the kiosk at a
            # new holder's asking): one copy waits in its place, the other is acknowledged (a
            # no-op on a closed connection).
            old = sequencer.replace(seq, item)
            kept = _fuller(old, item)
            sequencer.replace(seq, kept)
            self._ack((old if kept is item else item).delivery)
            self._acked_while_kept(kept)
            return
        before = sequencer.held
        for ready in sequencer.offer(seq, item, asyncio.get_running_loop().time()):
            self._enqueue(ready)
        if sequencer.held > before:
            self._counters.events_held_for_order += 1
            self._acked_while_kept(item)
        self._arm_gap_timer(item.kiosk_id)

    def _acked_while_kept(self, item: Inbound) -> None:
        """A numbered event kept back (for a missing one, or for the take) is acknowledged at
        once (ADR 0092): unacknowledged it would hold one of the broker's in-flight slots for
        this connection (20 in Mosquitto), and enough of them would hold back the very events
        they wait for. Should this replica die with it, the next holder's record lacks it and
        the kiosk sends it again. An unnumbered one (a bridge from before ADR 0066, which
        cannot send it again) stays unacknowledged until handled."""
        if getattr(item.payload, "seq", None) is not None and item.delivery is not NOTHING_TO_ACK:
            self._ack(item.delivery)
            item.delivery = NOTHING_TO_ACK

    def _arm_gap_timer(self, kiosk_id: str) -> None:
        timer = self._gap_timers.pop(kiosk_id, None)
        if timer is not None:
            timer.cancel()
        sequencer = self._sequencers.get(kiosk_id)
        deadline = sequencer.deadline() if sequencer is not None else None
        if deadline is not None:
            loop = asyncio.get_running_loop()
            self._gap_timers[kiosk_id] = loop.call_at(deadline, self._gap_due, kiosk_id)

    def _gap_due(self, kiosk_id: str) -> None:
        self._gap_timers.pop(kiosk_id, None)
        sequencer = self._sequencers.get(kiosk_id)
        if sequencer is None:
            return
        now = asyncio.get_running_loop().time()
        if self._in_hand.get(kiosk_id) or any(q.qsize() for q in self._kiosk_queues(kiosk_id)):
            # Its earlier events are still waiting to be handled: the missing one may be
            # queued in the broker behind their acknowledgements.
            sequencer.touch(now)
        elif self._asks_again(kiosk_id, sequencer):
            sequencer.touch(now)  # a wait of its own for what the kiosk sends again
        else:
            ready = sequencer.give_up(now)
            if ready:
                self._counters.event_gaps_skipped += 1
                log.warning(
                    "kiosk %s: an event before #%s never came (refused by the broker or dropped "
                    "as malformed?); the %d after it are handled on",
                    kiosk_id,
                    ready[0].payload.seq if isinstance(ready[0].payload, contract.Event) else "?",
                    len(ready),
                )
            for item in ready:
                self._enqueue(item)
        self._arm_gap_timer(kiosk_id)

    def _asks_again(self, kiosk_id: str, sequencer: Sequencer[Inbound]) -> bool:
        """Ask the kiosk once a gap to send again its events from the missing one on: a broker
        can lose a message on the way (seen with a clustered broker while a subscription
        moved), and the kiosk keeps what it sent. True if asked now; False if asked already
        for this gap."""
        if self._ask_again is None or (missing := sequencer.ask()) is None:
            return False
        self._counters.event_gaps_asked += 1
        log.info(
            "kiosk %s: event #%d has not come; asking the kiosk to send it again", kiosk_id, missing
        )
        self._ask_again(kiosk_id, missing - 1)
        return True

    def _forget_order(self, kiosk_id: str) -> None:
        """Start the kiosk's order afresh; what waited for a gap goes to the worker, in order:
        handled if the kiosk is held here, else acknowledged and dropped (the holder has its
        own copies)."""
        for item in self._stop_order(kiosk_id)[1]:
            self._enqueue(item)

    def _stop_order(self, kiosk_id: str) -> tuple[int | None, list[Inbound]]:
        """End the kiosk's order: the number it expected next (every one below it was given
        to the worker), if any, and what it held for a gap, in order."""
        sequencer = self._sequencers.pop(kiosk_id, None)
        timer = self._gap_timers.pop(kiosk_id, None)
        if timer is not None:
            timer.cancel()
        if sequencer is None:
            return None, []
        return sequencer.expected, sequencer.flush()

    def _kiosk_queues(self, kiosk_id: str) -> list[LaneQueue]:
        lanes = (kiosk_id, kiosk_id + SCAN_LANE)
        return [self._queues[lane] for lane in lanes if lane in self._queues]

    def _enqueue(self, item: Inbound) -> None:
        event = item.payload
        if isinstance(event, contract.Event) and event.compartment is not None:
            self._copy_ahead_of(item.kiosk_id, event.compartment)
        lane = lane_of(item)
        queue = self._queues.get(lane)
        if queue is None:
            queue = self._queues[lane] = LaneQueue()
            self._workers[lane] = asyncio.get_running_loop().create_task(
                self._worker(queue, _lane_label(lane)),
                name=f"kiosk-link-{lane}",
            )
        queue.put_nowait(item)

    async def _worker(self, queue: LaneQueue, lane: str) -> None:
        """Hands one lane's messages to the handler in arrival order, acking each when done.

        Snapshots queued one behind the other (a kiosk's report: one per compartment) are
        handed over together, to be handled in one transaction (ADR 0095)."""
        while True:
            item = await queue.get()
            batch = [item]
            try:
                if isinstance(item.payload, contract.TelemetryMinutes):
                    if self._wait_observer is not None:
                        self._wait_observer(lane, time.perf_counter() - item.received_at)
                    await self._store_minutes(item.kiosk_id, item.payload)
                    self._ack(item.delivery)
                    continue
                standing = await self._standing_settled(item.kiosk_id)
                if isinstance(item.payload, contract.CompartmentSnapshot):
                    queue.take_snapshots_behind(batch)
                if self._wait_observer is not None:
                    for one in batch:
                        self._wait_observer(lane, time.perf_counter() - one.received_at)
                if standing in ("held", "releasing") and self._stale(item):
                    self._drop_stale(item)
                elif standing in ("held", "releasing"):
                    await self._handle(batch)
                elif isinstance(item.payload, contract.Event):
                    self._drop_not_held(item.kiosk_id, item.payload)
                else:
                    for one in batch:
                        self._not_handed(one)
                for one in batch:
                    self._ack(one.delivery)
                    await self._live.publish_now(one.kiosk_id, one.kind, one.payload)
            finally:
                for _ in batch:
                    queue.task_done()

    async def _store_minutes(self, kiosk_id: str, minutes: contract.TelemetryMinutes) -> None:
        if self._telemetry is None:
            return  # a service without a telemetry store
        try:
            await self._telemetry.store_minutes(kiosk_id, minutes)
        except Exception:  # the sink retries while the database is away: this is a bug
            self._counters.handler_errors += 1
            log.exception("storing kept telemetry of kiosk %s failed", kiosk_id)

    async def _standing_settled(self, kiosk_id: str) -> Standing:
        """The kiosk's standing once decided: a message of a kiosk whose lease this replica
        awaits waits (unacknowledged, so a crash leaves it to the broker) until it is taken."""
        while True:
            standing = self.standing(kiosk_id)
            if standing not in ("unsettled", "awaited") or self._leases is None:
                return standing
            await self._leases.changed()

    async def _handle(self, items: list[Inbound]) -> None:
        """Hand one message, or a kiosk's snapshots queued together, to the handler."""
        item = items[0]
        fence = self._leases.fence(item.kiosk_id) if self._leases is not None else None
        token = CURRENT_FENCE.set(fence)
        try:
            await self._until_the_database_answers(items)
        except LeaseLost as lost:
            # Taken over while this message waited (the replica was paused past its TTL):
            # the transaction changed nothing; the new holder has the kiosk.
            log.debug("%s: %s dropped", lost, item.kind)
            if isinstance(item.payload, contract.Event):
                self._counters.dropped_not_held += 1
            for one in items:
                self._not_handed(one)
            if self._leases is not None:
                self._leases.wake()
        except Exception:
            if len(items) > 1:
                # One snapshot the story cannot take must not cost the others theirs: the
                # batch's transaction rolled back, and each is handled alone, as it came.
                log.warning(
                    "handling %d snapshots of kiosk %s together failed; handling each alone",
                    len(items),
                    item.kiosk_id,
                    exc_info=True,
                )
                for one in items:
                    await self._handle([one])
                return
            self._counters.handler_errors += 1
            log.exception("handling %s from kiosk %s failed", item.kind, item.kiosk_id)
        finally:
            CURRENT_FENCE.reset(token)

    async def _until_the_database_answers(self, items: list[Inbound]) -> None:
        """Hands the message to the handler; when the database cannot be reached or lend a
        connection in time (a failover, a storm of kiosks connecting at once), hands it again
        after a growing pause, unacknowledged and in its place in the lane, for as long as this
        replica holds the kiosk and at most `RETRY_FOR_S`. Each try is one transaction that
        rolled back or, cut at its commit, is the at-least-once delivery the story already takes
        (a replica killed mid-message gets the message again): the next try finds the event
        recorded and changes nothing."""
        item = items[0]
        kiosk_id = item.kiosk_id
        give_up_at = time.monotonic() + (0.0 if kiosk_id in self._gave_up else RETRY_FOR_S)
        pause, tries = RETRY_FIRST_S, 0
        self._in_hand[kiosk_id] = self._in_hand.get(kiosk_id, 0) + 1
        try:
            while True:
                try:
                    await self._dispatch(items)
                    self._gave_up.discard(kiosk_id)
                    return
                except Exception as exc:
                    if not database_away(exc):
                        raise
                    if time.monotonic() + pause > give_up_at:
                        self._gave_up.add(kiosk_id)
                        raise
                    if self.standing(kiosk_id) not in ("held", "releasing"):
                        # The kiosk is another replica's now: not ours to finish. Its new
                        # holder has the retained status and snapshots; an event only this
                        # replica received is lost with it, as any lost while it waited.
                        for one in items:
                            self._drop_lost_while_retrying(one)
                        return
                    tries += 1
                    self._counters.handler_retries += 1
                    log.log(
                        logging.WARNING if tries == 1 else logging.DEBUG,
                        "handling %s from kiosk %s: the database unreachable or no connection "
                        "free in time (%s: %s); trying again in %.1f s (try %d)",
                        item.kind,
                        kiosk_id,
                        type(exc).__name__,
                        exc,
                        pause,
                        tries + 1,
                    )
                    # Lanes that failed together (a storm) do not all come back together.
                    await asyncio.sleep(pause * random.uniform(0.8, 1.2))
                    pause = min(2 * pause, RETRY_MAX_PAUSE_S)
        finally:
            self._in_hand[kiosk_id] -= 1
            if not self._in_hand[kiosk_id]:
                del self._in_hand[kiosk_id]

    def _drop_lost_while_retrying(self, item: Inbound) -> None:
        log.info(
            "kiosk %s is no longer held here: its %s, waiting for the database, is dropped",
            item.kiosk_id,
            item.kind,
        )
        if isinstance(item.payload, contract.Event):
            self._counters.dropped_not_held += 1
        self._not_handed(item)

    def _not_handed(self, item: Inbound) -> None:
        """A snapshot dropped unhandled (the kiosk's lease lost meanwhile) leaves its
        compartment listed again, if no later one came: a take of the kiosk hands on the last
        copy seen if the kiosk's fresh report does not come."""
        snapshot = item.payload
        if not isinstance(snapshot, contract.CompartmentSnapshot):
            return
        if self._snapshots.get(item.kiosk_id, {}).get(snapshot.n) is snapshot:
            self._unheard.setdefault(item.kiosk_id, set()).add(snapshot.n)

    async def _dispatch(self, items: list[Inbound]) -> None:
        item = items[0]
        if isinstance(item.payload, contract.KioskStatus):
            await self._handler.on_status(item.kiosk_id, item.payload)
        elif isinstance(item.payload, contract.CompartmentSnapshot):
            snapshot = contract.CompartmentSnapshot
            snaps = [one.payload for one in items if isinstance(one.payload, snapshot)]
            await self._handler.on_snapshots(item.kiosk_id, snaps)
            self._counters.snapshot_transactions += 1
        elif isinstance(item.payload, contract.Event):
            await self._handler.on_event(item.kiosk_id, item.payload)
            handled = self._counters.handled_events
            handled[item.kiosk_id] = handled.get(item.kiosk_id, 0) + 1


def _fuller(old: Inbound, new: Inbound) -> Inbound:
    """Of two copies of one event, the one to keep: the newer, unless it is a scan the bridge
    sent again without its text (ADR 0092) and the older still has it."""

    def has_text(item: Inbound) -> bool:
        return isinstance(item.payload, contract.Event) and "text" in item.payload.data

    return old if has_text(old) and not has_text(new) else new


def _passed(recorded: RecordedUpTo | None, event: contract.Event) -> bool:
    return recorded is not None and recorded.stale(event.seq, scan=event.type == "scan")


def _lane_label(lane: str) -> str:
    """A lane's kind, for the wait observer: scans, minutes (kept telemetry) or other."""
    if lane.endswith(SCAN_LANE):
        return "scans"
    return "minutes" if lane.endswith(MINUTES_LANE) else "other"
