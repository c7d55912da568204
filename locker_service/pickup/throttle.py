"""Throttling of tries to open: a pure decision over counts of recent failures (docs/adr/0039).

Every throttled dimension follows one rule, a `Backoff`: the first `free` failures within its
window cost nothing; after them each try must wait, counted from the newest failure, a delay that
starts at `first_delay` and doubles with every further failure up to `max_delay`. A try that must
wait is refused before its code is looked at, so it is no guess and counts for nothing.

The dimensions, each with its own rule:
- `source`: typed (or scanned) 8-digit codes from one client at one kiosk: a few typos are free,
  a guesser slows down quickly, never beyond `max_delay` (the purchaser after her at the same
  screen waits no longer than that);
- `kiosk`: 8-digit-code failures of every source at one kiosk over a day: a budget of free
  failures, then one failure per `first_delay` (`first_delay == max_delay`), which is what bounds
  a guesser's chance per kiosk per day (`daily_bound`);
- `order`: refusals of one order's own code (used, expired), e.g. a code passed around.

QR tokens (256 bits) are never throttled by source or kiosk: nobody guesses one, so someone
else's failures must not stand between a purchaser and her food. Courier logins use their own
rules over their own failures (per courier and per kiosk), so they never block a pickup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

ZERO = timedelta(0)
KIOSK_DAY_S = 24 * 3600.0  # nominal: the span the per-kiosk budget and its bound are about


@dataclass(frozen=True)
class Backoff:
    """`free` failures within `window` cost nothing; after that the next try waits from the
    newest failure `first_delay`, doubled per further failure, at most `max_delay`."""

    window: timedelta
    free: int
    first_delay: timedelta
    max_delay: timedelta

    def delay(self, recent: int) -> timedelta:
        """The wait after the newest of `recent` failures within the window."""
        if recent < self.free:
            return ZERO
        # In float seconds: a timedelta overflows long before a guesser's count does.
        doubled_s = self.first_delay.total_seconds() * 2.0 ** min(recent - self.free, 1000)
        return min(timedelta(seconds=min(doubled_s, 1e9)), self.max_delay)

    def wait(self, now: datetime, recent: Recent) -> timedelta:
        """How long a try at `now` must still wait (zero: it may go ahead)."""
        if recent.newest is None:
            return ZERO
        return max(ZERO, recent.newest + self.delay(recent.count) - now)


@dataclass(frozen=True)
class Recent:
    """Failures of one dimension within its rule's window: how many, and the newest."""

    count: int = 0
    newest: datetime | None = None

    def plus(self, at: datetime) -> Recent:
        """With one more failure at `at`."""
        newest = at if self.newest is None else max(self.newest, at)
        return Recent(self.count + 1, newest)


NONE = Recent()


@dataclass(frozen=True)
class Rules:
    source: Backoff
    kiosk: Backoff
    order: Backoff


@dataclass(frozen=True)
class Wait:
    dimension: str  # "source", "kiosk" or "order"
    retry_after_s: float


def check(
    now: datetime,
    rules: Rules,
    *,
    source: Recent = NONE,
    kiosk: Recent = NONE,
    order: Recent = NONE,
) -> Wait | None:
    """The wait in force now, if any (the longest when several apply)."""
    worst: Wait | None = None
    for dimension, rule, recent in (
        ("source", rules.source, source),
        ("kiosk", rules.kiosk, kiosk),
        ("order", rules.order, order),
    ):
        wait = rule.wait(now, recent).total_seconds()
        if wait > 0 and (worst is None or wait > worst.retry_after_s):
            worst = Wait(dimension, wait)
    return worst


def spends_budget(rule: Backoff, recent_before: int) -> bool:
    """True for the failure that uses up the rule's free ones: from the next failure on, tries
    wait. At the kiosk this starts an episode of guessing (one operator alert)."""
    return recent_before + 1 == rule.free


def reaches_cap(rule: Backoff, recent_before: int) -> bool:
    """True for the failure after which the wait is the rule's longest: a source that has typed
    that many wrong codes within the window is guessing, not mistyping."""
    return rule.delay(recent_before) < rule.max_delay <= rule.delay(recent_before + 1)


def daily_bound(rule: Backoff, day: timedelta = timedelta(days=1)) -> int:
    """The most failures the rule lets through in any span of `day` (docs/adr/0039).

    Within such a span let the failures be x_1 < ... < x_n. For i > free, the `free` failures
    before x_i lie within the rule's window before it (when window >= day), so x_i comes at least
    `first_delay` after x_{i-1}: (n - free - 1) * first_delay <= x_n - x_{free+1} < day.
    """
    if rule.window < day:
        raise ValueError("the bound needs a window of at least the span it bounds")
    spacing_s = rule.first_delay.total_seconds()
    if spacing_s <= 0:
        raise ValueError("no bound without a delay")
    return rule.free + math.ceil(day.total_seconds() / spacing_s)
