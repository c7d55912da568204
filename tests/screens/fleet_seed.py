"""A fleet of 10,000 kiosks x 12 compartments in PostgreSQL, written in a few statements.

Shared by the fleet view's browser test and its benchmark. Rows go in with `INSERT ... SELECT
generate_series` (a second or two for 120,000 compartments), not through the ORM. Every kiosk is
online and calm but four, one per kind of trouble, so the troubled ones' places are known.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg
from sqlalchemy.engine import make_url

from locker_service.security import hash_token, new_token

SITES = 100
KIOSKS = 10_000
COMPARTMENTS = 12
# One kiosk per kind of trouble, numbered within the fleet; listed in the order the fleet
# view must rank them: offline, a compartment in fault, food below the floor, an open alert.
OFFLINE, FAULTY, WARM, ALERTING = 7777, 4242, 9001, 555


def kiosk_name(number: int) -> str:
    return f"Kiosk {number:05d}"


def kiosk_code(number: int) -> str:
    return f"fleet-k{number:05d}"


@dataclass(frozen=True)
class Fleet:
    operator_token: str
    troubled: list[str]  # names, worst first


async def _seed(database_url: str, token: str) -> None:
    url = make_url(database_url)
    conn = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, database=url.database
    )
    try:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO sites (code, name, timezone, kill_switch_engaged, created_at) "
                "SELECT 'fleet-s' || g, 'Site ' || lpad(g::text, 3, '0'), 'UTC', false, now() "
                "FROM generate_series(1, $1::int) g",
                SITES,
            )
            await conn.execute(
                "INSERT INTO kiosks (site_id, code, name, online, last_seen_at, created_at) "
                "SELECT s.id, 'fleet-k' || lpad(g::text, 5, '0'),"
                " 'Kiosk ' || lpad(g::text, 5, '0'), g <> $2, now(), now() "
                "FROM generate_series(1, $1::int) g "
                "JOIN sites s ON s.code = 'fleet-s' || ((g - 1) % $3 + 1)",
                KIOSKS,
                OFFLINE,
                SITES,
            )
            await conn.execute(
                "INSERT INTO compartments (kiosk_id, number, size, heated, state, door_open,"
                " lock_released, occupied, heater_on, uv_on, temp_c, disinfect_remaining_s,"
                " version) "
                "SELECT k.id, n, (ARRAY['S', 'M', 'L'])[n % 3 + 1], true, 'available', false,"
                " false, false, false, false, 21.0, 0, 1 "
                "FROM kiosks k CROSS JOIN generate_series(1, $1::int) n",
                COMPARTMENTS,
            )
            await conn.execute(
                "UPDATE compartments SET fault = 'sensor_open' FROM kiosks k "
                "WHERE k.id = compartments.kiosk_id AND k.code = $1 AND number = 3",
                kiosk_code(FAULTY),
            )
            await conn.execute(
                "UPDATE compartments SET state = 'awaiting_pickup', occupied = true,"
                " setpoint_c = 65.0, temp_c = 52.5 FROM kiosks k "
                "WHERE k.id = compartments.kiosk_id AND k.code = $1 AND number = 5",
                kiosk_code(WARM),
            )
            for number, kind, severity in (
                (OFFLINE, "kiosk_offline", "critical"),
                (ALERTING, "door_forced", "warning"),
            ):
                await conn.execute(
                    "INSERT INTO alerts (kind, site_id, kiosk_id, severity, message, dedupe_key,"
                    " state, raised_at, last_raised_at, count) "
                    "SELECT $2::text, k.site_id, k.id, $3::text, k.code || ': ' || $2::text,"
                    " $2::text || ':' || k.id,"
                    " 'open', now(), now(), 1 FROM kiosks k WHERE k.code = $1",
                    kiosk_code(number),
                    kind,
                    severity,
                )
            await conn.execute(
                "WITH admin AS (INSERT INTO operators (name, role, created_at) "
                "VALUES ('Fleet admin', 'admin', now()) RETURNING id) "
                "INSERT INTO credentials (operator_id, key_hash, prefix, created_at) "
                "SELECT id, $1, $2, now() FROM admin",
                hash_token(token),
                token[:10],
            )
        await conn.execute("ANALYZE")  # fresh statistics, as a database in use has
    finally:
        await conn.close()


def seed_fleet(database_url: str) -> Fleet:
    """Write the fleet into a migrated, empty PostgreSQL database."""
    token = new_token("ot")
    asyncio.run(_seed(database_url, token))
    return Fleet(token, [kiosk_name(n) for n in (OFFLINE, FAULTY, WARM, ALERTING)])
