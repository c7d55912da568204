"""The contract package is the one door between service and bridge: the service imports nothing
else of `firmware_bridge`, and the contract imports nothing of either side."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# `lockerctl` is the command line of every process, the bridge's included: it starts the
# bridge, it is not the service.
COMMAND_LINE = ROOT / "locker_service" / "cli.py"


def imported_modules(package: str) -> Iterator[tuple[Path, str]]:
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield path, node.module
                for alias in node.names:  # `from firmware_bridge import mqtt` names a module
                    yield path, f"{node.module}.{alias.name}"


def is_contract(module: str) -> bool:
    return module == "firmware_bridge.contract" or module.startswith("firmware_bridge.contract.")


def test_the_service_imports_only_the_contract_of_the_bridge() -> None:
    crossing = [
        f"{path.relative_to(ROOT)}: {module}"
        for path, module in imported_modules("locker_service")
        if path != COMMAND_LINE
        and module.startswith("firmware_bridge.")
        and not is_contract(module)
    ]
    assert crossing == []


def test_the_contract_imports_nothing_of_either_side() -> None:
    leaks = [
        f"{path.relative_to(ROOT)}: {module}"
        for path, module in imported_modules("firmware_bridge/contract")
        if module.split(".")[0] in {"firmware_bridge", "locker_service", "hardware"}
        and not is_contract(module)
    ]
    assert leaks == []


def test_the_checker_sees_a_crossing() -> None:
    """The two tests above would see an import that crosses (guards against a checker that
    looks at nothing)."""
    found = {module for _, module in imported_modules("locker_service")}
    assert "firmware_bridge.contract" in found
    assert any(
        m.startswith("firmware_bridge.__main__") for _, m in imported_modules("locker_service")
    )
