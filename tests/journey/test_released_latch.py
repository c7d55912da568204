"""A released latch that springs back unopened, with the system started as a user starts it
(`lockerctl up`: the service, the bridge and the board simulator over a pty) at --time-scale 1,
with a shortened disinfection cycle so the food is ready in seconds, and a board whose released
latch springs back after 10 s instead of 60 s (SIM_RELATCH_S), so the story takes less waiting.

She scans, the latch releases, she does not pull the door; the latch re-engages on the board's
own clock and the bridge reports it; she scans again and her door opens (docs/adr/0039).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.journey.system import Actors, Up, token_of, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

RELATCH_S = 10.0  # the board's own clock; 60 s on a real board
RELATCH_WAIT_S = RELATCH_S + 60.0  # with room for two busy cores
STEP_WAIT_S = 60.0  # a command or a report on two busy cores
# Her door must open again well before the code_release timer (120 s after her first scan,
# i.e. 110 s after the relatch) could give the code back: the report of the latch does it.
REOPEN_WAIT_S = 30.0


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    up = Up(
        tmp_path / "var",
        kiosks=1,
        time_scale=1.0,
        extra_env={
            "LOCKER_DISINFECTION_S": "3",
            "LOCKER_CLEANING_S": "2",
            "SIM_RELATCH_S": str(RELATCH_S),
        },
    )
    try:
        up.wait_ready()
        yield up
    finally:
        up.kill()


def _compartment(actors: Actors, n: int) -> dict[str, Any]:
    found: dict[str, Any] = next(
        c for c in actors.truth(0)["compartments"] if int(c["number"]) == n
    )
    return found


def test_her_scan_after_the_latch_sprang_back_opens_her_door(up: Up) -> None:
    actors = Actors(up)
    try:

        def kiosk_online() -> bool:
            sites = actors.operator_get("/sites")
            return all(k["online"] for s in sites for k in s["kiosks"])

        wait_until(kiosk_online, STEP_WAIT_S, "the kiosk online", 0.5)
        created = actors.create_order("latch-1", "json://127.0.0.1:9/nobody")
        token = token_of(created["purchaser_url"])
        n = int(actors.dropoff(0, "latch-1")["compartment"])
        wait_until(lambda: _compartment(actors, n)["lock_released"], STEP_WAIT_S, "drop-off latch")
        actors.hands(0, "open", n)
        actors.hands(0, "place", n, mass_g=450, temp_c=65.0)
        actors.hands(0, "close", n)
        wait_until(
            lambda: actors.order(created["id"])["state"] == "ready", STEP_WAIT_S, "order ready"
        )

        pulses = _compartment(actors, n)["lock_pulses"]
        actors.scan(0, token)
        wait_until(lambda: _compartment(actors, n)["lock_released"], STEP_WAIT_S, "her latch")
        assert _compartment(actors, n)["lock_pulses"] == pulses + 1
        # She does not pull the door: the latch springs back on the board's own clock.
        wait_until(
            lambda: not _compartment(actors, n)["lock_released"], RELATCH_WAIT_S, "the relatch"
        )
        assert not _compartment(actors, n)["door_open"]

        # She scans again (the code comes back once the bridge has reported the latch).
        def opened_again() -> bool:
            if _compartment(actors, n)["lock_released"]:
                return True
            actors.scan(0, token)
            return False

        wait_until(opened_again, REOPEN_WAIT_S, "her door released again", 2.0)
        actors.hands(0, "open", n)  # only a released latch lets the door open
        actors.hands(0, "remove", n)
        actors.hands(0, "close", n)
        wait_until(
            lambda: actors.order(created["id"])["state"] == "picked_up",
            STEP_WAIT_S,
            "order picked up",
        )
        attempts = actors.operator_get("/alerts")
        assert "kiosk_under_attack" not in [a["kind"] for a in attempts]
    finally:
        actors.close()
