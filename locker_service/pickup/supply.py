"""Keeping each kiosk's bridge supplied to decide pickups alone (docs/adr/0077).

Each replica supplies the kiosks it holds: for every order ready there, the verifiers of its QR
token and typed code, its compartment, its deadline and whether its code is in use, and the
site's kill switch. A kiosk is sent a fresh supply at once when any of that changes, when it
comes back online (a restarted bridge has lost the typed-code verifiers it kept in memory), and
at least every `offline_supply_refresh_s` otherwise, which is how its bridge knows the service
is there. Each supply has a key of its own for the typed-code verifiers, so a supply's MACs are
worth nothing once the next one has replaced it.

Looking every second costs what changed, not the fleet (ADR 0081): each look reads the orders
stamped (`updated_at`, indexed) since the newest stamp it saw, less `OVERLAP` for transactions
that committed after stamping and for replicas' clocks that differ, and the sites' kill
switches; only the kiosks those touch, and those due a refresh or back online, have their facts
read. The refresh reads a kiosk's facts afresh every `refresh_s` whatever the stamps say, so a
change stamped further back than the overlap still reaches its kiosk within the refresh.

With offline pickups switched off (`refresh_s` 0) the loop still runs, reading nothing: each
kiosk is told they are off (a supply with no period and no order) when it comes online and
every `OFF_REPEAT_S`, so a bridge supplied before the switch forgets its list instead of taking
the silence for being cut off and opening on it.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from pydantic import ValidationError
from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from firmware_bridge.contract import KioskStatus, OfflineOrder, OfflineSupply
from firmware_bridge.contract.codes import code_mac
from firmware_bridge.contract.offline import (
    CODE_FAILURES_MAX,
    CodeBackoff,
    CodeRules,
    encode_key,
)
from locker_service.alerts.service import raise_alert, resolve_alerts
from locker_service.background import BackgroundLoop
from locker_service.config import Settings
from locker_service.db import session_scope
from locker_service.foodsafety.faults import LOCK_JAMMED
from locker_service.live import LiveHub
from locker_service.models import Alert, Compartment, Kiosk, Order, OrderEvent, Site, utcnow
from locker_service.orders import codes
from locker_service.orders.lifecycle import OrderState
from locker_service.orders.schemas import FAULT_NOTICE, NOTICE_PREFIX
from locker_service.pickup import repository as attempts
from locker_service.pickup import throttle
from locker_service.pickup.service import rules_of

log = logging.getLogger(__name__)

CHECK_S = 1.0  # real seconds between looks for a change
# A change stamped up to this long before the newest stamp seen is still found: a transaction
# that committed after a later one, or a replica whose clock is behind the others'.
OVERLAP = timedelta(seconds=5)
FACTS_PER_QUERY = 2_000  # kiosks per facts query: an IN list well under a driver's limit
NO_DEADLINE = timedelta(days=1)  # an order with neither a hold nor a food deadline
# Offline pickups off: each kiosk is told so at least this often (real seconds). A bridge decides
# alone after 3 of its last period's silence, and the first goes as soon as it is online.
OFF_REPEAT_S = 30.0
# An order its kiosk's supply cannot carry (ADR 0108): one alert per order, open while it is
# ready there and left out.
NOT_SUPPLIED_ALERT = "order_not_supplied_offline"


def not_supplied_key(order_id: uuid.UUID) -> str:
    return f"{NOT_SUPPLIED_ALERT}:{order_id}"


def _order_of(key: str) -> uuid.UUID | None:
    """The order a "not supplied" alert's key names (None for a key not made here)."""
    try:
        return uuid.UUID(key.removeprefix(f"{NOT_SUPPLIED_ALERT}:"))
    except ValueError:
        return None


async def _open_not_supplied(session: AsyncSession) -> Sequence[str]:
    """The dedupe keys of the open "not supplied" alerts."""
    return (
        await session.scalars(
            select(Alert.dedupe_key).where(
                Alert.kind == NOT_SUPPLIED_ALERT, Alert.state != "resolved"
            )
        )
    ).all()


class SupplyLink(Protocol):
    """What the loop asks of the kiosk link (`kiosk_link.link.KioskLink`)."""

    @property
    def ready(self) -> bool: ...

    def handled_kiosks(self) -> frozenset[str] | None: ...

    def kiosk_statuses(self) -> Mapping[str, KioskStatus]: ...

    def supply(self, kiosk_id: str, supply: OfflineSupply) -> str | None: ...


@dataclass(frozen=True, slots=True)
class ReadyOrder:
    """As the query reads it (`_READY_COLUMNS`, in this order)."""

    order_id: uuid.UUID
    external_ref: str
    compartment_pk: int
    token_salt: str
    token_sha256: str
    compartment: int
    code_used_at: datetime | None
    hold_until: datetime | None
    food_deadline: datetime | None
    held: bool = False  # held for staff after a fault she was told of (ADR 0128)

    @property
    def used(self) -> bool:
        return self.code_used_at is not None

    @property
    def deadline(self) -> datetime | None:
        """The sooner of its hold's end and its food's."""
        return min(
            (d for d in (self.hold_until, self.food_deadline) if d is not None), default=None
        )


@dataclass(frozen=True, slots=True)
class KioskFacts:
    frozen: bool
    orders: tuple[ReadyOrder, ...]
    site_id: int
    kiosk_pk: int  # the kiosk's database id (its alerts')
    code_failures: int = 0  # the day's wrong codes at its screen and scanner (ADR 0116)

    def fingerprint(self) -> tuple[object, ...]:
        return (
            self.frozen,
            tuple((o.order_id, o.compartment, o.used, o.deadline, o.held) for o in self.orders),
            self.code_failures,
        )


_READY_COLUMNS = (  # ReadyOrder's fields, in its order
    Order.id,
    Order.external_ref,
    Compartment.id,
    Order.token_salt,
    Order.pickup_token_hash,
    Compartment.number,
    Order.code_used_at,
    Order.hold_until,
    Order.food_deadline,
    # `orders.repository.held_by_fault` in SQL: a fault that holds food latched, or one she
    # was told of since she was ready (ADR 0128).
    or_(
        and_(Compartment.fault.is_not(None), Compartment.fault != LOCK_JAMMED),
        exists().where(
            OrderEvent.order_id == Order.id,
            OrderEvent.action == NOTICE_PREFIX + FAULT_NOTICE,
            or_(Order.ready_at.is_(None), OrderEvent.at >= Order.ready_at),
        ),
    ),
)


async def kiosk_facts(
    session: AsyncSession, kiosk_codes: Collection[str], failures_since: datetime
) -> dict[str, KioskFacts]:
    """What each of these kiosks must know: three queries, the last for the wrong codes at
    their screens and scanners since `failures_since` (ADR 0116)."""
    kiosks = select(Kiosk.code, Site.kill_switch_engaged, Site.id, Kiosk.id).join(
        Site, Site.id == Kiosk.site_id
    )
    ready = (
        select(Kiosk.code, *_READY_COLUMNS)
        .join(Compartment, Compartment.id == Order.compartment_id)
        .join(Kiosk, Kiosk.id == Compartment.kiosk_id)
        .where(Order.state == OrderState.READY.value)
        .order_by(Kiosk.code, Compartment.number)
    )
    kiosks = kiosks.where(Kiosk.code.in_(list(kiosk_codes)))
    ready = ready.where(Kiosk.code.in_(list(kiosk_codes)))
    by_kiosk: dict[str, list[ReadyOrder]] = {}
    for code, *fields in (await session.execute(ready)).all():
        by_kiosk.setdefault(code, []).append(ReadyOrder(*fields))
    found = (await session.execute(kiosks)).all()
    failures = await attempts.wrong_codes_at_kiosks(
        session, [kiosk_pk for *_, kiosk_pk in found], failures_since
    )
    return {
        code: KioskFacts(
            bool(frozen),
            tuple(by_kiosk.get(code, ())),
            site_id,
            kiosk_pk,
            failures.get(kiosk_pk, 0),
        )
        for code, frozen, site_id, kiosk_pk in found
    }


@dataclass(frozen=True, slots=True)
class Changes:
    """What one look at the stamps found."""

    kiosks: frozenset[str]  # kiosks an order changed at (where it is now)
    orders: frozenset[uuid.UUID]  # the orders changed (a kiosk listing one is touched too)
    sites: frozenset[int]  # sites whose kill switch changed


class ChangeWatch:
    """Finds what changed since the last look from the orders' stamps and the sites' kill
    switches. The first look only notes the newest stamp and the orders inside the overlap:
    every kiosk's facts are read then anyway."""

    def __init__(self) -> None:
        self._newest: datetime | None = None
        # Inside the overlap: each order's version and stamp. Both: an order stamped without a
        # step (a fault that holds her food, a hold given back) changed what its kiosk is told.
        self._seen: dict[uuid.UUID, tuple[int, datetime]] = {}
        self._frozen: dict[int, bool] | None = None

    async def look(self, session: AsyncSession, now: datetime) -> Changes:
        """`now`: this replica's clock, past which no stamp moves the watermark (a replica
        whose clock runs ahead would otherwise hide the others' changes)."""
        sites = {
            site: bool(frozen)
            for site, frozen in (await session.execute(select(Site.id, Site.kill_switch_engaged)))
        }
        known, self._frozen = self._frozen, sites
        first = known is None  # every kiosk's facts are read this round anyway: only note them
        if first:
            newest = await session.scalar(select(func.max(Order.updated_at)))
            self._newest = None if newest is None else min(newest, now)
        switched = frozenset(
            site
            for site, frozen in sites.items()
            if known is not None and known.get(site) != frozen
        )
        changed = select(Order.id, Order.version, Order.updated_at, Kiosk.code).outerjoin(
            Compartment, Compartment.id == Order.compartment_id
        )
        changed = changed.outerjoin(Kiosk, Kiosk.id == Compartment.kiosk_id)
        if self._newest is not None:  # else there was no order at all: each is new
            changed = changed.where(Order.updated_at >= self._newest - OVERLAP)
        kiosks: set[str] = set()
        orders: set[uuid.UUID] = set()
        for order_id, version, stamp, kiosk in (await session.execute(changed)).all():
            if self._seen.get(order_id) == (version, stamp):
                continue  # looked at already, inside the overlap
            self._seen[order_id] = (version, stamp)
            if first:
                continue
            orders.add(order_id)
            if kiosk is not None:
                kiosks.add(kiosk)
            stamp = min(stamp, now)
            self._newest = stamp if self._newest is None else max(self._newest, stamp)
        if self._newest is not None:
            floor = self._newest - OVERLAP
            for order_id in [o for o, (_, stamp) in self._seen.items() if stamp < floor]:
                del self._seen[order_id]
        return Changes(frozenset(kiosks), frozenset(orders), switched)


def switched_off(now: datetime, rules: CodeRules | None = None) -> OfflineSupply:
    """The supply that says offline pickups are off: no period, no order (its key verifies
    nothing). With the rules, by which the bridge keeps its keypad's refusals meanwhile."""
    return OfflineSupply(
        supply_id=uuid.uuid4().hex,
        issued_at=now,
        refresh_s=0,
        code_key=encode_key(secrets.token_bytes(32)),
        code_rules=rules,
    )


def build_supply(
    secret_key: str,
    facts: KioskFacts,
    refresh_s: float,
    now: datetime,
    key: bytes,
    kiosk_id: str = "",
    rules: CodeRules | None = None,
) -> tuple[OfflineSupply, dict[uuid.UUID, str]]:
    """The supply of one kiosk, its typed-code verifiers under `key`, and the orders left out,
    each with why. An order whose stored facts cannot be supplied (a salt that is not hex, a
    token hash that is not SHA-256) is left out and logged: its purchaser's code still works
    while the kiosk reaches the service, and every other order and kiosk is still supplied
    (one bad row failed every kiosk's supply, every second). The loop raises an alert for it
    (ADR 0108)."""
    orders = []
    left_out: dict[uuid.UUID, str] = {}
    for o in facts.orders:
        try:
            token = codes.pickup_token(secret_key, o.order_id, o.token_salt)
            orders.append(
                OfflineOrder(
                    order_id=str(o.order_id),
                    compartment=o.compartment,
                    token_sha256=o.token_sha256,
                    code_mac=code_mac(key, codes.fallback_code(secret_key, token)),
                    deadline=o.deadline or now + NO_DEADLINE,
                    used=o.used,
                    held=bool(o.held),
                )
            )
        except ValueError as e:  # pydantic's ValidationError is one too
            why = (
                "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
                if isinstance(e, ValidationError)
                else str(e)
            )
            log.error(
                "order %s left out of kiosk %s's offline supply: %s", o.order_id, kiosk_id, why
            )
            left_out[o.order_id] = why
    supply = OfflineSupply(
        supply_id=uuid.uuid4().hex,
        issued_at=now,
        refresh_s=refresh_s,
        frozen=facts.frozen,
        code_key=encode_key(key),
        orders=orders,
        # At most what the contract carries: any count past the day's budget acts the same.
        code_failures=min(facts.code_failures, CODE_FAILURES_MAX),
        code_rules=rules,
    )
    return supply, left_out


def code_rules(rules: throttle.Rules) -> CodeRules:
    """The service's throttling of typed codes at a kiosk, as its keypad applies it alone
    (docs/adr/0119): per source, and the kiosk's day."""

    def wire(rule: throttle.Backoff) -> CodeBackoff:
        return CodeBackoff.bounded(
            window_s=rule.window.total_seconds(),
            free=rule.free,
            first_delay_s=rule.first_delay.total_seconds(),
            max_delay_s=rule.max_delay.total_seconds(),
        )

    return CodeRules(source=wire(rules.source), kiosk=wire(rules.kiosk))


@dataclass(slots=True)
class _Sent:
    fingerprint: tuple[object, ...]
    at: float  # monotonic
    status_ts: datetime | None  # the kiosk's status when it was sent: a new one means reconnected
    site_id: int
    orders: frozenset[uuid.UUID]  # the orders it lists: a change to one touches this kiosk


class SupplyLoop:
    """Sends each kiosk this replica handles its supply when due (see the module's text)."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        link: SupplyLink,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        hub: LiveHub | None = None,
    ) -> None:
        self.settings = settings
        self.refresh_s = settings.offline_supply_refresh_s
        self._code_rules = code_rules(rules_of(settings))
        self._sessionmaker = sessionmaker
        self._link = link
        self._monotonic = monotonic
        self._hub = hub
        self._sent: dict[str, _Sent] = {}
        # Per kiosk, the orders whose "not supplied" alert is open, as this replica knows:
        # read from the alerts the first time it supplies the kiosk (another replica, or this
        # one before a restart, may have raised them).
        self._alerted: dict[str, frozenset[uuid.UUID]] = {}
        self._swept_at: float | None = None  # monotonic: the last sweep of ended orders
        self._watch = ChangeWatch()
        self.sent = 0  # supplies handed to the broker
        self.facts_read = 0  # kiosks whose facts were looked up, over all rounds
        self._loop = BackgroundLoop(
            "offline-supply",
            self.round,
            period_s=min(CHECK_S, self.refresh_s / 3) if self.refresh_s > 0 else CHECK_S,
            log=log,
            failure="offline supply round failed",
            error_pause_s=CHECK_S,
        )

    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    def wake(self) -> None:
        self._loop.wake()

    async def round(self) -> bool:
        """Send every supply that is due; never busy (the next look is a period away)."""
        if not self._link.ready:
            self._forget()  # whatever was sent may not have arrived: all again once back
            return False
        handled = self._link.handled_kiosks()
        if handled is not None and not handled:
            self._forget()
            return False
        clock = self._monotonic()
        online = {
            kiosk_id: status
            for kiosk_id, status in self._link.kiosk_statuses().items()
            if status.state == "online" and (handled is None or kiosk_id in handled)
        }
        for kiosk_id in set(self._sent) - set(online):
            # Handed over, gone or away (nobody to hear it): supplied afresh once back.
            del self._sent[kiosk_id]
            self._alerted.pop(kiosk_id, None)
        if self.refresh_s <= 0:
            await self._tell_off(online, clock)
            return False
        try:
            await self._supply(online, clock)
        except Exception:
            # What the look found may not have reached its kiosks: look afresh (every kiosk).
            self._watch = ChangeWatch()
            self._forget()
            raise
        return False

    def _forget(self) -> None:
        self._sent.clear()
        self._alerted.clear()

    async def _supply(self, online: dict[str, KioskStatus], clock: float) -> None:
        now = utcnow()
        facts: dict[str, KioskFacts] = {}
        async with session_scope(self._sessionmaker) as session:
            changes = await self._watch.look(session, now)
            touched = [
                kiosk_id
                for kiosk_id, status in online.items()
                if self._touched(kiosk_id, status.ts, clock, changes)
            ]
            # The kiosk's day of wrong codes, for its keypad's budget while cut off (ADR 0116).
            day = now - timedelta(seconds=self.settings.scaled(throttle.KIOSK_DAY_S))
            for start in range(0, len(touched), FACTS_PER_QUERY):
                batch = touched[start : start + FACTS_PER_QUERY]
                facts.update(await kiosk_facts(session, batch, failures_since=day))
            await self._recall_alerts(session, facts)
        self.facts_read += len(touched)
        left_out: dict[str, dict[uuid.UUID, str]] = {}
        for kiosk_id in set(touched) - set(facts):
            # Not a kiosk of the database (its status came first): looked at again with the
            # refresh, or at once when an order changes there; nothing is sent to it.
            self._sent[kiosk_id] = _Sent((), clock, online[kiosk_id].ts, 0, frozenset())
        for kiosk_id, kiosk in facts.items():
            status = online[kiosk_id]
            sent = self._sent.get(kiosk_id)
            fingerprint = kiosk.fingerprint()
            if (
                sent is not None
                and sent.fingerprint == fingerprint
                and sent.status_ts == status.ts
                and clock - sent.at < self.refresh_s
            ):
                continue
            supply, left_out[kiosk_id] = build_supply(
                self.settings.secret_key,
                kiosk,
                self.refresh_s,
                now,
                secrets.token_bytes(32),
                kiosk_id,
                self._code_rules,
            )
            failure = self._link.supply(kiosk_id, supply)
            if failure is not None:
                log.warning("offline supply for kiosk %s not sent: %s", kiosk_id, failure)
                # Read again next round: the change that touched it has been looked at.
                self._sent.pop(kiosk_id, None)
                self._alerted.pop(kiosk_id, None)  # read again once it is supplied
                del left_out[kiosk_id]
                continue
            # A kiosk's first supply is stamped up to half a refresh early, so a fleet supplied
            # in one round (a restart) is refreshed over half a period, not all in one round.
            first = sent is None or sent.status_ts != status.ts
            if len(supply.orders) < len(kiosk.orders):
                # Some left out: the next read of its facts (a change to one of them, the
                # refresh) builds it again, so a row put right reaches the kiosk at once.
                fingerprint = (*fingerprint, "incomplete")
            self._sent[kiosk_id] = _Sent(
                fingerprint,
                clock - (random.random() * self.refresh_s / 2 if first else 0.0),
                status.ts,
                kiosk.site_id,
                frozenset(o.order_id for o in kiosk.orders),
            )
            self.sent += 1
        await self._alert(facts, left_out)
        if self._swept_at is None or clock - self._swept_at >= self.refresh_s:
            self._swept_at = clock
            try:
                await self._sweep()
            except Exception:  # tried again at the next refresh; the supplies stand
                log.exception("could not sweep the alerts of orders no longer ready")

    async def _tell_off(self, online: dict[str, KioskStatus], clock: float) -> None:
        """Offline pickups are off: each kiosk is told so once online and every OFF_REPEAT_S,
        and no order is left "not supplied" (nothing is decided offline to supply it for)."""
        if self._swept_at is None or clock - self._swept_at >= OFF_REPEAT_S:
            self._swept_at = clock
            try:
                await self._resolve_not_supplied()
            except Exception:  # tried again at the next repeat; the kiosks are still told
                log.exception("could not resolve the 'not supplied' alerts")
        for kiosk_id, status in online.items():
            sent = self._sent.get(kiosk_id)
            if sent is not None and sent.status_ts == status.ts and clock - sent.at < OFF_REPEAT_S:
                continue
            failure = self._link.supply(kiosk_id, switched_off(utcnow(), self._code_rules))
            if failure is not None:
                log.warning("kiosk %s not told offline pickups are off: %s", kiosk_id, failure)
                self._sent.pop(kiosk_id, None)
                continue
            first = sent is None or sent.status_ts != status.ts
            spread = random.random() * OFF_REPEAT_S / 2 if first else 0.0  # as a first supply
            self._sent[kiosk_id] = _Sent((), clock - spread, status.ts, 0, frozenset())
            self.sent += 1

    async def _resolve_not_supplied(self) -> None:
        async with session_scope(self._sessionmaker) as session:
            for key in await _open_not_supplied(session):
                await resolve_alerts(session, key, self._hub)

    async def _recall_alerts(self, session: AsyncSession, facts: dict[str, KioskFacts]) -> None:
        """The open "not supplied" alerts of the kiosks this replica has not supplied yet."""
        new = {kiosk.kiosk_pk: code for code, kiosk in facts.items() if code not in self._alerted}
        open_alerts: dict[str, set[uuid.UUID]] = {code: set() for code in new.values()}
        pks = list(new)
        for start in range(0, len(pks), FACTS_PER_QUERY):
            for kiosk_pk, key in await session.execute(
                select(Alert.kiosk_id, Alert.dedupe_key).where(
                    Alert.kind == NOT_SUPPLIED_ALERT,
                    Alert.state != "resolved",
                    Alert.kiosk_id.in_(pks[start : start + FACTS_PER_QUERY]),
                )
            ):
                order_id = _order_of(key)
                if kiosk_pk is not None and order_id is not None:
                    open_alerts[new[kiosk_pk]].add(order_id)
        self._alerted.update({code: frozenset(orders) for code, orders in open_alerts.items()})

    async def _alert(
        self, facts: dict[str, KioskFacts], left_out: dict[str, dict[uuid.UUID, str]]
    ) -> None:
        """An alert for each order newly left out of its kiosk's supply; resolved once it is
        supplied, or no longer ready there (ADR 0108). One transaction for the round, its
        resolutions first (an order moved to another kiosk is resolved at the old one and
        raised at the new one)."""
        changed = {
            code: orders
            for code, orders in left_out.items()
            if frozenset(orders) != self._alerted.get(code, frozenset())
        }
        if not changed:
            return
        async with session_scope(self._sessionmaker) as session:
            for code, orders in changed.items():
                for order_id in self._alerted.get(code, frozenset()) - frozenset(orders):
                    await resolve_alerts(session, not_supplied_key(order_id), self._hub)
            for code, orders in changed.items():
                kiosk = facts[code]
                before = self._alerted.get(code, frozenset())
                for order in kiosk.orders:
                    if order.order_id in orders and order.order_id not in before:
                        await raise_alert(
                            session,
                            kind=NOT_SUPPLIED_ALERT,
                            severity="warning",
                            message=(
                                f"order {order.external_ref} in compartment {order.compartment}"
                                f" of kiosk {code} cannot be checked while the kiosk is cut"
                                f" off: {orders[order.order_id]}"
                            ),
                            dedupe_key=not_supplied_key(order.order_id),
                            site_id=kiosk.site_id,
                            kiosk_id=kiosk.kiosk_pk,
                            compartment_id=order.compartment_pk,
                            hub=self._hub,
                        )
        for code, orders in changed.items():
            self._alerted[code] = frozenset(orders)

    async def _sweep(self) -> None:
        """Resolve the open "not supplied" alerts whose order is no longer ready anywhere:
        ended while its kiosk was away (offline, or held by nobody), or at a kiosk retired.
        Those of orders still ready wait for their kiosk's supply."""
        async with session_scope(self._sessionmaker) as session:
            keys = await _open_not_supplied(session)
            orders = {order_id: key for key in keys if (order_id := _order_of(key)) is not None}
            ready: set[uuid.UUID] = set()
            ids = list(orders)
            for start in range(0, len(ids), FACTS_PER_QUERY):
                ready.update(
                    await session.scalars(
                        select(Order.id).where(
                            Order.id.in_(ids[start : start + FACTS_PER_QUERY]),
                            Order.state == OrderState.READY.value,
                        )
                    )
                )
            for order_id in set(orders) - ready:
                await resolve_alerts(session, orders[order_id], self._hub)
        for code, alerted in self._alerted.items():
            self._alerted[code] = alerted & ready

    def _touched(
        self, kiosk_id: str, status_ts: datetime | None, clock: float, changes: Changes
    ) -> bool:
        """Whether the kiosk's facts must be read this round."""
        sent = self._sent.get(kiosk_id)
        return (
            sent is None  # never supplied, or since it came back or was taken
            or sent.status_ts != status_ts  # reconnected: a restarted bridge lost its verifiers
            or clock - sent.at >= self.refresh_s  # the refresh, which reads afresh anyway
            or kiosk_id in changes.kiosks
            or sent.site_id in changes.sites
            or not sent.orders.isdisjoint(changes.orders)  # one of its orders left or moved
        )
