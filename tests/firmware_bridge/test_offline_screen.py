"""The bridge's offline kiosk screen over real HTTP, against a real bridge, board simulator and
broker: typed codes decided on the kiosk while it is cut off, and nothing else let through."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from firmware_bridge import offline
from firmware_bridge.screen import server
from tests.firmware_bridge.conftest import HER_CODE, ScreenKiosk
from tests.firmware_bridge.harness import pulses


def pickup(http: httpx.Client, code: object, **headers: str) -> httpx.Response:
    return http.post("/pickup", json={"code": code}, headers=headers)


def test_a_typed_code_opens_her_compartment_only_while_cut_off(screen_kiosk: ScreenKiosk) -> None:
    k = screen_kiosk
    state = k.http.get("/state")
    assert state.json() == {
        "offline": False,
        "codes": False,
        "ready": 0,
        "outcome": 0,
        "service": None,
    }
    assert state.headers["access-control-allow-origin"] == "*"
    k.supply()
    assert k.http.get("/state").json()["ready"] == 2
    # In touch with the service: the service decides, with its own throttle.
    online = pickup(k.http, HER_CODE)
    assert online.status_code == 409 and online.json()["error"] == "service_reachable"

    k.cut_off()
    assert k.http.get("/state").json()["offline"] is True
    wrong = pickup(k.http, "0000-0000")
    assert wrong.status_code == 403 and wrong.json()["error"] == "invalid_code"
    opened = pickup(k.http, "1234 5678")
    assert opened.status_code == 202 and opened.json()["compartment"] == 2
    k.obs.wait(lambda: pulses(k.sim, 2) == 1, "her compartment unlocked", timeout_s=30)
    k.obs.wait(
        lambda: any(o["ok"] for o in k.http.get("/outcomes?after=0").json()["outcomes"]),
        "the screen told it opened",
    )
    outcomes = k.http.get("/outcomes?after=0").json()["outcomes"]
    assert [(o["ok"], o.get("compartment"), o.get("error")) for o in outcomes] == [
        (False, None, "invalid_code"),
        (True, 2, None),
    ]
    again = pickup(k.http, HER_CODE)
    assert again.status_code == 409 and again.json()["error"] == "code_used"

    # A QR code at the scanner: the screen hears the outcome too.
    k.sim.world.scan(k.their_token)
    k.obs.wait(
        lambda: any(
            o.get("compartment") == 7
            for o in k.http.get(f"/outcomes?after={outcomes[-1]['seq']}").json()["outcomes"]
        ),
        "the screen told of the scan",
        timeout_s=30,
    )
    assert pulses(k.sim, 7) == 1
    assert all(pulses(k.sim, n) == 0 for n in range(1, 13) if n not in (2, 7))


@pytest.mark.parametrize(
    "body, headers, status",
    [
        ({"code": 12345678}, {}, 422),
        ({"code": "1234567"}, {}, 422),
        ({"token": "x"}, {}, 422),
        ({"code": "12345678"}, {"Origin": "http://evil.example"}, 403),
        # DNS rebinding: a page of another site, its name resolved to this PC
        ({"code": "12345678"}, {"Host": "evil.example", "Origin": "http://evil.example"}, 403),
    ],
)
def test_bad_requests_are_refused_and_open_nothing(
    screen_kiosk: ScreenKiosk, body: object, headers: dict[str, str], status: int
) -> None:
    k = screen_kiosk
    k.supply()
    k.cut_off()
    answer = k.http.post("/pickup", json=body, headers=headers)
    assert answer.status_code == status
    assert answer.json()["error"]
    form = k.http.post("/pickup", data={"code": HER_CODE})  # a form post from anywhere
    assert form.status_code == 415
    bare = httpx.post(f"{k.http.base_url}/pickup", json={"code": HER_CODE})  # no Origin at all
    assert bare.status_code == 403
    huge = k.http.post(
        "/pickup", content=b"{" + b" " * 4096 + b"}", headers={"Content-Type": "application/json"}
    )
    assert huge.status_code == 400
    assert k.http.get("/outcomes?after=x").status_code == 422
    assert k.http.get("/nothing").status_code == 404
    assert all(pulses(k.sim, n) == 0 for n in range(1, 13))


def test_wrong_codes_lock_the_keypad_out_and_say_when_to_try_again(
    screen_kiosk: ScreenKiosk,
) -> None:
    k = screen_kiosk
    k.supply()
    k.cut_off()
    for guess in range(5):
        assert pickup(k.http, f"{guess:08d}").status_code == 403
    locked = pickup(k.http, HER_CODE)
    assert locked.status_code == 429 and locked.json()["error"] == "locked_out"
    assert int(locked.headers["retry-after"]) >= 1
    assert pulses(k.sim, 2) == 0


def test_the_screen_page_and_its_files_are_served_with_a_strict_policy(
    screen_kiosk: ScreenKiosk,
) -> None:
    page = screen_kiosk.http.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'src="/screen.js"' in page.text
    assert "离线" in screen_kiosk.http.get("/screen.js").text
    assert screen_kiosk.http.get("/screen.css").status_code == 200
    rebound = screen_kiosk.http.get("/state", headers={"Host": "evil.example"})
    assert rebound.status_code == 421


def test_every_refusal_decided_offline_has_its_status_and_words_in_both_languages() -> None:
    """The screen shows `error.<code>` in her language; without words it says "Something went
    wrong. Please try again", which sends her back to a door that will not open."""
    source = Path(offline.__file__).read_text()
    codes = set(re.findall(r'Refused\(\s*"([a-z_]+)"', source))
    assert {"invalid_code", "compartment_fault", "opened_since_offline"} <= codes
    script = (Path(server.__file__).parent / "static" / "screen.js").read_text()
    english, chinese = script.split('"zh-Hans": {')
    for code in sorted(codes):
        assert code in server.STATUS_OF, code
        assert f'"error.{code}"' in english, code
        assert f'"error.{code}"' in chinese, code
