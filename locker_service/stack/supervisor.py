"""A small process supervisor: the engine of `lockerctl up`.

It starts child processes in order, waits for each to be ready (a TCP port listening), shows
their output prefixed with their name, restarts a child that dies (with a message saying so and
a growing pause, giving up if one keeps dying; a restarted child that does not get ready in time,
or cannot be started at all, counts as dying again), and on Ctrl-C or SIGTERM stops them all in
reverse order: SIGTERM first, SIGKILL for one that does not stop in time.

Each child runs in its own session, so a Ctrl-C typed at the terminal reaches only the
supervisor, which then stops the children in order (the bridge before the broker it talks to).
On Linux the children also get SIGTERM if the supervisor itself is killed (PR_SET_PDEATHSIG), so
no orphan keeps a port or the SQLite file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

READY_POLL_S = 0.1
STOP_TIMEOUT_S = 10.0  # the service drains requests and the bridge flushes its queue to disk
RESTART_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0)
STABLE_AFTER_S = 30.0  # a child that ran this long is healthy again: its backoff starts over
MAX_QUICK_RESTARTS = 5  # this many deaths in a row, each before STABLE_AFTER_S: give up
LINE_LIMIT_BYTES = 1 << 20  # a traceback with a long repr must not break the output pump

_COLOURS = ("36", "33", "35", "32", "34", "31")


@dataclass
class ChildSpec:
    """One supervised process."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_port: tuple[str, int] | None = None  # ready once this TCP port accepts connections
    # And, when given, once this path on that port answers HTTP 200 (the service's `/readyz`:
    # its port opens before its first lease round has ended, ADR 0099).
    ready_path: str | None = None
    ready_timeout_s: float = 60.0
    cwd: str | None = None


class SupervisorError(RuntimeError):
    """A child could not be started or kept running."""


def _load_prctl() -> Callable[[int, int], int] | None:
    """libc's prctl, looked up once at import: the child between fork and exec must not import
    or allocate (another thread of the supervisor may hold the import lock at fork time)."""
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        prctl: Callable[[int, int], int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _set_parent_death_signal() -> None:
    """Runs in the child between fork and exec: die with the supervisor (Linux only)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def _answers_ok(host: str, port: int, path: str) -> bool:
    """The path answers HTTP 200 on the port (a 503 while the service gets ready: not yet)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=2) as answer:
            return bool(answer.status == 200)
    except (OSError, ValueError):  # refused, timed out, or an HTTP error status
        return False


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


class _Child:
    def __init__(self, spec: ChildSpec, index: int) -> None:
        self.spec = spec
        self.colour = _COLOURS[index % len(_COLOURS)]
        self.proc: asyncio.subprocess.Process | None = None
        self.pump: asyncio.Task[None] | None = None
        self.started_at = 0.0
        self.restarts = 0
        self.quick_deaths = 0


class Supervisor:
    """Run `specs` until stopped. `run()` returns the exit code for the command line."""

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        out: TextIO | None = None,
        colour: bool | None = None,
        stop_timeout_s: float = STOP_TIMEOUT_S,
        backoff_s: Sequence[float] = RESTART_BACKOFF_S,
        base_env: dict[str, str] | None = None,
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique: {names}")
        self._children = [_Child(spec, i) for i, spec in enumerate(specs)]
        self._out = out or sys.stdout
        self._colour = self._out.isatty() if colour is None else colour
        self._width = max((len(n) for n in names), default=4)
        self._width = max(self._width, len("lockerctl"))
        self._stop_timeout_s = stop_timeout_s
        self._backoff_s = tuple(backoff_s) or (1.0,)
        self._base_env = dict(os.environ if base_env is None else base_env)
        self._stopping = asyncio.Event()
        self._forced = False
        self._failed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- output

    def say(self, text: str) -> None:
        """A line from the supervisor itself."""
        self._emit("lockerctl", "1", text)

    def _emit(self, name: str, colour: str, text: str) -> None:
        label = name.ljust(self._width)
        if self._colour:
            label = f"\x1b[{colour}m{label}\x1b[0m"
        self._out.write(f"{label} | {text}\n")
        self._out.flush()

    async def _pump(self, child: _Child, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:
                # asyncio has thrown away a line beyond LINE_LIMIT_BYTES (or its first
                # LINE_LIMIT_BYTES): say so, and go on with the next line.
                self._emit(child.spec.name, child.colour, "[an output line over 1 MB was cut]")
                continue
            if not raw:
                return
            self._emit(child.spec.name, child.colour, raw.decode(errors="replace").rstrip("\n"))

    # ---- lifecycle

    async def _spawn(self, child: _Child) -> None:
        env = {**self._base_env, "PYTHONUNBUFFERED": "1", **child.spec.env}
        try:
            child.proc = await asyncio.create_subprocess_exec(
                *child.spec.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=child.spec.cwd,
                start_new_session=True,
                preexec_fn=_set_parent_death_signal if _PRCTL is not None else None,
                limit=LINE_LIMIT_BYTES,
            )
        except OSError as exc:
            raise SupervisorError(f"cannot start {child.spec.name}: {exc}") from exc
        child.started_at = time.monotonic()
        assert child.proc.stdout is not None
        child.pump = asyncio.create_task(self._pump(child, child.proc.stdout))

    async def _wait_ready(self, child: _Child) -> None:
        if child.spec.ready_port is None:
            return
        host, port = child.spec.ready_port
        deadline = time.monotonic() + child.spec.ready_timeout_s
        while not self._stopping.is_set():
            assert child.proc is not None
            if child.proc.returncode is not None:
                raise SupervisorError(
                    f"{child.spec.name} {_describe_exit(child.proc.returncode)} while starting"
                )
            path = child.spec.ready_path
            if await asyncio.to_thread(_port_open, host, port) and (
                path is None or await asyncio.to_thread(_answers_ok, host, port, path)
            ):
                return
            if time.monotonic() > deadline:
                what = f"answer {path} on" if path else "listen on"
                raise SupervisorError(
                    f"{child.spec.name} did not {what} {host}:{port} "
                    f"within {child.spec.ready_timeout_s:.0f} s"
                )
            await asyncio.sleep(READY_POLL_S)

    async def _terminate(self, child: _Child) -> None:
        proc = child.proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL if self._forced else signal.SIGTERM)
            try:
                async with asyncio.timeout(self._stop_timeout_s):
                    await proc.wait()
            except TimeoutError:
                self.say(
                    f"{child.spec.name} did not stop within {self._stop_timeout_s:.0f} s: "
                    "killing it"
                )
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        # Whatever the child started in its session (a helper, a reloader) goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if child.pump is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await child.pump

    async def _watch(self, child: _Child) -> None:
        """Restart `child` whenever it dies, until the supervisor stops."""
        while not self._stopping.is_set():
            assert child.proc is not None
            returncode = await child.proc.wait()
            if child.pump is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2.0):
                        await child.pump
            if self._stopping.is_set():
                return
            ran_s = time.monotonic() - child.started_at
            child.quick_deaths = 0 if ran_s >= STABLE_AFTER_S else child.quick_deaths + 1
            if child.quick_deaths >= MAX_QUICK_RESTARTS:
                self.say(
                    f"{child.spec.name} {_describe_exit(returncode)} after {ran_s:.1f} s, "
                    f"{child.quick_deaths} times in a row: giving up and stopping everything"
                )
                self._failed = True
                self._stopping.set()
                return
            step = min(max(child.quick_deaths, 1), len(self._backoff_s)) - 1
            pause_s = self._backoff_s[step]
            child.restarts += 1
            self.say(
                f"{child.spec.name} {_describe_exit(returncode)} after {ran_s:.1f} s: "
                f"restarting it in {pause_s:g} s (restart {child.restarts})"
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause_s):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            try:
                await self._spawn(child)
            except SupervisorError as exc:
                # Counted as one more quick death (the dead process is waited on at once), so
                # a program that can no longer be started ends the run instead of retrying.
                self.say(str(exc))
                child.started_at = time.monotonic()
                continue
            try:
                await self._wait_ready(child)
            except SupervisorError as exc:
                # A child that never came up is ended, so the loop counts it as a death and
                # restarts it or gives up, instead of waiting on a process that serves nothing.
                self.say(str(exc))
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGKILL)
                continue
            self.say(f"{child.spec.name} is running again")

    def request_stop(self, forced: bool = False) -> None:
        """Ask `run()` to stop everything; a second request kills without waiting. Safe to call
        from any thread."""
        loop = self._loop
        if loop is not None and loop.is_running():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                loop.call_soon_threadsafe(self.request_stop, forced)
                return
        if self._stopping.is_set() or forced:
            self._forced = True
        self._stopping.set()

    async def run(self, on_ready: Callable[[], Awaitable[None]] | None = None) -> int:
        """Start all, call `on_ready` once all are ready, supervise until stopped."""
        self._failed = False
        loop = asyncio.get_running_loop()
        self._loop = loop
        installed: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
        watchers: list[asyncio.Task[None]] = []
        try:
            for child in self._children:
                if self._stopping.is_set():
                    break
                self.say(f"starting {child.spec.name}")
                await self._spawn(child)
                await self._wait_ready(child)
            if not self._stopping.is_set():
                watchers = [asyncio.create_task(self._watch(c)) for c in self._children]
                if on_ready is not None:
                    await on_ready()
                await self._stopping.wait()
        except SupervisorError as exc:
            self.say(f"{exc}; stopping everything")
            self._failed = True
        except Exception as exc:
            self.say(f"{type(exc).__name__}: {exc}; stopping everything")
            self._failed = True
            raise
        finally:
            self._stopping.set()
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            for child in reversed(self._children):
                if child.proc is not None and child.proc.returncode is None:
                    self.say(f"stopping {child.spec.name}")
                await self._terminate(child)
            for sig in installed:
                loop.remove_signal_handler(sig)
            self.say("all stopped")
        return 1 if self._failed else 0

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stopping.is_set():
            self.say(f"{signal.Signals(sig).name} again: killing everything now")
            self.request_stop(forced=True)
            for child in self._children:
                if child.proc is not None and child.proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child.proc.pid, signal.SIGKILL)
        else:
            self.say(f"{signal.Signals(sig).name} received: stopping everything")
            self.request_stop()
