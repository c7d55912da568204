"""docs/integrating.md works as written: its Python example, then its curl examples (one shell,
in order), run against a real service (`lockerctl serve` in a process of its own, SQLite), with
only the three variables the guide says to set."""

from __future__ import annotations

import ast
import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from locker_service.kiosks import exceptions
from tests.locker_service.served import merchant_service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "integrating.md"
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
RUN_TIMEOUT_S = 120  # each example; a webhook on a busy machine


def examples(language: str) -> list[str]:
    return [code for lang, code in BLOCK.findall(GUIDE.read_text()) if lang == language]


def test_the_guide_has_the_examples_it_promises() -> None:
    assert len(examples("bash")) == 5  # room, create (and again), follow, cancel, keys
    (python,) = examples("python")
    for step in ("/api/v1/webhooks", "/api/v1/orders", "/cancel", "webhook-signature"):
        assert step in python, step


async def test_every_example_of_the_guide_runs_against_a_real_service(tmp_path: Path) -> None:
    service, world = await merchant_service(tmp_path)
    await service.start()
    try:
        reader = {
            **os.environ,
            "LOCKER_URL": service.url,
            "LOCKER_API_KEY": world.merchant_key,
            "LOCKER_SITE": world.site_code,
        }
        # The Python example first: the shell's last example revokes the key both use.
        (python,) = examples("python")
        script = tmp_path / "guide_example.py"
        script.write_text(python)
        run = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(script)],
            env=reader,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )
        assert run.returncode == 0, run.stdout + run.stderr + service.log()
        assert re.fullmatch(r"verified order\.cancelled pos-1002 \S+\n", run.stdout), run.stdout
        shell = await asyncio.to_thread(
            subprocess.run,
            ["bash", "-euo", "pipefail", "-c", "\n".join(examples("bash"))],
            cwd=tmp_path,
            env=reader,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )
        assert shell.returncode == 0, shell.stdout + shell.stderr + service.log()
        codes = re.findall(r"^(\d{3})$", shell.stdout, re.MULTILINE)
        assert codes == ["201", "200"], shell.stdout  # created, then the idempotent retry
        assert "\ncancelled\n" in shell.stdout, shell.stdout
        # The keys: the first listed, then rotated, and the old one revoked with the new one.
        assert re.search(rf"^\d+ {world.merchant_key[:10]} active last used ", shell.stdout, re.M)
        assert shell.stdout.rstrip().endswith("revoked"), shell.stdout

    finally:
        service.kill()


def test_every_notice_kind_the_service_writes_is_explained() -> None:
    """Each kind of notice an order can carry has its row in the guide's table: the exceptions'
    table (ADR 0047) and the notices written outside it (found in the code by their call)."""
    root = GUIDE.parents[1] / "locker_service"
    written = {
        call.args[4].value  # add_notice(session, order_id, actor_type, actor_id, kind, ...)
        for path in root.rglob("*.py")
        for call in ast.walk(ast.parse(path.read_text()))
        if isinstance(call, ast.Call)
        and getattr(call.func, "attr", None) == "add_notice"
        and len(call.args) > 4
        and isinstance(call.args[4], ast.Constant)
    }
    kinds = {t.merchant_event for t in map(exceptions.decide, exceptions.Exceptional)}
    kinds = {k for k in kinds if k is not None} | written
    assert {"collected_before_end", "no_free_compartment"} <= written  # the search finds them
    first_cells = re.findall(r"^\| (`[^|]*)\|", GUIDE.read_text(), re.MULTILINE)
    rows = {kind for cell in first_cells for kind in re.findall(r"`([a-z_]+)`", cell)}
    assert kinds - rows == set()
