"""Food checks benchmark: a kiosk's food checks run as one against each order's on its own.

Every `LOCKER_FOOD_CHECK_S` (a minute) each held hot order's food is checked: its new readings
are read and folded into its watch, and its clock looked at. At the lunch peak a kiosk holds
several hot orders, and a fleet of thousands of kiosks tens of thousands: checked one by one,
that is hundreds of checks a second, each a transaction of several queries. Since ADR 0104 a
kiosk's checks fall due at one instant (its slot) and the timer loop runs the checks it
claims together: one read of their orders, per kiosk one count and one read of readings.

What runs: a fresh PostgreSQL database migrated with Alembic; `--kiosks` kiosks of 12
compartments with a hot order held in `--held` of them, each compartment with a reading every
10 s for the last 10 minutes, each watch folded up to a minute ago. Then, in turns, each
timed in the same run on the same data (the watches are put back between turns):

- alone (the baseline): every check run on its own, as before ADR 0104 (the timer loop with
  nothing run together: the same handler, for one timer at a time);
- together: the timer loop as it ships, its claims (20 timers) run as one per kiosk.

Each turn makes every check due and runs the timer loop until none is left; it prints the
wall time and this process's CPU per check (the service's side; PostgreSQL's is apart), and
the statements sent.

    python -m bench.foodsafety.food_checks [--kiosks 200] [--held 6] [--turns 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import event, text

from bench.foodsafety.food_check import EVERY_S, hot_readings
from bench.service.telemetry_ingest import create_database, drop_database
from locker_service.config import Settings
from locker_service.context import ServiceContext
from locker_service.main import create_app
from locker_service.sites import service as admin
from locker_service.timer_loop import handlers
from locker_service.timer_loop.loop import TimerLoop
from migrations import upgrade_async

COMPARTMENTS = 12
HISTORY = timedelta(minutes=10)
FOLDED = timedelta(minutes=1)  # each watch folded up to a minute ago: 6 new readings a check


async def seed(ctx: ServiceContext, kiosks: int, held: int, now: datetime) -> int:
    """The kiosks, their held hot orders with a food check each, and the readings: the
    number of orders."""
    async with ctx.sessionmaker() as session, session.begin():
        await admin.create_site(session, "bench", "Bench Tower")
        for k in range(1, kiosks + 1):
            await admin.create_kiosk(session, "bench", f"k{k:05d}", f"Kiosk {k}", "M:12")
    async with ctx.engine.begin() as c:
        merchant = (
            await c.execute(
                text(
                    "INSERT INTO merchants (name, created_at) VALUES ('Bench kitchen', now()) "
                    "RETURNING id"
                )
            )
        ).scalar_one()
        await c.execute(
            text(
                "INSERT INTO orders (id, merchant_id, external_ref, request_hash, site_id,"
                " purchaser_name, purchaser_contact, size, temperature_class, state,"
                " compartment_id, token_salt, pickup_token_hash, code_hash, hold_until,"
                " created_at, assigned_at, deposited_at, ready_at, food_deadline, updated_at,"
                " version) SELECT gen_random_uuid(), :merchant, 'bench-' || c.id, repeat('0', 64),"
                " k.site_id, 'Bench purchaser', 'mailto://b@example.com', 'M', 'hot', 'ready',"
                " c.id, md5(c.id::text), md5('t' || c.id), md5('c' || c.id), :hold_until,"
                " :deposited, :deposited, :deposited, :deposited, :deadline, :deposited, 1"
                " FROM compartments c JOIN kiosks k ON k.id = c.kiosk_id WHERE c.number <= :held"
            ),
            {
                "merchant": merchant,
                "held": held,
                "deposited": now - HISTORY,
                "hold_until": now + timedelta(hours=3),
                "deadline": now + timedelta(hours=3),
            },
        )
        await c.execute(
            text(
                "INSERT INTO timers (kind, due_at, order_id, compartment_id, state, attempts,"
                " created_at) SELECT 'food_check', now(), o.id, o.compartment_id, 'pending', 0,"
                " now() FROM orders o"
            )
        )
        steps = int(HISTORY.total_seconds()) // EVERY_S  # the last at `now`
        await hot_readings(c, now - HISTORY + timedelta(seconds=EVERY_S), COMPARTMENTS, steps)
        await c.execute(text("ANALYZE"))
        return int((await c.execute(text("SELECT count(*) FROM orders"))).scalar_one())


def watch(folded: datetime, readings: int) -> dict[str, object]:
    """A hot order's watch folded up to `folded`: warmed up, never below the floor."""
    return {"last_ts": folded.isoformat(), "readings": readings, "warmed": True}


async def reset(ctx: ServiceContext, now: datetime) -> None:
    """Every check due, every watch folded up to a minute ago, as before the first turn."""
    folded = now - FOLDED
    readings = int((folded - (now - HISTORY)).total_seconds()) // EVERY_S
    async with ctx.engine.begin() as c:
        await c.execute(
            text("UPDATE orders SET food_watch = CAST(:watch AS json)"),
            {"watch": json.dumps(watch(folded, readings))},
        )
        # Each kiosk's checks due at an instant of its own, as at its slot.
        await c.execute(
            text(
                "UPDATE timers t SET due_at = now() - make_interval(secs => 1 + c.kiosk_id"
                " * 0.001), locked_until = NULL, attempts = 0 FROM compartments c"
                " WHERE c.id = t.compartment_id AND t.kind = 'food_check'"
            )
        )


@contextmanager
def alone() -> Iterator[None]:
    """The timer loop with nothing run together: each check is its handler for one timer."""
    batched = dict(handlers.BATCHED)
    handlers.BATCHED.clear()
    try:
        yield
    finally:
        handlers.BATCHED.update(batched)


ONE_SLOT_EACH = "SELECT count(DISTINCT due_at) FROM timers WHERE state = 'pending'"


async def turn(
    ctx: ServiceContext, kiosks: int, orders: int, now: datetime
) -> tuple[float, float, int]:
    """Run every due check: (wall s, CPU s, statements)."""
    await reset(ctx, now)
    statements = 0

    def count(*_: object) -> None:
        nonlocal statements
        statements += 1

    loop = TimerLoop(ctx)
    event.listen(ctx.engine.sync_engine, "before_cursor_execute", count)
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        ran = 0
        while (claimed := await loop.run_due()) > 0:
            ran += claimed
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        event.remove(ctx.engine.sync_engine, "before_cursor_execute", count)
    assert ran == orders, f"{ran} checks ran for {orders} orders"
    async with ctx.engine.connect() as c:
        unsafe = (
            await c.execute(text("SELECT count(*) FROM orders WHERE state <> 'ready'"))
        ).scalar_one()
        slots = (await c.execute(text(ONE_SLOT_EACH))).scalar_one()
    assert unsafe == 0, f"{unsafe} orders were ended: the readings are all hot"
    assert slots == kiosks, f"{slots} instants for {kiosks} kiosks' next checks"
    return wall, cpu, statements


async def run(kiosks: int, held: int, turns: int) -> dict[str, list[tuple[float, float, int]]]:
    url, name = await create_database()
    try:
        await upgrade_async(url)
        settings = Settings(
            environment="test",
            database_url=url,
            secret_key="bench-" + "x" * 40,
            migrate_on_start=False,
            kiosk_link_enabled=False,
            timers_enabled=False,
            notify_enabled=False,
            # A kiosk's next slot is anywhere in the period: a long one, and no check falls
            # due again during a turn.
            food_check_s=30 * 24 * 3600.0,
        )  # type: ignore[call-arg]
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            ctx: ServiceContext = app.state.ctx
            now = datetime.now(UTC)
            orders = await seed(ctx, kiosks, held, now)
            results: dict[str, list[tuple[float, float, int]]] = {"alone": [], "together": []}
            await turn(ctx, kiosks, orders, now)  # warm both the caches and the statement cache
            for _ in range(turns):
                with alone():
                    results["alone"].append(await turn(ctx, kiosks, orders, now))
                results["together"].append(await turn(ctx, kiosks, orders, now))
            return results
    finally:
        await drop_database(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kiosks", type=int, default=200)
    parser.add_argument(
        "--held",
        type=int,
        default=6,
        choices=range(1, COMPARTMENTS + 1),
        metavar=f"1-{COMPARTMENTS}",
        help="hot orders held per kiosk",
    )
    parser.add_argument("--turns", type=int, default=3, choices=range(1, 101), metavar="1-100")
    args = parser.parse_args()
    results = asyncio.run(run(args.kiosks, args.held, args.turns))
    orders = args.kiosks * args.held
    print(
        f"{args.kiosks} kiosks x {COMPARTMENTS} compartments, {args.held} hot orders held each "
        f"({orders} checks a turn, 6 new readings each), {args.turns} turns each, alternating"
    )
    base = statistics.mean(cpu for _, cpu, _ in results["alone"])
    for what, runs in results.items():
        wall = statistics.mean(w for w, _, _ in runs)
        cpu = statistics.mean(c for _, c, _ in runs)
        sent = statistics.mean(s for _, _, s in runs)
        print(
            f"  {what:<8} {wall / orders * 1000:6.2f} ms wall and {cpu / orders * 1000:6.2f} ms"
            f" CPU per check, {sent / orders:5.2f} statements per check"
            f" ({cpu / base:.2f}x the baseline's CPU; {orders / wall:,.0f} checks/s)"
        )
    for what, runs in results.items():
        cpu = statistics.mean(c for _, c, _ in runs) / orders
        print(
            f"  {what:<8} 10,000 kiosks holding as many: {10_000 * args.held / 60 * cpu:5.2f}"
            " cores of the service for their food checks (each order checked once a minute)"
        )


if __name__ == "__main__":
    main()
