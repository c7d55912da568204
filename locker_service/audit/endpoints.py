"""The openings audit for operators (Bearer operator token, scoped to their sites): search, CSV."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from locker_service.api import cursors
from locker_service.api.deps import ContextDep, OperatorDep, OperatorPrincipal, SessionDep
from locker_service.audit import service
from locker_service.audit.schemas import OpeningFilters, OpeningPage
from locker_service.compartments.openings import OpeningKind
from locker_service.errors import NotFound, Unprocessable
from locker_service.models import Kiosk

router = APIRouter(prefix="/api/v1/operator", tags=["operator"])


async def _filters(
    principal: OperatorPrincipal,
    session: SessionDep,
    site_id: int | None,
    kiosk_id: int | None,
    compartment: int | None,
    order: str | None,
    actor: str | None,
    kind: OpeningKind | None,
    since: datetime | None,
    until: datetime | None,
) -> OpeningFilters:
    if site_id is not None:
        principal.require_site(site_id)
    if kiosk_id is not None:
        kiosk = await session.get(Kiosk, kiosk_id)
        if kiosk is None:
            raise NotFound(f"no kiosk {kiosk_id}")
        principal.require_site(kiosk.site_id)
    since, until = cursors.as_utc(since), cursors.as_utc(until)
    if since is not None and until is not None and until <= since:
        raise Unprocessable("`until` must be after `since`", code="bad_time_range")
    return OpeningFilters(
        site_id=site_id,
        kiosk_id=kiosk_id,
        compartment=compartment,
        order=order or None,
        actor=actor or None,
        kind=kind,
        since=since,
        until=until,
        merchant_ids=principal.merchant_ids,
    )


SiteQ = Annotated[int | None, Query(description="a site's id")]
KioskQ = Annotated[int | None, Query(description="a kiosk's id")]
CompartmentQ = Annotated[
    int | None, Query(ge=1, le=999, description="a compartment's number within its kiosk")
]
OrderQ = Annotated[
    str | None, Query(max_length=128, description="an order's id, or part of its reference")
]
ActorQ = Annotated[
    str | None,
    Query(
        max_length=100,
        description="a role (courier, purchaser, operator, unknown) or one actor (operator:7)",
    ),
]
KindQ = Annotated[OpeningKind | None, Query()]
SinceQ = Annotated[datetime | None, Query(description="from this time (inclusive)")]
UntilQ = Annotated[datetime | None, Query(description="before this time")]


@router.get("/openings", response_model=OpeningPage)
async def openings(
    principal: OperatorDep,
    session: SessionDep,
    site_id: SiteQ = None,
    kiosk_id: KioskQ = None,
    compartment: CompartmentQ = None,
    order: OrderQ = None,
    actor: ActorQ = None,
    kind: KindQ = None,
    since: SinceQ = None,
    until: UntilQ = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=service.PAGE_MAX)] = 100,
) -> OpeningPage:
    """Every door opening in the operator's sites, newest first: who, how, why, when."""
    filters = await _filters(
        principal, session, site_id, kiosk_id, compartment, order, actor, kind, since, until
    )
    return await service.page(session, principal.site_ids, filters, cursor=cursor, limit=limit)


@router.get("/openings.csv", response_class=StreamingResponse)
async def openings_csv(
    principal: OperatorDep,
    session: SessionDep,
    ctx: ContextDep,
    site_id: SiteQ = None,
    kiosk_id: KioskQ = None,
    compartment: CompartmentQ = None,
    order: OrderQ = None,
    actor: ActorQ = None,
    kind: KindQ = None,
    since: SinceQ = None,
    until: UntilQ = None,
) -> StreamingResponse:
    """The same search, every matching opening, as CSV (UTF-8, RFC 4180)."""
    filters = await _filters(
        principal, session, site_id, kiosk_id, compartment, order, actor, kind, since, until
    )
    return StreamingResponse(
        service.export_csv(ctx, principal.site_ids, filters),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="door-openings.csv"',
            "Cache-Control": "no-store",
        },
    )
