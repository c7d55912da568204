"""FastAPI dependencies as `Annotated` aliases: the session, settings, and who is calling."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Request
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.bounds import INT4_MAX
from locker_service.config import Settings
from locker_service.context import ServiceContext
from locker_service.credentials import rules, store
from locker_service.credentials.rules import Kind
from locker_service.errors import Forbidden, Unauthorized
from locker_service.models import (
    Credential,
    Kiosk,
    Merchant,
    Operator,
    merchant_sites,
    operator_merchants,
    operator_sites,
    utcnow,
)
from locker_service.security import hash_token

log = logging.getLogger(__name__)


def context_of(request: Request) -> ServiceContext:
    ctx = request.app.state.ctx
    assert isinstance(ctx, ServiceContext)
    return ctx


# Dependencies are `async def` even without an await: FastAPI runs a plain `def` in its thread
# pool, a thread hand-off per dependency and request.
async def get_context(request: Request) -> ServiceContext:
    return context_of(request)


ContextDep = Annotated[ServiceContext, Depends(get_context)]


async def get_settings(ctx: ContextDep) -> Settings:
    return ctx.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_session(ctx: ContextDep) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: commits when the endpoint returns, rolls back on any error.

    `scope="function"` below makes the commit happen before the answer is sent, so a client
    never sees a success that was not stored.
    """
    async with ctx.sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]

# A row id in the path: ids are serial `integer` columns starting at 1, so anything outside
# 1..INT4_MAX names no row and is answered 422 before a query could fail on it.
IdPath = Annotated[int, Path(ge=1, le=INT4_MAX)]


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("missing Authorization: Bearer <token>")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization must be 'Bearer <token>'")
    return token.strip()


# The caller is looked up in a short session of its own, closed before the endpoint runs: an
# endpoint that commits in steps (openings) must not wait behind the request's transaction,
# which on SQLite holds the write lock from its first statement. A key refused for being revoked
# or expired says so (`key_revoked`, `key_expired`); one that is not a key of this kind of caller
# is unknown. A use is recorded in the same short session, at most once a minute per key. A
# courier's drop-off and a typed code sign the kiosk in on the connections of attended work:
# someone stands at its screen (ADR 0096); its polling and its stream do not.


async def _sign_in(
    ctx: ServiceContext, kind: Kind, secret: str, *, attended: bool = False
) -> tuple[Any, Credential]:
    sessions = ctx.attended_sessions if attended else ctx.sessionmaker
    async with sessions() as session:
        found = (await session.execute(store.by_secret(kind, secret))).first()
        if found is None:
            raise Unauthorized(f"unknown {kind} {'API key' if kind == 'merchant' else 'token'}")
        owner, key = found
        rules.refuse_unless_active(key, utcnow())
        if ctx.key_uses.due(key.id):
            await _record_use(session, key.id)
    return owner, key


async def _record_use(session: AsyncSession, key_id: int) -> None:
    """Stamp a key's use; a database too busy for it (or failing over) costs the stamp, not
    the request of a caller already known."""
    try:
        await store.record_use(session, key_id)
        await session.commit()
    except SQLAlchemyError as exc:
        await session.rollback()
        log.warning("key %s: its last use not recorded: %s", key_id, exc)


async def current_kiosk_key(
    ctx: ContextDep, authorization: Annotated[str | None, Header()] = None
) -> tuple[Kiosk, Credential]:
    kiosk, key = await _sign_in(ctx, "kiosk", _bearer(authorization))
    assert isinstance(kiosk, Kiosk)
    return kiosk, key


async def current_kiosk(
    signed_in: Annotated[tuple[Kiosk, Credential], Depends(current_kiosk_key)],
) -> Kiosk:
    return signed_in[0]


async def attended_kiosk(
    ctx: ContextDep, authorization: Annotated[str | None, Header()] = None
) -> Kiosk:
    """The kiosk, for a request someone at its screen waits on (ADR 0096)."""
    kiosk, _ = await _sign_in(ctx, "kiosk", _bearer(authorization), attended=True)
    assert isinstance(kiosk, Kiosk)
    return kiosk


async def key_still_valid(ctx: ServiceContext, key_id: int | None) -> bool:
    """Whether a key signed in earlier (a long stream's) may still be used now."""
    if key_id is None:
        return True
    async with ctx.sessionmaker() as session:
        key = await session.get(Credential, key_id)
        return key is not None and rules.status(key, utcnow()) == "active"


# The merchant's key is read from the request, not declared as a `Header` parameter of a
# dependency that also takes `ContextDep`: FastAPI resolves declared parameters and nested
# dependencies per request through machinery that cost a fifth of creating an order (ADR 0036).
# Merchant routes document the header with `openapi_extra=MERCHANT_KEY_HEADER`.
MERCHANT_KEY_HEADER: dict[str, Any] = {
    "parameters": [
        {
            "name": "X-API-Key",
            "in": "header",
            "required": True,
            "schema": {"type": "string"},
            "description": "the merchant's API key",
        }
    ]
}


async def current_merchant_key(request: Request) -> tuple[Merchant, Credential]:
    """The calling merchant and the key it called with, cached for `credential_cache_s`: a
    cached key is still refused the moment it expires, and when revoked within the TTL."""
    x_api_key = request.headers.get("x-api-key")
    if not x_api_key:
        raise Unauthorized("missing X-API-Key")
    ctx = context_of(request)
    key_hash = hash_token(x_api_key)

    async def load() -> tuple[Merchant, Credential] | None:
        # Closed after the commit of a use, with expire_on_commit off, the rows' attributes
        # stay loaded on the detached objects, which requests then only read.
        try:
            merchant, key = await _sign_in(ctx, "merchant", x_api_key)
        except Unauthorized as refused:
            if refused.code == "unauthorized":
                return None
            raise
        return merchant, key

    found = await ctx.merchant_keys.get(key_hash, load)
    if found is None:
        raise Unauthorized("unknown merchant API key")
    merchant, key = found
    rules.refuse_unless_active(key, utcnow())
    if ctx.key_uses.due(key.id):
        async with ctx.sessionmaker() as session:
            await _record_use(session, key.id)
    return merchant, key


async def current_merchant(request: Request) -> Merchant:
    merchant, _ = await current_merchant_key(request)
    return merchant


@dataclass(frozen=True)
class OperatorPrincipal:
    operator: Operator
    site_ids: frozenset[int] | None  # None: every site (admin)
    # An operator for merchants sees and acts on these merchants' orders only (ADR 0075);
    # None: every merchant's, and the kiosks themselves.
    merchant_ids: frozenset[int] | None = None
    key_id: int | None = None  # the key it signed in with (a long stream checks it again)

    @property
    def id(self) -> int:
        return self.operator.id

    @property
    def role(self) -> str:
        return self.operator.role

    def can_see(self, site_id: int | None) -> bool:
        return self.site_ids is None or (site_id is not None and site_id in self.site_ids)

    def require_site(self, site_id: int | None) -> None:
        if not self.can_see(site_id):
            raise Forbidden("this site is outside your scope")

    def sees_order(self, site_id: int | None, merchant_id: int | None) -> bool:
        return self.can_see(site_id) and (
            self.merchant_ids is None or merchant_id in self.merchant_ids
        )

    def require_whole_site(self) -> None:
        """What concerns every order at a site (its kiosks, its records) is not for an
        operator for merchants."""
        if self.merchant_ids is not None:
            raise Forbidden(
                "you act for merchants: only their orders, not the kiosks or the site's records",
                code="merchants_only",
            )

    def require_act(self, site_id: int | None) -> None:
        """Acting on a kiosk (opening, taking out of service, kill switch) needs more than a
        viewer, and an operator for the whole site."""
        self.require_site(site_id)
        if self.role == "viewer":
            raise Forbidden("viewers may look but not act")
        self.require_whole_site()

    def require_act_on_order(self, site_id: int | None, merchant_id: int | None) -> None:
        """Acting on an order (resending her message; opening the compartment that holds it)."""
        self.require_site(site_id)
        if self.role == "viewer":
            raise Forbidden("viewers may look but not act")
        if not self.sees_order(site_id, merchant_id):
            raise Forbidden("this order is not one of your merchants'", code="merchants_only")


async def current_operator(
    ctx: ContextDep, authorization: Annotated[str | None, Header()] = None
) -> OperatorPrincipal:
    operator, key = await _sign_in(ctx, "operator", _bearer(authorization))
    assert isinstance(operator, Operator)
    if operator.role == "admin":
        return OperatorPrincipal(operator, None, key_id=key.id)
    async with ctx.sessionmaker() as session:
        sites = frozenset(
            await session.scalars(
                select(operator_sites.c.site_id).where(operator_sites.c.operator_id == operator.id)
            )
        )
        merchants = frozenset(
            await session.scalars(
                select(operator_merchants.c.merchant_id).where(
                    operator_merchants.c.operator_id == operator.id
                )
            )
        )
        if not merchants:
            return OperatorPrincipal(operator, sites, key_id=key.id)
        if not sites:  # given none: wherever its merchants may order
            sites = frozenset(
                await session.scalars(
                    select(merchant_sites.c.site_id).where(
                        merchant_sites.c.merchant_id.in_(merchants)
                    )
                )
            )
        return OperatorPrincipal(operator, sites, merchants, key_id=key.id)


async def current_admin(
    principal: Annotated[OperatorPrincipal, Depends(current_operator)],
) -> OperatorPrincipal:
    """An operator with the admin role: keys and the like are managed by admins only."""
    if principal.role != "admin":
        raise Forbidden("only an admin may do this")
    return principal


KioskDep = Annotated[Kiosk, Depends(current_kiosk)]
AttendedKioskDep = Annotated[Kiosk, Depends(attended_kiosk)]
KioskKeyDep = Annotated[tuple[Kiosk, Credential], Depends(current_kiosk_key)]
MerchantDep = Annotated[Merchant, Depends(current_merchant)]
OperatorDep = Annotated[OperatorPrincipal, Depends(current_operator)]
AdminDep = Annotated[OperatorPrincipal, Depends(current_admin)]
