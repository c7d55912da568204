"""Deciding pickups at the kiosk while the service cannot be reached (docs/adr/0077).

The service keeps the bridge supplied (`OfflineSupply`, on the kiosk's `offline` topic): every
ready order's compartment, deadline, single-use state and the verifiers of its codes. While the
bridge is cut off (no broker, or no supply for three of the service's refresh periods) it checks
a scanned QR token or a typed code against them itself, and the caller opens and journals the
pickup; the journal is the event outbox, so the service gets every offline pickup, in order and
ahead of the door's own events, once the link is back.

What is kept where, for a stolen kiosk disk:
- on disk (the bridge's SQLite file): each order's id, compartment, deadline, whether its code
  is used, and SHA-256 of its 256-bit QR token. Nothing derives a token from its hash. Also the
  latest time seen pass: a PC restarted with its clock set back behind it opens nothing alone,
  its deadlines being beyond judging (the monotonic ones were in memory). And when the keypad
  refused its newest wrong codes (never the digits), so a restart keeps the day's count. And
  which compartments latched a fault that holds food since their door last opened (ADR 0128).
- in memory only: the supply's key and the HMACs of the 8-digit codes under it. Together they
  would give a code away in seconds (10^8 tries), so neither is ever written down. A bridge
  restarted while cut off therefore opens by QR only until the next supply.

Typed codes are throttled here as the service throttles them: a few free failures, then a
doubling wait, and a daily budget; QR tokens are not. The rules are the service's, sent with each
supply (docs/adr/0119); until one carries them, ADR 0039's defaults scaled by the time scale.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from firmware_bridge.contract import CodeBackoff, CodeRules, OfflineSupply, utcnow
from firmware_bridge.contract.codes import code_mac, token_hash
from firmware_bridge.contract.offline import OFFLINE_ORDERS_MAX
from firmware_bridge.store import BridgeStore, OfflineOrderRow

log = logging.getLogger(__name__)

Method = Literal["qr", "code"]
# The service's supplies stop: the bridge decides alone after this many refresh periods, plus a
# margin for a busy service or broker.
MISSED_SUPPLIES = 3
SILENCE_MARGIN_S = 2.0
# Typed codes (nominal seconds, as the service's defaults in docs/adr/0039): until a supply
# brings the service's own rules.
FREE_FAILURES = 5
FAILURE_WINDOW_S = 600.0
FIRST_DELAY_S = 2.0
MAX_DELAY_S = 120.0
DAY_FREE_FAILURES = 40
DAY_S = 24 * 3600.0
# A wall clock this far behind a time the bridge has seen pass is taken for set back, not for
# the few seconds two PCs' clocks differ by (real seconds).
CLOCK_SET_BACK_S = 300.0
# A supply under a lower lease epoch than the last taken is taken once none has been taken for
# this long (real seconds on this PC's monotonic clock), or two refresh periods if longer: the
# epochs went back (the service's database restored from a backup), for a live holder of a
# larger epoch is taken every period, and a late supply of an earlier holder arrives within one.
EPOCHS_WENT_BACK_S = 60.0
# The keypad's newest wrong codes kept on disk: at least this many, and as many as the rules'
# day budget and doubling need (a restart must not give the day's free tries again).
KEPT_FAILURES = 64


def default_rules(time_scale: float) -> CodeRules:
    """ADR 0039's defaults in real seconds, for a bridge no supply has told the rules yet."""
    return CodeRules(
        source=CodeBackoff.bounded(
            window_s=FAILURE_WINDOW_S / time_scale,
            free=FREE_FAILURES,
            first_delay_s=FIRST_DELAY_S / time_scale,
            max_delay_s=MAX_DELAY_S / time_scale,
        ),
        kiosk=CodeBackoff.bounded(
            window_s=DAY_S / time_scale,
            free=DAY_FREE_FAILURES,
            first_delay_s=MAX_DELAY_S / time_scale,
            max_delay_s=MAX_DELAY_S / time_scale,
        ),
    )


def kept_failures(rules: CodeRules) -> int:
    """The refusals a restart must remember: the day's budget, and enough of the window's for
    the doubling to reach its longest wait."""
    source = rules.source
    doublings = math.ceil(math.log2(max(source.max_delay_s / source.first_delay_s, 1.0)))
    return max(KEPT_FAILURES, rules.kiosk.free + 1, source.free + doublings + 1)


def _period_and_floor(meta: dict[str, str]) -> tuple[float | None, datetime | None]:
    """The last supply's period and the wall clock's floor as kept on disk. Either unreadable
    (a damaged file): neither, so nothing is decided alone until the next supply (fail closed)."""
    try:
        refresh_s = float(meta["refresh_s"]) if "refresh_s" in meta else None
        if refresh_s is not None and not 0 < refresh_s <= 3600:
            raise ValueError(f"refresh_s {refresh_s}")
        floor = datetime.fromisoformat(meta["wall_floor"]) if "wall_floor" in meta else None
        if floor is not None and floor.tzinfo is None:
            raise ValueError("wall_floor without its zone")
    except ValueError as exc:
        log.warning(
            "offline list on disk unreadable (%s): nothing decided alone until the next supply", exc
        )
        return None, None
    return refresh_s, floor


def _compartments(kept: str) -> set[int]:
    """The compartment numbers kept on disk; one unreadable or out of range (a damaged file)
    is left out."""
    found = set()
    for text in filter(None, (part.strip() for part in kept.split(","))):
        try:
            n = int(text)
        except ValueError:  # not a number, or thousands of digits
            n = 0
        if 1 <= n <= OFFLINE_ORDERS_MAX:
            found.add(n)
        else:
            log.warning("unreadable compartment %r in the offline list's faults: left out", text)
    return found


@dataclass(frozen=True, slots=True)
class Opened:
    order_id: str
    compartment: int
    method: Method


@dataclass(frozen=True, slots=True)
class Refused:
    error: str  # the service's error code for the same refusal, so the screen says the same
    message: str
    retry_after_s: float | None = None


Decision = Opened | Refused


class OfflineBook:
    """The orders this kiosk may open alone, and whether it should. Thread-safe."""

    def __init__(
        self,
        store: BridgeStore,
        *,
        time_scale: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._default_rules = default_rules(time_scale)
        self._rules = self._default_rules  # the last supply's, else the defaults
        self._monotonic = monotonic
        self._now = now
        self._lock = threading.Lock()
        self._orders: dict[str, OfflineOrderRow] = {r.order_id: r for r in store.offline_orders()}
        meta = store.offline_meta()
        self._frozen = meta.get("frozen") == "1"
        # `_wall_floor`: the latest time this PC's wall clock has read when it took a supply or
        # let a pickup through, kept on disk, so a PC restarted with its clock set back (a flat
        # clock battery, no time server while cut off) is seen to be wrong. Its own clock's,
        # never the service's: a PC a little behind the service is not wrong.
        self._refresh_s, self._wall_floor = _period_and_floor(meta)
        # Compartments whose board latched a fault that holds food since their door last
        # opened: the food in each went through it, listed yet or not (kept on disk).
        self._faulted = _compartments(meta.get("faulted", ""))
        self._issued_at: datetime | None = None
        self._lease: tuple[int, int] | None = None  # the last supply taken's (epoch, seq)
        self._last_supply: float | None = None  # monotonic; None: none since this start
        self._started = monotonic()
        self._last_heard = self._started  # the service's last fresh command (monotonic)
        # In memory only: the typed-code verifiers and their key (see the module's text).
        self._key: bytes | None = None
        self._macs: dict[str, str] = {}  # order id -> HMAC of its code
        self._mono_deadlines: dict[str, float] = {}  # order id -> deadline, monotonic
        # The keypad's wrong typed codes, oldest first: each on the monotonic clock, and as this
        # PC's wall clock read it, which is what is kept on disk (a restart keeps the day's
        # count; ADR 0116).
        self._failures: deque[tuple[float, datetime]] = deque()
        self._last_failure = 0.0
        self._recall_failures(meta.get("code_failures", ""))
        # The service's count of the day's wrong codes at its screen and scanner, as of the
        # last supply: the keypad's budget adds its own to it (ADR 0116).
        self._supplied_failures = 0

    # -- the service's supply ----------------------------------------------------------------

    def take(self, supply: OfflineSupply) -> bool:
        """Replace what is known by a supply; False for one older than the last taken.

        One older changes no order but still shows the service is there: a replica that has
        just taken the kiosk may stamp its supplies by a clock behind the last sender's, and
        the kiosk must not decide alone on the old list while connected meanwhile."""
        with self._lock:
            if self._older(supply):
                self._last_heard = self._monotonic()
                return False
            # Before anything is written: the refusals kept on disk are as many as they count.
            self._rules = supply.code_rules or self._default_rules
            if supply.switched_off:
                self._switch_off(supply)
                return True
            rows = []
            for o in supply.orders:
                mine = self._orders.get(o.order_id)
                # Used here while cut off, and the service has not heard yet: stays used.
                used_here = mine.used_here_at if mine is not None and not o.used else None
                # Its door opened since it was listed: stays unusable offline while listed
                # (a supply may have been made before the service heard of the opening).
                door = mine.door_opened_at if mine is not None else None
                # Held by the service, or by a fault seen here since its food went in: since it
                # was listed, or before its first listing (a supply may have been made before
                # the service heard of the fault).
                held = o.held or (mine is not None and mine.held) or o.compartment in self._faulted
                rows.append(
                    OfflineOrderRow(
                        o.order_id,
                        o.compartment,
                        o.token_sha256,
                        o.deadline,
                        o.used,
                        used_here,
                        door,
                        held,
                    )
                )
            self._saw(self._now())
            self._store.replace_offline(rows, self._meta(supply))
            self._orders = {r.order_id: r for r in rows}
            # Deadlines also on this PC's monotonic clock, from the service's own clock: a wall
            # clock running behind (no time server while cut off) cannot stretch them.
            arrived = self._monotonic()
            self._mono_deadlines = {
                o.order_id: arrived + (o.deadline - supply.issued_at).total_seconds()
                for o in supply.orders
            }
            self._key = supply.key_bytes()
            self._macs = {o.order_id: o.code_mac for o in supply.orders}
            self._frozen = supply.frozen
            self._refresh_s = supply.refresh_s
            self._taken(supply)
            return True

    def _older(self, supply: OfflineSupply) -> bool:
        """Older than the last supply taken: by the kiosk lease each was sent under when both
        carry one (a replica that took the kiosk over sends under a larger epoch whatever its
        clock says, and one sender counts up within its epoch), else by the senders' clocks."""
        if self._issued_at is None:
            return False
        lease = supply.lease
        if lease is not None and self._lease is not None:
            return lease < self._lease and not self._epochs_went_back()
        return supply.issued_at < self._issued_at

    def _epochs_went_back(self) -> bool:
        """No supply taken for longer than a live holder of a larger epoch would leave: the
        lower epochs coming are those of a database restored from a backup."""
        if self._last_supply is None:
            return True
        after = max(EPOCHS_WENT_BACK_S, 2 * (self._refresh_s or 0.0))
        return self._monotonic() - self._last_supply > after

    def _switch_off(self, supply: OfflineSupply) -> None:
        """Offline pickups are off at the service: nothing is kept and nothing decided here
        until a supply with a period comes (a bridge supplied before would otherwise take the
        silence that follows for being cut off, and open on its old list)."""
        self._store.replace_offline([], self._meta(supply))  # no `refresh_s`: off
        self._orders = {}
        self._mono_deadlines = {}
        self._key = None
        self._macs = {}
        self._frozen = supply.frozen
        self._refresh_s = None
        self._taken(supply)

    def _meta(self, supply: OfflineSupply) -> dict[str, str]:
        """What is kept on disk beside the list: the kill switch, the period (none when offline
        pickups are off), the wall clock's floor and the keypad's refusals."""
        meta = {"frozen": "1" if supply.frozen else "0"}
        if not supply.switched_off:
            meta["refresh_s"] = str(supply.refresh_s)
        if self._wall_floor is not None:
            meta["wall_floor"] = self._wall_floor.isoformat()
        meta["code_failures"] = self._failures_on_disk()
        meta["faulted"] = self._faulted_on_disk()
        return meta

    def _taken(self, supply: OfflineSupply) -> None:
        self._issued_at = supply.issued_at
        self._lease = supply.lease
        self._last_supply = self._monotonic()
        self._supplied_failures = supply.code_failures

    def _faulted_on_disk(self) -> str:
        return ",".join(str(n) for n in sorted(self._faulted))

    def _recall_failures(self, kept: str) -> None:
        """The wrong codes kept on disk, put on this start's monotonic clock by the wall
        clock's distance to them. One in the future (the clock set back since) counts from now
        and is kept so; one unreadable (a damaged file) is left out."""
        now, mono = self._now(), self._monotonic()
        recalled: list[tuple[float, datetime]] = []
        for text in kept.split(","):
            try:
                stamp = datetime.fromisoformat(text)
                age_s = (now - stamp).total_seconds()
            except (TypeError, ValueError):  # not a time, or one without its zone
                continue
            recalled.append((mono - age_s, stamp) if age_s > 0 else (mono, now))
        self._failures.extend(sorted(recalled, key=lambda failure: failure[0]))
        if self._failures:
            self._last_failure = self._failures[-1][0]

    def _failures_on_disk(self) -> str:
        newest = list(self._failures)[-kept_failures(self._rules) :]
        return ",".join(stamp.isoformat() for _, stamp in newest)

    def heard(self) -> None:
        """The service is there (a command of its own, fresh): as good as a supply for
        deciding whether the kiosk is cut off, though it changes no order."""
        with self._lock:
            self._last_heard = self._monotonic()

    def door_opened(self, compartment: int, *, fault_latched: bool = False) -> None:
        """The board saw the compartment's door open: whatever the list says of the order in
        it may be out of date (collected online, the compartment given to another order), so it
        is no longer opened here while it stays listed. Food put in from now on has not been
        through a fault seen before, unless one that holds food is latched still
        (`fault_latched`): the compartment's mark of one ends otherwise."""
        with self._lock:
            if compartment in self._faulted and not fault_latched:
                self._faulted.discard(compartment)
                self._store.set_offline_meta("faulted", self._faulted_on_disk())
            now = self._now()
            changed = False
            for order_id, row in self._orders.items():
                if row.compartment == compartment and row.door_opened_at is None:
                    self._orders[order_id] = replace(row, door_opened_at=now)
                    changed = True
            if changed:
                self._store.mark_offline_door_opened(compartment, now)

    def fault_seen(self, compartment: int) -> None:
        """The board latched a fault that holds the food in the compartment for staff (ADR
        0128): the order in it opens nothing here from now on, the fault cleared or not (a
        board restart clears it without anyone having looked at the food). So does an order
        first listed after it, until the compartment's door opens again: the supply listing it
        may have been made before the service heard of the fault (ADR 0128)."""
        with self._lock:
            if compartment not in self._faulted:
                self._faulted.add(compartment)
                self._store.set_offline_meta("faulted", self._faulted_on_disk())
            changed = False
            for order_id, row in self._orders.items():
                if row.compartment == compartment and not row.held:
                    self._orders[order_id] = replace(row, held=True)
                    changed = True
            if changed:
                self._store.mark_offline_held(compartment)

    def cut_off(self, connected: bool) -> bool:
        """Decide alone? Only a kiosk that has been supplied: with a service that sends no
        supply (an older one, or switched off) scans go to it as they always did."""
        with self._lock:
            if self._refresh_s is None:
                return False
            if not connected:
                return True
            heard = max(
                self._last_supply if self._last_supply is not None else self._started,
                self._last_heard,
            )
            silence_s = MISSED_SUPPLIES * self._refresh_s + SILENCE_MARGIN_S
            return self._monotonic() - heard > silence_s

    @property
    def ready(self) -> int:
        """Orders the last supply said were ready here."""
        with self._lock:
            return len(self._orders)

    @property
    def knows_codes(self) -> bool:
        with self._lock:
            return self._key is not None

    # -- decisions ------------------------------------------------------------------------------

    def lists_token(self, token: str) -> bool:
        digest = token_hash(token)
        with self._lock:
            return any(hmac.compare_digest(r.token_sha256, digest) for r in self._orders.values())

    def decide_token(self, token: str, held: Collection[int] = ()) -> Decision:
        """`held`: the compartments whose food is not handed out now (a fault latched on the
        board that told the purchaser not to collect it)."""
        digest = token_hash(token)
        with self._lock:
            found = next(
                (r for r in self._orders.values() if hmac.compare_digest(r.token_sha256, digest)),
                None,
            )
            return self._decide(found, "qr", held)

    def decide_code(self, code: str, held: Collection[int] = ()) -> Decision:
        with self._lock:
            now = self._monotonic()
            wait = self._wait_s(now)
            if wait > 0:
                return Refused(
                    "locked_out",
                    f"too many wrong codes: try again in {wait:.0f} s",
                    retry_after_s=wait,
                )
            if self._key is None:
                # Restarted while cut off: the verifiers were in memory only. QR still works.
                return Refused(
                    "offline_codes_unavailable",
                    "typed codes cannot be checked until the locker is back online: "
                    "please scan your QR code",
                )
            mac = code_mac(self._key, code)
            matches = [
                r
                for r in self._orders.values()
                if hmac.compare_digest(self._macs.get(r.order_id, ""), mac)
            ]
            if len(matches) != 1:  # none, or two orders with the same 8 digits: open neither
                self._failures.append((now, self._now()))
                self._last_failure = now
                self._store.set_offline_meta("code_failures", self._failures_on_disk())
                return Refused("invalid_code", "this code does not open anything here")
            return self._decide(matches[0], "code", held)

    def _decide(
        self, row: OfflineOrderRow | None, method: Method, held: Collection[int]
    ) -> Decision:
        if self._frozen:
            return Refused(
                "kill_switch_engaged", "openings are frozen at this site: please ask staff"
            )
        if row is None:
            return Refused("invalid_code", "this code does not open anything here")
        mono_deadline = self._mono_deadlines.get(row.order_id)
        now = self._now()
        if mono_deadline is None and self._set_back(now):
            # Restarted since the supply (its monotonic deadlines are gone) with a clock behind
            # a time already seen: no deadline can be judged on it.
            return Refused(
                "offline_clock_unreliable",
                "this locker's clock cannot be trusted while it is offline: please ask the staff",
            )
        if row.held or row.compartment in held or row.compartment in self._faulted:
            # As the service refuses it (pickup/service.py), whether her hold is over or not
            # (her message said staff will contact her): her code is neither used nor a guess.
            return Refused(
                "compartment_fault",
                "a fault was reported in this compartment: the food cannot be collected now; "
                "staff will contact you",
            )
        if row.deadline <= now or (
            mono_deadline is not None and mono_deadline <= self._monotonic()
        ):
            return Refused("code_expired", "this order can no longer be collected here")
        if row.used or row.used_here_at is not None:
            return Refused("code_used", "this code has been used already")
        if row.door_opened_at is not None:
            return Refused(
                "opened_since_offline",
                "this compartment has been opened since the order was last confirmed here: "
                "it cannot be opened offline, please ask the staff",
            )
        used = row.with_use(now)
        self._store.mark_offline_use(row.order_id, used.used_here_at)
        if self._saw(now):
            self._store.set_offline_meta("wall_floor", now.isoformat())
        self._orders[row.order_id] = used
        return Opened(row.order_id, row.compartment, method)

    def _saw(self, now: datetime) -> bool:
        """The wall clock read `now`: whether that raised the floor kept on disk."""
        if self._wall_floor is not None and now <= self._wall_floor:
            return False
        self._wall_floor = now
        return True

    def _set_back(self, now: datetime) -> bool:
        floor = self._wall_floor
        return floor is not None and (floor - now).total_seconds() > CLOCK_SET_BACK_S

    def give_back(self, order_id: str) -> None:
        """The unlock did not release her door: her code is hers again."""
        with self._lock:
            row = self._orders.get(order_id)
            if row is not None and row.used_here_at is not None:
                self._orders[order_id] = row.with_use(None)
                self._store.mark_offline_use(order_id, None)

    def _supplied_day(self, now: float) -> int:
        """The service's count of the day's wrong codes at the screen and scanner, while it can
        still hold any: every one of them came before the last supply was taken, so all have
        left the day once a day has passed since (a kiosk cut off over a weekend does not keep
        Friday's guessing against Monday's typos)."""
        if self._last_supply is None or now - self._last_supply > self._rules.kiosk.window_s:
            return 0
        return self._supplied_failures

    def _wait_s(self, now: float) -> float:
        """Seconds a typed code must wait before it is even looked at (0: go ahead)."""
        source, kiosk = self._rules.source, self._rules.kiosk
        kept = max(source.window_s, kiosk.window_s)
        while self._failures and now - self._failures[0][0] > kept:
            self._failures.popleft()
        recent = sum(1 for t, _ in self._failures if now - t <= source.window_s)
        today = sum(1 for t, _ in self._failures if now - t <= kiosk.window_s)
        wait = max(source.delay_s(recent), kiosk.delay_s(today + self._supplied_day(now)))
        if wait == 0:
            return 0.0
        return max(0.0, self._last_failure + wait - now)
