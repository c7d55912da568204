"""A heater fault with food inside, with the system started as a user starts it (`lockerctl up`:
the service, the bridge and the board simulator over a pty) at --time-scale 1 (ADR 0047).

The food is dropped off and its hold cycle runs; the simulator's control API opens the
temperature probe, the board latches the fault, drops the setpoint and aborts the cycle. The
operator's alert says what to do, no cycle start is tried against the fault, the merchant reads
a notice on the order and the purchaser's page says a fault occurred.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.journey.system import Actors, Up, token_of, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

STEP_WAIT_S = 60.0  # a command or a report on two busy cores


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    # A long cycle: the fault must find it running.
    up = Up(tmp_path / "var", kiosks=1, time_scale=1.0, extra_env={"LOCKER_DISINFECTION_S": "600"})
    try:
        up.wait_ready()
        yield up
    finally:
        up.kill()


def test_a_probe_fault_during_the_hold_is_told_to_everyone_once(up: Up) -> None:
    actors = Actors(up)
    try:

        def kiosk_online() -> bool:
            sites = actors.operator_get("/sites")
            return all(k["online"] for s in sites for k in s["kiosks"])

        wait_until(kiosk_online, STEP_WAIT_S, "the kiosk online", 0.5)
        created = actors.create_order("fault-1", "json://127.0.0.1:9/nobody")
        n = int(actors.dropoff(0, "fault-1")["compartment"])
        wait_until(lambda: actors.compartment(0, n)["lock_released"], STEP_WAIT_S, "the latch")
        actors.hands(0, "open", n)
        actors.hands(0, "place", n, mass_g=450, temp_c=65.0)
        actors.hands(0, "close", n)
        wait_until(
            lambda: actors.compartment(0, n)["disinfect_remaining_s"] > 0,
            STEP_WAIT_S,
            "the hold cycle running on the board",
        )

        faulted = actors.http.put(
            f"{up.sim_url(0)}/faults/compartments/{n}", json={"sensor": "open"}
        )
        assert faulted.status_code == 200, faulted.text

        def fault_alert() -> list[str]:
            return [
                a["message"]
                for a in actors.operator_get("/alerts")
                if a["kind"] == "compartment_fault" and a["state"] == "open"
            ]

        messages = wait_until(fault_alert, STEP_WAIT_S, "the fault's alert", 0.5)
        assert "with food inside" in messages[0] and "abort the cycle and open" in messages[0]
        wait_until(
            lambda: actors.order(created["id"])["notices"], STEP_WAIT_S, "the merchant's notice"
        )
        notices = actors.order(created["id"])["notices"]
        assert [x["kind"] for x in notices] == ["compartment_fault"]
        page = actors.http.get(f"{up.base_url}/p/{token_of(created['purchaser_url'])}?lang=en")
        assert "A fault occurred in your compartment" in page.text
        assert "kept hot" not in page.text.split('id="status"', 1)[1].split("</p>", 1)[0]
        kinds = [a["kind"] for a in actors.operator_get("/alerts")]
        assert "timer_failed" not in kinds and "cycle_overdue" not in kinds
    finally:
        actors.close()
