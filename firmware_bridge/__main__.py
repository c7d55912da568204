"""Run one kiosk bridge in the foreground until SIGINT or SIGTERM: `python -m firmware_bridge`.

`lockerctl bridge` calls `run()` with its flags; both read the `BRIDGE_` environment first.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any

from pydantic import ValidationError

from firmware_bridge.bridge import Bridge
from firmware_bridge.config import BridgeSettings

log = logging.getLogger("firmware_bridge")


def settings_from(overrides: dict[str, Any] | None = None) -> BridgeSettings:
    """The environment's settings with the given values (None: not given) on top."""
    return BridgeSettings(**{k: v for k, v in (overrides or {}).items() if v is not None})


def run(settings: BridgeSettings, log_level: str = "INFO") -> None:
    """Run the bridge in the foreground until SIGINT or SIGTERM."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    log.info(
        "kiosk %s: board %s, scanner %s, broker %s, time scale %g",
        settings.kiosk_id,
        settings.board_url,
        settings.scanner_url or "none",
        settings.broker_url.split("@")[-1],  # never log a password given in the URL
        settings.time_scale,
    )
    Bridge(settings).run_until(stop)


def main() -> None:
    try:
        settings = settings_from()
    except ValidationError as exc:
        sys.exit(f"bridge settings: {exc}")
    run(settings)


if __name__ == "__main__":
    main()
