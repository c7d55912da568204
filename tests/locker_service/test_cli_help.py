"""`lockerctl <command> --help` says, for each option, which environment variable sets it and
its default (the "[env ...]" notes were taken for rich markup and vanished)."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from locker_service.cli import app


def _help(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return re.sub(r"\s+", " ", result.output)


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (
            "serve",
            [
                "[env LOCKER_HOST; default 127.0.0.1]",
                "[env LOCKER_PORT; default 8000]",
                "[env LOCKER_DATABASE_URL; default sqlite+aiosqlite:///./var/locker.db]",
                "[env LOCKER_MQTT_URL; default mqtt://127.0.0.1:1883]",
                "[env LOCKER_TIME_SCALE; default 1]",
                "--no-access-log",
                "LOCKER_ACCESS_LOG",
            ],
        ),
        ("migrate", ["[env LOCKER_DATABASE_URL"]),
        ("sim", ["[env SIM_COMPARTMENTS]", "[env SIM_STATE_FILE]", "[env SIM_HTTP_PORT]"]),
        ("up", ["--broker-port", "--inbox-port", "--host", "LOCKER_TIME_SCALE"]),
    ],
)
def test_every_option_names_its_variable(command: str, shown: list[str]) -> None:
    text = _help(command)
    for part in shown:
        assert part in text, (command, part)
