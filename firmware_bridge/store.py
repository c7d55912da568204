"""The bridge's memory on disk: event outbox, request-id results, last known board state.

One SQLite file in the data directory, in WAL mode with `synchronous=NORMAL`: a commit is in
the operating system's hands when it returns, so a bridge killed with SIGKILL loses nothing it
committed (a power cut may lose the last few commits; ADR 0021 says why that trade is right for
a kiosk). Every method is safe to call from any thread: one connection behind one lock.

- `events`: the outbox. Every event is written here first and marked sent only when the broker
  acknowledged it, so events survive a broker outage and a bridge restart and go out in order
  with their original timestamps. Bounded: past the limit the oldest unsent are dropped and
  counted. The last `KEPT_SENT` numbers sent are kept, so a replica that has just taken the
  kiosk can have those its record lacks sent again (`resend_after`, docs/adr/0092); a scan is
  kept without its text (a QR token or a typed code), and what is deleted or rewritten is
  overwritten on disk (`secure_delete`).
- `refused_events`: events the broker refused (an MQTT 5 PUBACK with a failure reason code, such
  as an ACL that does not let this kiosk publish them): moved here with the reason, so the
  outbox goes on and nothing is lost without a trace. Bounded like the outbox.
- `requests`: request_id -> the command and its latest reply, so a redelivered command is
  answered from here and never executed twice, even by a bridge restarted in between.
- `offline_orders`, `offline_meta`: the ready orders this kiosk may open while cut off from the
  service, with their QR tokens' SHA-256 but never a typed code's verifier (offline.py says why),
  when the keypad refused its newest wrong codes (never the digits), and which compartments
  latched a fault that holds food since their door last opened.
- `telemetry_buckets`, `telemetry_bucket_readings`: telemetry kept while the bridge is cut off
  (docs/contracts/mqtt.md, `contract/backlog.py`), folded per bucket of time and compartment into
  min, max, sum and counts; a bucket leaves only once the broker acknowledged it. Bounded: past
  the limit the oldest buckets are dropped and counted.
- `compartments`: the last board state seen per compartment and the setpoint the service asked
  for, so a restarted bridge reports what happened while it was down and a rebooted board gets
  its setpoints back.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    payload BLOB NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS refused_events (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL UNIQUE,
    command TEXT NOT NULL,
    status TEXT NOT NULL,
    reply TEXT,
    final INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS offline_orders (
    order_id TEXT PRIMARY KEY,
    compartment INTEGER NOT NULL,
    token_sha256 TEXT NOT NULL,
    deadline TEXT NOT NULL,
    used INTEGER NOT NULL,
    used_here_at TEXT,
    door_opened_at TEXT,
    held INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS offline_meta (
    k TEXT PRIMARY KEY,
    v TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS compartments (
    n INTEGER PRIMARY KEY,
    boot_id INTEGER,
    state TEXT,
    setpoint_dc INTEGER,
    setpoint_known INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS telemetry_buckets (
    start_ms INTEGER NOT NULL,  -- the bucket's first instant, Unix milliseconds
    seconds REAL NOT NULL,  -- its width: a restart with another time scale makes others
    PRIMARY KEY (start_ms, seconds)
);
CREATE TABLE IF NOT EXISTS telemetry_bucket_readings (
    start_ms INTEGER NOT NULL,
    seconds REAL NOT NULL,
    n INTEGER NOT NULL,
    min_c REAL,
    max_c REAL,
    sum_c REAL NOT NULL,
    count INTEGER NOT NULL,
    faulted INTEGER NOT NULL,
    heater_on INTEGER NOT NULL,
    setpoint_c REAL,
    PRIMARY KEY (start_ms, seconds, n)
);
"""

# One reading folded into its bucket; NULL temperatures (a faulted sensor) are counted apart, and
# SQLite's two-argument min()/max() are NULL if either is, hence the coalesces.
_FOLD_READING = """
INSERT INTO telemetry_bucket_readings
    (start_ms, seconds, n, min_c, max_c, sum_c, count, faulted, heater_on, setpoint_c)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (start_ms, seconds, n) DO UPDATE SET
    min_c = min(coalesce(min_c, excluded.min_c), coalesce(excluded.min_c, min_c)),
    max_c = max(coalesce(max_c, excluded.max_c), coalesce(excluded.max_c, max_c)),
    sum_c = sum_c + excluded.sum_c,
    count = count + excluded.count,
    faulted = faulted + excluded.faulted,
    heater_on = heater_on + excluded.heater_on,
    setpoint_c = max(coalesce(setpoint_c, excluded.setpoint_c),
                     coalesce(excluded.setpoint_c, setpoint_c))
"""


# Sent events kept for a new lease holder to ask for again (docs/adr/0092): the numbers within
# this many of the newest. A kiosk's lunch peak is about a hundred events an hour, and a lease
# moves within seconds of its holder dying.
KEPT_SENT = 1000


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    seq: int
    event_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class RequestRecord:
    request_id: str
    command: dict[str, Any]
    status: str
    reply: dict[str, Any] | None
    final: bool


@dataclass(frozen=True, slots=True)
class BucketStats:
    """One compartment over one kept bucket: the temperatures of `count` readings, `faulted`
    more without one."""

    n: int
    min_c: float | None
    max_c: float | None
    sum_c: float
    count: int
    faulted: int
    heater_on: int
    setpoint_c: float | None


@dataclass(frozen=True, slots=True)
class KeptBucket:
    start_ms: int
    seconds: float
    readings: list[BucketStats]


# (compartment, temperature, setpoint, heater on) of one reading to keep
KeptReading = tuple[int, float | None, float | None, bool]


def bucket_start_ms(at_s: float, seconds: float) -> int:
    """The first instant of the bucket `at_s` (Unix seconds) falls in: buckets of `seconds`
    counted from the epoch, so 60 s buckets start on the minute."""
    return round((at_s // seconds) * seconds * 1000)


@dataclass(frozen=True, slots=True)
class RememberedCompartment:
    n: int
    boot_id: int | None
    state: dict[str, Any] | None
    setpoint_dc: int | None
    setpoint_known: bool  # False: the service never set one through this bridge


@dataclass(frozen=True, slots=True)
class OfflineOrderRow:
    """A ready order as kept on disk for offline pickups: no code, no code verifier."""

    order_id: str
    compartment: int
    token_sha256: str
    deadline: datetime
    used: bool  # used as the service last said
    used_here_at: datetime | None  # used here while cut off, not yet confirmed by the service
    # Its compartment's door opened after the order was listed: what the list says of it may
    # be out of date (collected online, the compartment given to another order).
    door_opened_at: datetime | None = None
    # Held for staff after a fault (ADR 0128): as the service listed it, or a fault that holds
    # food seen in its compartment here since it was listed.
    held: bool = False

    def with_use(self, at: datetime | None) -> OfflineOrderRow:
        return replace(self, used_here_at=at)


class BridgeStore:
    def __init__(self, path: Path, event_limit: int = 10_000, request_limit: int = 10_000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.event_limit = event_limit
        self.request_limit = request_limit
        self.events_dropped = 0
        self.telemetry_buckets_dropped = 0
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # What is deleted or rewritten (a delivered scan's code) is overwritten on disk too.
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(events)")}
        if "sent" not in columns:  # an outbox written before sent events were kept
            self._db.execute("ALTER TABLE events ADD COLUMN sent INTEGER NOT NULL DEFAULT 0")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(offline_orders)")}
        if "held" not in columns:  # a list written before food was held after a fault
            self._db.execute(
                "ALTER TABLE offline_orders ADD COLUMN held INTEGER NOT NULL DEFAULT 0"
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- offline pickups (firmware_bridge/offline.py) ------------------------------------------

    def offline_orders(self) -> list[OfflineOrderRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT order_id, compartment, token_sha256, deadline, used, used_here_at, "
                "door_opened_at, held FROM offline_orders"
            ).fetchall()
        return [
            OfflineOrderRow(
                r[0],
                r[1],
                r[2],
                datetime.fromisoformat(r[3]),
                bool(r[4]),
                datetime.fromisoformat(r[5]) if r[5] else None,
                datetime.fromisoformat(r[6]) if r[6] else None,
                bool(r[7]),
            )
            for r in rows
        ]

    def offline_meta(self) -> dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT k, v FROM offline_meta").fetchall())

    def replace_offline(self, rows: list[OfflineOrderRow], meta: dict[str, str]) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM offline_orders")
            db.executemany(
                "INSERT INTO offline_orders (order_id, compartment, token_sha256, deadline, "
                "used, used_here_at, door_opened_at, held) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.order_id,
                        r.compartment,
                        r.token_sha256,
                        r.deadline.isoformat(),
                        int(r.used),
                        r.used_here_at.isoformat() if r.used_here_at else None,
                        r.door_opened_at.isoformat() if r.door_opened_at else None,
                        int(r.held),
                    )
                    for r in rows
                ],
            )
            db.execute("DELETE FROM offline_meta")  # no `refresh_s`: offline pickups are off
            db.executemany("INSERT INTO offline_meta VALUES (?, ?)", meta.items())

    def set_offline_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO offline_meta VALUES (?, ?)", (key, value))

    def mark_offline_door_opened(self, compartment: int, at: datetime) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE offline_orders SET door_opened_at = ? "
                "WHERE compartment = ? AND door_opened_at IS NULL",
                (at.isoformat(), compartment),
            )

    def mark_offline_held(self, compartment: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE offline_orders SET held = 1 WHERE compartment = ?", (compartment,))

    def mark_offline_use(self, order_id: str, at: datetime | None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE offline_orders SET used_here_at = ? WHERE order_id = ?",
                (at.isoformat() if at else None, order_id),
            )

    # -- event outbox -------------------------------------------------------------------------

    def append_event(self, event_id: str, render: Callable[[int], bytes]) -> int:
        """Queue one event; returns its sequence number (0 if `event_id` is queued already).

        `render(seq)` gives the payload: the event carries its own number, so the service can
        put a burst the broker delivered out of order back in order. AUTOINCREMENT: a number is
        never given twice, even once the queue has emptied. Drops the oldest past the limit."""
        with self._tx() as db:
            if db.execute("SELECT 1 FROM events WHERE event_id = ?", (event_id,)).fetchone():
                return 0  # asked first: an ignored insert would still use up a number
            (count,) = db.execute("SELECT count(*) FROM events WHERE sent = 0").fetchone()
            if count >= self.event_limit:
                excess = count - self.event_limit + 1
                db.execute(
                    "DELETE FROM events WHERE seq IN "
                    "(SELECT seq FROM events WHERE sent = 0 ORDER BY seq LIMIT ?)",
                    (excess,),
                )
                self.events_dropped += excess
                log.warning("event queue full (%d): dropped the %d oldest", count, excess)
            cur = db.execute(
                "INSERT INTO events (event_id, payload) VALUES (?, ?)", (event_id, b"")
            )
            seq = int(cur.lastrowid or 0)
            db.execute("UPDATE events SET payload = ? WHERE seq = ?", (render(seq), seq))
            return seq

    def events_after(self, seq: int, limit: int) -> list[QueuedEvent]:
        """The unsent events numbered after `seq`, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, event_id, payload FROM events WHERE seq > ? AND sent = 0 "
                "ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [QueuedEvent(int(s), str(e), bytes(p)) for s, e, p in rows]

    def mark_sent(self, seq: int, kept: Callable[[bytes], bytes] | None = None) -> None:
        """The broker acknowledged event `seq`: kept as sent, as `kept` rewrites its payload
        (without the secrets it carried), and sent events numbered `KEPT_SENT` or more below
        it are forgotten."""
        rewritten = False
        with self._tx() as db:
            if kept is not None:
                row = db.execute("SELECT payload FROM events WHERE seq = ?", (seq,)).fetchone()
                if row is not None and (payload := kept(bytes(row[0]))) != bytes(row[0]):
                    db.execute("UPDATE events SET payload = ? WHERE seq = ?", (payload, seq))
                    rewritten = True
            db.execute("UPDATE events SET sent = 1 WHERE seq = ?", (seq,))
            db.execute("DELETE FROM events WHERE sent = 1 AND seq <= ?", (seq - KEPT_SENT,))
        if rewritten:
            # The write-ahead log still holds the frame the payload was first written in: the
            # database takes it in, and the log is emptied (a secret leaves the disk now, not
            # when the log comes round again).
            with self._lock:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def resend_after(self, seq: int) -> int:
        """The kept sent events numbered after `seq` become unsent again, to go out once more
        in order with their numbers and ids; returns how many."""
        with self._tx() as db:
            cur = db.execute("UPDATE events SET sent = 0 WHERE sent = 1 AND seq > ?", (seq,))
            return int(cur.rowcount)

    def refuse_event(self, seq: int, reason: str) -> None:
        """Move an event the broker refused out of the outbox, keeping it with the reason."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO refused_events (seq, event_id, payload, reason) "
                "SELECT seq, event_id, payload, ? FROM events WHERE seq = ?",
                (reason, seq),
            )
            db.execute("DELETE FROM events WHERE seq = ?", (seq,))
            db.execute(
                "DELETE FROM refused_events WHERE seq <= "
                "(SELECT seq FROM refused_events ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (self.event_limit,),
            )

    def refused_events(self) -> list[tuple[QueuedEvent, str]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, event_id, payload, reason FROM refused_events ORDER BY seq"
            ).fetchall()
        return [(QueuedEvent(int(s), str(e), bytes(p)), str(r)) for s, e, p, r in rows]

    def event_count(self) -> int:
        """Events waiting to be sent (or for the broker's acknowledgement)."""
        with self._lock:
            (count,) = self._db.execute("SELECT count(*) FROM events WHERE sent = 0").fetchone()
        return int(count)

    # -- request-id results -------------------------------------------------------------------

    def get_request(self, request_id: str) -> RequestRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT request_id, command, status, reply, final FROM requests "
                "WHERE request_id = ?",
                (request_id,),
            ).fetchone()
        return None if row is None else _request_record(row)

    def claim_request(self, request_id: str, command: dict[str, Any]) -> RequestRecord | None:
        """Record a new request as accepted; returns the existing record if it was seen before.

        The insert and the check are one transaction, so two deliveries racing each other
        cannot both be told they are first.
        """
        with self._tx() as db:
            row = db.execute(
                "SELECT request_id, command, status, reply, final FROM requests "
                "WHERE request_id = ?",
                (request_id,),
            ).fetchone()
            if row is not None:
                return _request_record(row)
            db.execute(
                "INSERT INTO requests (request_id, command, status) VALUES (?, ?, 'accepted')",
                (request_id, json.dumps(command)),
            )
            (count,) = db.execute("SELECT count(*) FROM requests").fetchone()
            if count > self.request_limit:
                # Forget the oldest finished requests; an unfinished one is still being worked on.
                db.execute(
                    "DELETE FROM requests WHERE seq IN (SELECT seq FROM requests WHERE final = 1 "
                    "ORDER BY seq LIMIT ?)",
                    (count - self.request_limit,),
                )
        return None

    def update_request(self, request_id: str, reply: dict[str, Any], final: bool) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE requests SET status = ?, reply = ?, final = ? WHERE request_id = ?",
                (reply["status"], json.dumps(reply), int(final), request_id),
            )

    def unfinished_requests(self) -> list[RequestRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT request_id, command, status, reply, final FROM requests "
                "WHERE final = 0 ORDER BY seq"
            ).fetchall()
        return [_request_record(row) for row in rows]

    # -- telemetry kept while cut off ---------------------------------------------------------

    def keep_telemetry(
        self, at_s: float, seconds: float, readings: Iterable[KeptReading], limit: int
    ) -> int:
        """Fold one round of readings taken at `at_s` into its bucket of `seconds`; returns the
        bucket's start (Unix ms). A new bucket past `limit` drops the oldest ones."""
        start_ms = bucket_start_ms(at_s, seconds)
        rows = [
            (
                start_ms,
                seconds,
                n,
                temp_c,
                temp_c,
                temp_c or 0.0,
                int(temp_c is not None),
                int(temp_c is None),
                int(heater),
                setpoint_c,
            )
            for n, temp_c, setpoint_c, heater in readings
        ]
        if not rows:
            return start_ms
        with self._tx() as db:
            new = db.execute(
                "INSERT OR IGNORE INTO telemetry_buckets (start_ms, seconds) VALUES (?, ?)",
                (start_ms, seconds),
            ).rowcount
            if new:
                (count,) = db.execute("SELECT count(*) FROM telemetry_buckets").fetchone()
                if count > limit:
                    self._drop_oldest_buckets(db, count - limit)
            db.executemany(_FOLD_READING, rows)
        return start_ms

    def _drop_oldest_buckets(self, db: sqlite3.Connection, excess: int) -> None:
        oldest = db.execute(
            "SELECT start_ms, seconds FROM telemetry_buckets ORDER BY start_ms LIMIT ?", (excess,)
        ).fetchall()
        db.executemany(
            "DELETE FROM telemetry_bucket_readings WHERE start_ms = ? AND seconds = ?", oldest
        )
        db.executemany("DELETE FROM telemetry_buckets WHERE start_ms = ? AND seconds = ?", oldest)
        self.telemetry_buckets_dropped += len(oldest)
        log.warning(
            "telemetry backlog full: dropped the %d oldest bucket(s), %d so far",
            len(oldest),
            self.telemetry_buckets_dropped,
        )

    def kept_buckets(self, after_ms: int, closed_by_ms: int, limit: int) -> list[KeptBucket]:
        """Up to `limit` buckets starting after `after_ms`, oldest first, each with its readings:
        only those ended by `closed_by_ms`, so a bucket is never sent while still filling."""
        with self._lock:
            heads = self._db.execute(
                "SELECT start_ms, seconds FROM telemetry_buckets "
                "WHERE start_ms > ? AND start_ms + seconds * 1000 <= ? ORDER BY start_ms LIMIT ?",
                (after_ms, closed_by_ms, limit),
            ).fetchall()
            buckets = []
            for start_ms, seconds in heads:
                rows = self._db.execute(
                    "SELECT n, min_c, max_c, sum_c, count, faulted, heater_on, setpoint_c "
                    "FROM telemetry_bucket_readings WHERE start_ms = ? AND seconds = ? ORDER BY n",
                    (start_ms, seconds),
                ).fetchall()
                stats = [BucketStats(*row) for row in rows]
                buckets.append(KeptBucket(int(start_ms), float(seconds), stats))
        return buckets

    def forget_bucket(self, start_ms: int, seconds: float) -> None:
        """A bucket the broker acknowledged."""
        with self._tx() as db:
            db.execute(
                "DELETE FROM telemetry_bucket_readings WHERE start_ms = ? AND seconds = ?",
                (start_ms, seconds),
            )
            db.execute(
                "DELETE FROM telemetry_buckets WHERE start_ms = ? AND seconds = ?",
                (start_ms, seconds),
            )

    def kept_bucket_count(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT count(*) FROM telemetry_buckets").fetchone()
        return int(count)

    # -- remembered board state ---------------------------------------------------------------

    def remember_state(self, n: int, boot_id: int, state: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO compartments (n, boot_id, state) VALUES (?, ?, ?) "
                "ON CONFLICT (n) DO UPDATE SET boot_id = excluded.boot_id, state = excluded.state",
                (n, boot_id, json.dumps(state)),
            )

    def remember_setpoint(self, n: int, setpoint_dc: int | None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO compartments (n, setpoint_dc, setpoint_known) VALUES (?, ?, 1) "
                "ON CONFLICT (n) DO UPDATE SET setpoint_dc = excluded.setpoint_dc, "
                "setpoint_known = 1",
                (n, setpoint_dc),
            )

    def remembered(self) -> dict[int, RememberedCompartment]:
        with self._lock:
            rows = self._db.execute(
                "SELECT n, boot_id, state, setpoint_dc, setpoint_known FROM compartments"
            ).fetchall()
        return {
            int(n): RememberedCompartment(
                int(n),
                None if boot_id is None else int(boot_id),
                None if state is None else json.loads(state),
                None if setpoint is None else int(setpoint),
                bool(known),
            )
            for n, boot_id, state, setpoint, known in rows
        }


def _request_record(row: tuple[Any, ...]) -> RequestRecord:
    request_id, command, status, reply, final = row
    return RequestRecord(
        request_id=str(request_id),
        command=json.loads(command),
        status=str(status),
        reply=None if reply is None else json.loads(reply),
        final=bool(final),
    )
