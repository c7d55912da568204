"""The service's kiosk link: kiosk reports in, commands out, replies matched to their commands.

A facade that wires the link's parts and keeps one public API for its callers:
- `connection`: the two paho clients (both with persistent sessions), the MQTT 5 -> 3.1.1
  probe and the subscriptions that follow the leases; paho's threads only hand over to the loop;
- `pending`: commands waiting for their final reply;
- `clocks`: how far behind the service's clock each kiosk's may be, which a command's wait for
  "the kiosk never had it" takes into account (ADR 0089);
- `lanes`: one queue and worker per kiosk and lane, acks after handling, the lease standing;
- `live`: kiosk reports on the operators' live hub.
Here: the routing of a received message (classify, validate, count) to those parts, and
`command`. All of the link's state is the event loop's.

Delivery is at least once end to end: the session is persistent (events a kiosk sends while the
service restarts wait in the broker), and QoS 1 messages are acknowledged only after the handler
has finished with them, so a service killed mid-event gets that event again.

Replicas (ADR 0044): each kiosk is handled by the replica that holds its lease in the database
(`lease_keeper.LeaseKeeper`). The link subscribes to a kiosk's events and telemetry only while
its replica holds or awaits the kiosk's lease (plain topics, no `$share`, so any MQTT 3.1.1
broker will do), and each handler call runs under the lease's fence. Status and snapshots reach
every replica for its live hub, but only the holder hands them to the story. Without a lease
keeper the link handles every kiosk (one replica). Each replica has its own reply topic under the
kiosk's prefix, `lockers/v1/<kiosk>/replies/<replica>`, so a kiosk's broker ACL
(`lockers/v1/<kiosk>/#`) covers its replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError

from firmware_bridge import contract
from firmware_bridge.contract import MessageKind, classify_topic
from firmware_bridge.contract.broker import BrokerEndpoint
from locker_service.kiosk_link.asks import StateAsks
from locker_service.kiosk_link.clocks import KioskClocks
from locker_service.kiosk_link.config import REPLICA_ID_PATTERN, LinkSettings
from locker_service.kiosk_link.connection import Delivery, KioskConnection
from locker_service.kiosk_link.counters import LinkCounters
from locker_service.kiosk_link.errors import InvalidCommand, KioskLinkError, KioskUnreachable
from locker_service.kiosk_link.fencing import CURRENT_FENCE
from locker_service.kiosk_link.handler import KioskHandler, SiteResolver, TelemetrySink
from locker_service.kiosk_link.lanes import Lanes
from locker_service.kiosk_link.lease_keeper import LeaseKeeper
from locker_service.kiosk_link.live import LivePublisher
from locker_service.kiosk_link.pending import PendingCommands
from locker_service.kiosk_link.sequencer import RecordedUpTo
from locker_service.live import LiveHub

__all__ = ["MODEL_BY_KIND", "KioskLink", "LinkCounters", "reply_topic"]

log = logging.getLogger(__name__)

# How long a replica that has just taken a kiosk's lease waits for the kiosk to have published
# its state again (ADR 0091; more for a kiosk whose clock is behind, `_clock_wait_s`), and then,
# after a `succeeded`, for the snapshots it sent before it (ADR 0093): they come on the other
# connection, maybe behind a takeover's backlog. Only the copies the broker kept from before
# the take wait on them, handed to the story for the compartments whose reports do not come.
REPORT_STATE_TIMEOUT_S = 10.0
# Telemetry sent again (`resent`, ADR 0098) is taken only as an answer: for this long after the
# replica asked, stamped after the time it asked from and not after the ask (beyond this skew).
RESENT_ACCEPTED_S = 60.0
RESENT_AHEAD = timedelta(minutes=2)
REPORTED_SNAPSHOTS_WAIT_S = 10.0


def reply_topic(kiosk_id: str, replica_id: str) -> str:
    return contract.Topics(kiosk_id).replies(replica_id)


MODEL_BY_KIND: dict[MessageKind, type[BaseModel]] = {
    "status": contract.KioskStatus,
    "snapshot": contract.CompartmentSnapshot,
    "event": contract.Event,
    "telemetry": contract.Telemetry,
    "minutes": contract.TelemetryMinutes,
    "reply": contract.Reply,
}


class KioskLink:
    def __init__(
        self,
        settings: LinkSettings,
        handler: KioskHandler,
        hub: LiveHub,
        *,
        telemetry: TelemetrySink | None = None,
        sites: SiteResolver | None = None,
        wait_observer: Callable[[str, float], None] | None = None,
        leases: LeaseKeeper | None = None,
    ) -> None:
        if not REPLICA_ID_PATTERN.match(settings.replica_id):
            raise ValueError(
                f"replica id {settings.replica_id!r} must match {REPLICA_ID_PATTERN.pattern}"
            )
        password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
        endpoint = BrokerEndpoint.parse(
            settings.mqtt_url,
            username=settings.mqtt_username,
            password=password,
            ca_file=settings.mqtt_tls_ca,
        )
        self.replica_id = settings.replica_id
        self.counters = LinkCounters()
        self._leases = leases
        self._supplies = itertools.count(1)  # the seq of this process's offline supplies
        self._connection = KioskConnection(
            endpoint,
            settings.mqtt_protocol,
            settings.replica_id,
            keepalive_s=settings.mqtt_keepalive_s,
            per_kiosk=leases is not None,
            on_message=self._route,
            counters=self.counters,
        )
        self._pending = PendingCommands()
        self.clocks = KioskClocks()
        # Per kiosk: the stamps its telemetry sent again may have (after, up to) and until when
        # (monotonic), from this replica's last ask (`_asked_again`).
        self._readings_asked: dict[str, tuple[datetime, datetime, float]] = {}
        self._lanes = Lanes(
            handler,
            LivePublisher(hub, sites),
            self._connection.ack,
            self.counters,
            telemetry=telemetry,
            leases=leases,
            wait_observer=wait_observer,
            ask_again=self._ask_again_after_gap,
        )
        self._state_asks = StateAsks()
        if leases is not None:
            leases.bind(self)

    # -- public -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connection.connected

    @property
    def ready(self) -> bool:
        """Subscribed (`subscribed`) and the lease keeper's first round over (it runs while the
        service already serves, ADR 0099): the kiosks this replica is to hold are held."""
        settled = self._leases is None or self._leases.settled
        return self._connection.ready and settled

    @property
    def subscribed(self) -> bool:
        """Connected to the broker and subscribed, on both connections: /readyz's `mqtt`."""
        return self._connection.ready

    @property
    def protocol_name(self) -> str:
        return self._connection.protocol_name

    def kiosk_status(self, kiosk_id: str) -> contract.KioskStatus | None:
        """The last status the kiosk reported (retained), None if it never did."""
        return self._lanes.kiosk_status(kiosk_id)

    def kiosk_statuses(self) -> Mapping[str, contract.KioskStatus]:
        """The last status of every kiosk that reported one, held here or not (read only)."""
        return self._lanes.kiosk_statuses()

    async def start(self) -> None:
        """Connect and subscribe; if the broker is down, keep trying in the background."""
        await self._connection.start()

    async def stop(self) -> None:
        self._state_asks.cancel()
        self._pending.fail_all("the service is shutting down")
        await self._lanes.stop()
        await self._connection.stop()

    def reply_topic(self, kiosk_id: str) -> str:
        return reply_topic(kiosk_id, self.replica_id)

    async def command(
        self,
        kiosk_id: str,
        action: str,
        compartment: int,
        args: dict[str, Any],
        timeout_s: float,
        *,
        request_id: str | None = None,
    ) -> contract.Reply:
        """Send a command and wait for its final reply (succeeded/failed/rejected/timed_out).

        `request_id`: a command sent again (its outcome unknown) under the id it was sent with
        before, which the kiosk answers from its record if it ran it; a new one by default.

        Raises KioskUnreachable when the command cannot be sent or nothing answered it by its
        deadline, and by the kiosk's too when its clock is behind ours (ADR 0089; a kiosk that
        reports itself offline meanwhile does not end the wait: ADR 0087),
        CommandTimeout when the kiosk accepted it but did not finish in `timeout_s`, or the link
        stopped before then.
        """
        if not self._connection.started:
            raise KioskUnreachable("the kiosk link is not started")
        self._refuse_unless_connected()
        status = self._lanes.kiosk_status(kiosk_id)
        if status is not None and status.state == "offline":
            raise KioskUnreachable(f"kiosk {kiosk_id} is offline")
        await self._check_lease(kiosk_id)
        request_id = request_id or uuid.uuid4().hex
        try:
            command = contract.command_from_dict(
                {
                    "request_id": request_id,
                    # Checked by the contract: an unknown action, or args that do not fit the
                    # action, are InvalidCommand and nothing is sent.
                    "action": action,
                    "compartment": compartment,
                    "args": args,
                    "expires_at": contract.utcnow() + timedelta(seconds=timeout_s),
                    "reply_to": self.reply_topic(kiosk_id),
                }
            )
        except ValidationError as exc:
            raise InvalidCommand(f"{action} for compartment {compartment}: {exc}") from exc
        return await self._send(kiosk_id, command, timeout_s)

    async def ask_state(
        self,
        kiosk_id: str,
        events_after: int | None = None,
        readings_after: datetime | None = None,
    ) -> None:
        """Ask the kiosk to publish its status and every compartment's snapshot again (ADR
        0091), once this replica has taken its lease: a clustered broker may have handed this
        replica a retained copy older than the kiosk's last, which the kiosk will not publish
        again until something changes. Sent even if the last status heard says offline (that
        may be the old copy); an answer other than `succeeded` is only logged, and no answer at
        all (a kiosk not connected, which publishes everything when it connects) not even
        that. With `events_after`, the kiosk also sends again the events it keeps numbered
        after it (ADR 0092): those only the last holder heard, or sent while nobody listened;
        with `readings_after`, the telemetry it published since (ADR 0098), for the same reason.

        Whatever the answer, the story is then handed the snapshots seen before the take of the
        compartments the kiosk did not report afresh (`replay_unheard_snapshots`): all of them
        if it did not answer; none, the usual case, if every report came through."""
        try:
            if await self._ask_state(kiosk_id, events_after, readings_after):
                self.counters.state_reported += 1
                # The answer comes on the reply connection, maybe ahead of the snapshots sent
                # before it on the other: they are waited for, a while.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(REPORTED_SNAPSHOTS_WAIT_S):
                        await self._lanes.snapshots_heard(kiosk_id)
        except Exception:  # a bug: the snapshots kept are still handed on
            log.exception("asking kiosk %s for its state failed", kiosk_id)
        self._lanes.replay_unheard_snapshots(kiosk_id)
        self.counters.state_asks += 1

    async def _ask_state(
        self, kiosk_id: str, events_after: int | None, readings_after: datetime | None
    ) -> bool:
        """True if the kiosk answers that it has published its state again."""
        if readings_after is not None:
            self._readings_asked[kiosk_id] = (
                readings_after,
                contract.utcnow() + RESENT_AHEAD,
                time.monotonic() + RESENT_ACCEPTED_S,
            )
        command = contract.ReportStateCommand(
            request_id=uuid.uuid4().hex,
            expires_at=contract.utcnow() + timedelta(seconds=REPORT_STATE_TIMEOUT_S),
            reply_to=self.reply_topic(kiosk_id),
            args=contract.ReportStateArgs(events_after=events_after, readings_after=readings_after),
        )
        try:
            reply = await self._send(kiosk_id, command, REPORT_STATE_TIMEOUT_S)
        except KioskUnreachable as exc:
            # Not connected (yet): a kiosk publishes everything when it connects.
            log.debug("kiosk %s not asked for its state: %s", kiosk_id, exc)
            return False
        except KioskLinkError as exc:
            log.info("kiosk %s did not report its state again: %s", kiosk_id, exc)
            return False
        if reply.status != "succeeded":
            log.info(
                "kiosk %s did not report its state again: %s %s",
                kiosk_id,
                reply.status,
                reply.detail or "",
            )
            return False
        return True

    async def _send(
        self, kiosk_id: str, command: contract.Command, timeout_s: float
    ) -> contract.Reply:
        # Asked again here, with nothing awaited before the publish: a known outage refuses at
        # once rather than handing paho a command it would keep until the deadline (ADR 0110).
        self._refuse_unless_connected()
        with self._pending.expect(
            command.request_id, kiosk_id, command.action, contract.compartment_of(command)
        ) as pending:
            failure = self._connection.publish(contract.Topics(kiosk_id).cmd, command.to_json())
            if failure is not None:
                raise KioskUnreachable(
                    f"could not publish {command.action} to kiosk {kiosk_id}: {failure}"
                )
            self.counters.commands_sent += 1
            return await self._pending.final_reply(pending, timeout_s, self._clock_wait_s(kiosk_id))

    def _refuse_unless_connected(self) -> None:
        if not self._connection.can_command:
            raise KioskUnreachable("the service is not connected to the MQTT broker")

    def clock_behind_s(self, kiosk_id: str) -> float:
        """How far behind the service's clock the kiosk's may be, by the messages this replica
        received from it lately (`clocks.py`), for judging the stamps of its reports: 0 when it
        is not or none came, at most 30 s."""
        clock = self.clocks.clock(kiosk_id, time.time())
        return clock.stamps_behind_s if clock is not None else 0.0

    def _clock_wait_s(self, kiosk_id: str) -> float:
        """How long past a command's deadline the kiosk may still run it (`KioskClock.wait_s`:
        by the last minute's messages, so a clock set back is waited for)."""
        clock = self.clocks.clock(kiosk_id, time.time())
        return clock.wait_s if clock is not None else 0.0

    async def _check_lease(self, kiosk_id: str) -> None:
        """A command sent while handling a kiosk's message (a scan's unlock) goes out only if
        this replica still holds the kiosk's lease at the epoch the message was handled under,
        and the lease has not run past its last renewal's TTL (a replica that slept through
        its lease must not unlock anything). Commands from requests and timers were decided
        by compare-and-set in the database and may come from any replica."""
        if self._leases is None:
            return
        fence = CURRENT_FENCE.get()
        if fence is None:
            await self._leases.settle(kiosk_id)
            return
        held = self._leases.fence(kiosk_id)
        if held is None or held.epoch != fence.epoch or not held.valid_now():
            raise KioskUnreachable(f"replica {self.replica_id} no longer holds kiosk {kiosk_id}")

    def handled_kiosks(self) -> frozenset[str] | None:
        """The kiosks whose messages this replica handles (those it holds); None: every one."""
        return None if self._leases is None else self._leases.held()

    def supply(self, kiosk_id: str, supply: contract.OfflineSupply) -> str | None:
        """Send the kiosk what it needs to decide pickups alone; None when handed to paho, else
        why not. QoS 0 and never retained: no broker keeps a code verifier, not even queued for
        a kiosk that is away (docs/adr/0077); a lost one is sent again within `refresh_s`, and
        at once when the kiosk comes back. With leases it carries the epoch this replica holds
        the kiosk at and the next of its own numbers, by which the bridge orders supplies (ADR
        0115); none goes for a kiosk this replica does not hold, or past its lease's TTL."""
        if not self._connection.can_command:
            return "not connected to the broker"
        if self._leases is not None:
            held = self._leases.fence(kiosk_id)
            if held is None or not held.valid_now():
                return f"replica {self.replica_id} does not hold kiosk {kiosk_id}"
            supply = supply.model_copy(update={"epoch": held.epoch, "seq": next(self._supplies)})
        return self._connection.publish(contract.Topics(kiosk_id).offline, supply.to_json(), qos=0)

    # -- what the lease keeper calls (`lease_keeper.KioskSubscriptions`) ------------------------

    async def follow_kiosk(self, kiosk_id: str) -> bool:
        """Subscribe to the kiosk's events and telemetry; True once the broker granted both."""
        return await self._connection.follow_kiosk(kiosk_id)

    async def unfollow_kiosk(self, kiosk_id: str) -> None:
        """Unsubscribe from the kiosk's events and telemetry. Once the broker has confirmed,
        everything it sent before is in the kiosk's queue (one connection keeps its order)."""
        await self._connection.unfollow_kiosk(kiosk_id)

    async def follow_every_kiosk(self, every: bool) -> bool:
        """Switch between the wildcards (a replica alone) and one subscription per followed
        kiosk: the new ones first, so that no event falls between the two."""
        return await self._connection.follow_every_kiosk(every)

    async def drain_kiosk(self, kiosk_id: str) -> None:
        self._state_asks.discard(kiosk_id)  # released: an ask still waiting is not sent
        await self._lanes.drain_kiosk(kiosk_id)

    def reconcile_kiosk(
        self,
        kiosk_id: str,
        recorded: RecordedUpTo | None = None,
        readings_after: datetime | None = None,
    ) -> None:
        """Held just now, with the kiosk's record `recorded` so far (ADR 0080) and its readings
        stored up to `readings_after`: hand the story the kiosk's last retained status, and ask
        the kiosk for its state as it is now, and for the events and telemetry after its record
        (`ask_state`, ADR 0092 and 0098). The retained snapshots are handed on after
        the answer, for the compartments it did not report afresh: handling both made each
        taken kiosk's snapshots twice the work of a takeover (ADR 0093). A kiosk last heard
        offline (or not at all) is not waited for: what the broker kept is all there is."""
        events_after = self._lanes.reconcile_kiosk(kiosk_id, recorded)
        status = self._lanes.kiosk_status(kiosk_id)
        if status is None or status.state == "offline":
            self._lanes.replay_unheard_snapshots(kiosk_id)
        # In its turn: a takeover's answers all at once would queue every scan behind them.
        self._state_asks.add(
            kiosk_id, functools.partial(self._ask_if_held, kiosk_id, events_after, readings_after)
        )
        if self._lanes.waits_for_gap(kiosk_id):
            # Events that came before the take wait for those the ask has it send again.
            self._state_asks.hurry(kiosk_id)

    def _ask_again_after_gap(self, kiosk_id: str, events_after: int) -> None:
        """A gap in the kiosk's events stayed open its whole wait: ask the kiosk, now, for its
        state and the events it keeps after `events_after` (a take's ask still waiting asks
        for as much or more, and goes now instead)."""
        if kiosk_id not in self._state_asks.waiting():
            self._state_asks.add(
                kiosk_id, functools.partial(self._ask_if_held, kiosk_id, events_after, None)
            )
        self._state_asks.hurry(kiosk_id)

    async def _ask_if_held(
        self, kiosk_id: str, events_after: int | None, readings_after: datetime | None
    ) -> None:
        """`ask_state` in the kiosk's turn, unless its lease was lost meanwhile or is being
        released."""
        if self._leases is not None and self._leases.standing(kiosk_id) != "held":
            return
        await self.ask_state(kiosk_id, events_after, readings_after)

    # -- routing (the event loop, from the connection) ------------------------------------------

    def _observe_clock(self, kiosk_id: str, model: BaseModel, delivery: Delivery) -> None:
        """What the message's stamp says of the kiosk's clock (`clocks.py`). Not a retained copy
        nor an `offline` status (its will, written when the bridge connected): both were stamped
        long before they arrive, and alone in the window they would say the kiosk is behind."""
        stamped = getattr(model, "ts", None)
        if stamped is None or delivery.retained:
            return
        if isinstance(model, contract.KioskStatus) and model.state == "offline":
            return
        self.clocks.observe(kiosk_id, time.time(), stamped.timestamp())

    def _asked_again(self, kiosk_id: str, ts: datetime) -> bool:
        """Telemetry stamped `ts` sent again is an answer to this replica's last ask: a kiosk
        cannot slip backdated readings into the record unasked (ADR 0098)."""
        asked = self._readings_asked.get(kiosk_id)
        if asked is None:
            return False
        after, latest, until = asked
        if time.monotonic() > until:
            del self._readings_asked[kiosk_id]
            return False
        return after < ts <= latest

    def _route(self, topic: str, payload: bytes, delivery: Delivery) -> None:
        ack = self._connection.ack
        classified = classify_topic(topic)
        if classified is None:
            log.warning("dropped message on unexpected topic %s", topic)
            ack(delivery)
            return
        kiosk_id, kind = classified
        if not payload:  # a cleared retained message: nothing to reconcile from
            ack(delivery)
            return
        try:
            model = MODEL_BY_KIND[kind].model_validate_json(payload)
        except ValidationError as exc:
            self.counters.dropped_malformed += 1
            log.warning(
                "dropped malformed %s from kiosk %s on %s: %s",
                kind,
                kiosk_id,
                topic,
                exc.errors(include_url=False)[:3],
            )
            ack(delivery)
            return
        self.counters.received[kind] = self.counters.received.get(kind, 0) + 1
        if isinstance(model, contract.CompartmentSnapshot) and str(model.n) != topic.split("/")[4]:
            self.counters.dropped_malformed += 1
            log.warning("dropped snapshot for compartment %s on topic %s", model.n, topic)
            ack(delivery)
            return
        if (
            isinstance(model, contract.Telemetry)
            and model.resent
            and not self._asked_again(kiosk_id, model.ts)
        ):
            self.counters.dropped_unasked += 1
            log.warning(
                "dropped telemetry of kiosk %s sent again (stamped %s) that nobody asked for",
                kiosk_id,
                model.ts.isoformat(),
            )
            return  # QoS 0: nothing to acknowledge
        self._observe_clock(kiosk_id, model, delivery)
        if kind == "event":
            # Its events may wait for those the ask has it send again (ADR 0092): ask it now.
            self._state_asks.hurry(kiosk_id)
        if isinstance(model, contract.Reply):
            ack(delivery)
            self._pending.resolve(kiosk_id, model)
            return
        self._lanes.admit(kiosk_id, kind, model, delivery)
