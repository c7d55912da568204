"""The openings audit: rows to views, the page cursor, and the CSV export (pure but for `page`).

A remote opening's reason is the operator's own words, so CSV cells that a spreadsheet would run
as a formula are written as text.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.api import cursors
from locker_service.audit import repository
from locker_service.audit.schemas import OpeningFilters, OpeningPage, OpeningRead
from locker_service.compartments import openings
from locker_service.context import ServiceContext

# A page big enough for a day of a busy site, small enough to read in one go on a dashboard.
PAGE_MAX = 500
# Rows read per query while exporting: one short transaction each, so a long export holds no
# SQLite write lock and no PostgreSQL snapshot for its whole length (ADR 0033).
EXPORT_BATCH = 1000
CSV_COLUMNS = (
    "id",
    "at",
    "door_opened_at",
    "site",
    "kiosk",
    "compartment",
    "kind",
    "actor",
    "actor_name",
    "how",
    "reason",
    "order_id",
    "order_ref",
    "request_id",
    "purpose",
)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # OWASP's list for CSV injection

OpeningRow = repository.OpeningRow


def encode_cursor(at: datetime, opening_id: int) -> str:
    return cursors.encode(at, opening_id)


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    return cursors.decode(cursor, int, "the openings audit")


def view(row: OpeningRow, names: dict[str, str]) -> OpeningRead:
    opening, compartment, kiosk, site, ref = row
    order_ref: str | None = ref  # NULL for an opening without an order (outer join)
    return OpeningRead(
        id=opening.id,
        at=opening.at,
        door_opened_at=opening.door_opened_at,
        site_id=site.id,
        site_code=site.code,
        kiosk_id=kiosk.id,
        kiosk_code=kiosk.code,
        compartment_id=compartment.id,
        compartment=compartment.number,
        kind=openings.kind_of(opening.who),
        actor=opening.who,
        actor_name=names.get(opening.who),
        how=openings.how_of(opening.who),
        reason=opening.why,
        purpose=openings.Opener.of(opening.who, opening.purpose).purpose,
        order_id=opening.order_id,
        order_ref=order_ref,
        request_id=opening.request_id,
    )


async def actor_names(session: AsyncSession, rows: Sequence[OpeningRow]) -> dict[str, str]:
    """The operators' and couriers' names behind the rows' `who`, keyed by `who`."""
    operator_ids = {i for r in rows if (i := openings.operator_id_of(r[0].who)) is not None}
    courier_codes = {c for r in rows if (c := openings.courier_code_of(r[0].who)) is not None}
    names = {
        openings.operator(i): name
        for i, name in (await repository.operator_names(session, operator_ids)).items()
    }
    couriers = await repository.courier_names(session, courier_codes)
    names.update({openings.courier(code): name for code, name in couriers.items()})
    return names


async def page(
    session: AsyncSession,
    site_ids: frozenset[int] | None,
    filters: OpeningFilters,
    *,
    cursor: str | None,
    limit: int,
) -> OpeningPage:
    after = decode_cursor(cursor) if cursor else None
    rows = await repository.search(session, site_ids, filters, after=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    names = await actor_names(session, rows)
    items = [view(r, names) for r in rows]
    last = items[-1] if items else None
    next_cursor = encode_cursor(last.at, last.id) if more and last else None
    return OpeningPage(items=items, next_cursor=next_cursor)


def _cell(value: object) -> str:
    if value is None:
        return ""
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def csv_lines(items: Iterable[OpeningRead], *, header: bool) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    if header:
        writer.writerow(CSV_COLUMNS)
    for o in items:
        writer.writerow(
            _cell(v)
            for v in (
                o.id,
                o.at,
                o.door_opened_at,
                o.site_code,
                o.kiosk_code,
                o.compartment,
                o.kind.value,
                o.actor,
                o.actor_name,
                o.how,
                o.reason,
                o.order_id,
                o.order_ref,
                o.request_id,
                o.purpose.value if o.purpose else None,
            )
        )
    return out.getvalue()


async def export_csv(
    ctx: ServiceContext, site_ids: frozenset[int] | None, filters: OpeningFilters
) -> AsyncIterator[str]:
    """Every matching opening as CSV, newest first, read in batches of short transactions."""
    yield csv_lines([], header=True)
    cursor: str | None = None
    while True:
        async with ctx.sessionmaker() as session:
            batch = await page(session, site_ids, filters, cursor=cursor, limit=EXPORT_BATCH)
        yield csv_lines(batch.items, header=False)
        if batch.next_cursor is None:
            return
        cursor = batch.next_cursor
