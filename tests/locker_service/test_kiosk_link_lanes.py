"""The kiosk link's lanes without a broker: order, acks after handling, the scan lane, and what
a kiosk's lease standing does with its messages (`locker_service.kiosk_link.lanes`)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta

import pytest
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from firmware_bridge import contract
from locker_service.db import database_away
from locker_service.kiosk_link import lanes as lanes_module
from locker_service.kiosk_link.connection import Delivery
from locker_service.kiosk_link.counters import LinkCounters
from locker_service.kiosk_link.fencing import CURRENT_FENCE, Fence, LeaseLost
from locker_service.kiosk_link.lanes import Lanes
from locker_service.kiosk_link.lease_keeper import Standing
from locker_service.kiosk_link.live import LivePublisher
from locker_service.kiosk_link.sequencer import RecordedUpTo
from locker_service.live import LiveHub

WAIT_S = 5.0  # how long a test waits for something that happens within a few loop turns
ONE_MINUTE = timedelta(minutes=1)
QUIET_S = 0.05  # the loop runs every ready worker within this when nothing blocks it
SOCKET = object()  # stands for the connection (socket) that delivered a message


class GatedHandler:
    """Records what it handles and under which fence; an event type in `gates` waits there."""

    def __init__(self) -> None:
        self.handled: list[tuple[str, str]] = []  # (kiosk, event type or kind)
        self.fences: list[Fence | None] = []
        self.batches: list[list[int]] = []  # the compartments of each call with snapshots
        self.gates: dict[str, asyncio.Event] = {}
        self.fail_on: set[str] = set()
        self.unreachable: dict[str, int] = {}  # kind: how many more tries find no database
        self.tries: list[tuple[str, str]] = []
        self.on_try: Callable[[], None] = lambda: None  # what happens as a status is tried

    async def on_status(self, kiosk_id: str, status: contract.KioskStatus) -> None:
        self.tries.append((kiosk_id, "status"))
        self.on_try()
        if self.unreachable.get("status", 0) > 0:
            self.unreachable["status"] -= 1
            raise PoolTimeoutError("QueuePool limit of size 10 overflow 20 reached")
        self.handled.append((kiosk_id, "status"))

    async def on_snapshots(
        self, kiosk_id: str, snaps: Sequence[contract.CompartmentSnapshot]
    ) -> None:
        self.tries.append((kiosk_id, " ".join(f"snapshot {snap.n}" for snap in snaps)))
        if self.unreachable.get("snapshot", 0) > 0:
            self.unreachable["snapshot"] -= 1
            raise PoolTimeoutError("QueuePool limit of size 10 overflow 20 reached")
        if any(f"snapshot {snap.n}" in self.fail_on for snap in snaps):
            raise RuntimeError("story failed on a snapshot")  # its transaction changed nothing
        self.batches.append([snap.n for snap in snaps])
        self.handled.extend((kiosk_id, f"snapshot {snap.n}") for snap in snaps)

    async def on_event(self, kiosk_id: str, event: contract.Event) -> None:
        self.tries.append((kiosk_id, event.type))
        self.fences.append(CURRENT_FENCE.get())
        if self.unreachable.get(event.type, 0) > 0:
            self.unreachable[event.type] -= 1
            raise ConnectionRefusedError(111, "Connection refused")
        gate = self.gates.get(event.type)
        if gate is not None:
            await gate.wait()
        self.handled.append((kiosk_id, event.data.get("text", event.type)))
        if event.type in self.fail_on:
            raise RuntimeError(f"story failed on {event.type}")


class StandingTable:
    """The lease keeper's answers, set by the test (`lanes.LeaseStanding`); the keeper itself,
    with its database, is tested in test_lease_keeper.py and test_replicas.py."""

    def __init__(self, standings: dict[str, Standing]) -> None:
        self.standings = standings
        self.fences: dict[str, Fence] = {}
        self.noticed_ids: list[str] = []
        self._changed = asyncio.Event()

    def standing(self, kiosk_id: str) -> Standing:
        return self.standings.get(kiosk_id, "foreign")

    def fence(self, kiosk_id: str) -> Fence | None:
        return self.fences.get(kiosk_id)

    async def changed(self) -> None:
        await self._changed.wait()

    def noticed(self, kiosk_id: str) -> None:
        self.noticed_ids.append(kiosk_id)

    def wake(self) -> None:
        pass

    def take(self, kiosk_id: str, epoch: int = 7) -> None:
        self.standings[kiosk_id] = "held"
        self.fences[kiosk_id] = Fence(kiosk_id, "r1", epoch, time.monotonic() + 60)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


class Parts:
    def __init__(self, leases: StandingTable | None = None, *, gap_wait_s: float = 5.0) -> None:
        self.handler = GatedHandler()
        self.hub = LiveHub()
        self.acks: list[int] = []
        self.telemetry: list[str] = []
        self.waits: list[str] = []
        self.counters = LinkCounters()
        self.next_mid = 1
        self.asked: list[tuple[str, int]] = []  # (kiosk, events after): sent again, please
        self.lanes = Lanes(
            self.handler,
            LivePublisher(self.hub, None),
            self.ack,
            self.counters,
            telemetry=self,
            leases=leases,
            wait_observer=lambda lane, _s: self.waits.append(lane),
            gap_wait_s=gap_wait_s,
            ask_again=lambda kiosk, after: self.asked.append((kiosk, after)),
        )

    def ack(self, delivery: Delivery) -> None:
        if delivery.qos > 0:  # as the connection does: QoS 0 has no ack
            self.acks.append(delivery.mid)

    def submit(self, kiosk_id: str, telemetry: contract.Telemetry) -> None:
        self.telemetry.append(kiosk_id)

    async def flush(self) -> int:
        return 0  # nothing buffered: each batch is recorded as submitted

    def deliver(self, kiosk_id: str, model: contract.WireModel) -> int:
        """Hand the lanes a message as the link's routing does; its packet id."""
        mid, self.next_mid = self.next_mid, self.next_mid + 1
        kind: contract.MessageKind = {
            contract.Event: "event",
            contract.KioskStatus: "status",
            contract.CompartmentSnapshot: "snapshot",
            contract.Telemetry: "telemetry",
        }[type(model)]  # type: ignore[assignment]
        self.lanes.admit(kiosk_id, kind, model, Delivery(mid, 1, SOCKET))
        return mid


def event(type_: str, text: str | None = None, seq: int | None = None) -> contract.Event:
    data = {"text": text} if text is not None else {}
    return contract.Event(event_id=uuid.uuid4().hex, type=type_, compartment=1, data=data, seq=seq)


def telemetry() -> contract.Telemetry:
    return contract.Telemetry(
        readings=[contract.Reading(n=1, temp_c=65.0, setpoint_c=None, heater=False)]
    )


def status(state: str = "online") -> contract.KioskStatus:
    return contract.KioskStatus(state=state)


def snapshot(n: int) -> contract.CompartmentSnapshot:
    return contract.CompartmentSnapshot(
        n=n,
        door_open=False,
        lock_released=False,
        occupied=False,
        heater_on=False,
        uv_on=False,
        disinfecting=False,
        disinfect_remaining_s=0,
        temp_c=None,
        setpoint_c=None,
    )


async def until(predicate: object, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


@pytest.fixture
async def parts() -> Parts:
    return Parts()


async def test_a_kiosk_s_messages_are_handled_in_order_and_acked_only_once_handled(
    parts: Parts,
) -> None:
    gate = parts.handler.gates["door_opened"] = asyncio.Event()
    first = parts.deliver("k1", event("door_opened"))
    second = parts.deliver("k1", event("item_placed"))
    third = parts.deliver("k1", event("door_closed"))
    await asyncio.sleep(QUIET_S)
    assert parts.acks == [] and parts.handler.handled == []  # the first is still being handled
    gate.set()
    await parts.lanes.drain_kiosk("k1")
    assert [what for _, what in parts.handler.handled] == [
        "door_opened",
        "item_placed",
        "door_closed",
    ]
    assert parts.acks == [first, second, third]
    assert parts.counters.handled_events == {"k1": 3}
    await parts.lanes.stop()


async def test_a_scan_overtakes_its_kiosk_s_earlier_event_and_scans_keep_their_order(
    parts: Parts,
) -> None:
    gate = parts.handler.gates["door_closed"] = asyncio.Event()
    parts.deliver("k1", event("door_closed"))
    parts.deliver("k1", event("scan", "first"))
    parts.deliver("k1", event("scan", "second"))
    parts.deliver("k1", event("item_placed"))
    await until(lambda: len(parts.handler.handled) == 2, "the scans")
    assert parts.handler.handled == [("k1", "first"), ("k1", "second")]
    assert parts.waits.count("scans") == 2
    gate.set()
    await parts.lanes.drain_kiosk("k1")
    assert [what for _, what in parts.handler.handled[2:]] == ["door_closed", "item_placed"]
    await parts.lanes.stop()


async def test_kiosks_do_not_wait_for_each_other(parts: Parts) -> None:
    parts.handler.gates["door_opened"] = asyncio.Event()  # never set: k1's lane stays busy
    parts.deliver("k1", event("door_opened"))
    mid = parts.deliver("k2", event("door_closed"))
    await until(lambda: parts.acks == [mid], "k2's event")
    parts.handler.gates.clear()
    await parts.lanes.stop()


async def test_a_failing_handler_is_counted_acked_and_does_not_block_the_kiosk(
    parts: Parts,
) -> None:
    parts.handler.fail_on.add("item_placed")
    mids = [parts.deliver("k1", event(t)) for t in ("door_opened", "item_placed", "door_closed")]
    await parts.lanes.drain_kiosk("k1")
    assert parts.acks == mids
    assert parts.counters.handler_errors == 1
    assert parts.counters.handler_retries == 0  # a fault of the story is not tried again
    await parts.lanes.stop()


async def test_a_message_that_found_no_database_is_handled_again_in_its_place_unacked(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kiosk's status handled while the pool had no connection to lend (a storm of kiosks
    connecting): tried again, and the kiosk's next message waits behind it; dropped, the kiosk
    would stay offline in the service."""
    monkeypatch.setattr(lanes_module, "RETRY_FIRST_S", 0.01)
    parts.handler.unreachable["status"] = 2
    gate = parts.handler.gates["door_opened"] = asyncio.Event()
    first = parts.deliver("k1", status("online"))
    second = parts.deliver("k1", event("door_opened"))
    await until(lambda: len(parts.handler.tries) == 4, "the event, after three tries")
    assert second not in parts.acks
    gate.set()
    await parts.lanes.drain_kiosk("k1")
    # The event was handed over only after its kiosk's status went through.
    assert parts.handler.tries == [("k1", "status")] * 3 + [("k1", "door_opened")]
    assert parts.handler.handled == [("k1", "status"), ("k1", "door_opened")]
    assert parts.acks == [first, second]
    assert (parts.counters.handler_retries, parts.counters.handler_errors) == (2, 0)
    await parts.lanes.stop()


async def test_a_message_is_not_tried_again_once_its_kiosk_is_another_replica_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lanes_module, "RETRY_FIRST_S", 0.01)
    leases = StandingTable({})
    leases.take("k1")
    parts = Parts(leases)
    parts.handler.unreachable["status"] = 1_000  # the database stays away

    def database_gone() -> None:
        leases.standings["k1"] = "foreign"  # its lease expired meanwhile: another holds it

    parts.handler.on_try = database_gone
    first = parts.deliver("k1", status("online"))
    await until(lambda: parts.acks == [first], "the status given up")
    assert parts.handler.tries == [("k1", "status")] and parts.handler.handled == []
    counted = parts.counters
    assert (counted.handler_retries, counted.handler_errors, counted.dropped_not_held) == (0, 0, 0)
    await parts.lanes.stop()


async def test_a_kiosk_whose_message_was_given_up_on_is_not_held_back_again_until_one_passes(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault taken for the database being away (it stays so) holds its kiosk back once for
    RETRY_FOR_S, not once per message; one message through, and retrying is back."""
    monkeypatch.setattr(lanes_module, "RETRY_FIRST_S", 0.01)
    # Time for many tries: the first retry is decided within the same step as the first try
    # (the handler raises without yielding), so no busy machine can starve it out of one.
    monkeypatch.setattr(lanes_module, "RETRY_FOR_S", 0.5)
    parts.handler.unreachable["door_opened"] = 1_000
    parts.handler.unreachable["item_placed"] = 1_000
    mids = [parts.deliver("k1", event(t)) for t in ("door_opened", "item_placed")]
    await parts.lanes.drain_kiosk("k1")
    assert parts.acks == mids and parts.counters.handler_errors == 2
    tried = [t for _, t in parts.handler.tries]
    retried = parts.counters.handler_retries
    # The first was tried until given up, the second once.
    assert retried >= 1 and tried == ["door_opened"] * (retried + 1) + ["item_placed"]
    parts.handler.unreachable["door_opened"] = 0
    parts.deliver("k1", event("door_opened"))  # goes through: the kiosk is trusted again
    parts.handler.unreachable["door_closed"] = 1
    parts.deliver("k1", event("door_closed"))
    await parts.lanes.drain_kiosk("k1")
    assert parts.counters.handler_retries == retried + 1  # retried again, and handled
    assert parts.handler.handled[-1] == ("k1", "door_closed")
    await parts.lanes.stop()


def test_what_counts_as_the_database_away_for_a_message_handed_over_again() -> None:
    assert database_away(PoolTimeoutError("QueuePool limit reached"))
    assert database_away(ConnectionRefusedError(111, "Connection refused"))
    assert database_away(OperationalError("INSERT", {}, Exception("database is locked")))
    cut = DBAPIError("SELECT 1", {}, Exception("connection was closed"))
    cut.connection_invalidated = True
    assert database_away(cut)
    # A fault of ours reported through the same classes: it would fail the same way again.
    assert not database_away(OperationalError("SELECT", {}, Exception("no such table: kiosks")))
    assert not database_away(
        InterfaceError("SELECT", {}, Exception("another operation is in progress"))
    )
    assert not database_away(FileNotFoundError("/var/lib/locker/x"))
    assert not database_away(RuntimeError("story failed"))


async def test_status_and_snapshots_are_remembered_handled_and_published_live(
    parts: Parts,
) -> None:
    with parts.hub.subscription() as live:
        parts.deliver("k1", status("online"))
        parts.deliver("k1", snapshot(2))
        await parts.lanes.drain_kiosk("k1")
        kinds = [(await live.next(WAIT_S)) for _ in range(2)]
    assert [m.kind if m else None for m in kinds] == ["kiosk", "compartment"]
    assert parts.handler.handled == [("k1", "status"), ("k1", "snapshot 2")]
    remembered = parts.lanes.kiosk_status("k1")
    assert remembered is not None and remembered.state == "online"
    assert parts.lanes.kiosk_status("k2") is None
    await parts.lanes.stop()


async def test_a_kiosk_s_report_queued_together_is_handed_over_in_one_call(parts: Parts) -> None:
    """A report (a status, then a snapshot of each compartment) waits while the worker is busy:
    the snapshots are handed over together, for one transaction, each acked and published as
    before; the event behind them ends the batch and comes after, in its place (ADR 0095)."""
    gate = parts.handler.gates["door_opened"] = asyncio.Event()
    mids = [parts.deliver("k1", event("door_opened")), parts.deliver("k1", status("online"))]
    mids += [parts.deliver("k1", snapshot(n)) for n in (1, 2, 3)]
    mids.append(parts.deliver("k1", event("door_closed")))
    mids.append(parts.deliver("k1", snapshot(3)))
    with parts.hub.subscription() as live:
        gate.set()
        await parts.lanes.drain_kiosk("k1")
        published = [await live.next(WAIT_S) for _ in range(7)]
    assert parts.handler.batches == [[1, 2, 3], [3]]
    assert [what for _, what in parts.handler.handled] == [
        "door_opened",
        "status",
        "snapshot 1",
        "snapshot 2",
        "snapshot 3",
        "door_closed",
        "snapshot 3",
    ]
    assert parts.acks == mids
    assert [m.kind if m else None for m in published].count("compartment") == 4
    assert parts.counters.snapshot_transactions == 2
    await parts.lanes.stop()


async def test_a_compartment_s_second_snapshot_starts_the_next_run(parts: Parts) -> None:
    """The latch released, then back with the door shut: each is judged against what the one
    before it left, so they are not in one transaction."""
    gate = parts.handler.gates["door_opened"] = asyncio.Event()
    parts.deliver("k1", event("door_opened"))
    for n in (1, 2, 1, 3, 2):
        parts.deliver("k1", snapshot(n))
    gate.set()
    await parts.lanes.drain_kiosk("k1")
    assert parts.handler.batches == [[1, 2], [1, 3, 2]]
    await parts.lanes.stop()


async def test_a_batch_of_snapshots_at_most_so_many_at_once(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lanes_module, "SNAPSHOTS_AT_ONCE", 2)
    gate = parts.handler.gates["door_opened"] = asyncio.Event()
    parts.deliver("k1", event("door_opened"))
    for n in range(1, 6):
        parts.deliver("k1", snapshot(n))
    gate.set()
    await parts.lanes.drain_kiosk("k1")
    assert parts.handler.batches == [[1, 2], [3, 4], [5]]
    await parts.lanes.stop()


async def test_a_snapshot_the_story_cannot_take_costs_the_others_of_its_batch_nothing(
    parts: Parts,
) -> None:
    """The batch's transaction rolled back: each is handled alone, and only the one fails."""
    parts.handler.fail_on.add("snapshot 2")
    gate = parts.handler.gates["door_opened"] = asyncio.Event()
    parts.deliver("k1", event("door_opened"))
    mids = [parts.deliver("k1", snapshot(n)) for n in (1, 2, 3)]
    gate.set()
    await parts.lanes.drain_kiosk("k1")
    assert parts.handler.batches == [[1], [3]]
    assert [t for _, t in parts.handler.tries[1:]] == [
        "snapshot 1 snapshot 2 snapshot 3",
        "snapshot 1",
        "snapshot 2",
        "snapshot 3",
    ]
    assert parts.counters.handler_errors == 1
    assert set(mids) <= set(parts.acks)
    await parts.lanes.stop()


async def test_snapshots_that_found_no_database_are_handed_over_again_together(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lanes_module, "RETRY_FIRST_S", 0.01)
    parts.handler.unreachable["snapshot"] = 1
    gate = parts.handler.gates["door_opened"] = asyncio.Event()
    parts.deliver("k1", event("door_opened"))
    mids = [parts.deliver("k1", snapshot(n)) for n in (1, 2)]
    gate.set()
    await parts.lanes.drain_kiosk("k1")
    assert [t for _, t in parts.handler.tries[1:]] == ["snapshot 1 snapshot 2"] * 2
    assert parts.handler.batches == [[1, 2]] and parts.counters.handler_retries == 1
    assert parts.acks[-2:] == mids
    await parts.lanes.stop()


async def test_telemetry_goes_to_the_sink_and_the_hub_without_a_queue(parts: Parts) -> None:
    batch = contract.Telemetry(
        readings=[contract.Reading(n=1, temp_c=65.0, setpoint_c=None, heater=False)]
    )
    with parts.hub.subscription() as live:
        parts.lanes.admit("k1", "telemetry", batch, Delivery(9, 0, SOCKET))
        message = await live.next(WAIT_S)
    assert parts.telemetry == ["k1"]
    assert message is not None and message.kind == "telemetry"
    assert message.data["kiosk"] == "k1"


async def test_a_foreign_kiosk_s_events_are_dropped_and_its_state_only_feeds_the_hub() -> None:
    parts = Parts(StandingTable({"mine": "held"}))
    dropped = parts.deliver("theirs", event("door_opened"))
    state = parts.deliver("theirs", status("online"))
    parts.lanes.admit(
        "theirs",
        "telemetry",
        contract.Telemetry(
            readings=[contract.Reading(n=1, temp_c=65.0, setpoint_c=None, heater=False)]
        ),
        Delivery(99, 0, SOCKET),
    )
    assert parts.acks == [dropped, state]  # at once: nothing of theirs waits in the window
    assert parts.counters.dropped_not_held == 1
    assert parts.telemetry == []  # only the holder writes telemetry
    remembered = parts.lanes.kiosk_status("theirs")
    assert remembered is not None  # kept for the dashboards and a later takeover
    await asyncio.sleep(QUIET_S)
    assert parts.handler.handled == []
    await parts.lanes.stop()


async def test_an_awaited_kiosk_s_events_wait_unacked_until_its_lease_is_taken() -> None:
    leases = StandingTable({"k1": "awaited"})
    parts = Parts(leases, gap_wait_s=60)
    mid = parts.deliver("k1", event("scan", "code"))
    parts.deliver("k1", snapshot(1))  # not yet ours: acked, kept for the reconciliation
    await asyncio.sleep(QUIET_S)
    assert parts.handler.handled == [] and parts.acks == [2]
    assert leases.noticed_ids == ["k1", "k1"]
    leases.take("k1")
    parts.lanes.reconcile_kiosk("k1")
    parts.lanes.replay_unheard_snapshots("k1")  # as the link does once the kiosk was asked
    await until(lambda: mid in parts.acks, "the scan, once the lease is taken")
    await parts.lanes.drain_kiosk("k1")
    assert ("k1", "code") in parts.handler.handled
    assert ("k1", "snapshot 1") in parts.handler.handled  # the reconciliation
    assert parts.handler.fences == [leases.fences["k1"]]  # handled under the lease's fence
    assert parts.acks == [2, mid]  # the replayed snapshot has nothing to ack
    await parts.lanes.stop()


async def test_a_snapshot_of_a_compartment_the_board_no_longer_has_is_not_waited_for() -> None:
    """A bank refitted from three compartments to two, the third's retained snapshot never
    cleared: once the kiosk's status says two, the take's ask ends with the fresh reports of
    1 and 2, and the old copy of 3 is not handed to the story."""
    leases = StandingTable({"k1": "awaited"})
    parts = Parts(leases)
    for n in (1, 2, 3):
        parts.deliver("k1", snapshot(n))
    parts.deliver("k1", contract.KioskStatus(state="online", compartments=2, board_online=True))
    leases.take("k1")
    parts.lanes.reconcile_kiosk("k1")
    heard = asyncio.get_running_loop().create_task(parts.lanes.snapshots_heard("k1"))
    parts.deliver("k1", snapshot(1))
    parts.deliver("k1", snapshot(2))
    await until(heard.done, "the ask's wait over")  # before, it waited for 3 until its end
    parts.lanes.replay_unheard_snapshots("k1")
    await parts.lanes.drain_kiosk("k1")
    assert not any(what == "snapshot 3" for _, what in parts.handler.handled)
    assert parts.counters.snapshots_replayed == 0
    await parts.lanes.stop()


async def test_snapshots_seen_before_the_take_are_handed_on_only_where_no_fresh_one_came() -> None:
    """ADR 0093: the kiosk asked for its state at the take reports every compartment afresh;
    the copies seen before the take are handed to the story only for the compartments whose
    report did not come, not on top of every report (twice a takeover's work)."""
    leases = StandingTable({"k1": "awaited"})
    parts = Parts(leases)
    parts.deliver("k1", snapshot(1))
    parts.deliver("k1", snapshot(2))
    leases.take("k1")
    parts.lanes.reconcile_kiosk("k1")
    heard = asyncio.get_running_loop().create_task(parts.lanes.snapshots_heard("k1"))
    parts.deliver("k1", snapshot(1))  # compartment 1 reported afresh; 2's report was lost
    await parts.lanes.drain_kiosk("k1")
    assert parts.handler.handled == [("k1", "snapshot 1")]
    assert not heard.done()
    parts.lanes.replay_unheard_snapshots("k1")
    await parts.lanes.drain_kiosk("k1")
    assert parts.handler.handled == [("k1", "snapshot 1"), ("k1", "snapshot 2")]
    assert parts.counters.snapshots_replayed == 1
    await heard  # nothing left unheard
    parts.lanes.replay_unheard_snapshots("k1")  # a second replay hands nothing again
    await parts.lanes.drain_kiosk("k1")
    assert len(parts.handler.handled) == 2
    await parts.lanes.stop()


async def test_a_compartment_s_copy_from_before_the_take_goes_ahead_of_its_next_event() -> None:
    """Its fresh report lost, an old copy handed on after an event of the compartment would
    undo it (a door it opened shut again): it goes first, as when the take handed all on."""
    leases = StandingTable({"k1": "awaited"})
    parts = Parts(leases)
    parts.deliver("k1", snapshot(1))
    leases.take("k1")
    parts.lanes.reconcile_kiosk("k1")
    parts.deliver("k1", event("door_opened"))  # compartment 1's
    await parts.lanes.drain_kiosk("k1")
    assert parts.handler.handled == [("k1", "snapshot 1"), ("k1", "door_opened")]
    parts.lanes.replay_unheard_snapshots("k1")  # the ask ends: nothing left to hand on
    await parts.lanes.drain_kiosk("k1")
    assert len(parts.handler.handled) == 2 and parts.counters.snapshots_replayed == 1
    await parts.lanes.stop()


async def test_an_event_kept_for_the_take_also_has_its_compartment_s_copy_go_first() -> None:
    leases = StandingTable({"k1": "awaited"})
    parts = Parts(leases)
    parts.deliver("k1", snapshot(1))
    parts.deliver("k1", event("door_opened", seq=4))  # kept for the take
    leases.take("k1")
    parts.lanes.reconcile_kiosk("k1")
    await parts.lanes.drain_kiosk("k1")
    assert parts.handler.handled == [("k1", "snapshot 1"), ("k1", "door_opened")]
    await parts.lanes.stop()


async def test_the_copy_goes_ahead_of_its_compartment_s_event_whatever_their_stamps() -> None:
    """Stamped later than the event (a kiosk whose clock was set back since; a bridge stamps a
    poll's snapshot before that poll's events), the copy still goes first: handed on after the
    event, its fresh report lost, it would undo the event."""
    leases = StandingTable({"k1": "awaited"})
    parts = Parts(leases)
    copy = snapshot(1)
    parts.deliver("k1", copy)
    leases.take("k1")
    parts.lanes.reconcile_kiosk("k1")
    parts.deliver("k1", event("door_opened").model_copy(update={"ts": copy.ts - ONE_MINUTE}))
    await parts.lanes.drain_kiosk("k1")
    assert parts.handler.handled == [("k1", "snapshot 1"), ("k1", "door_opened")]
    parts.lanes.replay_unheard_snapshots("k1")  # the ask ends: handed on once only
    await parts.lanes.drain_kiosk("k1")
    assert len(parts.handler.handled) == 2
    await parts.lanes.stop()


async def test_a_snapshot_dropped_as_its_lease_was_lost_is_listed_again() -> None:
    """Handled under a lease lost meanwhile, a compartment's snapshot changed nothing: the next
    take hands the copy on if the kiosk's fresh report does not come."""
    leases = StandingTable({"k1": "held"})
    leases.take("k1")
    parts = Parts(leases)
    handle = parts.handler.on_snapshots

    async def lost(kiosk_id: str, snaps: Sequence[contract.CompartmentSnapshot]) -> None:
        raise LeaseLost(leases.fences["k1"])

    parts.handler.on_snapshots = lost  # type: ignore[method-assign]
    parts.deliver("k1", snapshot(1))
    await parts.lanes.drain_kiosk("k1")
    parts.handler.on_snapshots = handle  # type: ignore[method-assign]
    leases.take("k1", epoch=8)  # taken back
    parts.lanes.reconcile_kiosk("k1")
    parts.lanes.replay_unheard_snapshots("k1")  # its fresh report lost
    await parts.lanes.drain_kiosk("k1")
    assert parts.handler.handled == [("k1", "snapshot 1")]
    assert parts.counters.snapshots_replayed == 1
    await parts.lanes.stop()


async def test_snapshots_of_a_kiosk_held_elsewhere_are_never_replayed_here() -> None:
    leases = StandingTable({"k1": "foreign"})
    parts = Parts(leases)
    parts.deliver("k1", snapshot(1))
    parts.lanes.replay_unheard_snapshots("k1")  # its lease went elsewhere after the take
    await asyncio.sleep(QUIET_S)
    assert parts.handler.handled == [] and parts.counters.snapshots_replayed == 0
    await parts.lanes.stop()


async def test_stopping_leaves_unhandled_messages_unacked(parts: Parts) -> None:
    parts.handler.gates["door_opened"] = asyncio.Event()
    parts.deliver("k1", event("door_opened"))
    parts.deliver("k1", event("door_closed"))
    await asyncio.sleep(QUIET_S)
    await parts.lanes.stop()
    assert parts.acks == []  # the broker re-sends both to the next run


async def test_events_the_broker_delivered_out_of_order_are_handled_in_the_bridge_s_order(
    parts: Parts,
) -> None:
    sent = ["door_opened", "item_placed", "door_closed", "door_opened", "item_removed"]
    mids = {}
    for seq in (1, 2, 4, 5, 3):  # as Mosquitto delivered a burst past its in-flight window
        mids[seq] = parts.deliver("k1", event(sent[seq - 1], seq=seq))
    await until(lambda: len(parts.handler.handled) == 5, "all five")
    assert [what for _, what in parts.handler.handled] == sent
    # The two kept back for #3 at once (ADR 0092), the others once handled.
    assert parts.acks == [mids[n] for n in (4, 5, 1, 2, 3)]
    assert parts.counters.events_held_for_order == 2
    assert parts.counters.event_gaps_skipped == 0
    await parts.lanes.stop()


DOOR_STORY = ["door_opened", "item_placed", "door_closed", "door_opened"]


async def test_an_event_the_broker_lost_is_asked_for_again_and_handled_in_its_place() -> None:
    """A clustered broker lost #3 while a subscription moved: the kiosk keeps its sent events
    and sends them again when asked, so nothing is skipped."""
    parts = Parts(gap_wait_s=0.2)
    sent = [event(what, seq=n + 1) for n, what in enumerate(DOOR_STORY)]
    for n in (0, 1, 3):
        parts.deliver("k1", sent[n])
    await until(lambda: parts.asked == [("k1", 2)], "the kiosk asked for what follows #2")
    assert len(parts.handler.handled) == 2  # #4 still waits for #3
    # The kiosk sends #3 and #4 again (the handler knows #4 by its id as handled already).
    parts.deliver("k1", sent[2])
    await until(lambda: len(parts.handler.handled) == 4, "all four")
    assert [what for _, what in parts.handler.handled] == DOOR_STORY  # each once, in order
    assert parts.counters.event_gaps_skipped == 0
    await parts.lanes.stop()


async def test_an_event_that_never_comes_holds_its_kiosk_back_only_for_the_gap_wait() -> None:
    parts = Parts(gap_wait_s=0.2)
    parts.deliver("k1", event("door_opened", seq=1))
    parts.deliver("k1", event("door_closed", seq=3))  # 2 was refused by the broker
    parts.deliver("k1", event("scan", "code", seq=4))  # a scan waits behind the gap too
    await until(lambda: len(parts.handler.handled) == 1, "the first")
    assert parts.counters.events_held_for_order == 2
    await until(lambda: parts.counters.event_gaps_skipped == 1, "the gap given up")
    # Once the wait ran out, the kiosk was asked to send it again (once); then a wait more.
    assert parts.asked == [("k1", 1)] and parts.counters.event_gaps_asked == 1
    await until(lambda: len(parts.handler.handled) == 3, "the ones after the gap")
    assert ("k1", "door_closed") in parts.handler.handled
    assert ("k1", "code") in parts.handler.handled
    parts.deliver("k1", event("item_placed", seq=2))  # late after all: handled as it comes
    await parts.lanes.drain_kiosk("k1")
    assert parts.handler.handled[-1] == ("k1", "item_placed")
    assert len(parts.acks) == 4
    await parts.lanes.stop()


async def test_a_gap_is_asked_about_once_each_time_it_opens_even_at_the_same_number() -> None:
    """A bridge whose outbox started again (a new disk) numbers from #1 again: its gap at #2
    is a new one, and the kiosk is asked to send its events again for it as for the first."""
    parts = Parts(gap_wait_s=0.2)
    for handled in (2, 4):
        parts.deliver("k1", event("door_opened", seq=1))
        parts.deliver("k1", event("door_closed", seq=3))  # #2 lost on the way, and not sent again
        await until(lambda n=handled: len(parts.handler.handled) == n, "#1 and #3")
    assert parts.asked == [("k1", 1), ("k1", 1)]
    assert parts.counters.event_gaps_asked == 2 and parts.counters.event_gaps_skipped == 2
    await parts.lanes.stop()


async def test_events_held_for_a_gap_are_dropped_and_acked_once_the_kiosk_is_held_elsewhere() -> (
    None
):
    leases = StandingTable({"k1": "held"})
    parts = Parts(leases, gap_wait_s=60)
    parts.deliver("k1", event("door_opened", seq=1))
    parts.deliver("k1", event("door_closed", seq=3))
    await until(lambda: len(parts.handler.handled) == 1, "the first")
    leases.standings["k1"] = "foreign"  # taken over: the new holder has its own copies
    parts.deliver("k1", event("item_placed", seq=4))
    await until(lambda: len(parts.acks) == 3, "every message acked")
    await until(lambda: parts.counters.dropped_not_held == 2, "both dropped")
    assert parts.handler.handled == [("k1", "door_opened")]
    await parts.lanes.stop()


async def test_a_kiosk_held_again_follows_its_bridge_s_numbers_afresh() -> None:
    leases = StandingTable({"k1": "held"})
    parts = Parts(leases, gap_wait_s=60)  # a give-up would not come within the test
    for seq in (1, 2, 3):
        parts.deliver("k1", event("door_opened", seq=seq))
    await parts.lanes.drain_kiosk("k1")
    leases.standings["k1"] = "foreign"  # released: nothing more comes from the broker
    leases.take("k1")  # and taken again later, after the kiosk sent #4..#39 elsewhere
    parts.lanes.reconcile_kiosk("k1")
    parts.deliver("k1", event("scan", "her code", seq=40))
    await until(lambda: ("k1", "her code") in parts.handler.handled, "her scan, at once")
    assert parts.counters.event_gaps_skipped == 0
    await parts.lanes.stop()


async def test_a_held_event_sent_again_waits_in_place_of_its_first_copy(parts: Parts) -> None:
    parts.deliver("k1", event("door_opened", seq=1))
    first_copy = parts.deliver("k1", event("door_closed", seq=3))
    again = contract.Event(event_id="same-3", type="door_closed", compartment=1, seq=3)
    second_copy = parts.deliver("k1", again)  # a reconnect re-sent it, ahead of #2
    assert first_copy in parts.acks  # the old copy is let go at once
    parts.deliver("k1", event("item_placed", seq=2))
    await until(lambda: len(parts.handler.handled) == 3, "all three, once each")
    assert [what for _, what in parts.handler.handled] == [
        "door_opened",
        "item_placed",
        "door_closed",
    ]
    await parts.lanes.drain_kiosk("k1")
    assert second_copy in parts.acks
    await parts.lanes.stop()


async def test_draining_a_kiosk_hands_on_what_waited_for_a_gap(parts: Parts) -> None:
    parts.deliver("k1", event("door_opened", seq=1))
    parts.deliver("k1", event("door_closed", seq=3))
    await parts.lanes.drain_kiosk("k1")  # a release: the next holder takes it from here
    assert [what for _, what in parts.handler.handled] == ["door_opened", "door_closed"]
    await parts.lanes.stop()


async def test_a_replica_that_slept_through_a_takeover_drops_what_it_had_queued_from_before() -> (
    None
):
    """ADR 0080: it got its kiosk back after another replica had recorded #22..#28; its own #21,
    queued under its old lease and sent again by the broker, would be recorded out of order; and
    #29 goes on at once: the re-sent #21 is not where the order starts (a gap #22..#28 would hold
    it back for the whole gap wait)."""
    leases = StandingTable({})
    leases.take("k1", epoch=3)
    parts = Parts(leases, gap_wait_s=60)  # a give-up would not come within the test
    parts.handler.gates["door_opened"] = asyncio.Event()
    parts.deliver("k1", event("door_opened", "20", seq=20))
    queued = parts.deliver("k1", event("door_closed", "21", seq=21))
    await until(lambda: len(parts.handler.fences) == 1, "#20 in the handler")
    leases.standings["k1"] = "awaited"  # SIGSTOP past the TTL; taken over; then given back
    leases.take("k1", epoch=5)
    parts.lanes.reconcile_kiosk("k1", RecordedUpTo(scans=None, others=28))
    parts.handler.gates["door_opened"].set()
    again = parts.deliver("k1", event("door_closed", "21", seq=21))  # re-sent on reconnecting
    parts.deliver("k1", event("item_placed", "29", seq=29))
    await until(lambda: len(parts.handler.handled) == 2, "#20 and #29")
    await parts.lanes.drain_kiosk("k1")
    assert [what for _, what in parts.handler.handled] == ["20", "29"]
    assert parts.counters.events_stale == 2 and parts.counters.event_gaps_skipped == 0
    assert queued in parts.acks and again in parts.acks  # let go, never recorded
    await parts.lanes.stop()


async def test_events_that_waited_for_a_lease_and_were_recorded_by_the_old_holder_are_dropped() -> (
    None
):
    """While it awaited the lease the old holder, releasing, still handled #27 and #28."""
    leases = StandingTable({"k1": "awaited"})
    parts = Parts(leases, gap_wait_s=60)
    mids = [parts.deliver("k1", event("door_closed", str(seq), seq=seq)) for seq in (27, 28, 29)]
    await asyncio.sleep(QUIET_S)
    # Kept for the take, and acknowledged at once (ADR 0092: the kiosk sends them again).
    assert parts.handler.handled == [] and parts.acks == mids
    leases.take("k1")
    parts.lanes.reconcile_kiosk("k1", RecordedUpTo(scans=None, others=28))
    await parts.lanes.drain_kiosk("k1")
    assert parts.handler.handled == [("k1", "29")]
    assert parts.counters.events_stale == 2
    assert sorted(parts.acks) == mids
    await parts.lanes.stop()


async def test_events_kept_for_the_take_behind_a_gap_say_the_kiosk_waits_for_it() -> None:
    """ADR 0105: #31 and #32 came before the take and the record ends at #28: they wait for
    #29 and #30, which the kiosk sends again when asked, so its ask goes out of turn."""
    leases = StandingTable({"k1": "awaited"})
    parts = Parts(leases, gap_wait_s=60)
    for seq in (31, 32):
        parts.deliver("k1", event("door_closed", str(seq), seq=seq))
    await asyncio.sleep(QUIET_S)
    assert not parts.lanes.waits_for_gap("k1")  # not held yet: kept for the take
    leases.take("k1")
    parts.lanes.reconcile_kiosk("k1", RecordedUpTo(scans=None, others=28))
    assert parts.lanes.waits_for_gap("k1")
    parts.deliver("k1", event("door_closed", "29", seq=29))
    parts.deliver("k1", event("door_closed", "30", seq=30))
    await until(lambda: len(parts.handler.handled) == 4, "#29 to #32 in order")
    assert [seq for _, seq in parts.handler.handled] == ["29", "30", "31", "32"]
    assert not parts.lanes.waits_for_gap("k1")
    await parts.lanes.stop()


async def test_a_door_event_behind_a_recorded_scan_is_still_handled_after_a_take() -> None:
    """A scan has a lane of its own: #30 was recorded while the door event #29 waited in the
    other lane when the replica stopped; its session gives #29 again to the next run."""
    leases = StandingTable({"k1": "awaited"})
    parts = Parts(leases, gap_wait_s=60)
    parts.deliver("k1", event("door_closed", "29", seq=29))
    leases.take("k1")
    parts.lanes.reconcile_kiosk("k1", RecordedUpTo(scans=30, others=28))
    parts.deliver("k1", event("scan", "31", seq=31))
    await until(lambda: len(parts.handler.handled) == 2, "#29 and the scan #31")
    assert parts.counters.events_stale == 0
    await parts.lanes.stop()


async def test_a_bridge_whose_outbox_started_again_is_followed_despite_the_old_record() -> None:
    leases = StandingTable({"k1": "awaited"})
    parts = Parts(leases, gap_wait_s=60)
    for seq in (1, 2, 3):  # a new disk, while the lease was awaited
        parts.deliver("k1", event("door_opened", str(seq), seq=seq))
    leases.take("k1")
    parts.lanes.reconcile_kiosk("k1", RecordedUpTo(scans=480, others=500))
    parts.deliver("k1", event("door_closed", "4", seq=4))
    await until(lambda: len(parts.handler.handled) == 4, "#1 to #4")
    assert [what for _, what in parts.handler.handled] == ["1", "2", "3", "4"]
    assert parts.counters.events_stale == 0
    await parts.lanes.stop()


async def test_a_bridge_whose_outbox_starts_again_while_held_is_followed_at_once() -> None:
    """#1 and #2 of a new disk arrive before the worker has handled #1: #2 must not slip past
    the order as if the old record still counted, or #3, coming later, would wait for it as
    a gap."""
    leases = StandingTable({"k1": "awaited"})
    parts = Parts(leases, gap_wait_s=60)
    leases.take("k1")
    parts.lanes.reconcile_kiosk("k1", RecordedUpTo(scans=None, others=500))
    for seq in (1, 2):
        parts.deliver("k1", event("door_opened", str(seq), seq=seq))
    await until(lambda: len(parts.handler.handled) == 2, "#1 and #2")
    parts.deliver("k1", event("door_opened", "3", seq=3))
    await until(lambda: len(parts.handler.handled) == 3, "#3")
    assert [what for _, what in parts.handler.handled] == ["1", "2", "3"]
    assert parts.counters.events_stale == 0 and parts.counters.event_gaps_skipped == 0
    await parts.lanes.stop()


async def test_a_stale_copy_stays_stale_when_a_new_outbox_starts_behind_it() -> None:
    """Judged on arrival: #21, a copy the record has passed, waits behind #29; the bridge's new
    disk then sends its #1, which ends the old record for what comes after it, not for #21."""
    leases = StandingTable({"k1": "awaited"})
    parts = Parts(leases, gap_wait_s=60)
    leases.take("k1")
    parts.lanes.reconcile_kiosk("k1", RecordedUpTo(scans=None, others=28))
    parts.handler.gates["door_opened"] = asyncio.Event()
    parts.deliver("k1", event("door_opened", "29", seq=29))
    await until(lambda: len(parts.handler.fences) == 1, "#29 in the handler")
    parts.deliver("k1", event("door_closed", "21", seq=21))
    parts.deliver("k1", event("item_placed", "1", seq=1))
    parts.handler.gates["door_opened"].set()
    await until(lambda: len(parts.handler.handled) == 2, "#29 and the new #1")
    await parts.lanes.drain_kiosk("k1")
    assert [what for _, what in parts.handler.handled] == ["29", "1"]
    assert parts.counters.events_stale == 1
    await parts.lanes.stop()


async def test_after_a_take_the_events_sent_again_are_handled_before_those_that_came_first() -> (
    None
):
    """ADR 0092: the record goes to #28; the kiosk sends #31 as the new holder listens, then,
    asked, sends #29 and #30 again: #31 waits for them."""
    leases = StandingTable({"k1": "awaited"})
    parts = Parts(leases, gap_wait_s=60)  # a give-up would not come within the test
    leases.take("k1")
    assert parts.lanes.reconcile_kiosk("k1", RecordedUpTo(scans=None, others=28)) == 28
    parts.deliver("k1", event("door_closed", "31", seq=31))
    await asyncio.sleep(QUIET_S)
    assert parts.handler.handled == []
    for seq in (29, 30):
        parts.deliver("k1", event("door_opened", str(seq), seq=seq))
    await until(lambda: len(parts.handler.handled) == 3, "#29, #30 and #31")
    assert [text for _, text in parts.handler.handled] == ["29", "30", "31"]
    await parts.lanes.stop()


async def test_events_a_standby_was_given_before_the_take_are_not_waited_for_again() -> None:
    """The next holder follows the kiosk before the old one lets go: #29 and #30 came then
    (the old holder recorded up to #28); #31, after the take, goes on at once."""
    leases = StandingTable({"k1": "awaited"})
    parts = Parts(leases, gap_wait_s=60)
    for seq in (29, 30):
        parts.deliver("k1", event("door_opened", str(seq), seq=seq))
    leases.take("k1")
    parts.lanes.reconcile_kiosk("k1", RecordedUpTo(scans=None, others=28))
    parts.deliver("k1", event("door_closed", "31", seq=31))
    await until(lambda: len(parts.handler.handled) == 3, "#29, #30 and #31 without a wait")
    assert [text for _, text in parts.handler.handled] == ["29", "30", "31"]
    assert parts.counters.event_gaps_skipped == 0
    await parts.lanes.stop()


async def test_events_that_came_before_the_take_wait_for_those_sent_again_below_them() -> None:
    """The record goes to #6; #10 came while the replica awaited the lease (a restart's first
    round, or between listening and taking); the kiosk sends #7-#10 again, then #11."""
    leases = StandingTable({"k1": "awaited"})
    parts = Parts(leases, gap_wait_s=60)
    tenth = event("door_closed", "10", seq=10)
    parts.deliver("k1", tenth)
    await asyncio.sleep(QUIET_S)
    assert parts.handler.handled == []
    leases.take("k1")
    assert parts.lanes.reconcile_kiosk("k1", RecordedUpTo(scans=None, others=6)) == 6
    for seq in (7, 8, 9):
        parts.deliver("k1", event("door_opened", str(seq), seq=seq))
    parts.deliver("k1", tenth)  # its copy: late, and dropped by its id in the story
    parts.deliver("k1", event("door_opened", "11", seq=11))
    await until(lambda: len(parts.handler.handled) == 6, "#7 to #11 and the copy of #10")
    assert [text for _, text in parts.handler.handled] == ["7", "8", "9", "10", "10", "11"]
    await parts.lanes.stop()


async def test_events_kept_for_a_take_that_goes_elsewhere_are_dropped_and_acked() -> None:
    leases = StandingTable({"k1": "awaited"})
    parts = Parts(leases, gap_wait_s=60)
    mids = [parts.deliver("k1", event("door_opened", str(seq), seq=seq)) for seq in (4, 5)]
    await asyncio.sleep(QUIET_S)
    assert parts.acks == mids  # kept for the take: acknowledged at once (ADR 0092)
    leases.standings["k1"] = "foreign"
    leases.take("k2")  # any change of standing wakes what waits for one
    await until(lambda: parts.counters.dropped_not_held == 2, "both dropped")
    assert parts.handler.handled == []
    await parts.lanes.stop()


async def test_events_kept_for_a_take_stay_in_arrival_order_as_the_standing_settles() -> None:
    """A replica's first round takes a kiosk while every standing still says "unsettled": what
    comes meanwhile is kept, and one routed as the round ends joins the others, not ahead."""
    leases = StandingTable({"k1": "unsettled"})
    parts = Parts(leases, gap_wait_s=60)
    parts.lanes.reconcile_kiosk("k1")  # taken in the first round: nothing numbered recorded
    parts.deliver("k1", event("door_opened", "5", seq=5))
    leases.take("k1")  # the round ends: settled, held
    parts.deliver("k1", event("door_closed", "6", seq=6))  # before the waiter's turn
    await until(lambda: len(parts.handler.handled) == 2, "#5 and #6")
    assert [text for _, text in parts.handler.handled] == ["5", "6"]
    await parts.lanes.stop()


async def test_a_kiosk_taken_back_after_a_sleep_fills_the_gap_it_was_waiting_for() -> None:
    """#13 waited for #12 when the replica found its lease taken; #12 came while it awaited
    the lease back; taken back, the order goes #12, #13."""
    leases = StandingTable({"k1": "held"})
    parts = Parts(leases, gap_wait_s=60)
    parts.deliver("k1", event("door_opened", "11", seq=11))
    parts.deliver("k1", event("door_closed", "13", seq=13))
    await until(lambda: len(parts.handler.handled) == 1, "#11")
    leases.standings["k1"] = "awaited"
    parts.deliver("k1", event("item_placed", "12", seq=12))
    leases.take("k1")
    parts.lanes.reconcile_kiosk("k1", RecordedUpTo(scans=None, others=11))
    await until(lambda: len(parts.handler.handled) == 3, "#12 and #13")
    assert [text for _, text in parts.handler.handled] == ["11", "12", "13"]
    await parts.lanes.stop()


async def test_a_numbered_event_kept_back_is_acknowledged_at_once_an_unnumbered_one_not() -> None:
    """ADR 0092: kept back unacknowledged, events fill the broker's in-flight window (20) and
    hold back the ones they wait for; the kiosk sends them again if this replica dies."""
    leases = StandingTable({"k1": "held", "k2": "awaited"})
    parts = Parts(leases, gap_wait_s=60)
    parts.deliver("k1", event("door_opened", "1", seq=1))
    held = parts.deliver("k1", event("door_closed", "3", seq=3))  # waits for #2
    kept = parts.deliver("k2", event("door_opened", "7", seq=7))  # waits for the take
    unnumbered = parts.deliver("k2", event("door_closed", "old bridge"))
    await until(lambda: held in parts.acks and kept in parts.acks, "both acknowledged")
    await until(lambda: len(parts.handler.handled) == 1, "#1")
    assert unnumbered not in parts.acks
    assert [text for _, text in parts.handler.handled] == ["1"]
    parts.deliver("k1", event("item_placed", "2", seq=2))
    leases.take("k2")
    parts.lanes.reconcile_kiosk("k2")
    await until(lambda: len(parts.handler.handled) == 5, "all five")
    assert unnumbered in parts.acks and parts.acks.count(held) == 1
    await parts.lanes.stop()


async def test_a_copy_of_a_kept_event_takes_its_place_and_it_is_handled_once() -> None:
    leases = StandingTable({"k1": "awaited"})
    parts = Parts(leases, gap_wait_s=60)
    fifth = event("door_opened", "5", seq=5)
    parts.deliver("k1", fifth)
    parts.deliver("k1", fifth)  # the broker sends it again (a reconnect)
    leases.take("k1")
    parts.lanes.reconcile_kiosk("k1")
    parts.deliver("k1", event("door_closed", "6", seq=6))
    await until(lambda: len(parts.handler.handled) == 2, "#5 and #6")
    assert [text for _, text in parts.handler.handled] == ["5", "6"]
    await parts.lanes.stop()


async def test_a_stale_event_above_the_orders_start_takes_its_place_in_it() -> None:
    """Scan #30 was recorded, door event #29 not (the old holder had it in hand): the order
    starts at #29; #30, sent again, is stale and dropped, but fills its number, so #31 does
    not wait for it."""
    leases = StandingTable({"k1": "awaited"})
    parts = Parts(leases, gap_wait_s=60)
    leases.take("k1")
    recorded = RecordedUpTo(scans=30, others=28, complete_to=28)
    assert parts.lanes.reconcile_kiosk("k1", recorded) == 28
    parts.deliver("k1", event("door_closed", "31", seq=31))
    parts.deliver("k1", event("scan", "30", seq=30))
    parts.deliver("k1", event("door_opened", "29", seq=29))
    await until(lambda: len(parts.handler.handled) == 2, "#29 and #31")
    assert [text for _, text in parts.handler.handled] == ["29", "31"]
    assert parts.counters.events_stale == 1
    await parts.lanes.stop()


async def test_stopping_with_events_kept_for_a_take_ends_cleanly() -> None:
    leases = StandingTable({"k1": "awaited", "k2": "awaited"})
    parts = Parts(leases, gap_wait_s=60)
    parts.deliver("k1", event("door_opened", "1", seq=1))
    parts.deliver("k2", event("door_opened", "1", seq=1))
    await asyncio.sleep(QUIET_S)
    await parts.lanes.stop()
    assert parts.handler.handled == []


async def test_a_scan_sent_again_without_its_code_does_not_take_the_place_of_the_one_with_it() -> (
    None
):
    """ADR 0092: the bridge keeps a delivered scan without its text; the copy it sends again at
    a new holder's asking must not replace the one that came with her code."""
    leases = StandingTable({"k1": "awaited"})
    parts = Parts(leases, gap_wait_s=60)
    scan = event("scan", "her code", seq=5)
    parts.deliver("k1", scan)
    stripped = scan.model_copy(update={"data": {}})
    parts.deliver("k1", stripped)  # kept for the take: the first stays
    leases.take("k1")
    parts.lanes.reconcile_kiosk("k1", RecordedUpTo(scans=None, others=3))
    parts.deliver("k1", stripped)  # held behind #4 now: the first stays again
    parts.deliver("k1", event("door_closed", "4", seq=4))
    await until(lambda: len(parts.handler.handled) == 2, "#4 and her scan")
    assert [text for _, text in parts.handler.handled] == ["4", "her code"]
    await parts.lanes.stop()
