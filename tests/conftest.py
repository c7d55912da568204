"""Fixtures shared by every test package: the private broker and the real services' addresses.

`.ci/run` sets LOCKER_TEST_REQUIRE_SERVICES=1, so a missing PostgreSQL or Mosquitto fails the run
instead of skipping its tests.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hypothesis
import pytest

from tests.support.compiled_statements import share_compiled_statements
from tests.support.mosquitto import MosquittoProcess, durable_mosquitto

# The suite keeps its bytecode caches, those of the test modules' rewritten asserts too, even on
# a machine that turns them off (PYTHONDONTWRITEBYTECODE, as this one's environment does): without
# them every xdist worker parses and rewrites every test module again at each run (11 s of
# collection instead of 4 s here), and every process the tests start (replicas, bridges,
# lockerctl) compiles the project from its source.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

# The workers run services side by side on one PostgreSQL (default max_connections 100): a
# test of replicas (up to three, each of up to 45 connections at the defaults) beside another
# was refused "too many clients" (ADR 0117). Every service the suite starts, in process or as a
# process (they inherit this environment), keeps a main pool of 4 and lends 6 beyond, at most
# 25 connections a replica; a test that needs other sizes sets them (docs/deploy/README.md).
os.environ.setdefault("LOCKER_DB_POOL_SIZE", "4")
os.environ.setdefault("LOCKER_DB_MAX_OVERFLOW", "6")

# Hypothesis's per-example deadline (200 ms) and its "data generation too slow" check are
# wall-clock budgets: on a machine busy with other work a correct run can exceed them. The
# examples' own properties are what is tested.
hypothesis.settings.register_profile(
    "locker", deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
hypothesis.settings.load_profile("locker")

# The engines a test process makes share one cache of compiled SQL
# (tests/support/compiled_statements.py).
share_compiled_statements()

REQUIRE_SERVICES = os.environ.get("LOCKER_TEST_REQUIRE_SERVICES") == "1"
PG_ADMIN_URL = os.environ.get("LOCKER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
MQTT_HOST = os.environ.get("LOCKER_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("LOCKER_TEST_MQTT_PORT", "1883"))


def unavailable(reason: str) -> None:
    """Skip when a developer lacks a service; fail in CI, where nothing may be skipped silently."""
    if REQUIRE_SERVICES:
        pytest.fail(reason)
    pytest.skip(reason)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def shared_mosquitto() -> tuple[str, int]:
    """The machine's Mosquitto on 1883 (use unique topics: other runs share it)."""
    if not _listening(MQTT_HOST, MQTT_PORT):
        unavailable(f"no MQTT broker on {MQTT_HOST}:{MQTT_PORT}")
    return MQTT_HOST, MQTT_PORT


@contextmanager
def running_broker(broker: MosquittoProcess) -> Iterator[MosquittoProcess]:
    """Start a private broker for the block (unavailable without mosquitto), then remove it."""
    try:
        broker.start()
    except RuntimeError as exc:
        unavailable(str(exc))
        raise
    try:
        yield broker
    finally:
        broker.__exit__(None, None, None)


@pytest.fixture
def private_mosquitto() -> Iterator[MosquittoProcess]:
    """A broker of this test's own, which it may stop and restart."""
    with running_broker(MosquittoProcess()) as broker:
        yield broker


@pytest.fixture
def durable_broker(tmp_path: Path) -> Iterator[MosquittoProcess]:
    """A broker that keeps sessions and queued messages across its own restart."""
    with running_broker(durable_mosquitto(tmp_path / "broker")) as broker:
        yield broker


# The fixtures that run a test once on each backend (tests/locker_service/conftest.py,
# tests/stack/test_demo_data.py). A test that takes a backend of its own (`backend`: a
# migration's) runs on both every day.
BACKEND_FIXTURES = ("database_url", "empty_database_url")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test run on both backends is `slow` in its PostgreSQL run (ADR 0127): the everyday
    selection (`-m "not slow"`) runs it on SQLite, the whole suite (CI's) on both. A module
    whose subject is SQL written per backend sets `POSTGRES_EVERY_DAY = True` and keeps both in
    the everyday selection. A test on PostgreSQL alone (`pg_database_url`, or `database_url`
    narrowed to it: row locks) has no SQLite run, and keeps its run every day."""
    collected = {item.nodeid for item in items}
    for item in items:
        spec = getattr(item, "callspec", None)
        if spec is None or getattr(getattr(item, "module", None), "POSTGRES_EVERY_DAY", False):
            continue
        on_postgres = any(spec.params.get(name) == "postgres" for name in BACKEND_FIXTURES)
        if on_postgres and _sqlite_run(item.nodeid) in collected:
            item.add_marker(pytest.mark.slow)


def _sqlite_run(nodeid: str) -> str:
    """The id of the SQLite run of the PostgreSQL run `nodeid` (`test_x[postgres-sent]` ->
    `test_x[sqlite-sent]`)."""
    name, _, ids = nodeid.partition("[")
    parts = ["sqlite" if part == "postgres" else part for part in ids.removesuffix("]").split("-")]
    return f"{name}[{'-'.join(parts)}]"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Drop this process's template databases (tests/support/databases.py)."""
    from tests.support.databases import drop_templates  # it imports this module

    drop_templates()


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadscope`, with a finer unit: the tests of a class go to one worker together
    (the journey's and the fault campaign's class per backend plays its story once), every other
    test is handed out on its own, so one long module does not keep one worker busy while the
    others idle. A module fixture (a broker, a browser) is then set up once on each worker that
    gets one of its tests: a fixture that must be set up only once belongs on a class."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ClassOrTestScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            parts = nodeid.split("::")
            return "::".join(parts[:2]) if len(parts) > 2 else nodeid

    return ClassOrTestScheduling(config, log)
