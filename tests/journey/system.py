"""The locker system as a user meets it: `lockerctl up` run as a real process, and the people
around it, each through their own door only.

- the merchant's system: REST with its API key;
- the courier: the kiosk screen's API with the kiosk token;
- the purchaser's phone: a webhook receiver that Apprise's `json://` posts the message to;
- hands at the locker: the simulator's control API (doors, food, scanner) and its physical
  truth (which lock really released, how warm the food really is);
- the operator: the dashboard's API with the operator token.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.support.mosquitto import free_port
from tests.support.threaded_server import serve_in_background

START_TIMEOUT_S = 120.0  # migrations, four to six processes, on two shared cores
STOP_TIMEOUT_S = 40.0
READY_BANNER = "The smart food locker is running."
HTTP_TIMEOUT_S = 20.0


def wait_until(
    predicate: Callable[[], Any], timeout_s: float, what: str, step_s: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(step_s)


class Up:
    """`lockerctl up` in a subprocess, its output collected line by line."""

    def __init__(
        self,
        data_dir: Path,
        *,
        kiosks: int = 1,
        time_scale: float = 120.0,
        broker_url: str | None = None,
        database_url: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.sim_base_port = _free_run(kiosks)
        self.inbox_port = free_port()
        args = [
            "up",
            "--data-dir",
            str(data_dir),
            "--port",
            str(self.port),
            "--sim-port",
            str(self.sim_base_port),
            "--inbox-port",
            str(self.inbox_port),
            "--kiosks",
            str(kiosks),
            "--time-scale",
            f"{time_scale:g}",
        ]
        if broker_url:
            args += ["--broker-url", broker_url]
        if database_url:
            args += ["--database-url", database_url]
        self.kiosks = kiosks
        self.lines: list[str] = []
        self._new = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "locker_service", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})},
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._new:
                self.lines.append(line.rstrip("\n"))
                self._new.notify_all()

    @property
    def output(self) -> str:
        with self._new:
            return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout_s: float = START_TIMEOUT_S, start: int = 0) -> int:
        """Index of the first line at or after `start` containing `text`."""
        deadline = time.monotonic() + timeout_s
        with self._new:
            while True:
                for i in range(start, len(self.lines)):
                    if text in self.lines[i]:
                        return i
                if self.proc.poll() is not None and not any(
                    text in line for line in self.lines[start:]
                ):
                    raise AssertionError(
                        f"lockerctl up exited ({self.proc.returncode}) before {text!r}:\n"
                        + "\n".join(self.lines[-60:])
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no {text!r} within {timeout_s:.0f} s:\n" + "\n".join(self.lines[-60:])
                    )
                self._new.wait(min(left, 0.5))

    def wait_ready(self) -> None:
        self.wait_for_line(READY_BANNER)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sim_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.sim_base_port + index}"

    def credentials(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.data_dir / "demo.json").read_text())
        return data

    def interrupt(self) -> int:
        """Ctrl-C, as a user stops it; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        finally:
            time.sleep(0.2)  # let the reader thread take the last lines

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _free_run(count: int) -> int:
    """A port P with P..P+count-1 all free (simulator control APIs are consecutive)."""
    for _ in range(50):
        base = free_port()
        if base + count >= 65535:
            continue
        ok = True
        for p in range(base + 1, base + count):
            try:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            except OSError:
                ok = False
                break
        if ok:
            return base
    raise RuntimeError("no run of free ports")


@dataclass
class Message:
    path: str
    title: str
    body: str
    attachments: list[tuple[str, bytes]]
    received_at: float


class PurchaserPhones:
    """A webhook that Apprise's `json://127.0.0.1:<port>/<who>` posts to: one phone per path."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: queue.Queue[Message] = queue.Queue()
        self._by_path: dict[str, list[Message]] = {}
        self._lock = threading.Lock()
        phones = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                payload = json.loads(raw)
                message = Message(
                    path=self.path.strip("/"),
                    title=str(payload.get("title") or ""),
                    body=str(payload.get("message") or ""),
                    attachments=[
                        (a.get("filename", ""), base64.b64decode(a.get("base64", "")))
                        for a in payload.get("attachments") or []
                    ],
                    received_at=time.monotonic(),
                )
                with phones._lock:
                    phones._by_path.setdefault(message.path, []).append(message)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        serve_in_background(self._server)

    def contact(self, who: str) -> str:
        return f"json://127.0.0.1:{self.port}/{who}"

    def inbox(self, who: str) -> list[Message]:
        with self._lock:
            return list(self._by_path.get(who, []))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Actors:
    """HTTP clients of the people around the system."""

    up: Up
    creds: dict[str, Any] = field(init=False)
    # One client per thread: the journey's purchasers act at once, and httpcore's pool, shared
    # between threads, can close a connection another thread's request is reading from
    # (encode/httpcore#1110: "Bad file descriptor").
    _local: threading.local = field(init=False, default_factory=threading.local)
    _clients: list[httpx.Client] = field(init=False, default_factory=list)
    _clients_lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.creds = self.up.credentials()

    @property
    def http(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(timeout=HTTP_TIMEOUT_S)
            with self._clients_lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        with self._clients_lock:
            for client in self._clients:
                client.close()
            self._clients.clear()

    def service_ready(self) -> bool:
        """The service's own word that it can serve (`/readyz`); False while it cannot answer."""
        try:
            return self.http.get(f"{self.up.base_url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    # merchant
    def create_order(self, ref: str, contact: str, size: str = "M") -> dict[str, Any]:
        r = self.http.post(
            f"{self.up.base_url}/api/v1/orders",
            json={
                "external_ref": ref,
                "site": self.creds["site_code"],
                "purchaser_name": f"Purchaser {ref}",
                "purchaser_contact": contact,
                "size": size,
                "temperature_class": "hot",
            },
            headers={"X-API-Key": self.creds["merchant_api_key"]},
        )
        assert r.status_code == 201, r.text
        answer: dict[str, Any] = r.json()
        return answer

    def order(self, order_id: str) -> dict[str, Any]:
        r = self.http.get(
            f"{self.up.base_url}/api/v1/orders/{order_id}",
            headers={"X-API-Key": self.creds["merchant_api_key"]},
        )
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer

    # courier at the kiosk screen
    def dropoff(self, kiosk_index: int, ref: str) -> dict[str, Any]:
        r = self.http.post(
            f"{self.up.base_url}/api/v1/kiosk/dropoff",
            json={
                "courier_code": self.creds["courier_code"],
                "pin": self.creds["courier_pin"],
                "order_ref": ref,
            },
            headers={"Authorization": f"Bearer {self.creds['kiosks'][kiosk_index]['token']}"},
        )
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer

    # hands at the locker
    def truth(self, kiosk_index: int) -> dict[str, Any]:
        r = self.http.get(f"{self.up.sim_url(kiosk_index)}/truth")
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer

    def compartment(self, kiosk_index: int, n: int) -> dict[str, Any]:
        r = self.http.get(f"{self.up.sim_url(kiosk_index)}/compartments/{n}")
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer

    def hands(self, kiosk_index: int, action: str, n: int, **body: Any) -> None:
        sim = self.up.sim_url(kiosk_index)
        if action == "open":
            r = self.http.post(f"{sim}/compartments/{n}/door/open", json={})
        elif action == "close":
            r = self.http.post(f"{sim}/compartments/{n}/door/close")
        elif action == "place":
            r = self.http.post(f"{sim}/compartments/{n}/item", json=body)
        elif action == "remove":
            r = self.http.delete(f"{sim}/compartments/{n}/item")
        else:
            raise ValueError(action)
        assert r.status_code == 200, f"{action} {n}: {r.text}"

    def scan(self, kiosk_index: int, text: str) -> None:
        r = self.http.post(f"{self.up.sim_url(kiosk_index)}/scanner/scan", json={"text": text})
        assert r.status_code == 200, r.text

    # operator
    def operator_get(self, path: str) -> Any:
        r = self.http.get(
            f"{self.up.base_url}/api/v1/operator{path}",
            headers={"Authorization": f"Bearer {self.creds['operator_token']}"},
        )
        assert r.status_code == 200, r.text
        return r.json()


TOKEN_IN_URL = re.compile(r"/p/([A-Za-z0-9_-]+)")


def token_of(purchaser_url: str) -> str:
    match = TOKEN_IN_URL.search(purchaser_url)
    assert match, purchaser_url
    return match.group(1)
