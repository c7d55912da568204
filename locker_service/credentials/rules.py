"""When a key may be used, and what rotating one does to the old key: plain rules, no I/O.

A key is valid until it is revoked or past `expires_at`, whichever comes first; a refused key
is told apart (unknown, revoked, expired) because the caller already holds it and needs to
know what to do. Rotating keeps the old key working for an overlap (a day unless told), so a
platform can deploy its new key before the old one stops; an old key that expires sooner keeps
its earlier end.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final, Literal, Protocol

from locker_service.errors import Unauthorized, Unprocessable

Kind = Literal["merchant", "kiosk", "operator"]
# What each kind's secrets start with, so a reader (and a secret scanner) can tell them apart.
SECRET_PREFIX: Final[dict[Kind, str]] = {"merchant": "mk", "kiosk": "kt", "operator": "ot"}
SHOWN_CHARS: Final = 10  # `mk_` and 7 characters of the key's 43: 42 of its 256 bits
DEFAULT_OVERLAP: Final = timedelta(hours=24)
MAX_OVERLAP: Final = timedelta(days=30)

Status = Literal["active", "expired", "revoked"]


class KeyTimes(Protocol):
    @property
    def expires_at(self) -> datetime | None: ...
    @property
    def revoked_at(self) -> datetime | None: ...


def status(key: KeyTimes, now: datetime) -> Status:
    if key.revoked_at is not None and key.revoked_at <= now:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


def refuse_unless_active(key: KeyTimes, now: datetime) -> None:
    """Raise 401 with what happened to a key that can no longer be used."""
    match status(key, now):
        case "revoked":
            raise Unauthorized("this key was revoked; ask for a new one", code="key_revoked")
        case "expired":
            assert key.expires_at is not None
            raise Unauthorized(
                f"this key expired at {key.expires_at.isoformat()}; use its replacement",
                code="key_expired",
            )


def shown_prefix(secret: str) -> str:
    return secret[:SHOWN_CHARS]


def old_key_end(current: datetime | None, now: datetime, overlap: timedelta) -> datetime:
    """When a rotated key stops: after the overlap, or at its own expiry if that is sooner."""
    if overlap < timedelta(0) or overlap > MAX_OVERLAP:
        raise Unprocessable(f"the overlap is 0 to {MAX_OVERLAP.days} days", code="invalid_overlap")
    end = now + overlap
    return end if current is None else min(current, end)


def check_expiry(expires_at: datetime | None, now: datetime) -> None:
    if expires_at is not None and expires_at <= now:
        raise Unprocessable("a new key must expire in the future", code="invalid_expiry")
