"""Page cursors of the list endpoints (the last row's time and key, opaque to clients), and
the times their searches take."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from locker_service.errors import Unprocessable

K = TypeVar("K")
_SEP = "|"


class BadCursor(Unprocessable):
    code = "bad_cursor"


def as_utc(at: datetime | None) -> datetime | None:
    """A time given without a zone is read as UTC, the zone every stored time is in."""
    if at is None or at.tzinfo is not None:
        return at
    return at.replace(tzinfo=UTC)


def encode(at: datetime, key: object) -> str:
    raw = f"{at.isoformat()}{_SEP}{key}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str, parse_key: Callable[[str], K], given_by: str) -> tuple[datetime, K]:
    """The (time, key) of a cursor `encode` made; BadCursor for anything else. A time without a
    zone is read as UTC, the zone every stored time is in."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        text, _, key = raw.partition(_SEP)
        at, parsed = datetime.fromisoformat(text), parse_key(key)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadCursor(f"this cursor was not given by {given_by}") from exc
    return as_utc(at) or at, parsed
