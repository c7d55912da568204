"""HACCP records on both databases: a day with two kiosks sealed, exported as CSV and PDF
(read back with a PDF text extractor), verified, and found out when one byte changes in the
database or in the file."""

from __future__ import annotations

import asyncio
import io
import uuid
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from pypdf import PdfReader
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from locker_service.alerts.service import raise_alert
from locker_service.cli import app
from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.haccp import endpoints as haccp_endpoints
from locker_service.haccp import pdf
from locker_service.haccp import service as haccp
from locker_service.haccp.record import check_chain, rows_of
from locker_service.models import (
    Compartment,
    DisinfectionCycle,
    HaccpDay,
    Kiosk,
    Order,
    OrderEvent,
    Site,
    utcnow,
)
from locker_service.orders import repository as orders
from locker_service.orders.codes import fallback_code
from locker_service.orders.lifecycle import OrderTrigger
from locker_service.pickup import offline as pickup_offline
from locker_service.sites import service as admin
from locker_service.telemetry import repository as telemetry
from locker_service.telemetry.rollups import ReadingRow, minute_of
from locker_service.timer_loop.loop import TimerLoop
from tests.locker_service.world import (
    World,
    compartment,
    dropped_off,
    event,
    make_ready,
    token_of,
)

pytestmark = pytest.mark.slow


async def _second_kiosk(service: ServiceContext, world: World) -> Kiosk:
    async with session_scope(service.sessionmaker) as session:
        made = await admin.create_kiosk(
            session, world.site_code, f"k2-{uuid.uuid4().hex[:6]}", "Hall", "M:2"
        )
        kiosk = await session.get(Kiosk, made.id)
        assert kiosk is not None
        return kiosk


async def _a_day(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> tuple[list[ReadingRow], str, str]:
    """Today at the site: readings of two kiosks (one minute below the floor), an alert an
    operator acted on, an order dropped off with its cycle started. Returns the readings,
    the order's id and the second kiosk's code."""
    second = await _second_kiosk(service, world)
    now = utcnow()
    # All of it on one UTC day, the site's: in the first minutes after midnight the readings
    # start at midnight rather than on the day before.
    start = max(minute_of(now - timedelta(minutes=6)), _midnight(now))
    readings = [
        ReadingRow(kiosk, n, start + timedelta(seconds=30 * i), temp, 65.0, True)
        for kiosk, n in ((world.kiosk_id, 1), (world.kiosk_id, 2), (second.id, 1))
        for i, temp in enumerate([64.8, 65.1, 64.9, 59.4, 62.0, 65.3])
    ]
    await telemetry.insert_readings(service.engine, readings)
    # Its second compartment's sensor faulted: a minute of readings with no temperature.
    await telemetry.insert_readings(
        service.engine, [ReadingRow(second.id, 2, start, None, None, False)]
    )
    async with session_scope(service.sessionmaker) as session:
        c = await session.scalar(
            select(Compartment).where(Compartment.kiosk_id == second.id, Compartment.number == 1)
        )
        assert c is not None
        alert = await raise_alert(
            session,
            kind="below_floor",
            severity="warning",
            message="below 60 °C for 6 min",
            dedupe_key=f"below_floor:{c.id}",
            site_id=world.site_id,
            kiosk_id=second.id,
            compartment_id=c.id,
        )
        alert_id = alert.id
    acted = await app_client.post(
        f"/api/v1/operator/alerts/{alert_id}/corrective-action",
        json={"action": "door seal replaced"},
        headers=world.operator(),
    )
    assert acted.status_code == 200, acted.text
    assert acted.json()["state"] == "acknowledged"
    assert acted.json()["corrective_action"] == "door seal replaced"
    order, _ = await dropped_off(app_client, world, service, ref=f"haccp-{uuid.uuid4().hex[:6]}")
    await TimerLoop(service).run_due()  # the hold cycle starts
    return readings, str(order["id"]), second.code


def _midnight(at: datetime) -> datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


async def _seal_today(service: ServiceContext) -> list[HaccpDay]:
    """Seal the days due once today has ended, and not tomorrow: at 02:00 tomorrow (UTC, the
    test sites' zone), whatever the hour the test runs at."""
    after_today = _midnight(utcnow()) + timedelta(days=1, hours=2)
    assert await haccp.seal_due(service.sessionmaker, service.settings, after_today) >= 1
    assert await haccp.seal_due(service.sessionmaker, service.settings, after_today) == 0
    async with service.sessionmaker() as session:
        return list(await session.scalars(select(HaccpDay).order_by(HaccpDay.day)))


async def test_a_day_of_two_kiosks_is_sealed_exported_and_verified(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, tmp_path: Path
) -> None:
    readings, order_id, second = await _a_day(app_client, world, service)
    sealed = await _seal_today(service)
    assert {d.site_id for d in sealed} == {world.site_id}  # the other site recorded nothing
    rows = [r for d in sealed for r in rows_of(d.text)]

    # Every reading interval: each compartment's minutes, with their lowest and highest.
    minutes = {
        (r[1], r[2], r[3][:16]): (r[4], r[5]) for r in rows if r[0] == "reading" and r[1] != "kiosk"
    }
    for kiosk_code, n in ((world.kiosk_code, 1), (world.kiosk_code, 2), (second, 1)):
        for minute in sorted({minute_of(r.ts) for r in readings}):
            assert (kiosk_code, str(n), minute.isoformat()[:16]) in minutes
    assert ("59.4", "64.9") in minutes.values()  # the minute of 64.9 then 59.4 °C
    summary = [r for r in rows if r[0] == "summary" and r[1] != "kiosk"]
    held = {(world.kiosk_code, "1"), (world.kiosk_code, "2"), (second, "1")}
    assert {(r[1], r[2]) for r in summary} == held | {(second, "2")}
    assert all(r[4:] == ["59.4", "65.3", "1"] for r in summary if (r[1], r[2]) in held)
    [faulted] = [r for r in summary if (r[1], r[2]) == (second, "2")]
    assert faulted[3:] == ["1", "", "", "0"]  # a minute recorded, no temperature in it
    stamp = minute_of(readings[0].ts).isoformat()
    assert ["reading", second, "2", stamp, "", "", "", "", "1"] in rows
    # The excursion with its corrective action, the cycle, the order and its clock.
    [excursion] = [r for r in rows if r[0] == "excursion" and r[1] != "kiosk"]
    assert excursion[1:3] == [second, "1"] and excursion[4] == "below_floor"
    assert excursion[8] == "door seal replaced" and excursion[9].endswith("(Olga)")
    [cycle] = [r for r in rows if r[0] == "cycle" and r[1] != "kiosk"]
    assert cycle[3] == order_id and cycle[4] == "hold"
    [order] = [r for r in rows if r[0] == "order" and r[1] != "ref"]
    assert order[1] == order_id and order[7] != "" and order[9] == "held at the day's end"

    # The operators' view, the CSV and the PDF of the same day.
    listed = await app_client.get(
        f"/api/v1/operator/sites/{world.site_id}/haccp", headers=world.operator()
    )
    assert listed.json()["intact"] is True and len(listed.json()["days"]) == len(sealed)
    day = str(sealed[-1].day)
    first = str(sealed[0].day)
    csv = await app_client.get(
        f"/api/v1/operator/sites/{world.site_id}/haccp/export",
        params={"from": first, "to": day},
        headers=world.operator(),
    )
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert "door seal replaced" in csv.text
    got = await app_client.get(
        f"/api/v1/operator/sites/{world.site_id}/haccp/export",
        params={"from": first, "to": day, "format": "pdf"},
        headers=world.operator(),
    )
    assert got.headers["content-type"] == "application/pdf"
    words = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(got.content)).pages)
    for d in sealed:
        assert d.seal in words
    assert "Chain intact when exported." in words and "BROKEN" not in words
    lines = set(words.splitlines())
    for r in rows:  # every minute's row, as drawn: one line of the PDF each
        if r[0] == "reading" and r[1] != "kiosk":
            assert " ".join(c or "-" for c in r[1:]) in lines, r  # "-": no temperature
    assert "door seal replaced" in words and "below_floor" in words and order_id[:8] in words
    # Nobody else's site, and nothing not sealed yet.
    stranger = {"Authorization": f"Bearer {world.other_operator_token}"}
    hidden = await app_client.get(f"/api/v1/operator/sites/{world.site_id}/haccp", headers=stranger)
    assert hidden.status_code == 404
    later = await app_client.get(
        f"/api/v1/operator/sites/{world.site_id}/haccp/export",
        params={"from": str(sealed[-1].day + timedelta(days=5))},
        headers=world.operator(),
    )
    assert later.status_code == 404 and later.json()["error"] == "not_sealed"
    backwards = await app_client.get(
        f"/api/v1/operator/sites/{world.site_id}/haccp/export",
        params={"from": day, "to": str(sealed[0].day - timedelta(days=1))},
        headers=world.operator(),
    )
    assert backwards.status_code == 422 and backwards.json()["error"] == "bad_range"

    # lockerctl: export, verify the file and the database.
    url = service.settings.database_url
    runner = CliRunner()

    def ctl(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, [*args, "--database-url", url])
        return result.exit_code, result.output

    exported = tmp_path / "day.csv"
    code, out = await asyncio.to_thread(
        ctl,
        "haccp",
        "export",
        "--site",
        world.site_code,
        "--from",
        first,
        "--to",
        day,
        "--out",
        str(exported),
    )
    assert code == 0, out
    assert exported.read_text(encoding="utf-8") == csv.text
    code, out = await asyncio.to_thread(ctl, "haccp", "verify", "--file", str(exported))
    assert code == 0 and "intact" in out, out
    code, out = await asyncio.to_thread(ctl, "haccp", "verify")
    assert code == 0 and "intact" in out, out

    # One byte changed in the file: named.
    body = exported.read_text(encoding="utf-8")
    at = body.rindex("door seal replaced")
    exported.write_text(body[:at] + "D" + body[at + 1 :], encoding="utf-8")
    code, out = await asyncio.to_thread(ctl, "haccp", "verify", "--file", str(exported))
    assert code == 1 and f"{day}: its record does not match its seal" in out, out


async def test_the_database_refuses_to_change_a_sealed_day_and_a_forced_change_is_named(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    await _a_day(app_client, world, service)
    sealed = await _seal_today(service)
    target = sealed[-1]
    with pytest.raises(DBAPIError, match="append-only"):
        async with session_scope(service.sessionmaker) as session:
            await session.execute(
                update(HaccpDay).where(HaccpDay.id == target.id).values(text=target.text + "x")
            )
    with pytest.raises(DBAPIError, match="append-only"):
        async with session_scope(service.sessionmaker) as session:
            await session.execute(text("DELETE FROM haccp_days"))
    if service.engine.dialect.name == "postgresql":  # SQLite has no TRUNCATE
        with pytest.raises(DBAPIError, match="append-only"):
            async with session_scope(service.sessionmaker) as session:
                await session.execute(text("TRUNCATE haccp_days"))

    # Someone with the database owner's rights forces it: one byte of one reading.
    changed = target.text.replace("59.4", "61.4", 1)
    assert changed != target.text
    async with service.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text("ALTER TABLE haccp_days DISABLE TRIGGER USER"))
        else:
            await connection.execute(text("DROP TRIGGER haccp_days_no_update"))
        await connection.execute(
            update(HaccpDay).where(HaccpDay.id == target.id).values(text=changed)
        )
    url = service.settings.database_url
    result = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["haccp", "verify", "--site", world.site_code, "--database-url", url],
    )
    assert result.exit_code == 1, result.output
    assert (
        f"site {world.site_code}: {target.day}: its record does not match its seal" in result.output
    )
    listed = await app_client.get(
        f"/api/v1/operator/sites/{world.site_id}/haccp", headers=world.operator()
    )
    assert listed.json()["intact"] is False
    got = await app_client.get(
        f"/api/v1/operator/sites/{world.site_id}/haccp/export",
        params={"from": str(sealed[0].day), "to": str(target.day), "format": "pdf"},
        headers=world.operator(),
    )
    words = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(got.content)).pages)
    assert "CHAIN BROKEN when exported" in words and f"{target.day}: its record" in words


async def test_a_file_sealed_again_after_a_change_is_caught_against_the_database(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, tmp_path: Path
) -> None:
    from locker_service.haccp.record import SealedDay, export_text, parse_export, seal

    await _a_day(app_client, world, service)
    sealed = await _seal_today(service)
    async with service.sessionmaker() as session:
        days = await haccp.sealed_days(session, world.site_id)
    forged, prev = [], days[0].prev
    for d in days:  # a careful forger: every seal computed again
        body = d.text.replace("59.4", "63.4")
        forged.append(SealedDay(d.day, body, prev, seal(prev, body)))
        prev = forged[-1].seal
    path = tmp_path / "forged.csv"
    path.write_text(export_text(forged), encoding="utf-8")
    assert parse_export(path.read_text(encoding="utf-8")) == forged
    url = service.settings.database_url
    alone = await asyncio.to_thread(
        CliRunner().invoke, app, ["haccp", "verify", "--file", str(path)]
    )
    assert alone.exit_code == 0, alone.output  # its own seals agree: only the database knows
    against = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["haccp", "verify", "--file", str(path), "--site", world.site_code, "--database-url", url],
    )
    assert against.exit_code == 1
    assert f"{sealed[-1].day}: not the day sealed in the database" in against.output


async def test_a_cycle_and_a_corrective_action_need_an_operator_who_may_act(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    async with session_scope(service.sessionmaker) as session:
        alert = await raise_alert(
            session,
            kind="below_floor",
            severity="warning",
            message="below 60 °C",
            dedupe_key=f"below_floor:x{uuid.uuid4().hex}",
            site_id=world.site_id,
        )
        alert_id = alert.id
    url = f"/api/v1/operator/alerts/{alert_id}/corrective-action"
    viewer = {"Authorization": f"Bearer {world.viewer_token}"}
    refused = await app_client.post(url, json={"action": "heater replaced"}, headers=viewer)
    assert refused.status_code == 403
    empty = await app_client.post(url, json={"action": ""}, headers=world.operator())
    assert empty.status_code == 422
    first = await app_client.post(url, json={"action": "heater reset"}, headers=world.operator())
    again = await app_client.post(url, json={"action": "heater replaced"}, headers=world.operator())
    assert first.status_code == again.status_code == 200
    assert again.json()["corrective_action"] == "heater replaced (replaces: heater reset)"
    async with service.sessionmaker() as session:
        assert await session.scalar(select(DisinfectionCycle.id)) is None  # nothing else made


async def test_lockerctl_seals_the_days_due_and_an_empty_day_keeps_the_chain_whole(
    world: World, service: ServiceContext
) -> None:
    """Readings three days ago, nothing since: that day and the empty days after it up to
    the last one due are sealed, chained without a hole; a second run seals nothing."""
    start = (utcnow() - timedelta(days=3)).replace(hour=12, minute=0, second=0, microsecond=0)
    await telemetry.insert_readings(
        service.engine, [ReadingRow(world.kiosk_id, 1, start, 64.5, 65.0, True)]
    )
    url = service.settings.database_url

    def seal() -> str:
        result = CliRunner().invoke(app, ["haccp", "seal", "--database-url", url])
        assert result.exit_code == 0, result.output
        return result.output

    assert "sealed" in await asyncio.to_thread(seal)
    async with service.sessionmaker() as session:
        days = await haccp.sealed_days(session, world.site_id)
        assert await haccp.verify_site(session, world.site_id) == []
    last_due = haccp.last_due_day(ZoneInfo("UTC"), utcnow())
    assert [d.day for d in days] == [
        start.date() + timedelta(days=i) for i in range((last_due - start.date()).days + 1)
    ]
    assert f"reading,{world.kiosk_code},1," in days[0].text
    assert all("reading," not in d.text for d in days[1:])  # empty days, sealed all the same
    assert "sealed 0 day(s)" in await asyncio.to_thread(seal)


async def test_a_pdf_too_long_to_read_is_refused_for_the_csv(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _a_day(app_client, world, service)
    sealed = await _seal_today(service)
    monkeypatch.setattr(haccp_endpoints, "PDF_MAX_LINES", sealed[-1].lines - 1)
    params = {"from": str(sealed[-1].day), "format": "pdf"}
    url = f"/api/v1/operator/sites/{world.site_id}/haccp/export"
    refused = await app_client.get(url, params=params, headers=world.operator())
    assert refused.status_code == 422 and refused.json()["error"] == "pdf_too_large"
    assert "download the CSV" in refused.json()["message"]
    csv = await app_client.get(url, params={"from": params["from"]}, headers=world.operator())
    assert csv.status_code == 200 and csv.text.count("#day,") == 1


async def test_the_running_service_seals_the_days_due(
    database_url: str,
) -> None:
    """The timers' replica seals at start and every ten minutes (on PostgreSQL in a thread
    of its own, off the service's loop)."""
    from locker_service.main import create_app
    from tests.locker_service.conftest import make_settings
    from tests.locker_service.world import seed

    app = create_app(make_settings(database_url, timers_enabled=True))
    async with app.router.lifespan_context(app):
        ctx: ServiceContext = app.state.ctx
        world = await seed(ctx.sessionmaker, ctx.settings)
        start = (utcnow() - timedelta(days=2)).replace(hour=9, minute=0, second=0, microsecond=0)
        await telemetry.insert_readings(
            ctx.engine, [ReadingRow(world.kiosk_id, 1, start, 64.5, 65.0, True)]
        )
        await app.state.runtime.haccp.seal_now()  # the loop's round, now (or its first did)
        async with ctx.sessionmaker() as session:
            days = await haccp.sealed_days(session, world.site_id)
        assert (
            days
            and days[0].day == start.date()
            and f"reading,{world.kiosk_code},1," in days[0].text
        )


async def test_an_excursion_and_an_order_across_midnight_are_on_every_day_they_span(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """A site in Shanghai (UTC+8): its days run from 16:00 UTC. An alert raised one evening
    and resolved the next morning, and an order held for three days, are on each day, with
    what that day knew of them; the days are local."""
    async with session_scope(service.sessionmaker) as session:
        await session.execute(
            update(Site).where(Site.id == world.site_id).values(timezone="Asia/Shanghai")
        )
    shanghai = ZoneInfo("Asia/Shanghai")
    today = utcnow().astimezone(shanghai).date()
    d0 = today - timedelta(days=4)

    def at(day: date, hour: int) -> datetime:
        return datetime.combine(day, time(hour), shanghai).astimezone(UTC)

    order, _ = await dropped_off(app_client, world, service, ref=f"night-{uuid.uuid4().hex[:6]}")
    async with session_scope(service.sessionmaker) as session:
        await session.execute(
            update(Order)
            .where(Order.id == uuid.UUID(str(order["id"])))
            .values(deposited_at=at(d0, 22))
        )
        alert = await raise_alert(
            session,
            kind="below_floor",
            severity="critical",
            message="below 60 °C overnight",
            dedupe_key=f"below_floor:night-{uuid.uuid4().hex}",
            site_id=world.site_id,
        )
        alert.raised_at, alert.resolved_at, alert.state = (
            at(d0, 23),
            at(d0 + timedelta(days=1), 1),
            "resolved",
        )
    await telemetry.insert_readings(
        service.engine, [ReadingRow(world.kiosk_id, 1, at(d0, 23), 58.0, 65.0, True)]
    )
    assert await haccp.seal_due(service.sessionmaker, service.settings, utcnow()) >= 3
    async with service.sessionmaker() as session:
        days = {d.day: rows_of(d.text) for d in await haccp.sealed_days(session, world.site_id)}
    first, second, third = (days[d0 + timedelta(days=i)] for i in range(3))
    # 23:00 in Shanghai is 15:00 UTC: the reading is on d0, stamped in local time.
    assert [r[3] for r in first if r[0] == "reading" and r[1] != "kiosk"] == [
        f"{d0}T23:00:00+08:00"
    ]
    [night] = [r for r in first if r[0] == "excursion" and r[1] != "kiosk"]
    assert night[7] == ""  # not resolved by the end of d0
    [morning] = [r for r in second if r[0] == "excursion" and r[1] != "kiosk"]
    assert morning[7] == f"{d0 + timedelta(days=1)}T01:00:00+08:00"
    assert not [r for r in third if r[0] == "excursion" and r[1] != "kiosk"]
    for rows in (first, second, third):  # held on each day, still held at each day's end
        [held] = [r for r in rows if r[0] == "order" and r[1] != "ref"]
        assert held[1] == str(order["id"]) and held[9] == "held at the day's end"


async def test_an_outcome_corrected_after_its_day_was_sealed_is_recorded_on_the_day_it_was_made(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """An order expired on d0 and d0 was sealed saying so; on d1 its kiosk reported that she
    had collected it before the end, and the order was corrected to picked up (ADR 0112). d0
    is never written again: d1 records the correction, each value changed with what the record
    said and says now, and the chain stays whole (ADR 0118)."""
    async with session_scope(service.sessionmaker) as session:
        await session.execute(update(Site).where(Site.id == world.site_id).values(timezone="UTC"))
    d0 = utcnow().date() - timedelta(days=3)

    def at(day: date, hour: int, minute: int = 0) -> datetime:
        return datetime.combine(day, time(hour, minute), UTC)

    made, _ = await make_ready(app_client, world, service, ref=f"late-{uuid.uuid4().hex[:6]}")
    order_id = uuid.UUID(str(made["id"]))
    async with session_scope(service.sessionmaker) as session:
        await session.execute(
            update(Order)
            .where(Order.id == order_id)
            .values(
                deposited_at=at(d0, 11),
                ready_at=at(d0, 11, 30),
                state="expired",
                closed_at=at(d0, 15),
                failure_reason="not collected in time",
                food_unsafe_at=at(d0, 14),
            )
        )
    # d0 sealed an hour after it ended: the order expired, for all anyone knew.
    assert await haccp.seal_due(service.sessionmaker, service.settings, at(d0 + timedelta(1), 2))
    async with session_scope(service.sessionmaker) as session:
        order = await session.get(Order, order_id)
        assert order is not None
        collected, door = at(d0, 13, 50), at(d0, 13, 51)
        await orders.transition(
            session,
            order,
            OrderTrigger.PICKED_UP_BEFORE_END,
            actor_type="purchaser",
            actor_id="purchaser:qr_offline",
            detail=pickup_offline.correction(order, collected, door),
            picked_up_at=door,
            closed_at=None,
            failure_reason=None,
            food_unsafe_at=None,
        )
    async with session_scope(service.sessionmaker) as session:  # as the kiosk told us on d1
        await session.execute(
            update(OrderEvent)
            .where(OrderEvent.order_id == order_id, OrderEvent.action == "picked_up_before_end")
            .values(at=at(d0 + timedelta(1), 9))
        )
        # An odd event (a time that is none) on d2: its row says less, and the day is sealed.
        session.add(
            OrderEvent(
                order_id=order_id,
                at=at(d0 + timedelta(2), 9),
                actor_type="purchaser",
                action="picked_up_before_end",
                detail={"expired_at": "yesterday", "collected_at": 5},
            )
        )
    # d1 and d2 sealed at 02:00 on d3 (today), whatever the hour the test runs at: in the
    # first hour after midnight, d2 is not due yet by the wall's clock.
    assert (
        await haccp.seal_due(service.sessionmaker, service.settings, at(d0 + timedelta(3), 2)) == 2
    )
    async with service.sessionmaker() as session:
        sealed = await haccp.sealed_days(session, world.site_id)
    days = {d.day: rows_of(d.text) for d in sealed}
    assert check_chain(sealed) == []

    [was] = [r for r in days[d0] if r[0] == "order" and r[1] == str(order_id)]
    assert was[8:12] == [  # as sealed
        f"{d0}T15:00:00+00:00",
        "expired",
        f"{d0}T14:00:00+00:00",
        "not collected in time",
    ]
    corrections = [
        r[5:8] for r in days[d0 + timedelta(1)] if r[0] == "correction" and r[1] != "order"
    ]
    assert corrections == [
        ["outcome", "expired", "picked_up"],
        ["ended_at", f"{d0}T15:00:00+00:00", f"{d0}T13:51:00+00:00"],
        ["reason", "not collected in time", ""],
        ["food_unsafe_at", f"{d0}T14:00:00+00:00", ""],
    ]
    [row, *_] = [r for r in days[d0 + timedelta(1)] if r[0] == "correction" and r[1] != "order"]
    assert row[1:3] == [str(order_id), world.kiosk_code] and row[3].isdigit()
    assert row[4] == f"{d0 + timedelta(1)}T09:00:00+00:00"
    assert f"her code was used at {d0}T13:50:00+00:00, before the order's end" in row[8]
    odd = [r[5:8] for r in days[d0 + timedelta(2)] if r[0] == "correction" and r[1] != "order"]
    assert odd == [["outcome", "expired", "picked_up"], ["ended_at", "", f"{d0}T13:51:00+00:00"]]
    for day, rows in days.items():  # on the day it was made and no other
        if day not in (d0 + timedelta(1), d0 + timedelta(2)):
            assert not [r for r in rows if r[0] == "correction"], day
    # The PDF of d1 draws it.
    drawn = pdf.render("Site", [d for d in sealed if d.day == d0 + timedelta(1)])
    words = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(drawn)).pages)
    assert "Outcomes corrected this day" in words and str(order_id)[:8] in words


async def test_food_staff_took_out_to_discard_is_on_the_day_s_discards(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """A discard is on the record whether the operator said so (ADR 0120) or the service
    read it from a heater fault (ADR 0047), once per order however many openings it took;
    food an opening to discard left in, and she collected, is not. Food taken out during a
    look in, which was to leave it in, is on it too (ADR 0129): nobody said it went to her."""
    ids = {}

    async def open_(c_id: int, purpose: str | None, why: str) -> None:
        opened = await app_client.post(
            f"/api/v1/operator/compartments/{c_id}/open",
            json={"reason": why, **({"purpose": purpose} if purpose else {})},
            headers=world.operator(),
        )
        assert opened.status_code == 200, opened.text

    for purpose in ("discard", None, "kept", "inspect"):
        made, n = await make_ready(app_client, world, service, ref=f"D-{purpose}", size="S")
        ids[purpose] = str(made["id"])
        c = await compartment(service, world, n)
        if purpose is None:
            await event(service, world, "fault_raised", n, fault="heating_watchdog")
            await open_(c.id, None, "a look first")  # shut again with the food in
            for kind in ("door_opened", "door_closed"):
                await event(service, world, kind, n)
        if purpose == "kept":  # opened to discard, shut with the food in; she collects it
            await open_(c.id, "discard", "why kept")
            for kind in ("door_opened", "door_closed"):
                await event(service, world, kind, n)
            code = fallback_code(service.settings.secret_key, token_of(made))
            picked = await app_client.post(
                "/api/v1/kiosk/pickup", json={"code": code}, headers=world.kiosk()
            )
            assert picked.status_code == 200, picked.text
        else:
            await open_(c.id, purpose, f"why {purpose}")
        for kind in ("door_opened", "item_removed", "door_closed"):
            await event(service, world, kind, n)
    sealed = await _seal_today(service)
    rows = [r for d in sealed for r in rows_of(d.text) if r[0] == "discard" and r[1] != "kiosk"]
    assert sorted(r[3] for r in rows) == sorted([ids["discard"], ids[None], ids["inspect"]]), rows
    assert {r[6] for r in rows} == {"why discard", "why None", "why inspect"}
