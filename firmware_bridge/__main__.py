"""Run one kiosk bridge in the foreground until SIGINT or SIGTERM: `python -m firmware_bridge`.

`lockerctl bridge` calls `run()` with its flags; both read the `BRIDGE_` environment first.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

from firmware_bridge.bridge import Bridge
from firmware_bridge.config import BridgeSettings

log = logging.getLogger("firmware_bridge")


def run(overrides: dict[str, Any] | None = None, log_level: str = "INFO") -> None:
    """Build the settings (environment, then the given overrides) and run until a signal."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = BridgeSettings(**{k: v for k, v in (overrides or {}).items() if v is not None})
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


if __name__ == "__main__":
    run()
