"""Live connections (Server-Sent Events): the operators' dashboard and the kiosk's own screen.

`GET /api/v1/operator/stream`: an operator sees only the sites in scope; a message not tied to a
site (a kiosk the service does not know yet) goes to admins only. `?site_id=` narrows it.

`GET /api/v1/kiosk/stream`: a kiosk screen hears what happened at its own scanner (a QR code
opened compartment 3, or was refused and why), so the person in front of it is told.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from locker_service.api.deps import (
    ContextDep,
    KioskKeyDep,
    OperatorDep,
    OperatorPrincipal,
    key_still_valid,
)
from locker_service.bounds import INT4_MAX
from locker_service.context import ServiceContext
from locker_service.live import LiveMessage
from locker_service.web.stream import event_stream

router = APIRouter(prefix="/api/v1", tags=["operator"])

OPERATOR_KINDS = ("compartment", "telemetry", "event", "kiosk", "order", "alert", "site", "pickup")
FOR_MERCHANTS = frozenset({"kiosk", "site", "telemetry"})  # what carries no order
KINDS_PATTERN = f"^({'|'.join(OPERATOR_KINDS)})(,({'|'.join(OPERATOR_KINDS)}))*$"

SSE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",  # nginx would otherwise buffer the stream and delay every event
}


def visible_to(
    operator: OperatorPrincipal, site_id: int | None, wanted: frozenset[str] | None
) -> Callable[[LiveMessage], bool]:
    """Which live changes an operator's stream carries: its sites' (the one it asked for),
    of the kinds it asked for. An operator for merchants gets none of the kinds that carry any
    merchant's orders (a compartment's, an order's, a pickup's, an event's, an alert's); its
    screens re-read what it may see (ADR 0075)."""
    if operator.merchant_ids is not None:
        wanted = (wanted or FOR_MERCHANTS) & FOR_MERCHANTS

    def visible(message: LiveMessage) -> bool:
        if wanted is not None and message.kind not in wanted:
            return False
        if site_id is not None and message.site_id != site_id:
            return False
        if message.site_id is None:
            return operator.site_ids is None
        return operator.can_see(message.site_id)

    return visible


@router.get(
    "/operator/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "SSE stream"}},
)
async def operator_stream(
    ctx: ContextDep,
    operator: OperatorDep,
    site_id: Annotated[
        int | None, Query(ge=1, le=INT4_MAX, description="only this site's changes")
    ] = None,
    kinds: Annotated[
        str | None,
        Query(
            max_length=200,
            pattern=KINDS_PATTERN,
            description="only these kinds, comma-separated (e.g. `kiosk,alert`)",
        ),
    ] = None,
) -> StreamingResponse:
    """Live changes: `compartment`, `telemetry`, `event`, `kiosk`, `order`, `alert`, `site`,
    `pickup` events.

    Starts with `hello`; `resync` means this client fell behind and should re-read full state.
    A screen that needs only some kinds (the fleet view: `kiosk,alert`) names them, so a large
    fleet's telemetry neither crosses the network nor fills its queue.
    """
    if site_id is not None:
        operator.require_site(site_id)
    visible = visible_to(operator, site_id, frozenset(kinds.split(",")) if kinds else None)

    return _stream(ctx, visible, operator.key_id)


def _stream(
    ctx: ServiceContext, visible: Callable[[LiveMessage], bool], key_id: int | None
) -> StreamingResponse:
    """The stream, ended once the key it was opened with is revoked or expires: checked every
    `credential_cache_s` (at least every second), the bound a cached key has too."""

    async def allowed() -> bool:
        return await key_still_valid(ctx, key_id)

    async def body() -> AsyncIterator[bytes]:
        with ctx.hub.subscription() as subscription:
            async for chunk in event_stream(
                subscription,
                visible,
                still_allowed=allowed,
                recheck_s=max(ctx.settings.credential_cache_s, 1.0),
            ):
                yield chunk

    return StreamingResponse(body(), media_type="text/event-stream", headers=SSE_HEADERS)


# The scanner's outcomes, and a courier's door shut on nothing: nothing else is for a lobby.
KIOSK_STREAM_KINDS = frozenset({"pickup", "dropoff"})


@router.get(
    "/kiosk/stream",
    response_class=StreamingResponse,
    tags=["kiosk"],
    responses={200: {"content": {"text/event-stream": {}}, "description": "SSE stream"}},
)
async def kiosk_stream(ctx: ContextDep, signed_in: KioskKeyDep) -> StreamingResponse:
    """This kiosk's scanner outcomes, `pickup` events `{ok, compartment}` or `{ok, error}`, and
    `dropoff` events `{compartment, outcome: "empty"}` for a courier's door shut on nothing."""
    kiosk, key = signed_in
    code = kiosk.code

    def visible(message: LiveMessage) -> bool:
        return message.kind in KIOSK_STREAM_KINDS and message.data.get("kiosk") == code

    return _stream(ctx, visible, key.id)
