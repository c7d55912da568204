"""`lockerctl up` as a newcomer runs it: everything starts, the banner tells the truth, a demo
order goes in, a process that dies comes back, Ctrl-C stops all of it, and the next run finds the
same credentials and the same orders."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from locker_service.stack.demo import DemoDataError
from locker_service.stack.up import UpOptions, plan
from tests.journey.system import Up, wait_until


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().split()[2]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def demo_order(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "locker_service",
            "demo-order",
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
def test_up_runs_the_demo_restarts_a_dead_process_and_keeps_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    up = Up(data_dir, time_scale=60)
    try:
        up.wait_ready()
        creds = up.credentials()
        out = up.output
        assert "demo data created" in out
        for shown in (
            f"{up.base_url}/dashboard",
            f"{up.base_url}/kiosk?offline_screen=http://127.0.0.1:",
            f"#token={creds['kiosks'][0]['token']}",
            f"{up.base_url}/demo?sim={up.sim_url(0)}",
            creds["operator_token"],
            creds["merchant_api_key"],
            f"site code          {creds['site_code']}",  # what an order names
            f"kiosk token        {creds['kiosks'][0]['token']}",
            f"PIN {creds['courier_pin']}",
        ):
            assert shown in out, shown
        http = httpx.Client(timeout=20)
        for page in ("/dashboard", "/kiosk", f"/demo?sim={up.sim_url(0)}", "/readyz"):
            assert http.get(up.base_url + page).status_code == 200, page
        assert http.get(f"{up.sim_url(0)}/truth").json()["compartments"][11]["number"] == 12

        # The kiosk's bridge reports in: the operator sees demo-1 online with 12 compartments.
        def kiosk_online() -> bool:
            sites = http.get(
                f"{up.base_url}/api/v1/operator/sites",
                headers={"Authorization": f"Bearer {creds['operator_token']}"},
            ).json()
            kiosk = sites[0]["kiosks"][0]
            return bool(kiosk["online"]) and kiosk["compartments_total"] == 12

        wait_until(kiosk_online, 60, "demo-1 online")
        assert "no anonymous access" in out
        mqtt_accounts = json.loads((data_dir / "mqtt-accounts.json").read_text())
        for secret in (
            mqtt_accounts["service_password"],
            *mqtt_accounts["kiosk_passwords"].values(),
        ):
            assert processes_mentioning(secret) == []  # handed over in the environment only

        placed = demo_order(data_dir)
        assert placed.returncode == 0, placed.stderr
        assert f"{up.base_url}/p/" in placed.stdout
        order_id = placed.stdout.split()[1]
        order = http.get(
            f"{up.base_url}/api/v1/orders/{order_id}",
            headers={"X-API-Key": creds["merchant_api_key"]},
        ).json()
        assert order["state"] == "created"

        # A process that dies is restarted, and says so.
        bridge_data = str(data_dir.resolve() / "bridge-demo-1")
        [bridge_pid] = processes_mentioning(bridge_data)
        mark = len(up.lines)
        subprocess.run(["kill", "-KILL", str(bridge_pid)], check=True)
        died = up.lines[up.wait_for_line("bridge was killed by SIGKILL", 30, mark)]
        assert "restarting it in" in died
        up.wait_for_line("bridge is running again", 60, mark)
        new_pids = wait_until(lambda: processes_mentioning(bridge_data), 30, "a new bridge")
        assert new_pids != [bridge_pid]

        # Ctrl-C stops everything, cleanly.
        assert up.interrupt() == 0, up.output[-3000:]
        assert "all stopped" in up.output
        assert processes_mentioning(str(data_dir.resolve())) == []
    finally:
        up.kill()

    again = Up(data_dir, time_scale=60)
    try:
        again.wait_ready()
        assert "demo data found from an earlier run" in again.output
        assert again.credentials() == creds
        http = httpx.Client(timeout=20)
        answer = http.get(
            f"{again.base_url}/api/v1/orders/{order_id}",
            headers={"X-API-Key": creds["merchant_api_key"]},
        )
        assert answer.status_code == 200, (answer.status_code, answer.text, again.output[-3000:])
        assert answer.json()["external_ref"] in placed.stdout
        again.proc.send_signal(signal.SIGTERM)  # as a service manager stops it
        assert again.proc.wait(timeout=40) == 0
    finally:
        again.kill()


def test_demo_order_without_a_running_system_says_what_to_do(tmp_path: Path) -> None:
    result = demo_order(tmp_path)
    assert result.returncode == 2
    assert "start `lockerctl up` first" in result.stderr


def test_plan_embedded_broker_speaks_mqtt_311_without_shared_subscriptions(
    tmp_path: Path,
) -> None:
    p = plan(UpOptions(data_dir=tmp_path, kiosks=2, time_scale=30))
    names = [c.name for c in p.children]
    assert names == [
        "broker",
        "inbox",
        "sim-demo-1",
        "sim-demo-2",
        "service",
        "bridge-demo-1",
        "bridge-demo-2",
    ]
    assert p.service_env["LOCKER_MQTT_PROTOCOL"] == "3.1.1"
    assert p.database_url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'locker.db'}"
    for child in p.children:
        if child.name.startswith(("sim", "bridge", "service")):
            assert child.env["LOCKER_TIME_SCALE"] == "30"
        if child.name.startswith("bridge"):
            assert child.argv[child.argv.index("--mqtt-version") + 1] == "3.1.1"
            assert child.argv[child.argv.index("--time-scale") + 1] == "30"
    # The secret key is made once per data directory and kept.
    again = plan(UpOptions(data_dir=tmp_path))
    assert again.service_env["LOCKER_SECRET_KEY"] == p.service_env["LOCKER_SECRET_KEY"]
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_plan_gives_each_process_its_own_mqtt_account_in_its_environment_only(
    tmp_path: Path,
) -> None:
    p = plan(UpOptions(data_dir=tmp_path, kiosks=2))
    accounts = json.loads((tmp_path / "mqtt-accounts.json").read_text())
    service_password = accounts["service_password"]
    assert p.service_env["LOCKER_MQTT_USERNAME"] == "locker-service"
    assert p.service_env["LOCKER_MQTT_PASSWORD"] == service_password
    passwords = {service_password}
    for code in ("demo-1", "demo-2"):
        bridge = next(c for c in p.children if c.name == f"bridge-{code}")
        assert bridge.env["BRIDGE_USERNAME"] == code
        assert bridge.env["BRIDGE_PASSWORD"] == accounts["kiosk_passwords"][code]
        passwords.add(bridge.env["BRIDGE_PASSWORD"])
    assert len(passwords) == 3  # nobody shares one
    for child in p.children:
        # A command line is visible to every local user (ps); the environment is not.
        assert not passwords & set(child.argv), child.name
        if child.name.startswith("bridge"):
            assert (
                child.env["BRIDGE_PASSWORD"]
                == accounts["kiosk_passwords"][child.env["BRIDGE_USERNAME"]]
            )
        elif child.name != "service":
            assert "LOCKER_MQTT_PASSWORD" not in child.env and "BRIDGE_PASSWORD" not in child.env
    for name in ("mqtt-accounts.json", "broker.passwd"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
    passwd = (tmp_path / "broker.passwd").read_text()

    # A later run keeps every password and the hashes; a kiosk more gets an account of its own.
    again = plan(UpOptions(data_dir=tmp_path, kiosks=2))
    assert again.service_env["LOCKER_MQTT_PASSWORD"] == service_password
    assert (tmp_path / "broker.passwd").read_text() == passwd
    more = plan(UpOptions(data_dir=tmp_path, kiosks=3))
    third = next(c for c in more.children if c.name == "bridge-demo-3")
    assert third.env["BRIDGE_PASSWORD"] not in passwords
    assert (tmp_path / "broker.passwd").read_text().startswith(passwd)
    assert "demo-3:$7$" in (tmp_path / "broker.passwd").read_text()


def test_plan_refuses_a_damaged_accounts_file(tmp_path: Path) -> None:
    (tmp_path / "mqtt-accounts.json").write_text("{}")
    with pytest.raises(DemoDataError, match="not an MQTT accounts file"):
        plan(UpOptions(data_dir=tmp_path))


def test_plan_gives_every_picked_port_to_one_child_only(tmp_path: Path) -> None:
    p = plan(UpOptions(data_dir=tmp_path, kiosks=9, inbox_port=0))
    picked = [int(p.broker_url.rsplit(":", 1)[1]), int(p.inbox_url.strip("/").rsplit(":", 1)[1])]
    for child in p.children:
        if child.name.startswith("sim"):
            picked += [
                int(child.argv[child.argv.index(option) + 1])
                for option in ("--board-port", "--scanner-port")
            ]
    assert len(picked) == 2 + 2 * 9
    assert len(set(picked)) == len(picked), picked


def test_plan_with_external_broker_and_database_starts_no_broker(tmp_path: Path) -> None:
    p = plan(
        UpOptions(
            data_dir=tmp_path,
            broker_url="mqtt://127.0.0.1:1883",
            database_url="postgresql+asyncpg://locker@db/locker",
        )
    )
    assert "broker" not in [c.name for c in p.children]
    assert p.service_env["LOCKER_DATABASE_URL"] == "postgresql+asyncpg://locker@db/locker"
    bridge = next(c for c in p.children if c.name == "bridge")
    assert "--mqtt-version" not in bridge.argv
    # That broker's accounts are its own business: none are made or handed out here.
    assert "BRIDGE_PASSWORD" not in bridge.env and "LOCKER_MQTT_PASSWORD" not in p.service_env
    assert not (tmp_path / "mqtt-accounts.json").exists()
    assert bridge.argv[bridge.argv.index("--broker-url") + 1] == "mqtt://127.0.0.1:1883"


@pytest.mark.slow
def test_up_refuses_to_start_when_its_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "locker_service",
                "up",
                "--data-dir",
                str(tmp_path),
                "--port",
                str(port),
                "--inbox-port",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert f"port {port} is not free for --port (the service)" in result.stdout
    assert "nothing was started" in result.stdout
    assert not (tmp_path / "locker.db").exists()
