"""The simulator's HTTP control API: world and faults change, refusals are JSON errors."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardware.api import create_app
from hardware.protocol import Command
from hardware.protocol.messages import UnlockRequest
from hardware.simulator import Simulator
from tests.hardware.link import BoardLink


@pytest.fixture
def api(sim: Simulator) -> Iterator[TestClient]:
    with TestClient(create_app(sim)) as client:
        yield client


def test_locked_door_refuses_to_open_with_a_json_error(api: TestClient) -> None:
    r = api.post("/compartments/2/door/open", json={})
    assert r.status_code == 409
    assert r.json()["error"] == "physically_impossible"
    assert api.get("/compartments/2").json()["door_open"] is False


def test_forced_door_opens_and_is_counted_by_the_board(api: TestClient, link: BoardLink) -> None:
    r = api.post("/compartments/2/door/open", json={"force": True})
    assert r.status_code == 200 and r.json()["door_open"] is True
    assert link.status().compartments[1].door_open_count == 1


def test_drop_off_story_through_the_api(api: TestClient, link: BoardLink) -> None:
    link.ok(Command.UNLOCK, UnlockRequest(5).pack())
    assert api.post("/compartments/5/door/open").status_code == 200
    r = api.post("/compartments/5/item", json={"mass_g": 600, "temp_c": 72})
    assert r.json()["occupied"] is True and r.json()["item_mass_g"] == 600
    api.post("/compartments/5/door/close")
    record = link.status().compartments[4]
    assert record.occupied and not record.door_open and not record.lock_released


def test_bad_input_is_422_or_404_and_changes_nothing(api: TestClient) -> None:
    r = api.put("/lobby", json={"temp_c": 500})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    assert api.get("/truth").json()["lobby_temp_c"] == 22.0
    r = api.post("/compartments/13/door/close")
    assert r.status_code == 404 and r.json()["error"] == "no_such_compartment"
    r = api.post("/scanner/scan", json={"text": ""})
    assert r.status_code == 422
    r = api.put("/faults/compartments/1", json={"sensor": "melted"})
    assert r.status_code == 422
    assert api.get("/compartments/1").json()["sensor_fault"] is None


def test_faults_are_set_and_cleared(api: TestClient) -> None:
    r = api.put("/faults/compartments/3", json={"sensor": "short", "jammed_lock": True})
    assert r.json()["sensor_fault"] == "short" and r.json()["jammed_lock"] is True
    r = api.put("/faults/compartments/3", json={"sensor": None})
    assert r.json()["sensor_fault"] is None and r.json()["jammed_lock"] is True
    r = api.put("/faults/compartments/3", json={"dead_lamp": True})
    assert r.json()["dead_lamp"] is True and r.json()["jammed_lock"] is True
    r = api.put("/faults/compartments/3", json={"jammed_lock": False})
    assert r.json()["dead_lamp"] is True  # a field not given is left as it was
    r = api.put("/faults/compartments/3", json={"dead_lamp": False})
    assert r.json()["dead_lamp"] is False
    assert api.put("/faults/line", json={"error_rate": 0.25}).status_code == 200
    assert api.get("/truth").json()["line_error_rate"] == 0.25


def test_reboot_changes_the_boot_id() -> None:
    # A manual clock: the 2 s boot cannot pass between two requests on a busy machine.
    with Simulator(compartments=2, manual_clock=True) as sim, TestClient(create_app(sim)) as api:
        before = api.get("/truth").json()["boot_id"]
        assert api.post("/faults/reboot").status_code == 200
        truth = api.get("/truth").json()
        assert truth["boot_id"] != before and truth["booting"] is True
        sim.advance(3)
        assert api.get("/truth").json()["booting"] is False


def test_cors_lets_a_panel_on_another_origin_call(api: TestClient) -> None:
    r = api.options(
        "/truth",
        headers={"Origin": "http://127.0.0.1:8000", "Access-Control-Request-Method": "GET"},
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] in ("*", "http://127.0.0.1:8000")


def test_openapi_page_lists_the_controls(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/truth", "/scanner/scan", "/faults/cable", "/compartments/{n}/item"} <= set(paths)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=8,
)  # fmt: skip
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "force": json_values, "mass_g": json_values, "temp_c": json_values,
            "text": json_values, "sensor": json_values, "dead_heater": json_values,
            "dead_lamp": json_values,
            "error_rate": json_values, "direction": json_values, "seconds": json_values,
            "device": json_values,
        },
    ),
)  # fmt: skip
routes = st.sampled_from(
    [
        ("POST", "/compartments/{n}/door/open"),
        ("POST", "/compartments/{n}/door/close"),
        ("POST", "/compartments/{n}/item"),
        ("DELETE", "/compartments/{n}/item"),
        ("PUT", "/faults/compartments/{n}"),
        ("POST", "/scanner/scan"),
        ("PUT", "/lobby"),
        ("PUT", "/faults/line"),
        ("POST", "/faults/cable"),
        ("GET", "/compartments/{n}"),
    ]
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(routes, st.sampled_from(["1", "12", "0", "13", "-1", "x", "99999999999"]), bodies)
def test_any_request_gets_a_json_answer_never_a_500(
    api: TestClient, route: tuple[str, str], n: str, body: object
) -> None:
    method, path = route
    r = api.request(method, path.format(n=n), json=body)
    assert r.status_code in (200, 404, 409, 422), r.text
    if r.status_code != 200:
        assert set(r.json()) == {"error", "message"}


def test_the_reference_page_needs_no_internet(api: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        html = api.get(page)
        assert html.status_code == 200 and "cdn." not in html.text, page
    assert api.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200


def test_the_simulator_keeps_its_own_record_of_each_probe() -> None:
    """A point per 10 simulated seconds, stamped in wall time at the simulated moment, the
    probe's truth without noise; a failed probe records no temperature."""
    with (
        Simulator(compartments=4, seed=3, time_scale=60.0, manual_clock=True) as sim,
        TestClient(create_app(sim)) as api,
    ):
        api.post("/compartments/2/door/open", json={"force": True})
        api.post("/compartments/2/item", json={"mass_g": 450, "temp_c": 72})
        api.post("/compartments/2/door/close")
        sim.advance(600)  # ten simulated minutes: ten wall seconds at 60x
        points = api.get("/compartments/2/temperatures").json()
        assert 59 <= len(points) <= 61
        stamps = [p["at"] for p in points]
        assert all(abs((b - a) - 10 / 60) < 0.002 for a, b in itertools.pairwise(stamps))
        truth = api.get("/compartments/2").json()
        assert abs(points[-1]["temp_c"] - truth["air_temp_c"]) < 1.5  # the probe lags the air
        later = api.get("/compartments/2/temperatures", params={"since": stamps[-10]}).json()
        assert later == points[-10:]

        api.put("/faults/compartments/2", json={"sensor": "open"})
        sim.advance(30)
        assert [p["temp_c"] for p in api.get("/compartments/2/temperatures").json()[-3:]] == [
            None
        ] * 3
        assert api.get("/compartments/9/temperatures").status_code == 404
