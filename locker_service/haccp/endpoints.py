"""Operators' HACCP records: a site's sealed days and their chain, and a day or a range
downloaded as CSV or PDF (the dashboard's HACCP page)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import select

from locker_service.api.deps import ContextDep, IdPath, OperatorDep, SessionDep
from locker_service.context import ServiceContext
from locker_service.errors import NotFound, Unprocessable
from locker_service.haccp import service
from locker_service.haccp.record import check_chain
from locker_service.models import HaccpDay, Site

router = APIRouter(prefix="/api/v1/operator", tags=["operator"])

MAX_RANGE_DAYS = 366  # a year in one download
PDF_MAX_LINES = 60_000  # about 1,200 pages


class SealedDayRead(BaseModel):
    day: date
    seal: str
    prev: str
    lines: int
    sealed_at: datetime


class HaccpDays(BaseModel):
    site_id: int
    site_code: str
    days: list[SealedDayRead]  # newest first
    intact: bool  # every seal matches its day and follows the day before
    problems: list[str]  # each names its day


async def _site(session: SessionDep, principal: OperatorDep, site_id: int) -> Site:
    site = await session.get(Site, site_id)
    if site is None or not principal.can_see(site_id):
        raise NotFound(f"no site {site_id}")
    principal.require_whole_site()  # the record holds every merchant's orders
    return site


@router.get("/sites/{site_id}/haccp", response_model=HaccpDays)
async def haccp_days(
    site_id: IdPath,
    principal: OperatorDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_RANGE_DAYS)] = 62,
) -> HaccpDays:
    """The site's latest sealed days (a day is sealed an hour after it ends in the site's
    time zone), and whether they are intact: each matches its seal and follows the day before
    (`lockerctl haccp verify` checks the whole chain)."""
    site = await _site(session, principal, site_id)
    rows = (
        await session.execute(
            select(HaccpDay.day, HaccpDay.seal, HaccpDay.prev, HaccpDay.lines, HaccpDay.sealed_at)
            .where(HaccpDay.site_id == site_id)
            .order_by(HaccpDay.day.desc())
            .limit(limit)
        )
    ).all()
    first = rows[-1].day if rows else None
    problems = await service.verify_site(session, site_id, first)
    return HaccpDays(
        site_id=site_id,
        site_code=site.code,
        days=[SealedDayRead.model_validate(r, from_attributes=True) for r in rows],
        intact=not problems,
        problems=problems,
    )


@router.get("/sites/{site_id}/haccp/export")
async def haccp_export(
    site_id: IdPath,
    principal: OperatorDep,
    session: SessionDep,
    ctx: ContextDep,
    first: Annotated[date, Query(alias="from", description="the first day, YYYY-MM-DD")],
    last: Annotated[
        date | None, Query(alias="to", description="the last day (default: from)")
    ] = None,
    format: Annotated[Literal["csv", "pdf"], Query()] = "csv",
) -> Response:
    """Sealed days as a CSV `lockerctl haccp verify --file` checks (streamed a day at a
    time), or as a PDF to read (at most `PDF_MAX_LINES` lines of record: a large site's day is
    a million minutes, read that as CSV)."""
    site = await _site(session, principal, site_id)
    last = last or first
    if last < first:
        raise Unprocessable("'to' is before 'from'", code="bad_range")
    if (last - first).days >= MAX_RANGE_DAYS:
        raise Unprocessable(f"at most {MAX_RANGE_DAYS} days at once", code="range_too_long")
    sizes = (
        await session.execute(
            select(HaccpDay.day, HaccpDay.lines)
            .where(HaccpDay.site_id == site_id, HaccpDay.day >= first, HaccpDay.day <= last)
            .order_by(HaccpDay.day)
        )
    ).all()
    if not sizes:
        raise NotFound(
            f"no sealed day of site {site.code} between {first} and {last} (a day is sealed "
            "an hour after it ends)",
            code="not_sealed",
        )
    code = re.sub(r"[^A-Za-z0-9._-]", "_", site.code)  # a header's filename: plain ASCII
    name = f"haccp-{code}-{first}" + (f"-to-{last}" if last != first else "")
    headers = {"Content-Disposition": f'attachment; filename="{name}.{format}"'}
    if format == "pdf":
        lines = sum(size.lines for size in sizes)
        if lines > PDF_MAX_LINES:
            raise Unprocessable(
                f"{lines:,} lines of record are too many for a PDF (at most {PDF_MAX_LINES:,}): "
                "download the CSV, or fewer days",
                code="pdf_too_large",
            )
        days = await service.sealed_days(session, site_id, first, last)
        # The range checked, and its first day against the seal of the day before it.
        first_prev = await service.seal_before(session, site_id, days[0].day)
        problems = check_chain(days, first_prev=first_prev)
        # Imported here: fpdf brings fontTools and numpy, a quarter of the service's start-up
        # time, for a download an operator asks for now and then.
        from locker_service.haccp import pdf

        body = await asyncio.to_thread(pdf.render, site.name, days, problems)
        return Response(body, media_type="application/pdf", headers=headers)
    return StreamingResponse(
        _blocks(ctx, site_id, [size.day for size in sizes]),
        media_type="text/csv; charset=utf-8",
        headers=headers,
    )


async def _blocks(ctx: ServiceContext, site_id: int, days: list[date]) -> AsyncIterator[str]:
    """The days' export blocks, one day read at a time (a large site's day is 100 MB)."""
    for day in days:
        async with ctx.sessionmaker() as session:
            [sealed] = await service.sealed_days(session, site_id, day, day)
        yield sealed.block()
