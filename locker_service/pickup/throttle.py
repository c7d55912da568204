"""Throttling and lockout of pickup attempts: a pure decision over recent failures.

Failures are counted per source (a client address or the kiosk's scanner), per kiosk (many
sources guessing at one kiosk) and per order (codes of one order tried wrongly, e.g. reused).
Reaching a limit within the window locks that dimension out until the lockout has passed since
the failure that reached it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Limits:
    window: timedelta
    lockout: timedelta
    per_source: int
    per_kiosk: int
    per_order: int


@dataclass(frozen=True)
class Lockout:
    dimension: str  # "source", "kiosk" or "order"
    retry_after_s: float


def _locked_until(failures: list[datetime], limit: int, limits: Limits) -> datetime | None:
    """The end of the latest lockout: `limit` failures inside one window lock until `lockout`
    after the newest of them."""
    if limit <= 0 or len(failures) < limit:
        return None
    recent = sorted(failures, reverse=True)
    for i in range(len(recent) - limit + 1):
        if recent[i] - recent[i + limit - 1] <= limits.window:
            return recent[i] + limits.lockout  # the newest qualifying cluster locks longest
    return None


def check(
    now: datetime,
    limits: Limits,
    *,
    by_source: list[datetime],
    by_kiosk: list[datetime],
    by_order: list[datetime] | None = None,
) -> Lockout | None:
    """The lockout in force now, if any (the longest one when several apply)."""
    worst: Lockout | None = None
    for dimension, failures, limit in (
        ("source", by_source, limits.per_source),
        ("kiosk", by_kiosk, limits.per_kiosk),
        ("order", by_order or [], limits.per_order),
    ):
        until = _locked_until(failures, limit, limits)
        if until is not None and until > now:
            retry = (until - now).total_seconds()
            if worst is None or retry > worst.retry_after_s:
                worst = Lockout(dimension, retry)
    return worst
