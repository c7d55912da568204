"""Run a Supervisor over children described in JSON (argv[1]); used by test_supervisor as a real
process so signals, process groups and exit codes are the real ones."""

from __future__ import annotations

import asyncio
import json
import sys

from locker_service.stack.supervisor import ChildSpec, Supervisor


def main() -> int:
    config = json.loads(sys.argv[1])
    specs = [
        ChildSpec(
            name=c["name"],
            argv=c["argv"],
            ready_port=tuple(c["ready_port"]) if c.get("ready_port") else None,
            ready_path=c.get("ready_path"),
            ready_timeout_s=c.get("ready_timeout_s", 60.0),
        )
        for c in config["children"]
    ]
    supervisor = Supervisor(
        specs,
        colour=False,
        stop_timeout_s=config.get("stop_timeout_s", 5.0),
        backoff_s=config.get("backoff_s", [0.2]),
    )

    async def ready() -> None:
        supervisor.say("ALL READY")

    return asyncio.run(supervisor.run(ready))


if __name__ == "__main__":
    sys.exit(main())
