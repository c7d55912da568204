"""Commands are at-least-once: duplicates are answered from the cache, never executed twice;
expired and malformed commands are refused; the bridge carries on after garbage."""

from __future__ import annotations

import json
from pathlib import Path

from firmware_bridge.bridge import STORE_FILE
from firmware_bridge.store import BridgeStore
from tests.firmware_bridge.conftest import Kiosk
from tests.firmware_bridge.harness import pulses, running_bridge


def test_a_redelivered_unlock_is_answered_and_does_not_pulse_twice(kiosk: Kiosk) -> None:
    obs = kiosk.observer
    cmd = obs.command("unlock", 2)
    obs.send(cmd)  # the broker redelivers before the first finished
    first = obs.final_reply(cmd.request_id)
    obs.send(cmd)  # and again, long after
    obs.wait(lambda: len(obs.replies(cmd.request_id)) >= 4, "an answer to every delivery")
    assert first["status"] == "succeeded"
    assert obs.replies(cmd.request_id)[-1]["status"] == "succeeded"
    assert pulses(kiosk.sim, 2) == 1


def test_a_restarted_bridge_still_answers_a_redelivered_unlock_from_disk(kiosk: Kiosk) -> None:
    obs = kiosk.observer
    cmd = obs.command("unlock", 9)
    assert obs.final_reply(cmd.request_id)["status"] == "succeeded"
    kiosk.bridge.stop()
    before = len(obs.replies(cmd.request_id))
    with running_bridge(kiosk.settings):
        obs.send(cmd)
        obs.wait(lambda: len(obs.replies(cmd.request_id)) > before, "answer after restart")
        assert obs.replies(cmd.request_id)[-1]["status"] == "succeeded"
    assert pulses(kiosk.sim, 9) == 1


def test_an_expired_command_is_rejected_and_nothing_moves(kiosk: Kiosk) -> None:
    obs = kiosk.observer
    cmd = obs.command("unlock", 4, expires_in_s=-1)
    reply = obs.final_reply(cmd.request_id)
    assert reply["status"] == "rejected" and "expired" in reply["detail"]
    assert pulses(kiosk.sim, 4) == 0


def test_garbage_on_the_command_topic_is_dropped_and_the_bridge_carries_on(kiosk: Kiosk) -> None:
    obs = kiosk.observer
    for junk in (
        b"\x00\xff not json",
        b"[]",
        b"{}",
        b'{"request_id": "x", "action": "unlock"}',  # no reply_to: nobody to tell
        json.dumps({"action": "explode", "compartment": 1}).encode(),
        b"{" * 10_000,
    ):
        obs.send_raw(junk)
    # A bad command that still names its request and reply topic is told why.
    obs.send_raw(
        json.dumps(
            {
                "request_id": "bad-1",
                "action": "unlock",
                "compartment": 0,
                "expires_at": "2999-01-01T00:00:00Z",
                "reply_to": obs.reply_to,
            }
        ).encode()
    )
    bad = obs.final_reply("bad-1")
    assert bad["status"] == "rejected" and "compartment" in bad["detail"]
    obs.send_raw(
        json.dumps(
            {
                "request_id": "bad-2",
                "action": "set_heater",
                "compartment": 1,
                "args": {"setpoint_c": 300},
                "expires_at": "2999-01-01T00:00:00Z",
                "reply_to": obs.reply_to,
            }
        ).encode()
    )
    assert obs.final_reply("bad-2")["status"] == "rejected"
    assert kiosk.sim.truth().compartments[0].setpoint_c is None
    good = obs.command("unlock", 1)
    assert obs.final_reply(good.request_id)["status"] == "succeeded"
    assert pulses(kiosk.sim, 1) == 1


def test_commands_a_killed_bridge_left_unfinished_are_settled_never_repeated_blindly(
    kiosk: Kiosk,
) -> None:
    """What a bridge killed mid-command left in its cache: an unlock is judged by the board
    (never pulsed again), a cycle start is not repeated and, no cycle running, answered as not
    started, a setpoint is simply set again."""
    obs = kiosk.observer
    kiosk.bridge.stop()
    unlock = obs.command("unlock", 10, {"deadline_s": 1.0}, request_id="left-unlock")
    cycle = obs.command("start_disinfection", 11, request_id="left-cycle")
    heater = obs.command("set_heater", 12, {"setpoint_c": 64.0}, request_id="left-heater")
    store = BridgeStore(Path(kiosk.settings.data_dir) / STORE_FILE)
    for cmd in (unlock, cycle, heater):
        store.claim_request(cmd.request_id, cmd.model_dump(mode="json"))  # accepted, no more
    store.close()
    with running_bridge(kiosk.settings):
        assert obs.final_reply("left-unlock")["status"] == "failed"
        assert obs.final_reply("left-cycle")["detail"] == (
            "the board shows no cycle running: not started"
        )
        assert obs.final_reply("left-cycle")["status"] == "failed"
        assert obs.final_reply("left-heater")["status"] == "succeeded"
    truth = kiosk.sim.truth()
    assert truth.compartments[9].lock_pulses == 0
    assert not truth.compartments[10].disinfecting
    assert truth.compartments[11].setpoint_c == 64.0


def test_a_cycle_start_a_killed_bridge_left_unfinished_is_answered_by_the_board(
    kiosk: Kiosk,
) -> None:
    """The start reached the board and the bridge died before writing its answer: the cycle
    the board is running says it started. Answered so, a start sent again under the same id
    (ADR 0082) is not a new request, and no second cycle doubles the dose (ADR 0090)."""
    obs = kiosk.observer
    ran = obs.command("start_disinfection", 11, {"duration_s": 1800}, request_id="ran")
    obs.send(ran)
    assert obs.final_reply("ran")["status"] == "succeeded"
    kiosk.bridge.stop()
    left = obs.command("start_disinfection", 11, {"duration_s": 1800}, request_id="left-running")
    nowhere = obs.command("start_disinfection", 40, request_id="left-nowhere")
    store = BridgeStore(Path(kiosk.settings.data_dir) / STORE_FILE)
    for cmd in (left, nowhere):
        store.claim_request(cmd.request_id, cmd.model_dump(mode="json"))  # accepted, no more
    store.close()
    with running_bridge(kiosk.settings):
        reply = obs.final_reply("left-running")
        assert (reply["status"], reply["detail"]) == (
            "succeeded",
            "the board shows the cycle running",
        )
        obs.send(left)  # the service sends it again: answered from the record, not run
        obs.wait(lambda: len(obs.replies("left-running")) >= 2, "the answer from the record")
        assert obs.replies("left-running")[-1]["status"] == "succeeded"
        # One for a compartment this bank does not have is never reported on: refused.
        assert obs.final_reply("left-nowhere")["status"] == "rejected"
    assert kiosk.sim.truth().compartments[10].disinfecting
