"""`GET /api/v1/operator/stream` over HTTP against the running service: who hears what.

Two operators listen at once: an admin and one scoped to a second site. A kill switch engaged
at the first site reaches the admin and never the scoped operator; one at the scoped operator's
own site reaches both. Without a token, or for a site outside the scope, the stream refuses.
"""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.screens.support import Seed, ServiceProcess, add_site_with_operator

EVENT_WAIT_S = 10.0  # service -> hub -> stream on busy cores

pytestmark = pytest.mark.slow  # a service process per test


class Listener:
    """Reads one SSE stream in a thread and queues its events (name, data)."""

    def __init__(self, url: str, token: str) -> None:
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, token), daemon=True)
        self._thread.start()

    def _run(self, url: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        try:
            with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(30.0)) as answer:
                event = "message"
                for line in answer.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        self.events.put((event, json.loads(line[6:])))
        except httpx.HTTPError:
            pass  # the service stopped at the end of the test: the stream ends with it

    def next(self, kind: str, timeout_s: float = EVENT_WAIT_S) -> dict[str, Any]:
        """The next event of `kind`, skipping others; fails after `timeout_s`."""
        while True:
            event, data = self.events.get(timeout=timeout_s)
            if event == kind:
                return data

    def stop(self) -> None:
        self._stop.set()


def test_operators_hear_only_their_sites(
    seeded_service: tuple[ServiceProcess, Seed], tmp_path: Path
) -> None:
    service, seed = seeded_service
    other_site, scoped_token = add_site_with_operator(
        f"sqlite+aiosqlite:///{tmp_path / 'locker.db'}"
    )
    stream = f"{service.url}/api/v1/operator/stream"
    admin = Listener(stream, seed.operator_token)
    scoped = Listener(stream, scoped_token)
    try:
        assert admin.next("hello") and scoped.next("hello")

        def kill(site_id: int, engaged: bool) -> None:
            answer = service.api(
                "POST",
                f"/api/v1/operator/sites/{site_id}/kill-switch",
                seed.operator_token,
                json={"engaged": engaged, "reason": "stream scope test"},
            )
            assert answer.status_code == 200, answer.text

        kill(seed.site_id, True)
        assert admin.next("site")["id"] == seed.site_id
        kill(other_site, True)
        assert admin.next("site")["id"] == other_site
        # The scoped operator's first `site` event is his own site's: the other never came.
        assert scoped.next("site")["id"] == other_site
        kill(seed.site_id, False)
        kill(other_site, False)
    finally:
        admin.stop()
        scoped.stop()


def test_a_stream_of_some_kinds_carries_only_those(
    seeded_service: tuple[ServiceProcess, Seed],
) -> None:
    """The fleet view asks for `kiosk,alert`: a kill switch's `site` change never reaches it,
    while its alert does (an admin's full stream hears both, in the same order)."""
    service, seed = seeded_service
    stream = f"{service.url}/api/v1/operator/stream"
    some = Listener(stream + "?kinds=kiosk,alert", seed.operator_token)
    every = Listener(stream, seed.operator_token)
    try:
        assert some.next("hello") and every.next("hello")
        for engaged in (True, False):
            answer = service.api(
                "POST",
                f"/api/v1/operator/sites/{seed.site_id}/kill-switch",
                seed.operator_token,
                json={"engaged": engaged, "reason": "stream kinds test"},
            )
            assert answer.status_code == 200, answer.text
        heard = [every.events.get(timeout=EVENT_WAIT_S)[0] for _ in range(4)]
        assert heard == ["alert", "site", "alert", "site"]
        kinds = [some.events.get(timeout=EVENT_WAIT_S)[0] for _ in range(2)]
        assert kinds == ["alert", "alert"]
        assert some.events.empty()  # the sites' changes were never sent
    finally:
        some.stop()
        every.stop()


def test_the_stream_refuses_strangers_and_foreign_sites(
    seeded_service: tuple[ServiceProcess, Seed], tmp_path: Path
) -> None:
    service, seed = seeded_service
    _site, scoped_token = add_site_with_operator(f"sqlite+aiosqlite:///{tmp_path / 'locker.db'}")
    answer = service.api("GET", "/api/v1/operator/stream")
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthorized"
    answer = service.api("GET", f"/api/v1/operator/stream?site_id={seed.site_id}", scoped_token)
    assert answer.status_code == 403
    assert answer.json()["error"] == "forbidden"
    answer = service.api("GET", "/api/v1/operator/stream?site_id=abc", seed.operator_token)
    assert answer.status_code == 422
    assert answer.json()["error"] == "validation_error"
    answer = service.api("GET", "/api/v1/operator/stream?kinds=kiosk,nonsense", seed.operator_token)
    assert answer.status_code == 422
    assert answer.json()["error"] == "validation_error"
    answer = service.api("GET", "/api/v1/kiosk/stream", "kt_not-a-kiosk")
    assert answer.status_code == 401
