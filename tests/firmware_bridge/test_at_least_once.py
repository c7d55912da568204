"""Commands are at-least-once: duplicates are answered from the cache, never executed twice;
expired and malformed commands are refused; the bridge carries on after garbage."""

from __future__ import annotations

import json

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
