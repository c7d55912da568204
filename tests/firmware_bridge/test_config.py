"""Bridge settings: BRIDGE_ environment, broker settings, the shared LOCKER_TIME_SCALE.

The broker URL rules themselves are the contract's (tests/firmware_bridge/contract/test_client.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from firmware_bridge.config import BridgeSettings


@pytest.mark.parametrize("url", ["http://x", "mqtt://", "mqtt://host:notaport", "broker:1883"])
def test_bad_broker_urls_are_refused_with_a_reason(url: str) -> None:
    with pytest.raises(ValidationError, match="broker URL"):
        BridgeSettings(broker_url=url)


def test_environment_with_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BRIDGE_KIOSK_ID", "lobby-2")
    monkeypatch.setenv("BRIDGE_BROKER_URL", "mqtts://u:p@broker:8884")
    monkeypatch.setenv("BRIDGE_PASSWORD", "override")
    monkeypatch.setenv("BRIDGE_TLS_CA", str(tmp_path / "ca.pem"))
    monkeypatch.setenv("BRIDGE_BAUD", "9600")
    monkeypatch.setenv("LOCKER_TIME_SCALE", "60")
    s = BridgeSettings()
    broker = s.broker()
    assert s.kiosk_id == "lobby-2" and s.baud == 9600
    assert (broker.port, broker.tls, broker.username, broker.password) == (
        8884,
        True,
        "u",
        "override",
    )
    assert s.time_scale == 60
    assert s.scaled(1800) == 30


def test_bridge_time_scale_wins_over_the_shared_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKER_TIME_SCALE", "60")
    monkeypatch.setenv("BRIDGE_TIME_SCALE", "10")
    assert BridgeSettings().time_scale == 10


def test_a_ca_file_with_a_plain_url_is_refused_not_guessed() -> None:
    with pytest.raises(ValidationError, match="use mqtts://"):
        BridgeSettings(broker_url="mqtt://b:8883", tls_ca=Path("/ca.pem"))
    with pytest.raises(ValidationError, match="use mqtts://"):
        BridgeSettings(broker_url="tcp://b", tls_insecure=True)
    secure = BridgeSettings(broker_url="ssl://b", tls_ca=Path("/ca.pem")).broker()
    assert (secure.tls, secure.port, secure.ca_file) == (True, 8883, "/ca.pem")


@pytest.mark.parametrize(
    "field, value",
    [("kiosk_id", "no spaces"), ("node_address", 0), ("poll_period_s", 5), ("mqtt_version", "4")],
)
def test_out_of_range_settings_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        BridgeSettings(**{field: value})


def test_lockerctl_bridge_refuses_bad_settings_with_a_message() -> None:
    from typer.testing import CliRunner

    from locker_service.cli import app

    result = CliRunner().invoke(app, ["bridge", "--broker-url", "http://broker"])
    assert result.exit_code == 2
    flat = " ".join(result.output.replace("│", " ").split())  # rich wraps the message in a box
    assert "must start with mqtt:// or mqtts://" in flat
