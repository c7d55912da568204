"""Every command's round trip through a real broker and a simulated board on a real pty,
checked against the simulator's physical truth."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import paho.mqtt.client as paho
import pytest

from firmware_bridge import contract
from firmware_bridge.board import BoardAnswerInvalid, BoardUnreachable
from hardware.protocol import StatusAnswer
from hardware.protocol.messages import StartDisinfectAnswer, UnlockAnswer
from tests.firmware_bridge.conftest import Kiosk
from tests.firmware_bridge.harness import Observer, Seen, pulses, wait_ready


def test_unlock_succeeds_when_the_lock_is_seen_released_and_pulses_once(kiosk: Kiosk) -> None:
    obs = kiosk.observer
    cmd = obs.command("unlock", 3)
    reply = obs.final_reply(cmd.request_id)
    assert reply["status"] == "succeeded"
    assert reply["data"]["lock_released"] is True
    assert next(r["status"] for r in obs.replies(cmd.request_id)) == "accepted"
    truth = kiosk.sim.truth().compartments[2]
    assert truth.lock_pulses == 1 and truth.lock_released
    assert all(pulses(kiosk.sim, n) == 0 for n in (1, 2, 4, 5))
    obs.wait(lambda: (obs.snapshot(3) or {}).get("lock_released"), "snapshot with lock released")


def _one_record_statuses(kiosk: Kiosk) -> list[int]:
    """From now on, the compartments the bridge asks about one at a time (not a poll's pages)."""
    asked: list[int] = []
    status = kiosk.bridge.board.status

    def spy(first: int = 1, count: int = 0) -> StatusAnswer:
        if count == 1:
            asked.append(first)
        return status(first, count)

    kiosk.bridge.board.status = spy  # type: ignore[method-assign]
    return asked


def test_an_unlock_is_judged_by_the_state_in_the_boards_answer(kiosk: Kiosk) -> None:
    """A board of revision 2 reports the latch in its UNLOCK answer: no STATUS exchange."""
    obs = kiosk.observer
    asked = _one_record_statuses(kiosk)
    reply = obs.final_reply(obs.command("unlock", 6).request_id)
    assert reply["status"] == "succeeded" and reply["data"]["lock_released"] is True
    assert asked == [] and pulses(kiosk.sim, 6) == 1
    obs.wait(lambda: (obs.snapshot(6) or {}).get("lock_released"), "snapshot with lock released")


def test_a_latch_not_yet_moved_in_the_answer_is_looked_at_again_at_once(kiosk: Kiosk) -> None:
    """The report shows the latch still shut (here it is jammed): one STATUS follows at once,
    then the polls decide; the lock is never pulsed again."""
    obs = kiosk.observer
    kiosk.sim.faults.jam_lock(7)
    asked = _one_record_statuses(kiosk)
    reply = obs.final_reply(obs.command("unlock", 7, {"deadline_s": 0.5}).request_id)
    assert reply["status"] == "timed_out"
    assert asked == [7] and pulses(kiosk.sim, 7) == 1


def test_a_garbled_unlock_answer_is_judged_by_the_boards_state_not_failed(kiosk: Kiosk) -> None:
    """The board pulsed, but its answer does not parse as asked (a misbehaving board): the
    unlock is not reported failed while the latch is open; the polls decide, and it succeeds."""
    obs = kiosk.observer
    unlock = kiosk.bridge.board.unlock

    def garbled(*args: Any, **kwargs: Any) -> UnlockAnswer:
        unlock(*args, **kwargs)
        raise BoardAnswerInvalid("UNLOCK: the answer reports another compartment")

    kiosk.bridge.board.unlock = garbled  # type: ignore[method-assign]
    reply = obs.final_reply(obs.command("unlock", 5).request_id)
    assert reply["status"] == "succeeded" and reply["data"]["lock_released"] is True
    assert pulses(kiosk.sim, 5) == 1
    assert [r["status"] for r in obs.replies(reply["request_id"])][-1] == "succeeded"


def test_a_garbled_cycle_start_answer_is_judged_by_the_boards_state_not_failed(
    kiosk: Kiosk,
) -> None:
    """The board started the cycle, but its answer does not parse: "failed" would have the
    service send a new start and run a second cycle (ADR 0082's open end). The board's next
    report shows the cycle running, and that is the answer (ADR 0090)."""
    obs = kiosk.observer
    start = kiosk.bridge.board.start_disinfect

    def garbled(*args: Any, **kwargs: Any) -> StartDisinfectAnswer:
        start(*args, **kwargs)
        raise BoardAnswerInvalid("START_DISINFECT: the answer reports another compartment")

    kiosk.bridge.board.start_disinfect = garbled  # type: ignore[method-assign]
    reply = obs.final_reply(obs.command("start_disinfection", 4, {"duration_s": 600}).request_id)
    assert (reply["status"], reply["detail"]) == ("succeeded", "the board shows the cycle running")
    assert kiosk.sim.truth().compartments[3].disinfecting


def test_a_started_cycle_keeps_its_answer_when_the_status_after_it_is_lost(
    kiosk: Kiosk,
) -> None:
    """The board answered the start and the bridge said so; the STATUS it reads next gets no
    answer. The start's answer stands: one final status, whatever the board does next (here
    its cycle aborted before it is polled again)."""
    obs = kiosk.observer
    board = kiosk.bridge.board
    start, status = board.start_disinfect, board.status

    def status_lost_once(*args: Any, **kwargs: Any) -> StatusAnswer:
        board.status = status  # type: ignore[method-assign]
        raise BoardUnreachable("STATUS: no answer")

    def start_then_lose_the_status(*args: Any, **kwargs: Any) -> StartDisinfectAnswer:
        answer = start(*args, **kwargs)
        board.start_disinfect = start  # type: ignore[method-assign]
        board.status = status_lost_once  # type: ignore[method-assign]
        return answer

    board.start_disinfect = start_then_lose_the_status  # type: ignore[method-assign]
    cycle = obs.command("start_disinfection", 4, {"duration_s": 600})
    assert obs.final_reply(cycle.request_id)["status"] == "succeeded"
    kiosk.sim.world.open_door(4, force=True)  # the cycle aborts before the next poll
    # The bridge reads the board again (once back from the lost STATUS): its report of 4
    # goes out after any start waiting on it would have been answered.
    obs.wait(
        lambda: (obs.snapshot(4) or {}).get("door_open") is True,
        "the board's state read again",
    )
    assert not kiosk.sim.truth().compartments[3].disinfecting
    assert [r["status"] for r in obs.replies(cycle.request_id)] == ["accepted", "succeeded"]


def test_a_first_edition_board_is_asked_with_a_status_after_the_unlock(
    first_edition_kiosk: Kiosk,
) -> None:
    kiosk = first_edition_kiosk
    obs = kiosk.observer
    asked = _one_record_statuses(kiosk)
    reply = obs.final_reply(obs.command("unlock", 6).request_id)
    assert reply["status"] == "succeeded" and reply["data"]["lock_released"] is True
    assert asked == [6] and pulses(kiosk.sim, 6) == 1
    assert kiosk.sim.truth().errors == 0  # the board never saw a flag it does not know


def test_the_person_at_the_door_is_reported_in_the_order_things_happened(kiosk: Kiosk) -> None:
    obs, world = kiosk.observer, kiosk.sim.world
    # Drop-offs quicker than a poll: the latched counters and the occupancy flag of one STATUS
    # tell the whole story, and the food must be inside before the door shuts.
    for n in (5, 6, 7):
        assert obs.final_reply(obs.command("unlock", n).request_id)["status"] == "succeeded"
        world.open_door(n)
        world.place_item(n)
        world.close_door(n)
    for n in (5, 6, 7):
        obs.wait_event("door_closed", n)
        events = obs.events(n=n)
        assert [e["type"] for e in events] == ["door_opened", "item_placed", "door_closed"]
        assert events[-1]["data"] == {"occupied": True}
    # A pickup with the door seen open first: the food is gone before the door shuts.
    assert obs.final_reply(obs.command("unlock", 5).request_id)["status"] == "succeeded"
    world.open_door(5)
    obs.wait_event("door_opened", 5, count=2)
    world.remove_item(5)
    world.close_door(5)
    obs.wait_event("door_closed", 5, count=2)
    assert [e["type"] for e in obs.events(n=5)][3:] == [
        "door_opened",
        "item_removed",
        "door_closed",
    ]
    assert obs.events("door_closed", 5)[-1]["data"] == {"occupied": False}
    assert len({e["event_id"] for e in obs.events()}) == len(obs.events())


def test_set_heater_reaches_the_board_and_a_snapshot_shows_it(kiosk: Kiosk) -> None:
    obs = kiosk.observer
    reply = obs.final_reply(obs.command("set_heater", 2, {"setpoint_c": 65.0}).request_id)
    assert reply["status"] == "succeeded" and reply["data"] == {"setpoint_c": 65.0}
    assert kiosk.sim.truth().compartments[1].setpoint_c == 65.0
    obs.wait(lambda: (obs.snapshot(2) or {}).get("setpoint_c") == 65.0, "setpoint snapshot")
    off = obs.final_reply(obs.command("set_heater", 2, {"setpoint_c": None}).request_id)
    assert off["status"] == "succeeded" and kiosk.sim.truth().compartments[1].setpoint_c is None


def test_a_disinfection_cycle_starts_reports_and_completes(kiosk: Kiosk) -> None:
    obs = kiosk.observer
    cmd = obs.command("start_disinfection", 4, {"duration_s": 60})  # 3 s at 20x
    reply = obs.final_reply(cmd.request_id)
    assert reply["status"] == "succeeded" and reply["data"] == {"duration_s": 60}
    obs.wait_event("disinfection_started", 4)
    # Any snapshot, not the last: a test descheduled for the cycle's 3 s would find it over.
    topic = obs.topics.compartment_state(4)
    obs.wait(
        lambda: any(s.get("disinfecting") for s in obs.on(topic)), "a running cycle's snapshot"
    )
    completed = obs.wait_event("disinfection_completed", 4)[0]
    assert not obs.events("disinfection_aborted", 4)
    obs.wait(lambda: (obs.snapshot(4) or {}).get("disinfecting") is False, "cycle over snapshot")
    assert kiosk.sim.truth().compartments[3].uv_on_s >= 50  # the lamp really ran
    # The board's record of its lamp (revision 3), asked as the cycle ended.
    assert completed["data"]["lamp"] == {
        "duration_s": 60.0,
        "elapsed_s": 60.0,
        "lamp_on_s": 60.0,
        "interruptions": 0,
        "dark": [],
    }


@pytest.mark.slow  # a disinfection cycle on the board
def test_a_lamp_that_fails_mid_cycle_shows_in_the_cycle_s_end_event(kiosk: Kiosk) -> None:
    obs = kiosk.observer
    # 240 s at 20x: 12 real seconds, so a starved test still mends the lamp before the end.
    obs.final_reply(obs.command("start_disinfection", 3, {"duration_s": 240}).request_id)
    obs.wait_event("disinfection_started", 3)
    before = kiosk.sim.truth().compartments[2].disinfect_remaining_s
    kiosk.sim.faults.dead_lamp(3)  # the tube dies; the countdown goes on
    after = kiosk.sim.truth().compartments[2].disinfect_remaining_s
    obs.wait(lambda: not kiosk.sim.truth().compartments[2].uv_lit, "the tube dark")
    obs.wait(
        lambda: kiosk.sim.truth().compartments[2].disinfect_remaining_s <= 180,
        "a minute of the cycle run dark",
    )
    kiosk.sim.faults.dead_lamp(3, False)  # reseated: it shines again
    lamp = obs.wait_event("disinfection_completed", 3)[0]["data"]["lamp"]
    assert lamp["duration_s"] == lamp["elapsed_s"] == 240.0
    assert lamp["interruptions"] == 1
    (dark,) = lamp["dark"]
    # Dark from when the tube died, as far into the cycle as the board counted just before and
    # after it, however late the test got there; and mended after a minute of it, before the end.
    assert 240 - before - 0.1 <= dark["at_s"] <= 240 - after + 0.1
    assert 60 <= dark["at_s"] + dark["dark_s"] < 240
    assert abs(lamp["lamp_on_s"] + dark["dark_s"] - 240.0) <= 0.2
    assert lamp["lamp_on_s"] < 0.95 * 240  # short of its dose: the service runs it again


def test_an_aborted_cycle_s_event_carries_how_long_the_lamp_shone(kiosk: Kiosk) -> None:
    obs = kiosk.observer
    obs.final_reply(obs.command("start_disinfection", 9, {"duration_s": 1800}).request_id)
    obs.wait_event("disinfection_started", 9)
    obs.wait(lambda: kiosk.sim.truth().compartments[8].uv_on_s >= 10, "the lamp lit a while")
    obs.final_reply(obs.command("abort_disinfection", 9).request_id)
    lamp = obs.wait_event("disinfection_aborted", 9)[0]["data"]["lamp"]
    assert lamp["duration_s"] == 1800.0 and 10 <= lamp["elapsed_s"] < 1800
    assert lamp["lamp_on_s"] == lamp["elapsed_s"] and lamp["interruptions"] == 0


def test_a_board_of_revision_2_ends_its_cycles_without_a_lamp_record(
    second_revision_kiosk: Kiosk, caplog: pytest.LogCaptureFixture
) -> None:
    obs = second_revision_kiosk.observer
    obs.final_reply(obs.command("start_disinfection", 4, {"duration_s": 20}).request_id)
    completed = obs.wait_event("disinfection_completed", 4)[0]
    assert "lamp" not in completed["data"]
    # Never asked: a revision 2 board would have refused CYCLE_REPORT as an unknown command.
    assert not [r for r in caplog.records if "cycle report" in r.getMessage()]


def test_abort_disinfection_stops_the_cycle_and_says_why(kiosk: Kiosk) -> None:
    obs = kiosk.observer
    obs.final_reply(obs.command("start_disinfection", 6, {"duration_s": 1800}).request_id)
    obs.wait_event("disinfection_started", 6)
    reply = obs.final_reply(obs.command("abort_disinfection", 6).request_id)
    assert reply["status"] == "succeeded" and reply["data"]["remaining_s"] > 0
    aborted = obs.wait_event("disinfection_aborted", 6)[0]
    assert aborted["data"]["reason"] == "aborted_by_command"
    assert not kiosk.sim.truth().compartments[5].disinfecting


def test_the_board_interlock_refuses_a_cycle_with_the_door_open(kiosk: Kiosk) -> None:
    obs = kiosk.observer
    kiosk.sim.world.open_door(7, force=True)
    obs.wait_event("door_opened", 7)
    reply = obs.final_reply(obs.command("start_disinfection", 7, {"duration_s": 60}).request_id)
    assert reply["status"] == "rejected" and reply["data"]["error"] == "interlock_refused"
    assert not kiosk.sim.truth().compartments[6].disinfecting


def test_a_fault_is_raised_and_clear_fault_clears_it_and_restores_the_setpoint(
    kiosk: Kiosk,
) -> None:
    obs = kiosk.observer
    obs.final_reply(obs.command("set_heater", 8, {"setpoint_c": 65.0}).request_id)
    kiosk.sim.faults.sensor(8, "open")
    raised = obs.wait_event("fault_raised", 8)[0]
    assert raised["data"]["fault"] == "sensor_open"
    obs.wait(lambda: (obs.snapshot(8) or {}).get("fault") == "sensor_open", "faulted snapshot")
    kiosk.sim.faults.sensor(8, None)
    reply = obs.final_reply(obs.command("clear_fault", 8).request_id)
    assert reply["status"] == "succeeded" and reply["data"]["cleared"] == "sensor_open"
    obs.wait_event("fault_cleared", 8)
    truth = kiosk.sim.truth().compartments[7]
    assert truth.fault == "NONE"
    assert truth.setpoint_c == 65.0 and reply["data"]["setpoint_restored"] is True


def test_a_compartment_the_kiosk_does_not_have_is_rejected(kiosk: Kiosk) -> None:
    reply = kiosk.observer.final_reply(kiosk.observer.command("unlock", 40).request_id)
    assert reply["status"] == "rejected"


def test_report_state_publishes_the_status_and_every_snapshot_again_then_succeeds(
    kiosk: Kiosk,
) -> None:
    """A replica that has just taken the kiosk asks for its state (ADR 0091): a clustered
    broker may have given it an older retained snapshot than the kiosk's last, played here by
    a stale copy of compartment 3 (its door open) put in the broker's retained store."""
    obs = kiosk.observer
    wait_ready(obs, kiosk.bridge)
    state_3 = obs.topics.compartment_state(3)
    # The bridge publishes compartment 3 again whenever its temperature moves half a degree,
    # which can come right after the stale copy and replace it: then it is put there again.
    while True:
        stale = {**(obs.snapshot(3) or {}), "door_open": True}
        earlier = len(obs.on(state_3))
        obs.client.publish(state_3, json.dumps(stale), qos=1, retain=True).wait_for_publish(10)
        obs.wait(lambda s=stale, e=earlier: s in obs.on(state_3)[e:], "the stale copy seen")
        if obs.snapshot(3) == stale:
            break  # the last: what the broker retains
    status, before_answer = _ask_state(obs)
    assert status == "succeeded"
    published = {m.topic for m in before_answer}
    assert obs.topics.status in published
    assert {obs.topics.compartment_state(n) for n in range(1, 13)} <= published
    assert (obs.snapshot(3) or {})["door_open"] is False
    late = Observer(kiosk.broker.host, kiosk.broker.port, obs.topics.kiosk_id).start()
    try:  # a subscriber that comes now is given the kiosk's own state
        late.wait(lambda: late.snapshot(3), "the retained snapshot")
        assert (late.snapshot(3) or {})["door_open"] is False
    finally:
        late.stop()


def test_report_state_with_the_board_offline_says_so_and_fails(kiosk: Kiosk) -> None:
    obs = kiosk.observer
    wait_ready(obs, kiosk.bridge)
    kiosk.sim.faults.pull_cable(600.0)  # simulated seconds: 30 s of wall time at 20x
    obs.wait(
        lambda: any(s["board_online"] is False for s in obs.on(obs.topics.status)),
        "board reported offline",
    )
    status, before_answer = _ask_state(obs)
    assert status == "failed"
    said = [m.payload for m in before_answer if m.topic == obs.topics.status]
    assert said and said[-1]["board_online"] is False
    assert not any("/compartments/" in m.topic for m in before_answer)


def test_report_state_sends_again_the_kept_events_after_the_number_asked(kiosk: Kiosk) -> None:
    """A replica that has just taken the kiosk has recorded its events up to a number; those
    after it that only the last holder heard, or that were sent while nobody listened, come
    again from the outbox, which kept them once the broker acknowledged them (ADR 0092): the
    same messages (ids, numbers, stamps), in order, and none from before the number."""
    obs, world = kiosk.observer, kiosk.sim.world
    wait_ready(obs, kiosk.bridge)
    assert obs.final_reply(obs.command("unlock", 4).request_id)["status"] == "succeeded"
    world.open_door(4)
    world.place_item(4)
    world.close_door(4)
    obs.wait_event("door_closed", 4)
    first = obs.events(n=4)
    assert [e["type"] for e in first] == ["door_opened", "item_placed", "door_closed"]
    obs.wait(lambda: kiosk.bridge.store.event_count() == 0, "every event acknowledged")
    before = len(obs.events())
    status, _ = _ask_state(obs, events_after=first[0]["seq"])
    assert status == "succeeded"
    again = obs.wait(
        lambda: len(obs.events()) - before >= 2 and obs.events()[before:], "events sent again"
    )
    assert again == first[1:]
    obs.wait(lambda: kiosk.bridge.store.event_count() == 0, "acknowledged again")


def test_report_state_sends_again_the_telemetry_published_after_the_time_asked(
    kiosk: Kiosk,
) -> None:
    """A replica that has just taken the kiosk has stored its readings up to a stamp; the
    batches published after it (QoS 0: while nobody held the kiosk, they reached nobody) come
    again, marked `resent`, the same stamps and readings, in order (ADR 0098)."""
    obs = kiosk.observer
    wait_ready(obs, kiosk.bridge)
    live = obs.wait(
        lambda: len(obs.on(obs.topics.telemetry)) >= 3 and obs.on(obs.topics.telemetry),
        "three batches",
    )
    after = contract.Telemetry.model_validate(live[0]).ts
    status, _ = _ask_state(obs, readings_after=after)
    assert status == "succeeded"
    batches = [contract.Telemetry.model_validate(p) for p in obs.on(obs.topics.telemetry)]
    again = [b for b in batches if b.resent]
    assert len(again) >= 2 and all(b.ts > after for b in again)
    heard = [b for b in batches if not b.resent and b.ts > after]
    assert [b.model_copy(update={"resent": False}) for b in again] == heard[: len(again)]
    assert kiosk.bridge.link.telemetry_resent == len(again)


def _ask_state(
    obs: Observer, events_after: int | None = None, readings_after: datetime | None = None
) -> tuple[str, list[Seen]]:
    """Send `report_state`: its final status, and what the kiosk published before it."""
    before = len(obs.messages)
    ask = _report_state(obs, events_after, readings_after)
    obs.send(ask)
    final = obs.final_reply(ask.request_id)["status"]
    return final, _before_the_answer(obs.since(before), obs.reply_to)


def _report_state(
    obs: Observer, events_after: int | None = None, readings_after: datetime | None = None
) -> contract.ReportStateCommand:
    return contract.ReportStateCommand(
        request_id=uuid.uuid4().hex,
        expires_at=contract.utcnow() + timedelta(seconds=30),
        reply_to=obs.reply_to,
        args=contract.ReportStateArgs(events_after=events_after, readings_after=readings_after),
    )


def _before_the_answer(seen: list[Seen], reply_to: str) -> list[Seen]:
    answered = next(
        i
        for i, m in enumerate(seen)
        if m.topic == reply_to and m.payload["status"] in contract.FINAL_STATUSES
    )
    return seen[:answered]


def test_report_state_waits_for_a_new_connection_s_fresh_state(kiosk: Kiosk) -> None:
    """ADR 0111: after a reconnect the fresh status and snapshots wait for the old retained
    copies paho sends again to be acknowledged. A `report_state` that comes meanwhile (the
    broker hands a new holder's ask over right after the CONNACK) is answered after them, never
    `succeeded` with nothing published before it. Played by an old copy not yet acknowledged."""
    obs, link = kiosk.observer, kiosk.bridge.link
    wait_ready(obs, kiosk.bridge)
    old_copy = paho.MQTTMessageInfo(0)
    with link._status_lock:
        link._retained_unacked.append(old_copy)
        link._fresh_due, link._connected_at = True, time.monotonic()
    before = len(obs.messages)
    ask = _report_state(obs)
    obs.send(ask)
    obs.wait(lambda: obs.replies(ask.request_id), "accepted")
    batches = len(obs.on(obs.topics.telemetry))
    # Telemetry goes each round of the board loop at most: two mean a whole round (and its
    # answers to report_state) went by with the ask in hand.
    obs.wait(lambda: len(obs.on(obs.topics.telemetry)) >= batches + 2, "two board rounds")
    old_copy._set_as_published()  # the broker acknowledged it
    assert obs.final_reply(ask.request_id)["status"] == "succeeded"
    published = {m.topic for m in _before_the_answer(obs.since(before), obs.reply_to)}
    assert obs.topics.status in published
    assert {obs.topics.compartment_state(n) for n in range(1, 13)} <= published


def test_a_scan_is_published_as_an_event_at_once(kiosk: Kiosk) -> None:
    obs = kiosk.observer
    t0 = time.monotonic()
    kiosk.sim.world.scan("LOCKER:7f3a9c")
    scan = obs.wait_event("scan")[0]
    assert scan["data"] == {"text": "LOCKER:7f3a9c"} and scan["compartment"] is None
    assert time.monotonic() - t0 < 5.0


def test_telemetry_batches_carry_every_compartment(kiosk: Kiosk) -> None:
    obs = kiosk.observer
    batch = obs.wait(lambda: obs.on(obs.topics.telemetry), "a telemetry batch")[-1]
    assert [r["n"] for r in batch["readings"]] == list(range(1, 13))
