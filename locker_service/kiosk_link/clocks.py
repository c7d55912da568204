"""How far behind the service's clock each kiosk's clock may be, from the times it stamps.

A bridge refuses a command whose `expires_at` has passed by its own clock (ADR 0087). A kiosk
whose clock is behind the service's therefore still runs a copy that reaches it after the
service's deadline, and the service, having heard nothing by then, would have told the caller
"the kiosk never had it" (`KioskUnreachable`): a purchaser's code given back, an opening
withdrawn, for a door that then opens.

Every message a kiosk sends carries its clock's time (`ts`) and arrives at least the
transport's latency after it: `received - ts` is, for each message, an upper bound on how far
the kiosk's clock is behind the service's (negative: ahead by at least that much). The least
over the recent messages is the tightest bound: a message that waited (a backlog after a
restart, an event journalled while cut off) only raises its own value. The link leaves out the
messages stamped long before they are sent (retained copies, the `offline` will), which alone
in the window would make the bound large. It waits that long past a command's deadline, capped,
before it says the kiosk never had it (ADR 0089).

A clock set back (from right to behind) raises every value from then on, while the window
still remembers the small ones from before: over the window the bound is too small until they
leave it. A command's wait therefore takes the least over the last minute's messages
(`RECENT_S`), which is never smaller: a clock set back is waited for a minute after, at most.
Judging a report's stamp (the door timer) keeps the window's least, the tighter of the two.

Pure: the caller gives both clocks' times. Tested without a broker.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

# The bound is the least over this long: a kiosk whose clock is set right is seen so within it.
WINDOW_S = 600.0
# A command's wait takes the least over this long, if the kiosk sent anything in it: a clock set
# back is seen within it (a kiosk sends its telemetry every 10 s).
RECENT_S = 60.0
# A caller waits at most this long past a deadline for a kiosk's clock; a clock further behind
# is a fault to fix at the kiosk (its time service), not a wait to put on every purchaser.
MAX_WAIT_S = 30.0
# What a healthy kiosk's bound may come to (the latency of a busy broker and service): a kiosk
# is reported off (`KioskClock.off`) only beyond it, in either direction.
ALLOWANCE_S = 5.0
# The values kept per kiosk at most: they only grow along the queue, so this many are only kept
# by a clock falling further behind with every message; the oldest (least) goes first, which
# leaves a bound that is still an upper bound.
MAX_KEPT = 64


@dataclass(frozen=True, slots=True)
class KioskClock:
    """What the recent messages say of one kiosk's clock against the service's."""

    behind_at_most_s: float  # the least `received - ts`; negative when the kiosk is ahead
    heard_for_s: float  # since the first message of the window's run: a few are just backlog
    # The least over the last RECENT_S, None when nothing came in it; never below the window's.
    recently_behind_at_most_s: float | None = None

    @property
    def wait_s(self) -> float:
        """How long past a command's deadline the kiosk may still take it as not expired: by
        the last minute's messages if there were any, so that a clock set back since is waited
        for."""
        recent = self.recently_behind_at_most_s
        behind = self.behind_at_most_s if recent is None else recent
        return min(max(behind, 0.0), MAX_WAIT_S)

    @property
    def stamps_behind_s(self) -> float:
        """How much earlier than the service's clock the kiosk may stamp what it reports,
        capped as the wait is: the window's least, the tightest (a report judged by it is
        never taken for newer than it can be)."""
        return min(max(self.behind_at_most_s, 0.0), MAX_WAIT_S)

    @property
    def off(self) -> bool:
        """Behind (or its messages all late) or ahead by more than the allowance."""
        return abs(self.behind_at_most_s) > ALLOWANCE_S


class KioskClocks:
    """The least `received - ts` per kiosk over a sliding window (a monotonic queue per kiosk:
    each observation is O(1) amortised, and a kiosk keeps only the values that can still be the
    least)."""

    def __init__(self, window_s: float = WINDOW_S, recent_s: float = RECENT_S) -> None:
        self.window_s = window_s
        self.recent_s = recent_s
        self._lows: dict[str, deque[tuple[float, float]]] = {}
        self._since: dict[str, float] = {}  # when each kiosk's current run of messages began

    def observe(self, kiosk_id: str, received_s: float, stamped_s: float) -> None:
        """A message of `kiosk_id` stamped `stamped_s` by its clock, received at `received_s`
        by the service's (both seconds since the epoch)."""
        value = received_s - stamped_s
        lows = self._lows.get(kiosk_id)
        if lows is not None:
            self._expire(lows, received_s)
        if not lows:  # the first, or the first since the window emptied: a new run
            lows = self._lows[kiosk_id] = deque()
            self._since[kiosk_id] = received_s
        while lows and lows[-1][1] >= value:
            lows.pop()
        lows.append((received_s, value))
        if len(lows) > MAX_KEPT:
            lows.popleft()

    def kiosks(self) -> list[str]:
        """Every kiosk heard from."""
        return list(self._lows)

    def clock(self, kiosk_id: str, now_s: float) -> KioskClock | None:
        """None when nothing of the kiosk was received within the window."""
        lows = self._lows.get(kiosk_id)
        if lows is None:
            return None
        self._expire(lows, now_s)
        if not lows:
            del self._lows[kiosk_id], self._since[kiosk_id]
            return None
        # Each value kept is the least of the messages from the one kept before it on: the
        # first received within the recent span is the least of that span (or, once MAX_KEPT
        # has dropped the front inside the span, a larger one: the wait errs longer).
        recent = next((value for at, value in lows if at >= now_s - self.recent_s), None)
        return KioskClock(lows[0][1], now_s - self._since[kiosk_id], recent)

    def _expire(self, lows: deque[tuple[float, float]], now_s: float) -> None:
        while lows and lows[0][0] < now_s - self.window_s:
            lows.popleft()
