"""The demo purchaser's inbox of `lockerctl up`: a local webhook that Apprise's `json://` posts to.

Demo orders name `json://127.0.0.1:<port>/` as the purchaser's contact, so the "your food is
ready" message, with its QR code, shows up in the `lockerctl up` output and the QR image is saved
under `<data dir>/inbox/`, without any mail or SMS account. Production sends through real
Apprise channels (email, SMS, WeCom, ...) named per order.

Run on its own: `python -m locker_service.stack.inbox --port 8025 --dir var/inbox`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import itertools
import json
import re
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MAX_BODY_BYTES = 5 * 1024 * 1024  # a message with a QR PNG is a few kB; refuse anything huge
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
KEPT_NAME = re.compile(r"^([0-9]+)-")  # <message number>-<attachment name>


class Inbox:
    """Keeps each message's attachments in `directory` and describes the message in one block."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        # Numbering goes on from the messages kept by an earlier run.
        existing = [int(m[1]) for p in directory.iterdir() if (m := KEPT_NAME.match(p.name))]
        self._numbers = itertools.count(max(existing, default=0) + 1)
        self._lock = threading.Lock()

    def receive(self, payload: dict[str, Any]) -> str:
        with self._lock:
            number = next(self._numbers)
        title = str(payload.get("title") or "").strip()
        message = str(payload.get("message") or "").strip()
        lines = [f"message {number}: {title}" if title else f"message {number}"]
        lines += [f"  {line}" for line in message.splitlines() if line.strip()]
        for i, attachment in enumerate(payload.get("attachments") or [], start=1):
            if not isinstance(attachment, dict):
                continue
            name = SAFE_NAME.sub("_", str(attachment.get("filename") or f"attachment{i}"))
            try:
                data = base64.b64decode(str(attachment.get("base64") or ""), validate=True)
            except (binascii.Error, ValueError):
                lines.append(f"  attachment {name}: not valid base64, not kept")
                continue
            path = self.directory / f"{number}-{name}"
            path.write_bytes(data)
            lines.append(f"  attachment saved: {path}")
        return "\n".join(lines)


def make_handler(inbox: Inbox) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = 0
            if length <= 0 or length > MAX_BODY_BYTES:
                too_large = length > MAX_BODY_BYTES
                self._answer(
                    413 if too_large else 400,
                    {
                        "error": "too_large" if too_large else "no_body",
                        "message": "a JSON body up to 5 MB is expected",
                    },
                )
                return
            try:
                payload = json.loads(self.rfile.read(length))
                if not isinstance(payload, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                self._answer(400, {"error": "bad_json", "message": f"not a JSON object: {exc}"})
                return
            print(inbox.receive(payload), flush=True)
            self._answer(200, {"status": "received"})

        def _answer(self, status: int, content: dict[str, str]) -> None:
            body = json.dumps(content).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # each message is printed once, in full, by do_POST

    return Handler


def serve(host: str, port: int, directory: Path) -> None:
    server = ThreadingHTTPServer((host, port), make_handler(Inbox(directory)))

    def stop(_sig: int, _frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"purchaser inbox on json://{host}:{port}/, attachments kept in {directory}", flush=True)
    server.serve_forever()
    server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Demo purchaser inbox (Apprise json:// target)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--dir", type=Path, default=Path("var/inbox"))
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.dir)
    sys.exit(0)


if __name__ == "__main__":
    main()
