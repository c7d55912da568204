"""Ports for the children of a run, picked where nothing else will take them meanwhile.

A port is picked before the child that listens on it starts. Ports the kernel hands out itself
(binding port 0) come from its ephemeral range, the same range every outgoing connection takes
its local port from: on a busy host one of them could take a picked port before its child bound
it. Picking at random below that range, where the kernel never hands anything out on its own,
leaves only another explicit bind to collide with: another run picking at the same moment (two
`lockerctl up`, or tests beside each other). So a picked port is reserved for RESERVE_S in a
file every picker on the host shares, and others pick a port nobody reserved while one is left.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import random
import socket
import tempfile
import time
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
FALLBACK_EPHEMERAL_LOW = 32768  # Linux's default when the range cannot be read
LOWEST = 10000  # above the well-known and most registered service ports
RESERVATIONS = Path(tempfile.gettempdir()) / "locker-ports.json"
RESERVE_S = 600.0  # long enough for a child to start and bind what it was given
DRAWS = 64  # random ports tried before the whole range is shuffled (a pick needs one to three)


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
    with _reservations() as reserved:
        candidates = _candidates(LOWEST, high, taken, reserved)
        ports = _bindable(candidates, count, host, f"between {LOWEST} and {high}")
        until = time.time() + RESERVE_S
        reserved.update({port: until for port in ports})
        return ports


def _candidates(
    low: int, high: int, taken: Collection[int], reserved: Collection[int]
) -> Iterator[int]:
    """The ports of low..high but `taken`, in a random order (two runs picking at once rarely
    meet); those another run reserved a moment ago last, taken only if nothing else is free.

    First a few random draws, which is all a pick needs where most of the range is free; the
    whole range is listed and shuffled only if they do not do (shuffling its 20,000 ports with
    the system's randomness costs 40 ms, where a test's broker needs one port)."""
    rng = random.SystemRandom()
    for _ in range(DRAWS if low <= high else 0):
        port = rng.randint(low, high)
        if port not in taken and port not in reserved:
            yield port  # a port drawn twice is refused by its bind: the first is held
    rest = [port for port in range(low, high + 1) if port not in taken]
    rng.shuffle(rest)
    rest.sort(key=lambda port: port in reserved)
    yield from rest


@contextlib.contextmanager
def _reservations() -> Iterator[dict[int, float]]:
    """The ports reserved by every picker on this host and still in their time, under an
    exclusive lock of the shared file; what the caller adds is written back. A file that
    cannot be used (another user's, say) only loses the reservations, never the picking."""
    now = time.time()
    try:
        file = open(RESERVATIONS, "a+")  # noqa: SIM115 (held across the lock below)
    except OSError:
        yield {}
        return
    with file:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.seek(0)
        try:
            kept = {int(p): float(t) for p, t in json.loads(file.read() or "{}").items()}
        except (ValueError, TypeError, AttributeError):
            kept = {}  # unreadable: start afresh
        reserved = {port: until for port, until in kept.items() if until > now}
        yield reserved
        file.seek(0)
        file.truncate()
        file.write(json.dumps(reserved))
        file.flush()


def _bindable(candidates: Iterable[int], count: int, host: str, where: str) -> list[int]:
    """The first `count` of `candidates` that bind now (held until all are found)."""
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
    raise RuntimeError(f"only {len(ports)} of {count} ports free {where}")


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]
