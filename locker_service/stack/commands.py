"""The `lockerctl up` and `lockerctl demo-order` commands.

Registered on the `lockerctl` app by locker_service/cli.py. This module imports only typer and
the standard library at import time; what a command runs is imported when it is called.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer

DEFAULT_DATA_DIR = Path("var")  # README.md: SQLite at ./var/locker.db by default
DATA_DIR_HELP = "Where the SQLite database, demo credentials and bridge queues live"


def up(
    data_dir: Annotated[Path, typer.Option(help=DATA_DIR_HELP)] = DEFAULT_DATA_DIR,
    host: str = typer.Option("127.0.0.1", help="Address of the service (dashboard, API)"),
    port: int = typer.Option(8000, help="Port of the service"),
    sim_port: int = typer.Option(
        8001, help="Port of the first kiosk's simulator control API (next kiosks: +1 each)"
    ),
    broker_port: int = typer.Option(0, help="Port of the embedded MQTT broker; 0: a free one"),
    inbox_port: int = typer.Option(
        8025, help="Port of the demo purchaser's inbox (a json:// webhook); 0: a free one"
    ),
    broker_url: str | None = typer.Option(
        None, help="Use this MQTT broker (mqtt://host:port) instead of the embedded one"
    ),
    database_url: str | None = typer.Option(
        None, help="Use this database (e.g. postgresql://...) instead of SQLite in --data-dir"
    ),
    kiosks: int = typer.Option(1, min=1, max=9, help="Demo kiosks, each a simulator + bridge"),
    compartments: int = typer.Option(12, min=1, max=48, help="Compartments per demo kiosk"),
    time_scale: float = typer.Option(
        1.0, min=0.001, envvar="LOCKER_TIME_SCALE", help="Run every process N times faster"
    ),
) -> None:
    """Run everything on this machine: broker, simulator, bridge and service, with demo data.

    Ctrl-C stops it all; the next run finds the data again.
    """
    from locker_service.db import PRIVATE_UMASK
    from locker_service.stack.demo import DemoDataError
    from locker_service.stack.up import UpOptions, run_up

    # Every file of the run (database, credentials, bridge queues, inbox) is this user's only;
    # the children inherit the mask.
    os.umask(PRIVATE_UMASK)

    options = UpOptions(
        data_dir=data_dir,
        host=host,
        port=port,
        sim_port=sim_port,
        broker_port=broker_port,
        inbox_port=inbox_port,
        broker_url=broker_url,
        database_url=database_url,
        kiosks=kiosks,
        compartments=compartments,
        time_scale=time_scale,
    )
    try:
        code = asyncio.run(run_up(options))
    except DemoDataError as exc:
        typer.echo(f"lockerctl up: {exc}", err=True)
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:  # Ctrl-C while migrating, before the supervisor took over
        code = 130
    raise typer.Exit(code)


def demo_order(
    data_dir: Annotated[Path, typer.Option(help=DATA_DIR_HELP)] = DEFAULT_DATA_DIR,
    url: str | None = typer.Option(
        None, help="The service; default: the one `lockerctl up` started with this --data-dir"
    ),
    size: str = typer.Option("M", help="Compartment size: S, M or L"),
    contact: str | None = typer.Option(
        None,
        help="Where the purchaser's message goes, an Apprise URL such as mailto://...; "
        "default: the inbox of `lockerctl up`",
    ),
    count: int = typer.Option(1, min=1, max=100, help="How many orders"),
) -> None:
    """Place a demo order as the demo merchant and say how to play it through."""
    from locker_service.stack.demo import (
        DemoDataError,
        DemoOrderError,
        describe_demo_order,
        load_credentials,
        load_run_addresses,
        place_demo_order,
    )

    try:
        creds = load_credentials(data_dir)
    except DemoDataError as exc:
        typer.echo(f"lockerctl demo-order: {exc}", err=True)
        raise typer.Exit(2) from exc
    if creds is None:
        typer.echo(
            f"lockerctl demo-order: no demo data in {data_dir.resolve()}; "
            "start `lockerctl up` first (same --data-dir)",
            err=True,
        )
        raise typer.Exit(2)
    run = load_run_addresses(data_dir)
    url = url or run.get("service_url") or "http://127.0.0.1:8000"
    contact = contact or run.get("inbox_url")
    if not contact:
        typer.echo("lockerctl demo-order: say where the purchaser is told: --contact URL", err=True)
        raise typer.Exit(2)
    if size not in ("S", "M", "L"):
        typer.echo("lockerctl demo-order: --size must be S, M or L", err=True)
        raise typer.Exit(2)
    for i in range(count):
        try:
            order = place_demo_order(url, creds, size=size, purchaser_contact=contact)
        except DemoOrderError as exc:
            typer.echo(f"lockerctl demo-order: {exc}", err=True)
            raise typer.Exit(1) from exc
        if i:
            typer.echo("")
        typer.echo(describe_demo_order(url, order, creds))
