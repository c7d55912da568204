"""No pickup secret leaves the purchaser's phone: after a whole story under `lockerctl up`, the
run's output and every file in its data directory are searched for each order's pickup token and
8-digit code, and none is there; and every file the run made is readable by its user only.

Two orders: one collected by scanning the QR code, one by typing the code on the kiosk screen;
each purchaser also opens her page, its API and its QR image, as a phone does.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from tests.journey.story import PICKED_UP_WAIT_S, Story
from tests.journey.system import Actors, PurchaserPhones, Up, token_of, wait_until

pytestmark = pytest.mark.slow

CODE_IN_MESSAGE = re.compile(r"(\d{4}) (\d{4})")
UNKNOWN_TOKEN = "Qm9ndXNUb2tlbkZvclRoZVNlY3JldHNUZXN0MDEyMzQ"  # 43 characters, like a token


def _secrets_of(actors: Actors, phones: PurchaserPhones, ref: str) -> tuple[str, str]:
    """The token and code the purchaser's phone received, after looking at her page."""
    [message, *_] = phones.inbox(ref)
    token = token_of(message.body)
    base = actors.up.base_url
    for path in (f"/p/{token}", f"/api/v1/p/{token}", f"/p/{token}/qr.png"):
        actors.http.get(f"{base}{path}")
    match = CODE_IN_MESSAGE.search(message.body)
    assert match, message.body
    return token, match.group(1) + match.group(2)


def _collect_by_typed_code(story: Story, actors: Actors, phones: PurchaserPhones) -> list[str]:
    ref = "typed-code"
    created = actors.create_order(ref, phones.contact(ref))
    n = story._opens_only_this(0, lambda: actors.dropoff(0, ref)["compartment"])
    story._hands(0, n, ("place", {"mass_g": 450, "temp_c": 70.0}), ("close", {}))
    wait_until(lambda: phones.inbox(ref), 120, "the ready message")
    token, code = _secrets_of(actors, phones, ref)
    kiosk = {"Authorization": f"Bearer {actors.creds['kiosks'][0]['token']}"}

    def typed() -> int:
        answer = actors.http.post(
            f"{actors.up.base_url}/api/v1/kiosk/pickup", json={"code": code}, headers=kiosk
        )
        assert answer.status_code == 200, answer.text
        return int(answer.json()["compartment"])

    assert story._opens_only_this(0, typed) == n
    story._hands(0, n, ("remove", {}), ("close", {}))
    wait_until(
        lambda: actors.order(created["id"])["state"] == "picked_up", PICKED_UP_WAIT_S, "pickup"
    )
    return [token, code, f"{code[:4]} {code[4:]}"]


def test_no_token_or_code_in_the_output_or_the_data_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    # With the request log on (up turns it off by default): the log must not carry a token.
    up = Up(data_dir, kiosks=1, time_scale=120.0, extra_env={"LOCKER_ACCESS_LOG": "true"})
    secrets: list[str] = []
    try:
        up.wait_ready()
        actors = Actors(up)
        phones = PurchaserPhones()
        try:
            wait_until(
                lambda: all(k["online"] for k in actors.operator_get("/sites")[0]["kiosks"]),
                60,
                "the kiosk online",
            )
            story = Story(actors, phones, 1)
            scanned = story.play(0)  # collected by scanning the QR code at the kiosk
            token, code = _secrets_of(actors, phones, scanned.ref)
            secrets += [token, code, f"{code[:4]} {code[4:]}"]
            secrets += _collect_by_typed_code(story, actors, phones)
            # A token-shaped line that opens nothing is kept out as well.
            actors.scan(0, UNKNOWN_TOKEN)
            secrets.append(UNKNOWN_TOKEN)
        finally:
            phones.close()
            actors.close()
        assert up.interrupt() == 0
    finally:
        up.kill()
    assert all(secrets) and len(set(secrets)) == len(secrets)
    output = up.output
    assert "/p/<redacted>" in output  # the page's requests were logged, without the token
    found = {s for s in secrets if s in output}
    assert found == set(), f"in the output of lockerctl up: {found}"
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files), files
    for path in files:
        content = path.read_bytes()
        found = {s for s in secrets if s.encode() in content}
        assert found == set(), f"in {path.relative_to(data_dir)}: {found}"
    for path in [data_dir, *data_dir.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path.relative_to(tmp_path)} is {oct(mode)}"
