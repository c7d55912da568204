"""docker-compose.yml is valid for Debian's docker-compose, refuses to run without its secrets, and
says what the code understands: every LOCKER_/BRIDGE_ variable is a real setting, every command
line parses with `lockerctl`, start order waits on healthchecks, the ACL files are the tested ones.
Its profile "emqx": test_compose_emqx.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from firmware_bridge.config import BridgeSettings
from locker_service.cli import app
from locker_service.config import Settings
from tests.conftest import unavailable

pytestmark = pytest.mark.slow  # docker-compose runs per test

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "POSTGRES_PASSWORD": "pg-test-password",
    "LOCKER_SECRET_KEY": "k" * 40,
    "LOCKER_MQTT_PASSWORD": "mqtt-service-password",
    "KIOSK_MQTT_PASSWORD": "mqtt-kiosk-password",
}
# Read by the compose file only when .env sets them (the EMQX lines of env.example): a
# developer's own environment must not set them for these tests either.
OPTIONAL = ("COMPOSE_PROFILES", "EMQX_NODE_COOKIE", "LOCKER_MQTT_URL", "BRIDGE_BROKER_URL")


def compose(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        unavailable("docker-compose is needed (apt-get install -y docker-compose)")
        raise AssertionError("unreachable")
    # An empty env file: a developer's own .env must not decide the outcome.
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS and k not in OPTIONAL}
    return subprocess.run(
        [binary, "--env-file", str(env_file), "-f", str(ROOT / "docker-compose.yml"), *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    result = compose(tmp_path_factory.mktemp("compose"), "config", env=SECRETS)
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = yaml.safe_load(result.stdout)
    return loaded


def test_config_is_valid(tmp_path: Path) -> None:
    result = compose(tmp_path, "config", "-q", env=SECRETS)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_refuses_to_start_without_each_secret(tmp_path: Path, missing: str) -> None:
    env = {k: v for k, v in SECRETS.items() if k != missing}
    result = compose(tmp_path, "config", "-q", env=env)
    assert result.returncode != 0
    assert f"set {missing} in .env" in result.stderr


def test_long_running_containers_have_healthchecks_or_are_leaves(config: dict[str, Any]) -> None:
    services = config["services"]
    depended_on = {dep for s in services.values() for dep in s.get("depends_on", {})}
    for name, service in services.items():
        if service.get("restart") == "no":
            continue  # one-shot jobs
        if name in depended_on:
            assert "healthcheck" in service, f"{name} is waited for but has no healthcheck"


def test_start_order(config: dict[str, Any]) -> None:
    s = config["services"]

    def waits(name: str) -> dict[str, str]:
        return {dep: v["condition"] for dep, v in s[name]["depends_on"].items()}

    assert waits("mosquitto") == {"mosquitto-passwords": "service_completed_successfully"}
    assert waits("migrate") == {"postgres": "service_healthy"}
    assert waits("service") == {
        "migrate": "service_completed_successfully",
        "mosquitto": "service_healthy",
    }
    assert waits("bridge") == {"mosquitto": "service_healthy", "simulator": "service_healthy"}


def test_every_locker_and_bridge_variable_is_a_real_setting(config: dict[str, Any]) -> None:
    locker_fields = {f.upper() for f in Settings.model_fields}
    bridge_fields = {f.upper() for f in BridgeSettings.model_fields}
    seen = 0
    for name, service in config["services"].items():
        for var in service.get("environment", {}):
            if var.startswith("LOCKER_"):
                assert var.removeprefix("LOCKER_") in locker_fields, f"{name}: {var}"
                seen += 1
            elif var.startswith("BRIDGE_"):
                assert var.removeprefix("BRIDGE_") in bridge_fields, f"{name}: {var}"
                seen += 1
    assert seen > 10


def test_service_runs_in_production_mode_with_postgres_and_the_service_account(
    config: dict[str, Any],
) -> None:
    env = config["services"]["service"]["environment"]
    assert env["LOCKER_ENVIRONMENT"] == "production"
    assert env["LOCKER_DATABASE_URL"].startswith("postgresql+asyncpg://locker:pg-test-password@")
    assert env["LOCKER_MQTT_USERNAME"] == "locker-service"
    assert env["LOCKER_MQTT_PASSWORD"] == SECRETS["LOCKER_MQTT_PASSWORD"]
    # The production settings accept what compose hands them.
    Settings(
        environment="production",
        secret_key=env["LOCKER_SECRET_KEY"],
        database_url=env["LOCKER_DATABASE_URL"],
    )


def test_contact_urls_are_off_and_no_proxy_is_trusted_by_default(config: dict[str, Any]) -> None:
    env = config["services"]["service"]["environment"]
    settings = Settings(
        environment="production",
        secret_key=env["LOCKER_SECRET_KEY"],
        notify_contact_urls=env["LOCKER_NOTIFY_CONTACT_URLS"],
        trusted_proxies=env["LOCKER_TRUSTED_PROXIES"] or "",
    )
    assert settings.notify_contact_urls is False
    assert settings.trusted_proxies == ""


def test_bridge_logs_in_as_its_kiosk_and_reaches_the_simulator_over_socket(
    config: dict[str, Any],
) -> None:
    env = config["services"]["bridge"]["environment"]
    assert env["BRIDGE_USERNAME"] == env["BRIDGE_KIOSK_ID"] == "kiosk-1"
    assert env["BRIDGE_PASSWORD"] == SECRETS["KIOSK_MQTT_PASSWORD"]
    sim_cmd = config["services"]["simulator"]["command"]
    board_port = sim_cmd[sim_cmd.index("--board-port") + 1]
    scanner_port = sim_cmd[sim_cmd.index("--scanner-port") + 1]
    assert env["BRIDGE_BOARD_URL"] == f"socket://simulator:{board_port}"
    assert env["BRIDGE_SCANNER_URL"] == f"socket://simulator:{scanner_port}"
    passwords = config["services"]["mosquitto-passwords"]["environment"]["KIOSK_CREDENTIALS"]
    assert passwords.split()[0] == f"kiosk-1:{SECRETS['KIOSK_MQTT_PASSWORD']}"


def test_mosquitto_uses_the_acl_and_config_tested_natively(config: dict[str, Any]) -> None:
    volumes = config["services"]["mosquitto"]["volumes"]
    # docker-compose 1.29 prints short syntax, "source:target[:mode]".
    mounts = {
        (Path(v.split(":")[0]).resolve(), v.split(":")[1]) for v in volumes if v.startswith("/")
    }
    deploy = ROOT / "docs" / "deploy" / "mosquitto"
    assert (deploy / "mosquitto.conf", "/mosquitto/config/mosquitto.conf") in mounts
    assert (deploy / "acl", "/mosquitto/config/acl") in mounts
    conf = (deploy / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf and "acl_file /mosquitto/config/acl" in conf


def test_service_and_bridges_use_their_own_listeners(config: dict[str, Any]) -> None:
    """Kiosks on 1883, where their client id is their user name; the service on 1884, which
    only the compose network reaches (mosquitto.conf, ADR 0063)."""
    services = config["services"]
    assert services["service"]["environment"]["LOCKER_MQTT_URL"] == "mqtt://mosquitto:1884"
    assert services["bridge"]["environment"]["BRIDGE_BROKER_URL"] == "mqtt://mosquitto:1883"
    ports = [str(port) for port in services["mosquitto"]["ports"]]
    assert any("1883" in port for port in ports) and not any("1884" in port for port in ports)
    assert "-p 1884 -u locker-service" in str(services["mosquitto"]["healthcheck"]["test"])
    assert services["mosquitto-passwords"]["entrypoint"][-1] == "/mosquitto/auth"
    conf = (ROOT / "docs" / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    for name in ("passwd-kiosks", "passwd-service"):
        assert f"password_file /mosquitto/auth/{name}" in conf


@pytest.mark.parametrize("name", ["migrate", "service", "simulator", "bridge"])
def test_container_commands_parse_with_lockerctl(config: dict[str, Any], name: str) -> None:
    """The image's entrypoint is `lockerctl`: each command line must be one it accepts."""
    command = config["services"][name]["command"]
    group = typer.main.get_group(app)
    ctx = group.make_context("lockerctl", list(command))
    sub_name, sub, rest = group.resolve_command(ctx, list(command))
    assert sub is not None and sub_name == command[0]
    sub.make_context(sub_name, rest, parent=ctx)  # raises on an unknown option or bad value


def test_dockerfile_builds_the_package_and_runs_unprivileged() -> None:
    text = (ROOT / "docs" / "deploy" / "Dockerfile").read_text()
    for package in ("locker_service", "firmware_bridge", "hardware", "migrations"):
        assert f"COPY {package} {package}" in text
    assert "USER locker" in text and 'ENTRYPOINT ["lockerctl"]' in text


def test_named_volumes_of_the_locker_image_are_writable_by_its_user(
    config: dict[str, Any],
) -> None:
    """A new named volume takes the owner of its mount point in the image; the image runs as
    `locker`, so each such mount point must be made in the image and owned by that user."""
    text = (ROOT / "docs" / "deploy" / "Dockerfile").read_text()
    home = "/var/lib/locker"
    for name, service in config["services"].items():
        if service.get("image") != "smart-food-locker:latest":
            continue
        for volume in service.get("volumes", []):
            if isinstance(volume, str):  # docker-compose 1.x prints "source:target[:mode]"
                source, target = volume.split(":")[:2]
                if source.startswith(("/", ".")):
                    continue  # a bind mount keeps the host's owner
            elif volume.get("type") == "volume":
                target = volume["target"]
            else:
                continue
            made = any(
                line.startswith("RUN install -d -o locker -g locker") and line.endswith(target)
                for line in text.splitlines()
            )
            assert target == home or made, f"{name}: {target} would be root's"
