"""The bridge's disk memory: the bounded event outbox and the request-id cache survive a restart."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from firmware_bridge import contract
from firmware_bridge.mqtt import kept_once_sent
from firmware_bridge.store import KEPT_SENT, BridgeStore, KeptReading


def test_events_come_back_in_order_after_a_restart(tmp_path: Path) -> None:
    store = BridgeStore(tmp_path / "b.sqlite3")
    for i in range(5):
        store.append_event(f"e{i}", lambda _, i=i: f'{{"i":{i}}}'.encode())
    store.close()  # as if the process died: nothing was acknowledged
    again = BridgeStore(tmp_path / "b.sqlite3")
    assert [e.event_id for e in again.events_after(0, 100)] == ["e0", "e1", "e2", "e3", "e4"]
    first = again.events_after(0, 2)
    assert [e.event_id for e in again.events_after(first[-1].seq, 100)] == ["e2", "e3", "e4"]


def test_acknowledged_events_leave_the_outbox(tmp_path: Path) -> None:
    store = BridgeStore(tmp_path / "b.sqlite3")
    seqs = [store.append_event(f"e{i}", lambda _: b"{}") for i in range(3)]
    store.mark_sent(seqs[1])
    assert [e.event_id for e in store.events_after(0, 10)] == ["e0", "e2"]
    assert store.event_count() == 2


def test_sent_events_are_kept_to_be_sent_again_after_a_number(tmp_path: Path) -> None:
    """A new lease holder asks for the events after its record (ADR 0092): the sent ones
    after that number go again, in order, with their payloads; across a restart too."""
    store = BridgeStore(tmp_path / "b.sqlite3")
    numbered = lambda seq: f'{{"seq":{seq}}}'.encode()  # noqa: E731
    seqs = [store.append_event(f"e{i}", numbered) for i in range(5)]
    for seq in seqs[:4]:
        store.mark_sent(seq)
    store.close()
    store = BridgeStore(tmp_path / "b.sqlite3")
    assert [e.seq for e in store.events_after(0, 10)] == [5]  # e4 still unacknowledged
    assert store.resend_after(2) == 2  # e2 and e3; e4 was never sent
    again = store.events_after(0, 10)
    assert [(e.event_id, e.payload) for e in again] == [
        (f"e{i}", numbered(i + 1)) for i in (2, 3, 4)
    ]
    assert store.resend_after(5) == 0
    assert store.append_event("e1", numbered) == 0  # kept: still known, not queued again


def test_sent_events_are_kept_for_the_last_numbers_only(tmp_path: Path) -> None:
    store = BridgeStore(tmp_path / "b.sqlite3", event_limit=10)
    for i in range(KEPT_SENT + 30):
        store.mark_sent(store.append_event(f"e{i}", lambda _: b"{}"))
    assert store.event_count() == 0  # kept sent events do not fill the outbox's bound
    assert store.resend_after(0) == KEPT_SENT  # the numbers within KEPT_SENT of the newest
    assert store.events_after(0, 1)[0].seq == 31


def _older_store(tmp_path: Path, script: str) -> Path:
    """A store as an older bridge left it on disk."""
    path = tmp_path / "b.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(script)
    old.close()
    return path


def test_an_outbox_from_before_kept_events_is_taken_as_it_is(tmp_path: Path) -> None:
    path = _older_store(
        tmp_path,
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        "event_id TEXT NOT NULL UNIQUE, payload BLOB NOT NULL);"
        "INSERT INTO events (event_id, payload) VALUES ('waiting', x'7b7d');",
    )
    store = BridgeStore(path)
    assert [e.event_id for e in store.events_after(0, 10)] == ["waiting"]  # still to be sent
    store.mark_sent(1)
    assert store.event_count() == 0 and store.resend_after(0) == 1


def test_an_offline_list_from_before_held_food_is_taken_as_it_is(tmp_path: Path) -> None:
    path = _older_store(
        tmp_path,
        "CREATE TABLE offline_orders (order_id TEXT PRIMARY KEY, compartment INTEGER NOT NULL, "
        "token_sha256 TEXT NOT NULL, deadline TEXT NOT NULL, used INTEGER NOT NULL, "
        "used_here_at TEXT, door_opened_at TEXT);"
        "INSERT INTO offline_orders VALUES "
        "('ord-1', 3, 'ab', '2026-12-07T12:00:00+00:00', 0, NULL, NULL);",
    )
    store = BridgeStore(path)
    [row] = store.offline_orders()
    assert (row.order_id, row.compartment, row.held) == ("ord-1", 3, False)
    store.mark_offline_held(3)  # a fault seen in its compartment (ADR 0128)
    store.replace_offline([*store.offline_orders()], {})
    store.close()
    assert [r.held for r in BridgeStore(path).offline_orders()] == [True]


def test_each_event_carries_its_number_and_a_number_is_never_given_twice(tmp_path: Path) -> None:
    store = BridgeStore(tmp_path / "b.sqlite3")
    numbered = lambda seq: f'{{"seq":{seq}}}'.encode()  # noqa: E731
    first = [store.append_event(f"e{i}", numbered) for i in range(3)]
    assert first == [1, 2, 3]
    assert [e.payload for e in store.events_after(0, 10)] == [numbered(n) for n in (1, 2, 3)]
    assert store.append_event("e1", lambda seq: b"again") == 0  # queued already: unchanged
    for seq in first:  # all acknowledged: the outbox is empty
        store.mark_sent(seq)
    store.close()
    again = BridgeStore(tmp_path / "b.sqlite3")
    assert again.append_event("e3", numbered) == 4


def test_the_outbox_is_bounded_and_drops_the_oldest(tmp_path: Path) -> None:
    store = BridgeStore(tmp_path / "b.sqlite3", event_limit=10)
    for i in range(25):
        store.append_event(f"e{i}", lambda _: b"{}")
    assert store.event_count() == 10
    assert store.events_dropped == 15
    assert [e.event_id for e in store.events_after(0, 100)] == [f"e{i}" for i in range(15, 25)]


def test_a_request_is_claimed_once_and_its_reply_survives_a_restart(tmp_path: Path) -> None:
    store = BridgeStore(tmp_path / "b.sqlite3")
    command = {"request_id": "r1", "action": "unlock", "compartment": 3}
    assert store.claim_request("r1", command) is None
    again = store.claim_request("r1", command)
    assert again is not None and again.status == "accepted" and not again.final
    store.update_request("r1", {"request_id": "r1", "status": "succeeded"}, final=True)
    store.close()
    reopened = BridgeStore(tmp_path / "b.sqlite3")
    record = reopened.claim_request("r1", command)
    assert (
        record is not None
        and record.final
        and record.reply
        == {
            "request_id": "r1",
            "status": "succeeded",
        }
    )
    assert reopened.unfinished_requests() == []


def test_the_request_cache_forgets_the_oldest_finished_requests(tmp_path: Path) -> None:
    store = BridgeStore(tmp_path / "b.sqlite3", request_limit=10)
    store.claim_request("running", {})
    for i in range(30):
        store.claim_request(f"r{i}", {})
        store.update_request(f"r{i}", {"status": "succeeded"}, final=True)
    assert store.get_request("running") is not None  # unfinished work is never forgotten
    assert store.get_request("r0") is None
    assert store.get_request("r29") is not None


def test_setpoints_and_states_are_remembered_separately(tmp_path: Path) -> None:
    store = BridgeStore(tmp_path / "b.sqlite3")
    store.remember_setpoint(2, 650)
    store.remember_state(2, 77, {"n": 2})
    store.remember_setpoint(3, None)
    memory = BridgeStore(tmp_path / "b.sqlite3").remembered()
    assert memory[2].setpoint_dc == 650 and memory[2].boot_id == 77 and memory[2].state == {"n": 2}
    assert memory[3].setpoint_known and memory[3].setpoint_dc is None


def test_readings_kept_while_cut_off_fold_into_their_bucket_and_survive_a_restart(
    tmp_path: Path,
) -> None:
    store = BridgeStore(tmp_path / "b.sqlite3")
    t0 = 1_800_000_000.0  # on the minute
    rounds: list[list[KeptReading]] = [
        [(1, 64.0, 65.0, False), (2, None, 65.0, True)],
        [(1, 61.5, 65.0, True), (2, None, 65.0, True)],
        [(1, 63.0, None, True), (2, 58.0, 65.0, False)],
    ]
    for i, readings in enumerate(rounds):
        assert store.keep_telemetry(t0 + 10 * i, 60.0, readings, limit=10) == 1_800_000_000_000
    store.keep_telemetry(t0 + 60, 60.0, [(1, 70.0, 65.0, False)], limit=10)  # the next minute
    store.close()
    again = BridgeStore(tmp_path / "b.sqlite3")
    # Only closed buckets are handed out: the second one ends at t0 + 120.
    [first] = again.kept_buckets(-1, closed_by_ms=int((t0 + 119) * 1000), limit=10)
    assert (first.start_ms, first.seconds) == (1_800_000_000_000, 60.0)
    one, two = first.readings
    assert (one.n, one.min_c, one.max_c, one.sum_c, one.count, one.faulted) == (
        1,
        61.5,
        64.0,
        188.5,
        3,
        0,
    )
    assert (one.heater_on, one.setpoint_c) == (2, 65.0)  # the highest setpoint of the bucket
    assert (two.min_c, two.max_c, two.count, two.faulted, two.heater_on) == (58.0, 58.0, 1, 2, 2)
    assert len(again.kept_buckets(-1, int((t0 + 120) * 1000), 10)) == 2
    again.forget_bucket(first.start_ms, first.seconds)  # acknowledged by the broker
    assert [b.start_ms for b in again.kept_buckets(-1, int((t0 + 120) * 1000), 10)] == [
        1_800_000_060_000
    ]


def test_kept_telemetry_is_bounded_and_drops_the_oldest_buckets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = BridgeStore(tmp_path / "b.sqlite3")
    t0 = 1_800_000_000.0
    with caplog.at_level(logging.WARNING, logger="firmware_bridge.store"):
        for i in range(12):
            for second in (0, 20, 40):  # three rounds in each bucket: one new bucket each
                store.keep_telemetry(t0 + 60 * i + second, 60.0, [(1, 65.0, 65.0, True)], limit=5)
    assert store.kept_bucket_count() == 5
    assert store.telemetry_buckets_dropped == 7
    kept = store.kept_buckets(-1, int((t0 + 3600) * 1000), 100)
    assert [b.start_ms // 1000 - int(t0) for b in kept] == [60 * i for i in range(7, 12)]
    assert all(b.readings[0].count == 3 for b in kept)  # what is kept is whole
    assert "dropped the 1 oldest bucket(s), 7 so far" in caplog.text


def test_a_scan_is_kept_without_its_code_once_delivered(tmp_path: Path) -> None:
    """ADR 0092: kept events may be sent again, but no QR token or typed code stays on the
    kiosk's disk once the broker has it; other events are kept as they were."""
    token = "Qm9ndXNUb2tlbkZvclRoZVN0b3JlVGVzdDAxMjM0NTY"
    scan = contract.Event(event_id="s", type="scan", data={"text": f"https://x.example/p/{token}"})
    door = contract.Event(event_id="d", type="door_closed", compartment=2, data={"occupied": True})
    path = tmp_path / "b.sqlite3"
    store = BridgeStore(path)
    for event in (scan, door):
        seq = store.append_event(
            event.event_id, lambda n, e=event: e.model_copy(update={"seq": n}).to_json()
        )
        store.mark_sent(seq, kept_once_sent)
    assert store.resend_after(0) == 2
    kept = [contract.Event.model_validate_json(e.payload) for e in store.events_after(0, 10)]
    assert [(e.type, e.data, e.seq) for e in kept] == [
        ("scan", {}, 1),
        ("door_closed", {"occupied": True}, 2),
    ]
    # Not even in the write-ahead log while the bridge runs (a crash would leave it there).
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert token.encode() not in on_disk
    assert store._db.execute("PRAGMA secure_delete").fetchone() == (1,)
    store.close()
