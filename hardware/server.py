"""`lockerctl sim`: the simulator on its own, with its ports and its HTTP control API."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import NoReturn

import uvicorn

from hardware.config import SimSettings
from hardware.simulator import Simulator
from hardware.simulator.keep import StateFileError, StateKeeper, read_state, restore_physical_state


class _Server(uvicorn.Server):
    """uvicorn re-raises the signal that stopped it, which would kill the process before the
    simulator removes its pty links; here a signal just asks the server to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _refuse(message: str) -> NoReturn:
    """A port the simulator cannot open: one clear line and exit code 2, not a traceback."""
    print(f"lockerctl sim: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def run(settings: SimSettings) -> None:
    """Run until Ctrl-C or SIGTERM; print where everything is."""
    from hardware.api import create_app

    sim = Simulator(
        compartments=settings.compartments,
        seed=settings.seed,
        time_scale=settings.time_scale,
        node_address=settings.node_address,
        baud=settings.baud,
        name=settings.name,
        thermostat=settings.thermostat,
        lobby_temp_c=settings.lobby_temp_c,
        relatch_s=settings.relatch_s,
    )
    keeper = None
    if settings.state_file is not None:
        try:
            kept = read_state(settings.state_file)
        except (OSError, StateFileError) as exc:
            _refuse(f"cannot restore the bank: {exc} (remove the file to start empty)")
        if kept is not None:
            boot_id = restore_physical_state(sim.state, kept)
            print(
                f"bank restored from {settings.state_file}: the board booted again "
                f"(boot {boot_id:08x})",
                flush=True,
            )
        keeper = StateKeeper(sim.state, settings.state_file)
    sim.start()
    if keeper is not None:
        keeper.start()
    try:
        lines = [
            f"locker bank simulator {settings.name}: {settings.compartments} compartments, "
            f"node {settings.node_address}, time scale {settings.time_scale:g}",
        ]
        if settings.pty:
            try:
                board, scanner = sim.open_pty(settings.pty_dir)
            except OSError as exc:
                _refuse(f"cannot make the ptys in {settings.pty_dir}: {exc.strerror or exc}")
            lines += [f"  board pty:    {board}", f"  scanner pty:  {scanner}"]
        if settings.board_port is not None or settings.scanner_port is not None:
            host = settings.socket_host or settings.http_host
            try:
                board_port, scanner_port = sim.serve_sockets(
                    host, settings.board_port or 0, settings.scanner_port or 0
                )
            except OSError as exc:
                _refuse(
                    f"cannot serve the board and scanner on {host} (ports "
                    f"{settings.board_port or 'any'}, {settings.scanner_port or 'any'}): "
                    f"{exc.strerror or exc}"
                )
            lines += [
                f"  board:        socket://{host}:{board_port}",
                f"  scanner:      socket://{host}:{scanner_port}",
            ]
        lines.append(f"  control API:  http://{settings.http_host}:{settings.http_port}/docs")
        print("\n".join(lines), flush=True)
        config = uvicorn.Config(
            create_app(sim, settings.cors_origins),
            host=settings.http_host,
            port=settings.http_port,
            log_level="warning",
        )
        _Server(config).run()
    finally:
        sim.stop()
        if keeper is not None:
            keeper.stop()  # the last save: what a clean stop leaves behind
    print("simulator stopped", flush=True)
