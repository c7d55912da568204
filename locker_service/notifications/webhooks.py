"""Merchants' webhooks delivered: signed, at least once, in order per order, with backoff.

Deliveries are rows written with the order's step (`locker_service.orders.webhooks`). A round
claims the due ones whose earlier deliveries (same endpoint, same order) are all done, so a
receiver never hears `order.ready` before `order.dropped_off`; a claim is leased
(`locked_until`) and written back with compare-and-set, so two replicas never both send one.

Signing is Standard Webhooks (standardwebhooks.com): headers `webhook-id` (the message id, the
same on every retry: the receiver's key for "once"), `webhook-timestamp` (seconds) and
`webhook-signature` = `v1,` + base64 HMAC-SHA256 of `id.timestamp.body` under the endpoint's
secret (`whsec_` + base64). During a rotation's overlap both secrets sign, space-separated.

A 2xx is delivered; anything else (a refusal, a redirect, a timeout, an address the target
policy refuses now) is retried with backoff, and after `webhook_max_attempts` the delivery is
dead: listed for the merchant, who can have it sent again.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx
from sqlalchemy import delete, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from locker_service.alerts.service import open_alert, raise_alert, resolve_alerts
from locker_service.background import BackgroundLoop
from locker_service.config import Settings
from locker_service.contacts.targets import Resolver, TargetPolicy, TargetRefused, resolve
from locker_service.db import rowcount
from locker_service.live import LiveHub
from locker_service.models import (
    Alert,
    Merchant,
    Order,
    WebhookDelivery,
    WebhookEndpoint,
    utcnow,
)

log = logging.getLogger(__name__)

CLAIM_BATCH = 50
SECRET_PREFIX = "whsec_"
ERROR_LENGTH = 500
REMOVED = "the endpoint was removed"  # the merchant's own doing: no alert
DEAD_ALERT = "webhook_dead"
ALERT_MESSAGE_LENGTH = 1000  # alerts.message


def dead_key(endpoint_id: int, site_id: int | None) -> str:
    """One open alert per merchant endpoint and site where it gave up on a delivery."""
    return f"{DEAD_ALERT}:{endpoint_id}:{site_id}"


async def endpoint_removed(session: AsyncSession, endpoint_id: int, hub: LiveHub | None) -> None:
    """The merchant removed the endpoint: its dead letters can no longer be sent, and nothing
    is left for an operator to chase."""
    for key in await _open_dead_alerts(session, endpoint_id):
        await resolve_alerts(session, key, hub)


async def _open_dead_alerts(
    session: AsyncSession, endpoint_id: int, limit: int | None = None
) -> list[str]:
    """The keys of the endpoint's unresolved `webhook_dead` alerts, at any site."""
    keys = await session.scalars(
        select(Alert.dedupe_key)
        .where(
            Alert.state != "resolved",  # the partial index of unresolved alerts
            Alert.dedupe_key.startswith(f"{DEAD_ALERT}:{endpoint_id}:"),
        )
        .limit(limit)
    )
    return list(keys.all())


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def policy(settings: Settings) -> TargetPolicy:
    """Where a merchant's webhook may post: global addresses, or inside the networks the
    operator allowed merchants (LOCKER_WEBHOOK_ALLOWED_NETWORKS, empty by default: not the
    contact URLs' networks, which are the operator's own receivers)."""
    return TargetPolicy.of(("https", "http"), settings.webhook_allowed_networks)


@dataclass(frozen=True, slots=True)
class Target:
    """Where one send connects: the checked address, with the URL's host for the `Host`
    header and TLS (the name is not looked up again: a second answer could point inside)."""

    url: str  # with the address in place of the host
    host: str  # the Host header
    server_name: str  # TLS: the certificate must be the URL's host's


async def target(url: str, rules: TargetPolicy, resolver: Resolver = resolve) -> Target:
    """The address a send to `url` connects to, checked now; TargetRefused (422) why not:
    a URL httpx cannot send to, no address at all (refused, not let through), an internal
    address, plain http outside the allowed networks."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise TargetRefused(f"not a webhook URL: {exc}", code="target_invalid") from None
    [host] = rules.hosts(url)  # the scheme is on the list, the host is named
    addresses = await resolver(host)
    if not addresses:
        raise TargetRefused(f"webhook host {host!r} has no address", code="target_invalid")
    refused = rules.refused_address(addresses)
    if refused is not None:
        raise TargetRefused(
            f"webhook host {host!r} is an internal address ({refused})",
            code="target_address_not_allowed",
        )
    if parsed.scheme == "http" and not all(_allowed(a, rules) for a in addresses):
        raise TargetRefused("a webhook URL must be https", code="webhook_https_required")
    address = addresses[0]
    port = f":{parsed.port}" if parsed.port else ""
    return Target(str(parsed.copy_with(host=address)), f"{parsed.host}{port}", host)


def _allowed(address: str, rules: TargetPolicy) -> bool:
    """Inside one of the networks the operator allowed merchants (a local receiver)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in rules.allowed_networks)


async def check_url(url: str, settings: Settings) -> str:
    """`url` if a webhook may be registered there now; TargetRefused (422) naming why not."""
    if len(url) > 2000:
        raise TargetRefused("a webhook URL is at most 2,000 characters", code="target_invalid")
    await target(url, policy(settings))
    return url


def backoff_s(settings: Settings, attempts: int) -> float:
    base = min(
        settings.webhook_backoff_s * 2 ** max(attempts - 1, 0), settings.webhook_backoff_max_s
    )
    return float(base) * random.uniform(0.8, 1.2)


PRUNE_EVERY_S = 3600.0
PRUNE_CHUNK = 1_000
FINISHED = ("delivered", "dead")


async def prune_finished_before(
    sessionmaker: async_sessionmaker[AsyncSession], cutoff: datetime
) -> int:
    """Delete the delivered and dead deliveries made before `cutoff`, in chunks (each its own
    short transaction); how many. Pending and sending ones stay, however old."""
    total = 0
    while True:
        async with sessionmaker() as session, session.begin():
            ids = (
                await session.scalars(
                    select(WebhookDelivery.id)
                    .where(
                        WebhookDelivery.status.in_(FINISHED), WebhookDelivery.created_at < cutoff
                    )
                    .limit(PRUNE_CHUNK)
                )
            ).all()
            if ids:
                await session.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(ids)))
        total += len(ids)
        if len(ids) < PRUNE_CHUNK:
            return total
        await asyncio.sleep(0)


class WebhookWorker:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        transport: httpx.AsyncBaseTransport | None = None,
        hub: LiveHub | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._hub = hub
        self._policy = policy(settings)
        self._client = httpx.AsyncClient(
            timeout=settings.webhook_timeout_s, follow_redirects=False, transport=transport
        )
        self.delivered = 0
        self.failed_attempts = 0
        self._loop = BackgroundLoop(
            "webhook-deliveries",
            self._round,
            period_s=settings.webhook_poll_s,
            log=log,
            failure="webhook delivery round failed",
        )
        self._pruning = BackgroundLoop(
            "webhook-retention",
            self._prune,
            period_s=PRUNE_EVERY_S,
            log=log,
            failure="webhook delivery retention round failed",
        )

    async def start(self) -> None:
        self._loop.start()
        self._pruning.start()

    async def stop(self) -> None:
        await self._pruning.stop()
        await self._loop.stop()
        await self._client.aclose()

    async def _prune(self) -> bool:
        cutoff = utcnow() - timedelta(days=self._settings.webhook_retention_days)
        pruned = await prune_finished_before(self._sessionmaker, cutoff)
        if pruned:
            log.info("deleted %d webhook deliveries finished before %s", pruned, cutoff)
        return False  # once an hour is enough, however many went

    async def _round(self) -> bool:
        return await self.run_once() > 0

    async def run_once(self, now: datetime | None = None) -> int:
        """Claim the due deliveries that are next in their order and send them; how many."""
        now = now or utcnow()
        async with self._sessionmaker() as session, session.begin():
            claimed = await self._claim(session, now)
        await asyncio.gather(*(self._send(d, now) for d in claimed))
        return len(claimed)

    async def _claim(self, session: AsyncSession, now: datetime) -> list[WebhookDelivery]:
        earlier = aliased(WebhookDelivery)
        open_states = ("pending", "sending")
        query = (
            select(WebhookDelivery)
            .where(
                WebhookDelivery.status.in_(open_states),
                WebhookDelivery.next_attempt_at <= now,
                or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until <= now),
                ~exists().where(
                    earlier.endpoint_id == WebhookDelivery.endpoint_id,
                    earlier.order_id == WebhookDelivery.order_id,
                    earlier.id < WebhookDelivery.id,
                    earlier.status.in_(open_states),
                ),
            )
            .order_by(WebhookDelivery.id)
            .limit(CLAIM_BATCH)
        )
        if session.bind is not None and session.bind.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=WebhookDelivery)
        rows = list((await session.scalars(query)).all())
        lease = now + timedelta(seconds=self._settings.webhook_lease_s)
        for row in rows:
            row.status, row.attempts, row.locked_until = "sending", row.attempts + 1, lease
        await session.flush()
        return rows

    async def _send(self, delivery: WebhookDelivery, now: datetime) -> None:
        async with self._sessionmaker() as session:
            endpoint = await session.get(WebhookEndpoint, delivery.endpoint_id)
        error: str | None = None
        if endpoint is None or not endpoint.enabled:
            await self._finish(delivery, "dead", REMOVED, now)
            return
        body = json.dumps(delivery.payload, separators=(",", ":")).encode()
        timestamp = int(now.timestamp())
        keys = [endpoint.secret]
        if endpoint.previous_secret and endpoint.previous_until and endpoint.previous_until > now:
            keys.append(endpoint.previous_secret)
        headers = {
            "content-type": "application/json",
            "user-agent": "smart-food-locker-webhooks/1",
            "webhook-id": delivery.message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(
                signature(k, delivery.message_id, timestamp, body) for k in keys
            ),
        }
        try:
            # The whole exchange bounded (a receiver trickling its answer a byte at a time
            # holds no round), its body never read.
            async with asyncio.timeout(self._settings.webhook_timeout_s):
                to = await target(endpoint.url, self._policy)  # DNS may have changed since
                async with self._client.stream(
                    "POST",
                    to.url,
                    content=body,
                    headers={**headers, "host": to.host},
                    extensions={"sni_hostname": to.server_name},
                ) as answer:
                    status = answer.status_code
            if 200 <= status < 300:
                await self._finish(delivery, "delivered", None, now)
                return
            error = f"HTTP {status}"
        except TargetRefused as exc:
            error = exc.message
        except TimeoutError:
            error = f"no answer within {self._settings.webhook_timeout_s:g} s"
        except Exception as exc:  # anything else: a failed attempt, never a stuck row
            error = f"{type(exc).__name__}: {exc}"
        self.failed_attempts += 1
        if delivery.attempts >= self._settings.webhook_max_attempts:
            log.warning(
                "webhook %s dead after %d attempts: %s",
                delivery.message_id,
                delivery.attempts,
                error,
            )
            await self._finish(delivery, "dead", error, now)
        else:
            later = now + timedelta(seconds=backoff_s(self._settings, delivery.attempts))
            await self._finish(delivery, "pending", error, later)

    async def _finish(
        self, delivery: WebhookDelivery, status: str, error: str | None, at: datetime
    ) -> None:
        """Write the outcome, if this claim still holds the row (compare-and-set)."""
        values: dict[str, object] = {"status": status, "locked_until": None}
        if status == "delivered":
            values["delivered_at"] = at
            values["last_error"] = None
            self.delivered += 1
        else:
            values["last_error"] = (error or "")[:ERROR_LENGTH]
            if status == "pending":
                values["next_attempt_at"] = at
        async with self._sessionmaker() as session, session.begin():
            result = await session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery.id,
                    WebhookDelivery.status == "sending",
                    WebhookDelivery.attempts == delivery.attempts,
                )
                .values(**values)
            )
        if rowcount(result) != 1:
            log.info("webhook %s: another claim took it over", delivery.message_id)
            return
        # Told after the outcome is written, in a transaction of its own: an alert that cannot
        # be written never leaves the row `sending`, to be sent again and again.
        try:
            if status == "dead" and error != REMOVED:
                await self._report_dead(delivery, error or "")
            elif status == "delivered":
                await self._heard_again(delivery)
        except Exception:
            log.exception("webhook %s: its operator alert was not updated", delivery.message_id)

    async def _report_dead(self, delivery: WebhookDelivery, error: str) -> None:
        """A delivery given up on: the merchant did not hear it, and their own channel is the
        one that failed. The operator of the order's site is told (one alert per endpoint and
        site, until every dead letter there is sent again or the endpoint removed), so someone
        calls them; they can read the order or send it again."""
        async with self._sessionmaker() as session, session.begin():
            found = (
                await session.execute(
                    select(Merchant.name, WebhookEndpoint.url, Order.external_ref, Order.site_id)
                    .join(WebhookEndpoint, WebhookEndpoint.merchant_id == Merchant.id)
                    .join(Order, Order.id == delivery.order_id)
                    .where(WebhookEndpoint.id == delivery.endpoint_id)
                )
            ).first()
            if found is None:
                return
            merchant, url, ref, site_id = found
            host = (urlsplit(url).hostname or "?")[:100]
            message = (
                f"{merchant}'s webhook at {host} gave up on {delivery.event_type} of order {ref} "
                f"after {delivery.attempts} attempts (last: {error[:200]}): the merchant did not "
                "hear it. Tell them: they fix the endpoint, then send it again from their dead "
                "letters (or read the order)"
            )
            await raise_alert(
                session,
                kind=DEAD_ALERT,
                severity="warning",
                message=message[:ALERT_MESSAGE_LENGTH],
                dedupe_key=dead_key(delivery.endpoint_id, site_id),
                site_id=site_id,
                hub=self._hub,
            )

    async def _heard_again(self, delivery: WebhookDelivery) -> None:
        """A delivery to an endpoint with an open alert at the order's site got through: once
        no dead letter of it is left there (each sent again), the merchant has heard it all."""
        async with self._sessionmaker() as session, session.begin():
            if not await _open_dead_alerts(session, delivery.endpoint_id, limit=1):
                return  # the usual case: one read of the few unresolved alerts
            site_id = await session.scalar(
                select(Order.site_id).where(Order.id == delivery.order_id)
            )
            key = dead_key(delivery.endpoint_id, site_id)
            if site_id is None or await open_alert(session, key) is None:
                return
            left = await session.scalar(
                select(WebhookDelivery.id)
                .join(Order, Order.id == WebhookDelivery.order_id)
                .where(
                    WebhookDelivery.endpoint_id == delivery.endpoint_id,
                    WebhookDelivery.status == "dead",
                    Order.site_id == site_id,
                )
                .limit(1)
            )
            if left is None:
                await resolve_alerts(session, key, self._hub)
