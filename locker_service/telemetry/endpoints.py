"""`GET /api/v1/operator/compartments/{id}/temperatures`: a compartment's temperature history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from locker_service.api.deps import IdPath, OperatorDep, SessionDep
from locker_service.models import utcnow
from locker_service.telemetry import service
from locker_service.telemetry.schemas import TemperatureHistory

router = APIRouter(prefix="/api/v1/operator", tags=["operator"])

MAX_HISTORY_HOURS = 24 * 7  # a week: what the dashboard charts; older data is for exports
MAX_POINTS = 5_000  # more than any chart's width in pixels


@router.get("/compartments/{compartment_id}/temperatures")
async def compartment_temperatures(
    compartment_id: IdPath,
    session: SessionDep,
    operator: OperatorDep,
    hours: Annotated[float, Query(gt=0, le=MAX_HISTORY_HOURS)] = 24.0,
    max_points: Annotated[int, Query(ge=10, le=MAX_POINTS)] = 1_000,
) -> TemperatureHistory:
    """Readings of the last `hours`, oldest first, averaged down to at most `max_points`."""
    place = await service.compartment_place(session, compartment_id)
    operator.require_site(place.site_id)
    return await service.history(session, place, hours, max_points, utcnow())
