"""Keys and tokens over HTTP (ADR 0074).

Admins (operator tokens with the admin role) manage every merchant's, kiosk's and operator's
keys under `/api/v1/admin/keys`; a merchant manages its own API keys under `/api/v1/keys`. A
secret is in the answer that made it, once; lists show each key's prefix, label, dates and
status, never the secret.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from locker_service.api.deps import (
    MERCHANT_KEY_HEADER,
    AdminDep,
    ContextDep,
    IdPath,
    SessionDep,
    current_merchant_key,
)
from locker_service.bounds import INT4_MAX, Text
from locker_service.context import ServiceContext
from locker_service.credentials import rules, store
from locker_service.credentials.rules import Kind
from locker_service.credentials.store import Owner
from locker_service.models import Credential, Merchant, utcnow

admin_router = APIRouter(prefix="/api/v1/admin", tags=["admin"])
merchant_router = APIRouter(prefix="/api/v1", tags=["keys"])

MerchantKeyDep = Annotated[tuple[Merchant, Credential], Depends(current_merchant_key)]
MAX_OVERLAP_HOURS = rules.MAX_OVERLAP.total_seconds() / 3600


class KeyRead(BaseModel):
    id: int
    kind: Kind
    owner_id: int
    prefix: str = Field(description="the key's first characters, to tell keys apart")
    label: str | None
    status: Literal["active", "expired", "revoked"]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    replaced_at: datetime | None = Field(description="rotated then; a key is replaced once")
    last_used_at: datetime | None = Field(description="to the minute; null: never used")


class KeyIssued(BaseModel):
    key: KeyRead
    secret: str = Field(description="the key itself: shown this once, keep it")
    replaces: KeyRead | None = Field(
        None, description="after a rotation: the old key, working until its `expires_at`"
    )


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Kind
    owner_id: int = Field(ge=1, le=INT4_MAX, description="the merchant's, kiosk's or operator's id")
    label: Text | None = Field(None, max_length=200)
    expires_at: AwareDatetime | None = Field(
        None, description="when it stops, with its time zone (default: never)"
    )


class KeyRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap_hours: float = Field(
        rules.DEFAULT_OVERLAP.total_seconds() / 3600,
        ge=0,
        le=MAX_OVERLAP_HOURS,
        description="how long the old key keeps working (0: it stops now)",
    )
    expires_at: AwareDatetime | None = Field(
        None, description="when the new key stops, with its time zone (default: never)"
    )


def read(key: Credential) -> KeyRead:
    owner = store.owner_of(key)
    return KeyRead(
        id=key.id,
        kind=owner.kind,
        owner_id=owner.id,
        prefix=key.prefix,
        label=key.label,
        status=rules.status(key, utcnow()),
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        replaced_at=key.replaced_at,
        last_used_at=key.last_used_at,
    )


def _forget(ctx: ServiceContext, key: Credential) -> None:
    """This replica stops accepting a changed key at once (others within their cache's TTL)."""
    ctx.merchant_keys.forget(key.key_hash)


async def _rotate(
    session: SessionDep, ctx: ServiceContext, key_id: int, body: KeyRotate, owner: Owner | None
) -> KeyIssued:
    issued = await store.rotate(
        session,
        key_id,
        overlap=timedelta(hours=body.overlap_hours),
        expires_at=body.expires_at,
        owner=owner,
    )
    assert issued.replaces is not None
    await session.commit()  # then forgotten: a request meanwhile cannot cache it again
    _forget(ctx, issued.replaces)
    return KeyIssued(key=read(issued.key), secret=issued.secret, replaces=read(issued.replaces))


# -- admins ----------------------------------------------------------------------------------


@admin_router.get("/keys", response_model=list[KeyRead])
async def admin_list(
    _: AdminDep,
    session: SessionDep,
    kind: Kind,
    owner_id: Annotated[int, Query(ge=1, le=INT4_MAX)],
) -> list[KeyRead]:
    """Every key of one merchant, kiosk or operator, oldest first."""
    return [read(k) for k in await store.list_keys(session, Owner(kind, owner_id))]


@admin_router.post("/keys", response_model=KeyIssued, status_code=201)
async def admin_issue(body: KeyCreate, _: AdminDep, session: SessionDep) -> KeyIssued:
    """A new key beside the owner's others; its secret is in this answer only."""
    issued = await store.issue(
        session, Owner(body.kind, body.owner_id), label=body.label, expires_at=body.expires_at
    )
    return KeyIssued(key=read(issued.key), secret=issued.secret)


@admin_router.post("/keys/{key_id}/rotate", response_model=KeyIssued, status_code=201)
async def admin_rotate(
    key_id: IdPath, body: KeyRotate, _: AdminDep, session: SessionDep, ctx: ContextDep
) -> KeyIssued:
    """A new key for the same owner; the old one works `overlap_hours` more, then stops."""
    return await _rotate(session, ctx, key_id, body, None)


@admin_router.post("/keys/{key_id}/revoke", response_model=KeyRead)
async def admin_revoke(
    key_id: IdPath, _: AdminDep, session: SessionDep, ctx: ContextDep
) -> KeyRead:
    """Stop a key now (a merchant's: on every replica within LOCKER_CREDENTIAL_CACHE_S)."""
    key = await store.revoke(session, key_id)
    await session.commit()  # then forgotten: a request meanwhile cannot cache it again
    _forget(ctx, key)
    return read(key)


# -- a merchant's own keys -------------------------------------------------------------------


def _own(caller: tuple[Merchant, Credential]) -> Owner:
    return Owner("merchant", caller[0].id)


@merchant_router.get("/keys", response_model=list[KeyRead], openapi_extra=MERCHANT_KEY_HEADER)
async def merchant_list(caller: MerchantKeyDep, session: SessionDep) -> list[KeyRead]:
    """The calling merchant's API keys, oldest first."""
    return [read(k) for k in await store.list_keys(session, _own(caller))]


@merchant_router.post(
    "/keys/{key_id}/rotate",
    response_model=KeyIssued,
    status_code=201,
    openapi_extra=MERCHANT_KEY_HEADER,
)
async def merchant_rotate(
    key_id: IdPath, body: KeyRotate, caller: MerchantKeyDep, session: SessionDep, ctx: ContextDep
) -> KeyIssued:
    """Replace one of the merchant's keys: deploy the new secret, the old one stops after the
    overlap."""
    return await _rotate(session, ctx, key_id, body, _own(caller))


@merchant_router.post(
    "/keys/{key_id}/revoke", response_model=KeyRead, openapi_extra=MERCHANT_KEY_HEADER
)
async def merchant_revoke(
    key_id: IdPath, caller: MerchantKeyDep, session: SessionDep, ctx: ContextDep
) -> KeyRead:
    """Stop one of the merchant's keys now (the one calling too, if it is that one)."""
    key = await store.revoke(session, key_id, owner=_own(caller))
    await session.commit()  # then forgotten: a request meanwhile cannot cache it again
    _forget(ctx, key)
    return read(key)
