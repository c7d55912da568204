"""Keys in the database: issued, found by their secret, rotated, revoked, listed, used.

Each function works in the caller's session; `issue` and `rotate` return the new secret in
clear once, and nothing else ever sees it (only its SHA-256 and first characters are kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from locker_service.credentials import rules
from locker_service.credentials.rules import Kind
from locker_service.errors import Conflict, NotFound, Unprocessable
from locker_service.models import Credential, Kiosk, Merchant, Operator, utcnow
from locker_service.security import hash_token, new_token

OWNER_COLUMN: dict[Kind, InstrumentedAttribute[int | None]] = {
    "merchant": Credential.merchant_id,
    "kiosk": Credential.kiosk_id,
    "operator": Credential.operator_id,
}
OWNER_MODEL: dict[Kind, type[Merchant | Kiosk | Operator]] = {
    "merchant": Merchant,
    "kiosk": Kiosk,
    "operator": Operator,
}


@dataclass(frozen=True)
class Owner:
    kind: Kind
    id: int


@dataclass(frozen=True)
class Issued:
    key: Credential
    secret: str  # in clear, shown once
    replaces: Credential | None = None  # after a rotation: the old key, ending after the overlap


def owner_of(key: Credential) -> Owner:
    for kind, column in OWNER_COLUMN.items():
        owner_id = getattr(key, column.key)
        if owner_id is not None:
            return Owner(kind, owner_id)
    raise AssertionError(f"credential {key.id} has no owner")  # the check constraint forbids


def row_for(owner: Owner, secret: str, **values: Any) -> Credential:
    """A credential row for `secret` (not yet added to a session)."""
    return Credential(
        **{OWNER_COLUMN[owner.kind].key: owner.id},
        key_hash=hash_token(secret),
        prefix=rules.shown_prefix(secret),
        **values,
    )


async def issue(
    session: AsyncSession,
    owner: Owner,
    *,
    label: str | None = None,
    expires_at: datetime | None = None,
    now: datetime | None = None,
) -> Issued:
    """A new key for `owner`, working at once beside the keys it has."""
    now = now or utcnow()
    rules.check_expiry(expires_at, now)
    if await session.get(OWNER_MODEL[owner.kind], owner.id) is None:
        raise NotFound(f"no {owner.kind} {owner.id}")
    secret = new_token(rules.SECRET_PREFIX[owner.kind])
    key = row_for(owner, secret, label=label, created_at=now, expires_at=expires_at)
    session.add(key)
    await session.flush()
    return Issued(key, secret)


def by_secret(kind: Kind, secret: str) -> Any:
    """SELECT (owner row, credential) for `secret`, if it is a key of a `kind`."""
    model = OWNER_MODEL[kind]
    return (
        select(model, Credential)
        .join(Credential, OWNER_COLUMN[kind] == model.id)
        .where(Credential.key_hash == hash_token(secret))
    )


async def get(session: AsyncSession, key_id: int, owner: Owner | None = None) -> Credential:
    """Key `key_id`; with `owner`, only if it is one of theirs (else 404, as if absent)."""
    key = await session.get(Credential, key_id, with_for_update=True)
    if key is None or (owner is not None and owner_of(key) != owner):
        raise NotFound(f"no key {key_id}")
    return key


async def rotate(
    session: AsyncSession,
    key_id: int,
    *,
    overlap: timedelta = rules.DEFAULT_OVERLAP,
    expires_at: datetime | None = None,
    owner: Owner | None = None,
    now: datetime | None = None,
) -> Issued:
    """A new key for the owner of key `key_id`, which keeps working for `overlap` only.

    A key is replaced once: rotating it again (a copy of it leaked, say) is refused. Given
    `owner` (a merchant rotating its own key), the new key expires no later than the old one
    was going to: an expiry an administrator gave stays with the key's successors."""
    now = now or utcnow()
    old = await get(session, key_id, owner)
    if rules.status(old, now) != "active":
        raise Conflict(
            f"key {key_id} is {rules.status(old, now)}: issue a new key instead",
            code="key_not_active",
        )
    if old.replaced_at is not None:
        raise Conflict(
            f"key {key_id} was replaced already: rotate its replacement", code="key_replaced"
        )
    if owner is not None and old.expires_at is not None:
        expires_at = min(expires_at or old.expires_at, old.expires_at)
    old.replaced_at = now
    old.expires_at = rules.old_key_end(old.expires_at, now, overlap)
    new = await issue(session, owner_of(old), label=old.label, expires_at=expires_at, now=now)
    return Issued(new.key, new.secret, replaces=old)


async def revoke(
    session: AsyncSession, key_id: int, *, owner: Owner | None = None, now: datetime | None = None
) -> Credential:
    """Stop key `key_id` now (again: no change). Each replica's cache lets a merchant's key
    work for at most LOCKER_CREDENTIAL_CACHE_S more seconds."""
    key = await get(session, key_id, owner)
    if key.revoked_at is None:
        key.revoked_at = now or utcnow()
    return key


async def list_keys(session: AsyncSession, owner: Owner) -> Sequence[Credential]:
    if await session.get(OWNER_MODEL[owner.kind], owner.id) is None:
        raise NotFound(f"no {owner.kind} {owner.id}")
    return (
        await session.scalars(
            select(Credential).where(OWNER_COLUMN[owner.kind] == owner.id).order_by(Credential.id)
        )
    ).all()


async def owner_by_name(session: AsyncSession, kind: Kind, name: str) -> Owner:
    """A kiosk by its code, a merchant or operator by its id (as `lockerctl` is given them)."""
    if kind == "kiosk":
        kiosk_id = await session.scalar(select(Kiosk.id).where(Kiosk.code == name))
        if kiosk_id is None:
            raise NotFound(f"no kiosk {name!r}")
        return Owner(kind, kiosk_id)
    if not name.isdigit():
        raise Unprocessable(f"a {kind} is named by its id, not {name!r}")
    return Owner(kind, int(name))


async def record_use(session: AsyncSession, key_id: int) -> None:
    """Stamp key `key_id` as used now (the caller commits). Callers write this at most once
    per `context.LAST_USED_EVERY_S` per key (`ServiceContext.key_uses`), not on every request."""
    await session.execute(
        update(Credential).where(Credential.id == key_id).values(last_used_at=utcnow())
    )
