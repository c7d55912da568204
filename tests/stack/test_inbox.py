"""The demo purchaser's inbox of `lockerctl up`: what Apprise's json:// delivers is printed and its
QR image kept; anything else gets a clear 4xx and changes nothing."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import apprise
import httpx
import pytest

from tests.support.mosquitto import free_port, wait_for_port

pytestmark = pytest.mark.slow  # inbox processes

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture
def inbox(tmp_path: Path) -> Iterator[tuple[int, Path, subprocess.Popen[str]]]:
    port = free_port()
    directory = tmp_path / "inbox"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "locker_service.stack.inbox",
            "--port",
            str(port),
            "--dir",
            str(directory),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout_s=30)
        yield port, directory, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_apprise_message_is_printed_and_its_image_kept(
    inbox: tuple[int, Path, subprocess.Popen[str]], tmp_path: Path
) -> None:
    port, directory, proc = inbox
    image = tmp_path / "pickup-code.png"
    image.write_bytes(PNG)
    notifier = apprise.Apprise()
    assert notifier.add(f"json://127.0.0.1:{port}/")
    attachment = apprise.AppriseAttachment()
    attachment.add(str(image))
    assert notifier.notify(
        title="Your order A-1 is ready",
        body="Locker: compartment 4\nPickup code: 1234 5678",
        attach=attachment,
    )
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    assert "message 1: Your order A-1 is ready" in out
    assert "  Pickup code: 1234 5678" in out
    saved = directory / "1-pickup-code.png"
    assert f"attachment saved: {saved}" in out
    assert saved.read_bytes() == PNG


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"", 400), (b"not json", 400), (b"[1, 2]", 400), (b'{"title": "x"' + b" " * 10, 400)],
)
def test_bad_posts_get_a_clear_error(
    inbox: tuple[int, Path, subprocess.Popen[str]], body: bytes, status: int
) -> None:
    port, directory, _proc = inbox
    r = httpx.post(f"http://127.0.0.1:{port}/", content=body, timeout=10)
    assert r.status_code == status
    assert r.json()["error"] and r.json()["message"]
    assert list(directory.iterdir()) == []


def test_a_content_length_that_is_no_number_gets_a_clear_error(
    inbox: tuple[int, Path, subprocess.Popen[str]],
) -> None:
    port, directory, _proc = inbox
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n{}")
        answer = b""
        while chunk := conn.recv(4096):  # HTTP/1.0: the server closes after its answer
            answer += chunk
    answer_text = answer.decode()
    assert answer_text.startswith("HTTP/1.0 400") and '"error": "no_body"' in answer_text
    assert list(directory.iterdir()) == []


def test_bad_attachment_is_reported_not_kept(
    inbox: tuple[int, Path, subprocess.Popen[str]],
) -> None:
    port, directory, proc = inbox
    r = httpx.post(
        f"http://127.0.0.1:{port}/",
        json={
            "title": "t",
            "message": "m",
            "attachments": [{"filename": "../x.png", "base64": "@@"}],
        },
        timeout=10,
    )
    assert r.status_code == 200
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    assert "attachment .._x.png: not valid base64, not kept" in out
    assert list(directory.iterdir()) == []
