"""`lockerctl` run in the test's process on a database of its own, as an administrator types it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from locker_service.cli import app


def lockerctl_on(tmp_path: Path) -> tuple[str, Callable[..., str]]:
    """(database URL, run): `run(*args, code=0)` runs `lockerctl args --database-url URL`,
    checks its exit code and returns what it printed."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'locker.db'}"
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, [*args, "--database-url", url])
        assert result.exit_code == code, result.output
        return result.output

    return url, run
