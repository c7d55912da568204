"""The bridge's own HTTP server for the offline kiosk screen (see the package's text)."""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from firmware_bridge.contract.codes import normalise_code
from firmware_bridge.offline import Decision, Refused

log = logging.getLogger(__name__)

BODY_MAX = 1024
# How often the server looks whether it is being stopped: a bridge stops within this (the
# standard library's 0.5 s held up every stop by as much).
SHUTDOWN_POLL_S = 0.1
OUTCOMES_KEPT = 50
# The service's HTTP statuses for the same refusals (locker_service/pickup/service.py).
STATUS_OF = {
    "invalid_code": HTTPStatus.FORBIDDEN,
    "kill_switch_engaged": HTTPStatus.FORBIDDEN,
    "code_used": HTTPStatus.CONFLICT,
    "code_expired": HTTPStatus.CONFLICT,
    "opened_since_offline": HTTPStatus.CONFLICT,
    "compartment_fault": HTTPStatus.CONFLICT,
    "locked_out": HTTPStatus.TOO_MANY_REQUESTS,
    "offline_codes_unavailable": HTTPStatus.SERVICE_UNAVAILABLE,
    "offline_clock_unreliable": HTTPStatus.SERVICE_UNAVAILABLE,
}
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/screen.js": ("screen.js", "text/javascript; charset=utf-8"),
    "/screen.css": ("screen.css", "text/css; charset=utf-8"),
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class OfflineDesk(Protocol):
    """What the screen needs of the bridge."""

    offline_listeners: list[Callable[[dict[str, Any]], None]]

    def cut_off(self) -> bool: ...

    def knows_codes(self) -> bool: ...

    def ready_orders(self) -> int: ...

    def pickup_offline(self, *, token: str | None = None, code: str | None = None) -> Decision: ...


class Outcomes:
    """The latest pickup outcomes, numbered, for the screen to follow. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: deque[dict[str, Any]] = deque(maxlen=OUTCOMES_KEPT)
        self._seq = 0

    def add(self, outcome: dict[str, Any]) -> None:
        with self._lock:
            self._seq += 1
            self._kept.append({**outcome, "seq": self._seq})

    @property
    def last(self) -> int:
        with self._lock:
            return self._seq

    def after(self, seq: int) -> list[dict[str, Any]]:
        with self._lock:
            return [o for o in self._kept if o["seq"] > seq]


class ScreenServer:
    def __init__(
        self, desk: OfflineDesk, host: str, port: int, service_url: str | None = None
    ) -> None:
        self.desk = desk
        # Where the screen goes back to once in touch: the service's kiosk screen, and only it.
        self.service_origin = _origin(service_url) if service_url else None
        self.outcomes = Outcomes()
        desk.offline_listeners.append(self.outcomes.add)
        handler = type("Handler", (_Handler,), {"screen": self})
        self._http = ThreadingHTTPServer((host, port), handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_S},
            name="offline-screen",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._http.server_address[1])

    def serves(self, host_header: str | None) -> bool:
        """Only requests addressed to this PC by a loopback name: a page of another site whose
        name was made to resolve here (DNS rebinding) is refused, whatever its origin says."""
        names = {f"127.0.0.1:{self.port}", f"localhost:{self.port}", f"[::1]:{self.port}"}
        bound = str(self._http.server_address[0])
        names.add(f"{bound}:{self.port}")
        return host_header in names

    def start(self) -> None:
        self._thread.start()
        log.info("offline kiosk screen on http://%s:%d/", *self._http.server_address[:2])

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(5.0)

    def state(self) -> dict[str, Any]:
        return {
            "offline": self.desk.cut_off(),
            "codes": self.desk.knows_codes(),
            "ready": self.desk.ready_orders(),
            "outcome": self.outcomes.last,
            "service": self.service_origin,
        }

    def pickup(self, body: Any) -> tuple[HTTPStatus, dict[str, Any]]:
        if not isinstance(body, dict) or not isinstance(body.get("code"), str):
            return HTTPStatus.UNPROCESSABLE_ENTITY, _error("malformed_code", "send {code}")
        code = normalise_code(body["code"])
        if code is None:
            return HTTPStatus.UNPROCESSABLE_ENTITY, _error(
                "malformed_code", "the pickup code has 8 digits"
            )
        if not self.desk.cut_off():
            return HTTPStatus.CONFLICT, _error(
                "service_reachable", "the locker is online: use its usual screen"
            )
        decision = self.desk.pickup_offline(code=code)
        if isinstance(decision, Refused):
            answer = _error(decision.error, decision.message)
            if decision.retry_after_s is not None:
                answer["retry_after_s"] = round(decision.retry_after_s, 1)
            answer["outcome"] = self.outcomes.last
            return STATUS_OF.get(decision.error, HTTPStatus.FORBIDDEN), answer
        return HTTPStatus.ACCEPTED, {
            "compartment": decision.compartment,
            "outcome": self.outcomes.last,
        }


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": code, "message": message}


class _Handler(BaseHTTPRequestHandler):
    screen: ScreenServer
    server_version = "locker-bridge"
    sys_version = ""
    timeout = 10  # seconds a client may take to send its request: a slow one holds no thread

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("screen: " + format, *args)

    def do_GET(self) -> None:
        if not self.screen.serves(self.headers.get("Host")):
            self._json(HTTPStatus.MISDIRECTED_REQUEST, _error("forbidden", "not this screen"))
            return
        url = urlsplit(self.path)
        if url.path in FILES:
            name, kind = FILES[url.path]
            body = files("firmware_bridge.screen").joinpath("static", name).read_bytes()
            self._send(HTTPStatus.OK, body, kind)
        elif url.path == "/state":
            # Read by the service's kiosk page, another origin: it holds no secret.
            self._json(HTTPStatus.OK, self.screen.state(), {"Access-Control-Allow-Origin": "*"})
        elif url.path == "/outcomes":
            after = parse_qs(url.query).get("after", ["0"])[0]
            if not after.isdigit():
                self._json(HTTPStatus.UNPROCESSABLE_ENTITY, _error("bad_request", "after=<n>"))
                return
            self._json(HTTPStatus.OK, {"outcomes": self.screen.outcomes.after(int(after))})
        else:
            self._json(HTTPStatus.NOT_FOUND, _error("not_found", "no such page"))

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/pickup":
            self._json(HTTPStatus.NOT_FOUND, _error("not_found", "no such page"))
            return
        host = self.headers.get("Host")
        if not self.screen.serves(host) or self.headers.get("Origin") != f"http://{host}":
            # Only this screen's own page may type a code here (a browser always says its
            # page's origin when it posts JSON).
            self._json(HTTPStatus.FORBIDDEN, _error("forbidden", "not from this screen"))
            return
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, _error("bad_request", "send JSON"))
            return
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            length = -1
        if not 0 < length <= BODY_MAX:
            self._json(HTTPStatus.BAD_REQUEST, _error("bad_request", "a JSON body of 1 KB at most"))
            return
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            self._json(HTTPStatus.BAD_REQUEST, _error("bad_request", "the body is not JSON"))
            return
        status, answer = self.screen.pickup(body)
        headers = {}
        if "retry_after_s" in answer:
            headers["Retry-After"] = str(max(1, round(answer["retry_after_s"])))
        self._json(status, answer, headers)

    def _json(
        self, status: HTTPStatus, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        self._send(status, json.dumps(body).encode(), "application/json", headers)

    def _send(
        self, status: HTTPStatus, body: bytes, kind: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
