"""The simulator's HTTP control API: world and faults change, refusals are JSON errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

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
    assert api.put("/faults/line", json={"error_rate": 0.25}).status_code == 200
    assert api.get("/truth").json()["line_error_rate"] == 0.25


def test_reboot_changes_the_boot_id(api: TestClient) -> None:
    before = api.get("/truth").json()["boot_id"]
    assert api.post("/faults/reboot").status_code == 200
    truth = api.get("/truth").json()
    assert truth["boot_id"] != before and truth["booting"] is True


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
