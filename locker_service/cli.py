"""`lockerctl`: run any part of the locker system and administer the service.

Each command imports what it runs only when it is called, so a kiosk PC running only
`lockerctl bridge` never loads the service's web stack.
"""

from __future__ import annotations

import typer

# Help text shown as written: "[env X]" would be taken for rich markup and vanish.
app = typer.Typer(
    help="Contactless smart food locker controller.", no_args_is_help=True, rich_markup_mode=None
)

# `up` and `demo-order` live in locker_service/stack/commands.py, which imports only typer until
# a command runs.
from locker_service.stack import commands as _stack_commands  # noqa: E402

app.command("up")(_stack_commands.up)
app.command("demo-order")(_stack_commands.demo_order)

# Service commands (serve, migrate, create-*) live in locker_service/admin.py.
from locker_service import admin as _admin  # noqa: E402

for _name, _command in _admin.COMMANDS.items():
    app.command(_name)(_command)
app.add_typer(_admin.HACCP, name="haccp")
app.add_typer(_admin.KEYS, name="keys")


@app.command()
def bridge(
    kiosk_id: str | None = typer.Option(None, help="Kiosk id (env BRIDGE_KIOSK_ID)"),
    broker_url: str | None = typer.Option(
        None, help="mqtt://host:port or mqtts://host:port (env BRIDGE_BROKER_URL)"
    ),
    username: str | None = typer.Option(None, help="MQTT user (env BRIDGE_USERNAME)"),
    password: str | None = typer.Option(None, help="MQTT password (env BRIDGE_PASSWORD)"),
    tls_ca: str | None = typer.Option(None, help="CA file, with mqtts:// only (env BRIDGE_TLS_CA)"),
    mqtt_version: str | None = typer.Option(
        None, help="auto, 5 or 3.1.1 (env BRIDGE_MQTT_VERSION)"
    ),
    board_url: str | None = typer.Option(
        None, help="Board port: path, socket://, ... (env BRIDGE_BOARD_URL)"
    ),
    scanner_url: str | None = typer.Option(None, help="Scanner port (env BRIDGE_SCANNER_URL)"),
    baud: int | None = typer.Option(None, help="Board baud rate (env BRIDGE_BAUD)"),
    node_address: int | None = typer.Option(
        None, help="Board node address (env BRIDGE_NODE_ADDRESS)"
    ),
    poll_period_s: float | None = typer.Option(
        None, help="STATUS poll period (env BRIDGE_POLL_PERIOD_S)"
    ),
    telemetry_period_s: float | None = typer.Option(
        None, help="Telemetry period, nominal (env BRIDGE_TELEMETRY_PERIOD_S)"
    ),
    data_dir: str | None = typer.Option(
        None, help="Event queue and request cache (env BRIDGE_DATA_DIR)"
    ),
    time_scale: float | None = typer.Option(
        None, help="Run N times faster (env BRIDGE_TIME_SCALE or LOCKER_TIME_SCALE)"
    ),
    screen_port: int | None = typer.Option(
        None, help="Serve the offline kiosk screen on this port (env BRIDGE_SCREEN_PORT)"
    ),
    log_level: str = typer.Option("INFO", help="Logging level"),
) -> None:
    """Run the kiosk bridge: the board and scanner on serial ports, the service over MQTT."""
    from pydantic import ValidationError

    from firmware_bridge.__main__ import run, settings_from

    try:
        settings = settings_from(
            {
                "kiosk_id": kiosk_id,
                "broker_url": broker_url,
                "username": username,
                "password": password,
                "tls_ca": tls_ca,
                "mqtt_version": mqtt_version,
                "board_url": board_url,
                "scanner_url": scanner_url,
                "baud": baud,
                "node_address": node_address,
                "poll_period_s": poll_period_s,
                "telemetry_period_s": telemetry_period_s,
                "data_dir": data_dir,
                "time_scale": time_scale,
                "screen_port": screen_port,
            }
        )
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    run(settings, log_level)


@app.command()
def sim(
    compartments: int | None = typer.Option(None, help="Compartments, 1-48 [env SIM_COMPARTMENTS]"),
    seed: int | None = typer.Option(None, help="Seed of the physics [env SIM_SEED]"),
    time_scale: float | None = typer.Option(
        None, help="Run N times faster [env SIM_TIME_SCALE or LOCKER_TIME_SCALE]"
    ),
    node_address: int | None = typer.Option(None, help="Board node address [env SIM_NODE_ADDRESS]"),
    baud: int | None = typer.Option(None, help="Baud rate of the ptys [env SIM_BAUD]"),
    name: str | None = typer.Option(None, help="Simulator name, for sim:// URLs [env SIM_NAME]"),
    pty: bool | None = typer.Option(None, "--pty/--no-pty", help="Create ptys [env SIM_PTY]"),
    pty_dir: str | None = typer.Option(None, help="Directory of the pty links [env SIM_PTY_DIR]"),
    board_port: int | None = typer.Option(
        None, help="Serve the board on socket://host:PORT [env SIM_BOARD_PORT]"
    ),
    scanner_port: int | None = typer.Option(
        None, help="Serve the scanner on socket://host:PORT [env SIM_SCANNER_PORT]"
    ),
    socket_host: str | None = typer.Option(
        None, help="Address of the sockets, default the HTTP host [env SIM_SOCKET_HOST]"
    ),
    http_host: str | None = typer.Option(None, help="Control API address [env SIM_HTTP_HOST]"),
    http_port: int | None = typer.Option(None, help="Control API port [env SIM_HTTP_PORT]"),
    thermostat: str | None = typer.Option(None, help="pid or hysteresis [env SIM_THERMOSTAT]"),
    state_file: str | None = typer.Option(
        None, help="Keep the bank's food, doors and heat here across restarts [env SIM_STATE_FILE]"
    ),
) -> None:
    """Run the locker bank simulator: board and scanner ports, and its control API."""
    from pydantic import ValidationError

    from hardware.config import SimSettings
    from hardware.server import run

    given = {
        "compartments": compartments,
        "seed": seed,
        "time_scale": time_scale,
        "node_address": node_address,
        "baud": baud,
        "name": name,
        "pty": pty,
        "pty_dir": pty_dir,
        "board_port": board_port,
        "scanner_port": scanner_port,
        "socket_host": socket_host,
        "http_host": http_host,
        "http_port": http_port,
        "thermostat": thermostat,
        "state_file": state_file,
    }
    try:
        settings = SimSettings.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    run(settings)
