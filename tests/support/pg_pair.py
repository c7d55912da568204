"""A PostgreSQL primary and its streaming standby of a test's own, on free ports: for failover.

Both clusters are made from the machine's PostgreSQL binaries in a temporary directory, run as
the `postgres` user (the tests run as root here, which PostgreSQL refuses). The standby is
synchronous (`synchronous_standby_names = '*'`): the primary acknowledges a commit only once the
standby has it, so a promoted standby holds every commit the service was told succeeded
(docs/deploy/README.md, ADR 0078). `fsync` is off: a test's clusters need not survive a power cut.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.conftest import unavailable
from tests.support.mosquitto import free_port

DATABASE = "locker"


def _bin_dir() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not versions:
        unavailable("PostgreSQL's server binaries are not installed (apt-get install postgresql)")
    return versions[-1].parent


class PostgresPair:
    def __init__(self) -> None:
        if os.geteuid() != 0:
            unavailable("a private PostgreSQL cluster needs root to run as the postgres user")
        self.bin = _bin_dir()
        self.dir = Path(tempfile.mkdtemp(prefix="pg-pair-"))
        shutil.chown(self.dir, "postgres")
        self.ports = {"a": free_port(), "b": free_port()}
        self.primary = "a"

    @property
    def url(self) -> str:
        """Both hosts, standby first: the driver keeps only a read-write session."""
        hosts = "&".join(f"host=127.0.0.1:{self.ports[n]}" for n in ("b", "a"))
        return f"postgresql+asyncpg://postgres@/{DATABASE}?{hosts}&target_session_attrs=read-write"

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin / tool), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)}: {done.stdout}{done.stderr}")

    def _pg_ctl(self, node: str, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.dir / node), "-l", str(self.dir / f"{node}.log"), *args)

    def start(self) -> PostgresPair:
        a = self.dir / "a"
        # No fsync of a throwaway cluster, and the base backup asks for an immediate checkpoint,
        # not a spread one: the pair took 94 s to start here without these, 2 s with them.
        self._run(
            "initdb", "-D", str(a), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"
        )
        with (a / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.ports['a']}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.dir}'\nwal_level = replica\n"
                "max_wal_senders = 5\nfsync = off\n"
            )
        with (a / "pg_hba.conf").open("a") as hba:
            hba.write("host replication postgres 127.0.0.1/32 trust\n")
        self._pg_ctl("a", "-w", "start")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.ports["a"]), DATABASE)
        b = self.dir / "b"
        self._run(
            "pg_basebackup",
            *("-h", "127.0.0.1", "-p", str(self.ports["a"]), "-D", str(b), "-R", "-X", "stream"),
            *("--checkpoint", "fast", "--no-sync"),
        )
        with (b / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {self.ports['b']}\n")
        self._pg_ctl("b", "-w", "start")
        # Synchronous from now on (before, with no standby yet, every commit would wait).
        self._sql("a", "ALTER SYSTEM SET synchronous_standby_names = '*'")
        self._sql("a", "SELECT pg_reload_conf()")
        return self

    def _sql(self, node: str, statement: str) -> None:
        self._run("psql", "-h", "127.0.0.1", "-p", str(self.ports[node]), "-c", statement)

    def kill_primary(self) -> None:
        """The primary's host dies: no shutdown checkpoint, connections cut."""
        self._pg_ctl("a", "-m", "immediate", "stop")

    def promote_standby(self) -> None:
        self._pg_ctl("b", "-w", "promote")
        self.primary = "b"

    def stop(self) -> None:
        for node in ("a", "b"):
            if (self.dir / node / "postmaster.pid").exists():
                with contextlib.suppress(RuntimeError):
                    self._pg_ctl(node, "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
