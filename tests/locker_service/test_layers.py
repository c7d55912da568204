"""The service's bottom layer stays light: importing the context loads no web framework and no
MQTT client, and only the few core modules it is made of."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, sys
import locker_service.context
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by_importing_the_context() -> list[str]:
    # A fresh interpreter: this test process has long since imported everything.
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ},
        timeout=60,
    )
    modules: list[str] = json.loads(done.stdout)
    return modules


def test_the_context_loads_no_web_framework_and_no_mqtt_client() -> None:
    modules = loaded_by_importing_the_context()
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
