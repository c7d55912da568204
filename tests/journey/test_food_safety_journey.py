"""Food safety through the system as a user starts it (`lockerctl up`: the service, the bridge
and the board simulator over a pty), at --time-scale 60 under the `us-fda` profile (ADR 0070).

Hot food is dropped off; the simulator's control API opens the temperature probe, so the board
reports no temperature. Past the profile's silence limit (15 nominal minutes, never under 30
wall seconds) the food is unsafe: the order ends with why, the merchant reads a `food_unsafe`
notice, the purchaser is messaged and her page says it, the operator's alert is the discard
task, the operator's record of the order shows the readings up to the fault, and the discard is
an audited opening after which the compartment holds nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hardware.simulator import TICK_PERIOD_S
from tests.journey.story import FOOD_IN_C
from tests.journey.system import Actors, PurchaserPhones, Up, token_of, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TIME_SCALE = 60.0
STEP_WAIT_S = 60.0  # a command or a report on two busy cores
UNSAFE_WAIT_S = 120.0  # the 30 s silence limit, the food check's period, and a busy machine


ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "food-safety"


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    up = Up(tmp_path / "var", kiosks=1, time_scale=TIME_SCALE)
    try:
        up.wait_ready()
        yield up
    finally:
        up.kill()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)  # what every part said, for a failure
        (ARTIFACTS / "lockerctl-up.log").write_text(up.output + "\n")


def set_profile(up: Up, site: str, profile: str) -> None:
    """`lockerctl set-food-profile`, as an operator runs it beside the running system."""
    database_url = f"sqlite+aiosqlite:///{up.data_dir / 'locker.db'}"
    secret_key = (up.data_dir / "secret_key").read_text().strip()
    done = subprocess.run(
        [sys.executable, "-m", "locker_service", "set-food-profile", "--site", site,
         "--profile", profile, "--database-url", database_url],
        env={**os.environ, "LOCKER_SECRET_KEY": secret_key},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"site {site}: {profile}" in done.stdout


def kiosks_online(actors: Actors) -> None:
    wait_until(
        lambda: all(k["online"] for k in actors.operator_get("/sites")[0]["kiosks"]),
        STEP_WAIT_S,
        "the kiosk online",
        0.5,
    )


def test_a_probe_gone_quiet_with_food_inside_makes_it_unsafe_and_everyone_is_told(up: Up) -> None:
    actors = Actors(up)
    phones = PurchaserPhones()
    try:
        set_profile(up, actors.creds["site_code"], "us-fda")
        sites = actors.operator_get("/sites")
        assert sites[0]["food_safety"]["name"] == "us-fda"
        kiosks_online(actors)
        created = actors.create_order("unsafe-1", phones.contact("unsafe-1"))
        n = int(actors.dropoff(0, "unsafe-1")["compartment"])
        wait_until(lambda: actors.compartment(0, n)["lock_released"], STEP_WAIT_S, "the latch")
        actors.hands(0, "open", n)
        actors.hands(0, "place", n, mass_g=450, temp_c=FOOD_IN_C)
        actors.hands(0, "close", n)
        wait_until(
            lambda: actors.order(created["id"])["state"] in ("deposited", "disinfecting"),
            STEP_WAIT_S,
            "the food deposited",
            0.5,
        )
        faulted = actors.http.put(
            f"{up.sim_url(0)}/faults/compartments/{n}", json={"sensor": "open"}
        )
        assert faulted.status_code == 200, faulted.text

        def unsafe() -> dict[str, object] | None:
            order = actors.order(created["id"])
            return order if order["food_unsafe_at"] else None

        order = wait_until(unsafe, UNSAFE_WAIT_S, "the food found unsafe", 0.5)
        assert order["state"] == "expired"
        reason = str(order["failure_reason"])
        assert reason.startswith("food no longer safe: "), reason
        assert "temperature" in reason  # unknown (the probe) or no reading at all
        assert "food_unsafe" in [x["kind"] for x in order["notices"]]
        message = wait_until(
            lambda: [m for m in phones.inbox("unsafe-1") if "can no longer be collected" in m.body],
            STEP_WAIT_S,
            "the purchaser's message",
            0.5,
        )
        assert message
        page = actors.http.get(f"{up.base_url}/p/{token_of(created['purchaser_url'])}?lang=en")
        assert "For food safety your order can no longer be collected" in page.text
        [alert] = [a for a in actors.operator_get("/alerts") if a["kind"] == "food_unsafe"]
        assert "Discard it" in alert["message"]

        record = actors.operator_get(f"/orders/{created['id']}/record")
        assert record["kept"]["readings"] > 0  # the readings before the probe opened
        assert record["kept"]["max_c"] is not None

        # The discard: an audited opening (aborting whatever cycle the fault left), the food
        # taken out, the door shut: the compartment holds nothing.
        compartment_id = next(
            c["id"]
            for c in actors.operator_get(f"/kiosks/{sites[0]['kiosks'][0]['id']}")["compartments"]
            if c["number"] == n
        )
        opened = actors.http.post(
            f"{up.base_url}/api/v1/operator/compartments/{compartment_id}/open",
            json={"reason": "discard: unsafe food", "override_cycle": True},
            headers={"Authorization": f"Bearer {actors.creds['operator_token']}"},
        )
        assert opened.status_code == 200, opened.text
        wait_until(lambda: actors.compartment(0, n)["lock_released"], STEP_WAIT_S, "the unlock")
        actors.hands(0, "open", n)
        actors.hands(0, "remove", n)
        actors.hands(0, "close", n)
        openings = wait_until(
            lambda: [
                o
                for o in actors.operator_get("/openings")["items"]
                if o["reason"].endswith("discard: unsafe food") and o["door_opened_at"]
            ],
            STEP_WAIT_S,
            "the discard in the openings' audit",
            0.5,
        )
        assert openings
        assert not actors.compartment(0, n)["occupied"]
    finally:
        actors.close()
        phones.close()


CYCLE_WAIT_S = 150.0  # a 30-minute cycle is 30 s at 60x; a busy machine


def trace_of(page: str) -> list[tuple[float, float]]:
    """(Unix time, °C) of each point of the purchaser page's temperature line."""
    temps = re.search(r'data-temps="([^"]*)"', page)
    times = re.search(r'data-times="([^"]*)"', page)
    assert temps and times, "no temperature line on her page"
    return [
        (float(at), float(c))
        for at, c in zip(times.group(1).split(","), temps.group(1).split(","), strict=True)
    ]


def off_record(
    record: list[dict[str, float | None]], since: float, at: float, temp: float
) -> float:
    """How far `temp`, stamped `at` and sampled after `since`, is from every value the
    simulator's record of the probe went through between the two (0 if it went through it).

    A reading is stamped when the bridge has it, some time after the board sampled it: a poll
    and a simulator tick, more on a busy machine. At 60x a tenth of a second is six nominal
    seconds, in which the warm-up climbs a degree: the moment of the stamp alone says little,
    the span between two stamps bounds the sample whatever the machine's load.

    The record, read after her page, holds every tick up to `at`: the probe's value at `at` is
    the newest tick at or before it, which may be a tick before `at` (a reading is stamped
    after its tick), so only its start must reach back past `since`."""
    known = [(float(p["at"] or 0), float(p["temp_c"])) for p in record if p["temp_c"] is not None]
    assert known[0][0] <= since, f"no record from {since} (it starts at {known[0][0]})"
    within = [c for t, c in known if since <= t <= at]
    before = [c for t, c in known if t < since][-1:]  # the value entering the span
    low, high = min(within + before), max(within + before)
    return max(low - temp, temp - high, 0.0)


def test_a_lamp_that_fails_mid_cycle_keeps_the_food_from_ready_and_the_cycle_runs_again(
    up: Up,
) -> None:
    """The board's lamp sense through the whole chain (ADR 0073): the tube dies five nominal
    minutes into the cycle and is reseated; the cycle runs out short of its dose, so the order
    is not ready, the operator is told, the cycle runs again, and the food's record shows both."""
    actors = Actors(up)
    phones = PurchaserPhones()
    try:
        kiosks_online(actors)
        created = actors.create_order("lamp-1", phones.contact("lamp-1"))
        n = int(actors.dropoff(0, "lamp-1")["compartment"])
        wait_until(lambda: actors.compartment(0, n)["lock_released"], STEP_WAIT_S, "the latch")
        actors.hands(0, "open", n)
        actors.hands(0, "place", n, mass_g=450, temp_c=FOOD_IN_C)
        actors.hands(0, "close", n)
        wait_until(lambda: actors.compartment(0, n)["uv_lit"], STEP_WAIT_S, "the lamp shining", 0.2)
        dead = actors.http.put(f"{up.sim_url(0)}/faults/compartments/{n}", json={"dead_lamp": True})
        assert dead.status_code == 200 and not dead.json()["uv_lit"], dead.text
        # Five nominal minutes of the 30 dark: a sixth of the dose lost, the cycle short.
        started_dark = actors.compartment(0, n)["disinfect_remaining_s"]
        wait_until(
            lambda: actors.compartment(0, n)["disinfect_remaining_s"] <= started_dark - 300,
            STEP_WAIT_S,
            "five minutes of the cycle dark",
            0.2,
        )
        mended = actors.http.put(
            f"{up.sim_url(0)}/faults/compartments/{n}", json={"dead_lamp": False}
        )
        assert mended.status_code == 200, mended.text

        def cycles_ended() -> list[str]:
            record = actors.operator_get(f"/orders/{created['id']}/record")
            return [e["detail"] for e in record["entries"] if e["what"] == "cycle_ended"]

        first = wait_until(cycles_ended, CYCLE_WAIT_S, "the first cycle's end", 0.5)
        assert first[0].startswith("short: lamp lit "), first
        assert "dark 1 time(s)" in first[0]
        assert actors.order(created["id"])["state"] == "disinfecting"  # not ready
        assert not phones.inbox("lamp-1")  # nor told it is
        [alert] = [a for a in actors.operator_get("/alerts") if a["kind"] == "cycle_short_dose"]
        assert "the cycle runs again" in alert["message"]

        ready = wait_until(
            lambda: actors.order(created["id"])["state"] == "ready",
            CYCLE_WAIT_S,
            "the order ready after the cycle ran again",
            0.5,
        )
        assert ready
        ended = cycles_ended()
        assert ended[0] == first[0] and len(ended) == 2, ended
        assert ended[1].startswith("completed: lamp lit 1800 s of 1800 s, "), ended
        told = wait_until(
            lambda: phones.inbox("lamp-1"), STEP_WAIT_S, "the purchaser's message", 0.5
        )
        assert told[0].attachments  # her QR code: sent once the food is ready, not before

        # Her page's line of her food's temperatures is the compartment's own: each point
        # within 0.5 °C of what the simulator recorded of the probe when it was read.
        page = actors.http.get(f"{up.base_url}/p/{token_of(created['purchaser_url'])}?lang=en")
        points = trace_of(page.text)
        assert len(points) > 30, page.text  # an hour, nominal: a point per nominal minute or so
        sim = actors.http.get(
            f"{up.sim_url(0)}/compartments/{n}/temperatures", params={"since": points[0][0] - 5}
        ).json()
        # Each point was sampled after the one before it was stamped (less a simulator tick)
        # and before its own stamp: held against what the probe went through in between.
        stamps = [points[0][0] - (points[1][0] - points[0][0]), *(at for at, _ in points)]
        worst = max(
            off_record(sim, since - TICK_PERIOD_S, at, temp)
            for since, (at, temp) in zip(stamps[:-1], points, strict=True)
        )
        assert worst <= 0.5, f"the page's line is {worst:.2f} °C from the simulator's record"
    finally:
        actors.close()
        phones.close()
