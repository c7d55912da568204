"""The import contracts in pyproject.toml hold, and cover what they claim to (ADR 0003)."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import firmware_bridge

ROOT = Path(__file__).resolve().parents[1]
# What the service may import of the bridge: its published MQTT contract.
BRIDGE_CONTRACT = {"firmware_bridge.contract"}


def contracts() -> list[dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found: list[dict[str, Any]] = config["tool"]["importlinter"]["contracts"]
    return found


def test_the_service_is_kept_from_every_bridge_module_but_the_contract() -> None:
    (contract,) = [c for c in contracts() if c["name"].endswith("the bridge's published contract")]
    bridge_modules = {
        f"firmware_bridge.{m.name}" for m in pkgutil.iter_modules(firmware_bridge.__path__)
    }
    # A module added to the bridge is forbidden to the service until someone decides otherwise.
    assert bridge_modules - BRIDGE_CONTRACT <= set(contract["forbidden_modules"])
    assert not BRIDGE_CONTRACT & set(contract["forbidden_modules"])


def test_every_contract_is_kept() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
         "sys.exit(lint_imports_command())"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout
