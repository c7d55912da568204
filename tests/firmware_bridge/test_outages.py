"""The bridge stays steady when either side goes away: broker restarts, cable pulls, line noise."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

from firmware_bridge import contract
from tests.firmware_bridge.conftest import TIME_SCALE, Kiosk
from tests.firmware_bridge.harness import (
    Observer,
    bridge_settings,
    new_kiosk_id,
    pulses,
    running_bridge,
    simulator,
    wait_ready,
)
from tests.support.mosquitto import MosquittoProcess


def test_broker_restart_loses_no_event_and_keeps_their_order(
    durable_broker: MosquittoProcess, tmp_path: Path
) -> None:
    kiosk_id = new_kiosk_id()
    with simulator(time_scale=TIME_SCALE) as sim:
        board, scanner = sim.open_pty(tmp_path / "dev")
        obs = Observer(durable_broker.host, durable_broker.port, kiosk_id, persistent=True).start()
        settings = bridge_settings(
            kiosk_id, durable_broker.url, board, scanner, tmp_path / "data", TIME_SCALE
        )
        try:
            with running_bridge(settings) as bridge:
                wait_ready(obs, bridge)
                texts = [f"scan-{i:02d}" for i in range(30)]
                for text in texts[:10]:
                    sim.world.scan(text)
                obs.wait(lambda: len(obs.events("scan")) == 10, "scans before the outage")
                durable_broker.stop()
                obs.wait(lambda: not bridge.link.connected.is_set(), "bridge sees the outage")
                for text in texts[10:20]:
                    sim.world.scan(text)
                    time.sleep(0.02)
                sim.world.open_door(3, force=True)
                sim.world.close_door(3)
                obs.wait(
                    lambda: bridge.store.event_count() >= 12, "events queued on disk meanwhile"
                )
                durable_broker.start()
                for text in texts[20:]:
                    sim.world.scan(text)

                # At-least-once: a broker restarted with persistence may deliver a message again;
                # consumers drop repeats by event_id, as the service does.
                def unique(kind: str | None = None, n: int | None = None) -> list[dict[str, Any]]:
                    seen: dict[str, dict[str, Any]] = {}
                    for event in obs.events(kind, n):
                        seen.setdefault(event["event_id"], event)
                    return list(seen.values())

                obs.wait(lambda: len(unique("scan")) >= 30, "every scan", timeout_s=40)
                received = [e["data"]["text"] for e in unique("scan")]
                assert received == texts  # none lost, each once, in order
                assert [e["type"] for e in unique(n=3)] == ["door_opened", "door_closed"]
                stamps = [e["ts"] for e in unique()]
                assert stamps == sorted(stamps)  # original timestamps, in order
                # Numbered by the outbox, one after the other across the outage: what the
                # service orders a kiosk's events by (ADR 0066).
                numbers = [e["seq"] for e in unique()]
                assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
                assert bridge.link.connects == 2
                # The retained status says online again after the broker came back.
                obs.wait(lambda: bridge.store.event_count() == 0, "outbox drained")
                assert obs.on(obs.topics.status)[-1]["state"] == "online"
        finally:
            obs.stop()


def test_an_event_sent_as_the_link_went_down_does_not_stop_the_ones_after(
    durable_kiosk: Kiosk,
) -> None:
    """ADR 0109: the outbox publishes while the link says connected; the connection can be gone
    a moment before the link hears so. paho keeps such an event and sends it once back, but
    said of it for ever after that it failed: the pump stopped at it each round and sent
    nothing more (nor the telemetry kept meanwhile) until the bridge restarted. Here the link
    is made to believe it is connected through the outage, as in that moment."""
    bridge, broker, sim = durable_kiosk.bridge, durable_kiosk.broker, durable_kiosk.sim
    obs = Observer(broker.host, broker.port, durable_kiosk.settings.kiosk_id, persistent=True)
    obs.start()
    try:
        obs.wait(lambda: obs.on(obs.topics.status), "the observer subscribed")
        broker.stop()
        obs.wait(lambda: not bridge.link.connected.is_set(), "bridge sees the outage")
        bridge.link.connected.set()  # as in the moment before it heard of it
        sim.world.scan("sent-as-it-went")
        # Handed to paho while its connection is down: what paho answers NO_CONN to.
        obs.wait(lambda: bridge.link._inflight, "the scan published into the outage")
        broker.start()
        obs.wait(lambda: obs.events("scan"), "the scan sent once back", timeout_s=40)
        sim.world.scan("after")
        obs.wait(lambda: len(obs.events("scan")) >= 2, "the next scan", timeout_s=40)
        assert [e["data"]["text"] for e in obs.events("scan")][-1] == "after"
        obs.wait(lambda: bridge.store.event_count() == 0, "outbox drained")
    finally:
        obs.stop()


def test_a_status_kept_through_an_outage_does_not_outlive_the_fresh_one(
    durable_kiosk: Kiosk,
) -> None:
    """ADR 0111: a retained status handed to paho as its connection died is sent again once
    back. The fresh status of the new connection must come after it, or the broker keeps the
    old one (and every replica reads it) until the next change. Here the board is said offline
    into the outage, as in the moment before the link hears of it, and back while cut off."""
    bridge, broker = durable_kiosk.bridge, durable_kiosk.broker
    link, kiosk_id = bridge.link, durable_kiosk.settings.kiosk_id
    obs = Observer(broker.host, broker.port, kiosk_id, persistent=True).start()
    try:
        obs.wait(lambda: obs.on(obs.topics.status), "the observer subscribed")
        now = link._status
        assert now is not None and now.board_online
        broker.stop()
        obs.wait(lambda: not link.connected.is_set(), "bridge sees the outage")
        seen = len(obs.on(obs.topics.status))
        link.connected.set()  # as in the moment before it heard of it
        # Handed to paho (NO_CONN) before set_status returns.
        link.set_status(now.model_copy(update={"board_online": False, "ts": contract.utcnow()}))
        link.connected.clear()  # what it then hears
        link.set_status(now.model_copy(update={"ts": contract.utcnow()}))  # the board is back
        broker.start()

        def said_since() -> list[bool]:  # the bridge's own (not the broker's copies of its will)
            said = {s["ts"]: s for s in obs.on(obs.topics.status)[seen:] if s["state"] == "online"}
            return [s["board_online"] for s in said.values()]

        obs.wait(lambda: len(said_since()) >= 2, "the old status and the fresh one", 40)
        assert said_since() == [False, True]
        late = Observer(broker.host, broker.port, kiosk_id).start()  # a replica taking over
        try:
            late.wait(lambda: late.on(late.topics.status), "the retained status")
            assert late.on(late.topics.status)[-1]["board_online"] is True
        finally:
            late.stop()
    finally:
        obs.stop()


def test_cable_pulled_for_10_s_reconnects_resyncs_and_reports_the_gap(kiosk: Kiosk) -> None:
    obs, sim = kiosk.observer, kiosk.sim
    status_topic = obs.topics.status
    sim.faults.pull_cable(10.0)  # simulated seconds: half a second of wall time at 20x
    obs.wait(
        lambda: any(s["board_online"] is False for s in obs.on(status_topic)),
        "board reported offline",
    )
    failed = obs.final_reply(obs.command("unlock", 6).request_id)
    assert failed["status"] == "failed"  # said at once, not queued for later
    sim.world.open_door(4, force=True)  # during the gap: only the board's counters see it
    sim.world.close_door(4)
    obs.wait(lambda: obs.on(status_topic)[-1]["board_online"], "board back online", 30)
    obs.wait_event("door_closed", 4)
    assert [e["type"] for e in obs.events(n=4)] == ["door_opened", "door_closed"]
    assert pulses(sim, 6) == 0
    ok = obs.final_reply(obs.command("unlock", 6).request_id)
    assert ok["status"] == "succeeded" and pulses(sim, 6) == 1


def test_a_board_reboot_is_reported_and_setpoints_are_restored(kiosk: Kiosk) -> None:
    obs, sim = kiosk.observer, kiosk.sim
    obs.final_reply(obs.command("set_heater", 5, {"setpoint_c": 63.0}).request_id)
    old_boot = sim.truth().boot_id
    sim.faults.reboot()
    rebooted = obs.wait_event("board_rebooted")[0]
    assert rebooted["data"]["previous_boot_id"] == f"{old_boot:08x}"
    obs.wait(lambda: sim.truth().compartments[4].setpoint_c == 63.0, "setpoint back on the board")
    obs.wait(
        lambda: obs.on(obs.topics.status)[-1].get("boot_id") == f"{sim.truth().boot_id:08x}",
        "status with the new boot id",
    )


def test_one_percent_byte_errors_every_command_ends_explicitly_none_twice(kiosk: Kiosk) -> None:
    obs, sim = kiosk.observer, kiosk.sim
    sim.faults.line_errors(0.01)
    commands = [obs.command("unlock", n) for n in range(1, 13)]
    commands += [obs.command("set_heater", n, {"setpoint_c": 60.0 + n}) for n in range(1, 13)]
    replies = {c.request_id: obs.final_reply(c.request_id, timeout_s=60) for c in commands}
    truth = sim.truth()
    for cmd in commands:
        reply = replies[cmd.request_id]
        assert reply["status"] in {"succeeded", "failed", "timed_out"}
        finals = [r for r in obs.replies(cmd.request_id) if r["status"] != "accepted"]
        assert len(finals) == 1  # one explicit outcome per command
        row = truth.compartments[cmd.compartment - 1]
        if cmd.action == "unlock":
            assert row.lock_pulses <= 1  # never twice, whatever the line did
            if reply["status"] == "succeeded":
                assert row.lock_pulses == 1
        elif reply["status"] == "succeeded":
            assert row.setpoint_c == 60.0 + cmd.compartment
    succeeded = sum(r["status"] == "succeeded" for r in replies.values())
    assert succeeded >= 20  # retries carry almost everything through 1 % noise
    assert kiosk.bridge.board.stats.retries > 0 or kiosk.bridge.board.frames_dropped > 0


def test_an_expired_heater_lease_gets_its_setpoints_back(
    private_mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    """The kiosk PC was off longer than the board's heater lease (600 s): on its return the
    bridge restores the setpoints the board dropped."""
    scale = 400.0  # 600 s of lease in 1.5 s
    kiosk_id = new_kiosk_id()
    with simulator(time_scale=scale) as sim:
        board, scanner = sim.open_pty(tmp_path / "dev")
        obs = Observer(private_mosquitto.host, private_mosquitto.port, kiosk_id).start()
        settings = bridge_settings(
            kiosk_id, private_mosquitto.url, board, scanner, tmp_path / "data", scale
        )
        try:
            with running_bridge(settings) as bridge:
                obs.wait(lambda: bridge.info.online, "board online")
                obs.final_reply(obs.command("set_heater", 2, {"setpoint_c": 66.0}).request_id)
            obs.wait(lambda: sim.truth().heater_lease_expired, "the lease to run out", 30)
            assert sim.truth().compartments[1].setpoint_c is None
            with running_bridge(settings):
                obs.wait(
                    lambda: sim.truth().compartments[1].setpoint_c == 66.0, "setpoint restored"
                )
                assert not sim.truth().heater_lease_expired
        finally:
            obs.stop()


def test_the_scanner_cable_pulled_and_back_scans_flow_again(kiosk: Kiosk) -> None:
    obs, sim = kiosk.observer, kiosk.sim
    scanner = kiosk.bridge.scanner
    assert scanner is not None
    sim.world.scan("before")
    obs.wait_event("scan")
    sim.faults.pull_cable(10.0, device="scanner")
    obs.wait(lambda: not scanner.transport.is_open, "the bridge to notice the scanner gone")
    obs.wait(lambda: scanner.transport.is_open, "the scanner reopened", 30)
    sim.world.scan("after")
    obs.wait_event("scan", count=2)
    assert [e["data"]["text"] for e in obs.events("scan")] == ["before", "after"]
    assert kiosk.bridge.info.online  # the board never noticed


def test_events_queued_during_an_outage_survive_a_bridge_restart(
    private_mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    kiosk_id = new_kiosk_id()
    with simulator(time_scale=TIME_SCALE) as sim:
        board, scanner = sim.open_pty(tmp_path / "dev")
        settings = bridge_settings(
            kiosk_id, private_mosquitto.url, board, scanner, tmp_path / "data", TIME_SCALE
        )
        obs = Observer(private_mosquitto.host, private_mosquitto.port, kiosk_id).start()
        try:
            with running_bridge(settings) as bridge:
                wait_ready(obs, bridge)
                private_mosquitto.stop()
                obs.wait(lambda: not bridge.link.connected.is_set(), "the outage")
                for i in range(5):
                    sim.world.scan(f"queued-{i}")
                obs.wait(lambda: bridge.store.event_count() == 5, "five events on disk")
            stopped_at = contract.utcnow()
            private_mosquitto.start()
            obs.wait(lambda: obs.client.is_connected(), "observer back", 30)
            with running_bridge(settings):
                obs.wait(lambda: len(obs.events("scan")) >= 5, "the queued scans", 30)
            scans = obs.events("scan")
            assert [e["data"]["text"] for e in scans] == [f"queued-{i}" for i in range(5)]
            # Their own timestamps, from before the restart, not the time of sending.
            assert all(datetime.fromisoformat(e["ts"]) < stopped_at for e in scans)
        finally:
            obs.stop()


def test_the_retained_status_after_a_double_outage_is_the_present_one(kiosk: Kiosk) -> None:
    """The board dropped off and came back while the broker was down: once the broker is back,
    the retained status says online, not what was true in between."""
    bridge, broker = kiosk.bridge, kiosk.broker
    broker.stop()
    kiosk.observer.wait(lambda: not bridge.link.connected.is_set(), "the broker outage")
    kiosk.sim.faults.pull_cable(10.0)
    kiosk.observer.wait(lambda: not bridge.info.online, "board lost meanwhile")
    kiosk.observer.wait(lambda: bridge.info.online, "board back meanwhile", 30)
    broker.start()
    kiosk.observer.wait(lambda: bridge.link.connected.is_set(), "bridge reconnected", 30)
    time.sleep(1.0)  # anything paho had queued would have been sent by now
    late = Observer(broker.host, broker.port, kiosk.settings.kiosk_id).start()
    try:
        status = late.wait(lambda: late.on(late.topics.status), "the retained status")[-1]
        assert status["state"] == "online" and status["board_online"] is True
        snapshots = late.wait(lambda: late.snapshot(1), "a retained snapshot")
        assert snapshots["n"] == 1
    finally:
        late.stop()
