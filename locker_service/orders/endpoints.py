"""Merchant order endpoints (X-API-Key) and the purchaser's status and QR code."""

from __future__ import annotations

import io
import uuid
from datetime import datetime
from typing import Annotated, Any

import qrcode
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from locker_service.api.deps import (
    MERCHANT_KEY_HEADER,
    ContextDep,
    MerchantDep,
    SessionDep,
    SettingsDep,
    context_of,
    current_merchant,
)
from locker_service.bounds import Text
from locker_service.errors import NotFound
from locker_service.orders import service
from locker_service.orders.schemas import (
    OrderCreate,
    OrderCreated,
    OrderPage,
    OrderRead,
    PurchaserStatus,
    SiteCapacity,
)

router = APIRouter(prefix="/api/v1", tags=["orders"])
purchaser_router = APIRouter(tags=["purchaser"])


# The create body is read by the endpoint itself (below), so OpenAPI is told about it here.
ORDER_CREATE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": OrderCreate.model_json_schema()}},
    }
}


@router.post(
    "/orders",
    response_model=OrderCreated,
    status_code=201,
    responses={200: {"description": "the same order again (idempotent retry)"}},
    openapi_extra={**MERCHANT_KEY_HEADER, **ORDER_CREATE_BODY},
)
async def create_order(request: Request) -> Response:
    # The hottest endpoint resolves no dependency and opens no request session (the order
    # writer commits, ADR 0036). It checks the caller's key first, as every merchant route
    # does, then validates the body straight from its bytes.
    merchant = await current_merchant(request)
    try:
        body = OrderCreate.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    answer, new = await service.create(context_of(request), merchant, body)
    return Response(answer, status_code=201 if new else 200, media_type="application/json")


@router.get("/orders", response_model=OrderPage, openapi_extra=MERCHANT_KEY_HEADER)
async def list_orders(
    merchant: MerchantDep,
    session: SessionDep,
    state: Annotated[Text | None, Query(max_length=20, description="an order state")] = None,
    site: Annotated[Text | None, Query(max_length=64, description="a site's code")] = None,
    ref: Annotated[
        Text | None, Query(max_length=128, description="the start of the merchant's reference")
    ] = None,
    since: Annotated[datetime | None, Query(description="created at or after")] = None,
    until: Annotated[datetime | None, Query(description="created before")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        Text | None, Query(max_length=200, description="the last page's `next_cursor`")
    ] = None,
) -> OrderPage:
    """The merchant's own orders, newest first, one page at a time."""
    return await service.list_for_merchant(
        session,
        merchant,
        state=state,
        site=site,
        ref_prefix=ref,
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )


@router.get(
    "/sites/{site}/capacity", response_model=SiteCapacity, openapi_extra=MERCHANT_KEY_HEADER
)
async def site_capacity(
    site: Annotated[Text, Path(max_length=64, description="the site's code")],
    merchant: MerchantDep,
    session: SessionDep,
    ctx: ContextDep,
) -> SiteCapacity:
    """Before ordering: the free compartments at one of the merchant's sites that fit each
    order size, hot or ambient, per kiosk and in all (online kiosks)."""
    return await service.capacity(ctx, session, merchant, site)


@router.get("/orders/{order_id}", response_model=OrderRead, openapi_extra=MERCHANT_KEY_HEADER)
async def get_order(order_id: uuid.UUID, merchant: MerchantDep, session: SessionDep) -> OrderRead:
    order = await service.get_for_merchant(session, merchant, order_id)
    return await service.read_model(session, order)


@router.post(
    "/orders/{order_id}/cancel", response_model=OrderRead, openapi_extra=MERCHANT_KEY_HEADER
)
async def cancel_order(
    order_id: uuid.UUID, merchant: MerchantDep, session: SessionDep, ctx: ContextDep
) -> OrderRead:
    order = await service.cancel(session, ctx.hub, merchant, order_id)
    return await service.read_model(session, order)


@router.get("/p/{token}", response_model=PurchaserStatus, tags=["purchaser"])
async def purchaser_status(
    token: str, session: SessionDep, settings: SettingsDep
) -> PurchaserStatus:
    """What the purchaser's page shows; the code only while the order is ready."""
    return await service.purchaser_status(session, settings, token)


@purchaser_router.get(
    "/p/{token}/qr.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
async def purchaser_qr(token: str, session: SessionDep, settings: SettingsDep) -> Response:
    """The QR code the kiosk's scanner reads: the bare pickup token, while the order is ready
    and its food not held for staff after a fault (ADR 0128)."""
    status = await service.purchaser_status(session, settings, token)
    if status.qr_url is None:
        raise NotFound("the QR code exists only while the order is ready to be collected")
    return Response(qr_png(token), media_type="image/png", headers={"Cache-Control": "no-store"})


def qr_png(text: str) -> bytes:
    image = qrcode.make(text, border=4, box_size=8)
    buffer = io.BytesIO()
    image.save(buffer)
    return buffer.getvalue()
