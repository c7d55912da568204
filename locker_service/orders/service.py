"""Merchant-facing order operations: create (idempotent on the merchant's reference), read,
cancel; and what the purchaser's page shows."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic_core
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.api import cursors
from locker_service.compartments import repository as compartments_repository
from locker_service.config import Settings
from locker_service.contacts.channels import ContactRefused
from locker_service.contacts.policy import ContactPolicy, check_contact, contact_urls
from locker_service.context import ServiceContext
from locker_service.errors import Conflict, Forbidden, NotFound, Unprocessable
from locker_service.events import publish_after_commit
from locker_service.foodsafety import uv_dose, watch
from locker_service.foodsafety.profiles import Profile
from locker_service.live import LiveHub
from locker_service.models import Compartment, Kiosk, Merchant, Order, OrderEvent, Site, utcnow
from locker_service.orders import codes, repository
from locker_service.orders.lifecycle import (
    OrderState,
    OrderTrigger,
    ended_after_fault,
    ended_discarded,
    ended_taken_out_on_inspection,
)
from locker_service.orders.schemas import (
    NOTICE_PREFIX,
    KioskCapacity,
    OrderCreate,
    OrderCreated,
    OrderNotice,
    OrderPage,
    OrderRead,
    PurchaserStatus,
    SiteCapacity,
    live_view,
    live_view_of_new,
)
from locker_service.sites import service as sites_service
from locker_service.timers import service as timers
from locker_service.timers.service import TimerKind


def request_hash(body: OrderCreate) -> str:
    # Fields left out stay out (None): an order sent before `cooked_at` existed hashes the same,
    # and one naming English, the language it was always sent in, as one that does not.
    fields = body.model_dump(mode="json", exclude_none=True)
    if fields.get("purchaser_language") == "en":
        del fields["purchaser_language"]
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def purchaser_url(settings: Settings, order: Order) -> str:
    token = codes.pickup_token(settings.secret_key, order.id, order.token_salt)
    return codes.page_url(settings.public_base_url, token, order.purchaser_language)


async def read_model(session: AsyncSession, order: Order) -> OrderRead:
    number = kiosk_code = None
    if order.compartment_id is not None:
        row = (
            await session.execute(
                select(Compartment.number, Kiosk.code)
                .join(Kiosk, Kiosk.id == Compartment.kiosk_id)
                .where(Compartment.id == order.compartment_id)
            )
        ).first()
        if row is not None:
            number, kiosk_code = row[0], row[1]
    return _read(order, number, kiosk_code, await repository.notices(session, order.id))


def _read(
    order: Order, number: int | None, kiosk_code: str | None, notices: list[OrderEvent]
) -> OrderRead:
    return OrderRead(
        id=order.id,
        external_ref=order.external_ref,
        site_id=order.site_id,
        state=order.state,
        size=order.size,
        temperature_class=order.temperature_class,
        purchaser_name=order.purchaser_name,
        purchaser_language=order.purchaser_language,
        compartment_number=number,
        kiosk_code=kiosk_code,
        created_at=order.created_at,
        assigned_at=order.assigned_at,
        deposited_at=order.deposited_at,
        ready_at=order.ready_at,
        picked_up_at=order.picked_up_at,
        hold_until=order.hold_until,
        expires_at=order.expires_at,
        closed_at=order.closed_at,
        failure_reason=order.failure_reason,
        version=order.version,
        cooked_at=order.cooked_at,
        food_deadline=order.food_deadline,
        food_unsafe_at=order.food_unsafe_at,
        notices=[
            OrderNotice(
                kind=e.action.removeprefix(NOTICE_PREFIX),
                at=e.at,
                message=str(e.detail.get("message", "")),
            )
            for e in notices
        ],
    )


def new_order_row(
    settings: Settings, merchant: Merchant, body: OrderCreate, site_id: int, fingerprint: str
) -> tuple[dict[str, Any], str]:
    """Every column of a new order, and its pickup token (shown once, in the create answer)."""
    order_id = uuid.uuid4()
    salt = codes.new_salt()
    token = codes.pickup_token(settings.secret_key, order_id, salt)
    now = utcnow()
    row: dict[str, Any] = {
        "id": order_id,
        "merchant_id": merchant.id,
        "external_ref": body.external_ref,
        "request_hash": fingerprint,
        "site_id": site_id,
        "purchaser_name": body.purchaser_name,
        "purchaser_contact": body.purchaser_contact,
        "purchaser_language": body.purchaser_language or "en",
        "size": body.size,
        "temperature_class": body.temperature_class,
        "state": OrderState.CREATED.value,
        "token_salt": salt,
        "pickup_token_hash": codes.token_hash(token),
        "code_hash": codes.code_hash(
            settings.secret_key, codes.fallback_code(settings.secret_key, token)
        ),
        "created_at": now,
        "updated_at": now,
        "expires_at": now + timedelta(seconds=settings.scaled(settings.dropoff_window_s)),
        "version": 1,
        "cooked_at": body.cooked_at.astimezone(UTC) if body.cooked_at is not None else None,
    }
    return row, token


def created_answer(settings: Settings, row: dict[str, Any], token: str) -> bytes:
    """The JSON answer (`OrderCreated`) for an order just written, from the values written:
    they are valid by construction, so no model validates them again."""
    answer = {
        "id": row["id"],
        "external_ref": row["external_ref"],
        "site_id": row["site_id"],
        "state": row["state"],
        "size": row["size"],
        "temperature_class": row["temperature_class"],
        "purchaser_name": row["purchaser_name"],
        "purchaser_language": row["purchaser_language"],
        "compartment_number": None,
        "kiosk_code": None,
        "created_at": row["created_at"],
        "assigned_at": None,
        "deposited_at": None,
        "ready_at": None,
        "picked_up_at": None,
        "hold_until": None,
        "expires_at": row["expires_at"],
        "closed_at": None,
        "failure_reason": None,
        "version": row["version"],
        "cooked_at": row["cooked_at"],
        "food_deadline": None,
        "food_unsafe_at": None,
        "notices": [],  # a new order has had no fault or expiry yet
        "purchaser_url": codes.page_url(settings.public_base_url, token, row["purchaser_language"]),
    }
    return pydantic_core.to_json(answer)  # the serialiser pydantic's models use


async def create(ctx: ServiceContext, merchant: Merchant, body: OrderCreate) -> tuple[bytes, bool]:
    """The order as JSON (`OrderCreated`) and whether it is new. The same reference with the
    same body answers the same order; with another body it is a conflict. Written by the
    context's `OrderWriter` (group commit), which commits before this returns."""
    settings = ctx.settings
    if contact_urls(body.purchaser_contact) is not None:
        # Refused now rather than failing at the first send: the merchant hears why.
        try:
            await check_contact(body.purchaser_contact, ContactPolicy.of_settings(settings))
        except ContactRefused as exc:
            raise Unprocessable(str(exc), code=exc.code) from None
    fingerprint = request_hash(body)

    async def load_site_id() -> int | None:
        async with ctx.sessionmaker() as session:
            found: int | None = await session.scalar(select(Site.id).where(Site.code == body.site))
            return found

    # A site's code does not change while it takes orders: cached like the caller's key.
    site_id = await ctx.site_ids.get(body.site, load_site_id)
    if site_id is not None and site_id not in await _sites_of(ctx, merchant):
        raise Forbidden(
            f"this merchant may not order into site {body.site!r}: ask the operator to allow it",
            code="site_not_allowed",
        )
    if site_id is not None and body.cooked_at is not None:
        await _check_cooked_at(ctx, site_id, body.cooked_at)
    if site_id is not None:
        row, token = new_order_row(settings, merchant, body, site_id, fingerprint)
        if await ctx.order_writer.write(row, body.site):
            ctx.hub.publish("order", live_view_of_new(row), site_id)
            return created_answer(settings, row, token), True
    # No row written: the merchant used the reference before (or in a racing request, now
    # committed), or the site is unknown.
    async with ctx.sessionmaker() as session:
        existing = await repository.by_merchant_ref(session, merchant.id, body.external_ref)
        if existing is None:
            raise Unprocessable(f"no site {body.site!r}", code="unknown_site")
        if existing.request_hash != fingerprint:
            raise Conflict(
                f"order {body.external_ref!r} exists with different details",
                code="external_ref_conflict",
            )
        view = await read_model(session, existing)
    answer = OrderCreated(**view.model_dump(), purchaser_url=purchaser_url(settings, existing))
    return answer.model_dump_json().encode(), False


COOKED_AT_SKEW_S = 120.0  # a merchant's clock ahead of ours by this much is still believed


def food_time(
    settings: Settings, rules: Profile, cooked_at: datetime, now: datetime
) -> tuple[timedelta, timedelta]:
    """The food's safe time left at `now` under the site's profile, and what a locker needs of
    it: the disinfection cycle and the purchaser's minimum window (ADR 0070; at the drop-off
    again, ADR 0124)."""
    needed = timedelta(
        seconds=settings.scaled(settings.disinfection_s + settings.food_min_pickup_window_s)
    )
    return watch.deadline(rules, cooked_at) - now, needed


async def _check_cooked_at(ctx: ServiceContext, site_id: int, cooked_at: datetime) -> None:
    """Refuse food that would run out of time before its purchaser could collect it: the
    cycle and the minimum pickup window must fit before the site profile's limit."""
    settings = ctx.settings
    async with ctx.sessionmaker() as session:
        rules = await sites_service.food_profile(session, settings, site_id)
    now = utcnow()
    if cooked_at > now + timedelta(seconds=COOKED_AT_SKEW_S):
        raise Unprocessable("cooked_at is in the future", code="cooked_at_in_future")
    left, needed = food_time(settings, rules, cooked_at, now)
    if left < needed:
        raise Unprocessable(
            f"food cooked at {cooked_at.isoformat()} has {max(left.total_seconds(), 0) / 60:.0f} "
            f"min left under the site's {rules.name} profile: it needs "
            f"{needed.total_seconds() / 60:.0f} min (the disinfection cycle and the purchaser's "
            "time to collect)",
            code="too_little_food_safety_time",
        )


async def _sites_of(ctx: ServiceContext, merchant: Merchant) -> frozenset[int]:
    """The sites the merchant may order into, cached as its key is (ADR 0068)."""

    async def load() -> frozenset[int]:
        async with ctx.sessionmaker() as session:
            return await sites_service.merchant_site_ids(session, merchant.id)

    return await ctx.merchant_sites.get(str(merchant.id), load) or frozenset()


async def list_for_merchant(
    session: AsyncSession,
    merchant: Merchant,
    *,
    state: str | None,
    site: str | None,
    ref_prefix: str | None,
    since: datetime | None,
    until: datetime | None,
    cursor: str | None,
    limit: int,
) -> OrderPage:
    """A page of the merchant's own orders, newest first (cursor pagination)."""
    if state is not None and state not in {s.value for s in OrderState}:
        raise Unprocessable(f"unknown order state {state!r}", code="unknown_state")
    since, until = cursors.as_utc(since), cursors.as_utc(until)
    if since is not None and until is not None and until <= since:
        raise Unprocessable("`until` must be after `since`", code="bad_time_range")
    site_id = None
    if site is not None:
        site_id = await session.scalar(select(Site.id).where(Site.code == site))
        if site_id is None:
            raise Unprocessable(f"no site {site!r}", code="unknown_site")
    rows = await repository.page_for_merchant(
        session,
        merchant.id,
        state=state,
        site_id=site_id,
        ref_prefix=ref_prefix,
        since=since,
        until=until,
        after=cursors.decode(cursor, uuid.UUID, "the order list") if cursor else None,
        limit=limit + 1,
    )
    page, more = rows[:limit], len(rows) > limit
    notices = await repository.notices_of(session, [order.id for order, _, _ in page])
    orders = [
        _read(order, number, kiosk_code, notices[order.id]) for order, number, kiosk_code in page
    ]
    last = page[-1][0] if page and more else None
    return OrderPage(
        orders=orders,
        next_cursor=cursors.encode(last.created_at, last.id) if last is not None else None,
    )


async def capacity(
    ctx: ServiceContext, session: AsyncSession, merchant: Merchant, site: str
) -> SiteCapacity:
    """Free compartments at one of the merchant's sites, per kiosk, and in all for the online
    kiosks: what a drop-off there could take now."""
    # The merchant's sites are read in a session of their own (cached): first, before the
    # request's session takes SQLite's write lock with its first statement.
    allowed = await _sites_of(ctx, merchant)
    found = (
        await session.execute(select(Site.id, Site.kill_switch_engaged).where(Site.code == site))
    ).first()
    if found is None:
        raise NotFound(f"no site {site!r}")
    site_id, frozen = found
    if site_id not in allowed:
        raise Forbidden(f"this merchant may not order into site {site!r}", code="site_not_allowed")
    kiosks = (
        await session.execute(
            select(Kiosk.code, Kiosk.online).where(Kiosk.site_id == site_id).order_by(Kiosk.code)
        )
    ).all()
    free = await compartments_repository.free_at_site(session, site_id)
    fits = compartments_repository.fitting_counts
    return SiteCapacity(
        site=site,
        dropoffs_frozen=bool(frozen),
        fits=fits([(size, heated) for _, up, size, heated in free if up]),
        kiosks=[
            KioskCapacity(
                kiosk=code,
                online=bool(online),
                fits=fits([(size, heated) for c, _, size, heated in free if c == code]),
            )
            for code, online in kiosks
        ],
    )


async def get_for_merchant(session: AsyncSession, merchant: Merchant, order_id: uuid.UUID) -> Order:
    order = await repository.get(session, order_id)
    if order is None or order.merchant_id != merchant.id:
        raise NotFound(f"no order {order_id}")
    return order


async def cancel(
    session: AsyncSession, hub: LiveHub | None, merchant: Merchant, order_id: uuid.UUID
) -> Order:
    order = await get_for_merchant(session, merchant, order_id)
    if order.state != OrderState.CREATED:
        raise Conflict(
            f"an order that is {order.state} cannot be cancelled: the food is on its way or in "
            "a compartment",
            code="invalid_transition",
        )
    await repository.transition(
        session,
        order,
        OrderTrigger.CANCEL,
        actor_type="merchant",
        actor_id=str(merchant.id),
        closed_at=utcnow(),
    )
    await timers.cancel(session, [TimerKind.ORDER_EXPIRY], order_id=order.id)
    publish_after_commit(session, hub, "order", live_view(order), order.site_id)
    return order


async def lamp_fault(session: AsyncSession, settings: Settings, compartment_id: int) -> str | None:
    """`uv_lamp_failed` when the compartment's lamp has failed (too many short cycles in a row
    since it was fitted): a fault the board does not know, the service's own (ADR 0073)."""
    compartment = await session.get(Compartment, compartment_id)
    if compartment is None:
        return None
    failed = await compartments_repository.lamp_has_failed(
        session, compartment, settings.uv_max_short_cycles
    )
    return uv_dose.LAMP_FAILED if failed else None


async def purchaser_status(
    session: AsyncSession, settings: Settings, token: str
) -> PurchaserStatus:
    if not codes.looks_like_token(token):
        raise NotFound("no such order")
    order = await repository.by_token_hash(session, codes.token_hash(token))
    if order is None:
        raise NotFound("no such order")
    site = await session.get(Site, order.site_id)
    assert site is not None
    kiosk_name = number = fault = online = None
    if order.compartment_id is not None:
        row = (
            await session.execute(
                select(
                    Compartment.number,
                    Kiosk.name,
                    Compartment.fault,
                    Kiosk.online,
                    Kiosk.last_seen_at,
                )
                .join(Kiosk, Kiosk.id == Compartment.kiosk_id)
                .where(Compartment.id == order.compartment_id)
            )
        ).first()
        if row is not None:
            number, kiosk_name, fault = row[0], row[1], row[2]
            # Offline only once heard going offline: a kiosk never linked (no bridge, or not
            # yet) is not known to be down.
            online = row[3] if row[4] is not None else None
        if fault is None and order.state == OrderState.DISINFECTING:
            fault = await lamp_fault(session, settings, order.compartment_id)
    ready = order.state == OrderState.READY
    # Her codes are shown while they open her door: not while her food is held for staff
    # after a fault she was told of, latched or cleared since (ADR 0128).
    held_by = await repository.held_by_fault(session, order, fault)
    collectable = ready and held_by is None
    shown_fault = held_by or fault
    base = settings.public_base_url.rstrip("/")
    return PurchaserStatus(
        state=order.state,
        external_ref=order.external_ref,
        site_name=site.name,
        kiosk_name=kiosk_name,
        compartment_number=number,
        ready=ready,
        hold_until=order.hold_until,
        fallback_code=codes.fallback_code(settings.secret_key, token) if collectable else None,
        qr_url=f"{base}/p/{token}/qr.png" if collectable else None,
        picked_up_at=order.picked_up_at,
        deposited=order.deposited_at is not None,
        fault=shown_fault is not None,
        fault_code=shown_fault,
        kiosk_online=online,
        food_unsafe=order.food_unsafe_at is not None,
        ended_after_fault=ended_after_fault(order.failure_reason),
        discarded=order.state == OrderState.FAILED and ended_discarded(order.failure_reason),
        taken_out=order.state == OrderState.FAILED
        and ended_taken_out_on_inspection(order.failure_reason),
    )
