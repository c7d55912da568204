"""The service's bottom layer stays light: importing the context loads no web framework and no
MQTT client, and only the few core modules it is made of; and the service starts without the
PDF writer."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, sys
import {module}
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by_importing(module: str) -> list[str]:
    # A fresh interpreter: this test process has long since imported everything.
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ},
        timeout=60,
    )
    modules: list[str] = json.loads(done.stdout)
    return modules


def test_the_context_loads_no_web_framework_and_no_mqtt_client() -> None:
    modules = loaded_by_importing("locker_service.context")
    heavy = [m for m in modules if m.split(".")[0] in {"fastapi", "starlette", "paho"}]
    assert heavy == []
    ours = [m for m in modules if m.split(".")[0] == "locker_service"]
    # settings, the live hub and the cache: nothing of the domain, the link or the web
    assert set(ours) <= {
        "locker_service",
        "locker_service.cache",
        "locker_service.config",
        "locker_service.context",
        "locker_service.live",
    }, ours


def test_the_service_starts_without_the_pdf_writer() -> None:
    """fpdf brings fontTools and numpy, a quarter of the service's start-up time (every start,
    every restart after a crash): it is loaded when a HACCP PDF is first asked for."""
    modules = loaded_by_importing("locker_service.main")
    assert "locker_service.api.deps" in modules  # the app's modules are loaded, indeed
    heavy = [m for m in modules if m.split(".")[0] in {"fpdf", "fontTools", "numpy"}]
    assert heavy == []
