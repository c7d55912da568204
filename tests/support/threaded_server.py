"""A real uvicorn server for one app, in a thread of the test process: tests that need real HTTP
(proxy headers, fuzzers speaking `requests`) and still want to reach into the app's context."""

from __future__ import annotations

import asyncio
import socketserver
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvicorn

from tests.support.mosquitto import free_port

T = TypeVar("T")
START_TIMEOUT_S = 60.0  # the lifespan opens the database; two busy cores make that slow
# How often a background socketserver looks whether it is shut down: the standard library's
# 0.5 s was half a second of the teardown of every test with a webhook or inbox receiver.
SHUTDOWN_POLL_S = 0.02


def serve_in_background(server: socketserver.BaseServer) -> threading.Thread:
    """Serve in a daemon thread (started); `server.shutdown()` then returns at once."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL_S}, daemon=True
    )
    thread.start()
    return thread


class ThreadedServer:
    """`with ThreadedServer(app) as server:` serves on `server.url` until the block ends."""

    def __init__(self, app: Any, **config: Any) -> None:
        # uvicorn binds the port itself: handed a bound socket instead (`sockets=`), its
        # connections answered each request about 40 ms late here (3 ms when it binds).
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # No `log_config` and no `log_level`: uvicorn would otherwise reconfigure the logging of
        # the whole test process (its access logger stops propagating, its level goes to
        # warning), and a later test in the same worker that reads logs would see nothing.
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_config=None,
                access_log=False,
                lifespan="on",
                **config,
            )
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="test-uvicorn", daemon=True)

    def _run(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            await self.server.serve()

        asyncio.run(serve())

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the server's event loop (where its engine lives) and wait for it."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(START_TIMEOUT_S)

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        # uvicorn sets `started` once it listens; a lifespan that fails ends the thread instead.
        while not self.server.started and self._thread.is_alive():
            time.sleep(0.02)
        if not self.server.started:
            raise RuntimeError("the test server did not start")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(START_TIMEOUT_S)
