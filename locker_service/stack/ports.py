"""Ports for the children of a run, picked where nothing else will take them meanwhile.

A port is picked before the child that listens on it starts. Ports the kernel hands out itself
(binding port 0) come from its ephemeral range, the same range every outgoing connection takes
its local port from: on a busy host one of them could take a picked port before its child bound
it. Picking at random below that range, where the kernel never hands anything out on its own,
leaves only another explicit bind to collide with.
"""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import Collection
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
FALLBACK_EPHEMERAL_LOW = 32768  # Linux's default when the range cannot be read
LOWEST = 10000  # above the well-known and most registered service ports


def ephemeral_low() -> int:
    """The lowest port of the kernel's ephemeral range."""
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return FALLBACK_EPHEMERAL_LOW


def free_ports(count: int, host: str = "127.0.0.1", taken: Collection[int] = ()) -> list[int]:
    """`count` different ports free right now, below the ephemeral range, none of `taken`
    (ports the run's other children are given by their options). The sockets are held until
    all are chosen, so none is chosen twice."""
    high = ephemeral_low() - 1
    candidates = [port for port in range(LOWEST, high + 1) if port not in taken]
    random.SystemRandom().shuffle(candidates)  # two runs picking at once rarely meet
    with contextlib.ExitStack() as held:
        ports: list[int] = []
        for port in candidates:
            s = held.enter_context(socket.socket())
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue  # in use (or lingering): another one
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"only {len(ports)} of {count} ports free between {LOWEST} and {high}")


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]
