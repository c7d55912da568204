"""`lockerctl`: run any part of the locker system and administer the service.

Each command imports what it runs only when it is called, so a kiosk PC running only
`lockerctl bridge` never loads the service's web stack.
"""

from __future__ import annotations

import typer

app = typer.Typer(help="Contactless smart food locker controller.", no_args_is_help=True)


@app.command()
def bridge(
    kiosk_id: str | None = typer.Option(None, help="Kiosk id [env BRIDGE_KIOSK_ID]"),
    broker_url: str | None = typer.Option(
        None, help="mqtt://host:port or mqtts://host:port [env BRIDGE_BROKER_URL]"
    ),
    username: str | None = typer.Option(None, help="MQTT user [env BRIDGE_USERNAME]"),
    password: str | None = typer.Option(None, help="MQTT password [env BRIDGE_PASSWORD]"),
    tls_ca: str | None = typer.Option(None, help="CA file for mqtts:// [env BRIDGE_TLS_CA]"),
    mqtt_version: str | None = typer.Option(None, help="5 or 3.1.1 [env BRIDGE_MQTT_VERSION]"),
    board_url: str | None = typer.Option(
        None, help="Board port: path, socket://, ... [env BRIDGE_BOARD_URL]"
    ),
    scanner_url: str | None = typer.Option(None, help="Scanner port [env BRIDGE_SCANNER_URL]"),
    baud: int | None = typer.Option(None, help="Board baud rate [env BRIDGE_BAUD]"),
    node_address: int | None = typer.Option(
        None, help="Board node address [env BRIDGE_NODE_ADDRESS]"
    ),
    poll_period_s: float | None = typer.Option(
        None, help="STATUS poll period [env BRIDGE_POLL_PERIOD_S]"
    ),
    telemetry_period_s: float | None = typer.Option(
        None, help="Telemetry period, nominal [env BRIDGE_TELEMETRY_PERIOD_S]"
    ),
    data_dir: str | None = typer.Option(
        None, help="Event queue and request cache [env BRIDGE_DATA_DIR]"
    ),
    time_scale: float | None = typer.Option(
        None, help="Run N times faster [env BRIDGE_TIME_SCALE or LOCKER_TIME_SCALE]"
    ),
    log_level: str = typer.Option("INFO", help="Logging level"),
) -> None:
    """Run the kiosk bridge: the board and scanner on serial ports, the service over MQTT."""
    from firmware_bridge.__main__ import run

    run(
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
        },
        log_level,
    )
