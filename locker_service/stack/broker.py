"""The embedded MQTT broker of `lockerctl up`: amqtt on one TCP port, every client authenticated.

It exists so a newcomer needs nothing but `pip install`: production uses Mosquitto (with
per-kiosk passwords and an ACL, see docs/deploy/) or an EMQX cluster. Like that Mosquitto, it
takes no anonymous client: each kiosk has its own account (its user name is its kiosk id) and the
service one more (`locker-service`), read from a Mosquitto-format password file that `lockerctl
up` writes; the production ACL applies (broker_auth.py), and each account may connect only under
its own client id(s). ADR 0063 says why amqtt stays and what is corrected here.

What amqtt 0.12 gives us, checked by tests/stack/test_embedded_broker.py with paho-mqtt 2 over
MQTT 3.1.1: QoS 0 and 1, retained messages (and clearing them with an empty payload), the last
will on an abrupt disconnect, and persistent sessions: a client that comes back with
clean_session=0 gets `session present`, the QoS 1 messages it had not acknowledged, and those
queued for it while it was away (for SESSION_EXPIRY_S). What it does not give: MQTT 5 (clients
must fall back to 3.1.1), shared subscriptions (`$share/...` is treated as a plain topic filter
that never matches; the service needs none, its replicas share the kiosks by database leases,
ADR 0044), persistence (sessions,
queued and retained messages are lost when the broker itself restarts; the bridge republishes
its status and snapshots on reconnect). The amqtt defects corrected here are listed on
`CorrectedBroker`.

Run on its own: `python -m locker_service.stack.broker --port 18830 --password-file FILE`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, NoDataError
from amqtt.mqtt.connack import ConnackPacket
from amqtt.mqtt.constants import QOS_1
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import OUTGOING

from locker_service.stack.broker_auth import (
    CONNACK_NOT_AUTHORIZED,
    EMBEDDED_ACL,
    Access,
    Acl,
    Refusal,
    connect_refusal,
    parse_acl,
    parse_password_file,
)

log = logging.getLogger("locker.broker")

# amqtt logs every connection and packet at INFO; the supervisor prefixes and shows all output,
# so keep only what an operator must see.
AMQTT_LOG_LEVEL = logging.WARNING
# How long a disconnected persistent session (and what is queued for it) is kept: as long as the
# service asks of Mosquitto with MQTT 5 (kiosk_link SESSION_EXPIRY_S; ADR 0040).
SESSION_EXPIRY_S = 3600
ACCESS_PLUGIN = "locker_service.stack.broker.AccountAccess"  # amqtt loads plugins by path


class _DropPortProbes(logging.Filter):
    """A readiness or health probe opens a TCP connection and closes it without a word of MQTT;
    amqtt logs each as an error. They are expected, so they are not shown."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No data to decode MQTT packet fixed header" not in record.getMessage()


def broker_config(host: str, port: int, password_file: Path) -> dict[str, Any]:
    """amqtt configuration: one TCP listener, the accounts of `password_file`, the production
    ACL, persistent sessions kept SESSION_EXPIRY_S, no $SYS publishing."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        # A client silent for 1.5x its keep-alive is dropped and its last will published.
        "timeout_disconnect_delay": 0,
        "session_expiry_interval": SESSION_EXPIRY_S,
        "plugins": {ACCESS_PLUGIN: {"password_file": str(password_file)}},
    }


class AccountAccess(BaseAuthPlugin, BaseTopicPlugin):  # type: ignore[misc]
    """The amqtt plugin that authenticates clients and checks every topic against the ACL."""

    @dataclass
    class Config:
        password_file: str = ""

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        # Read once at start: `lockerctl up` writes the file before it starts the broker, and a
        # kiosk added later comes with a restart of `lockerctl up`.
        path = Path(self.config.password_file)
        self.accounts = parse_password_file(path.read_text())
        self.acl: Acl = parse_acl(EMBEDDED_ACL)
        log.info("%d MQTT account(s) loaded from %s", len(self.accounts), path)

    def refusal(self, session: Any) -> Refusal | None:
        return connect_refusal(
            self.accounts,
            self.acl,
            username=session.username,
            password=session.password,
            client_id=session.client_id or "",
            will_topic=session.will_topic if session.will_flag else None,
        )

    async def authenticate(self, *, session: Any) -> bool:
        return self.refusal(session) is None

    async def topic_filtering(
        self, *, session: Any = None, topic: str | None = None, action: Any = None
    ) -> bool:
        username = session.username if session is not None else None
        if not username or not topic:
            return False
        if action == Action.SUBSCRIBE:
            allowed = self.acl.may_subscribe(username, topic)
        elif action == Action.PUBLISH:
            allowed = self.acl.may_use_topic(username, topic, Access.WRITE)
        else:  # Action.RECEIVE: a message about to be delivered to a subscriber
            allowed = self.acl.may_use_topic(username, topic, Access.READ)
        if not allowed and action != Action.RECEIVE:
            log.warning("%s (%s) may not %s %s", session.client_id, username, action, topic)
        return allowed


class CorrectedProtocolHandler(BrokerProtocolHandler):  # type: ignore[misc]
    """amqtt's per-connection handler, keeping a QoS 1 message until it is acknowledged.

    amqtt 0.12 waits 5 s for a PUBACK and then forgets the message, and forgets it too when the
    connection closes first: an event the service had not acknowledged yet (it acknowledges
    after handling, ADR 0040) was lost when the service was slow or restarted. Here an
    unacknowledged message stays in the session's in-flight set, and is sent again (DUP) when
    the client comes back with its session, as MQTT 3.1.1 section 4.4 asks.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Held so the tasks are not collected while they wait for their PUBACK.
        self._deliveries: set[asyncio.Future[Any]] = set()

    def deliver(self, topic: str, data: bytes, qos: int, *, retain: bool) -> None:
        """Send a message without waiting for its acknowledgement, so the connection goes on
        serving the client meanwhile. Messages handed over one after another leave in that
        order: each task sends its packet at its first step, and the tasks run in turn."""
        task = asyncio.ensure_future(self.mqtt_publish(topic, data, qos, retain=retain))
        self._deliveries.add(task)
        task.add_done_callback(self._delivered)

    async def _handle_qos1_message_flow(self, app_message: Any) -> None:
        if app_message.direction != OUTGOING or app_message.qos != QOS_1:
            await super()._handle_qos1_message_flow(app_message)
            return
        packet_id = app_message.packet_id
        self.session.inflight_out.setdefault(packet_id, app_message)
        dup = app_message.publish_packet is not None  # sent on an earlier connection
        packet = app_message.build_publish_packet(dup=dup)
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._puback_waiters[packet_id] = waiter
        try:
            await self._send_packet(packet)
            app_message.publish_packet = packet
            # No time limit: a client that is connected but slow still gets its message once;
            # a connection that ends cancels the wait and leaves the message in flight.
            app_message.puback_packet = await waiter
        finally:
            if self._puback_waiters.get(packet_id) is waiter:
                del self._puback_waiters[packet_id]
        self.session.inflight_out.pop(packet_id, None)

    async def _retry_deliveries(self) -> None:
        """Send the session's unacknowledged messages again, without holding up the connection
        (amqtt waits up to 10 s for their acknowledgements before it serves the client, then
        forgets the ones still unacknowledged)."""
        for message in list(self.session.inflight_out.values()):
            task = asyncio.ensure_future(self._handle_message_flow(message))
            self._deliveries.add(task)
            task.add_done_callback(self._delivered)

    def _delivered(self, task: asyncio.Future[Any]) -> None:
        self._deliveries.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("delivery failed: %s", task.exception())


class CorrectedBroker(Broker):  # type: ignore[misc]
    """amqtt's Broker with its defects that matter here fixed.

    - Authentication comes first. amqtt 0.12 looks up (and, with clean_session=1, deletes) the
      session of the client id a CONNECT names, copies the CONNECT's will and credentials onto an
      existing one, and takes over a connected one, all before it asks the auth plugins: a client
      with a wrong password could still drop a kiosk's bridge or wipe the service's queued
      events. Here a CONNECT is checked (account, password, client id, will topic) before any
      session is touched, and a refused one gets its CONNACK and is closed.
    - Messages queued for a disconnected persistent session are delivered as ordinary messages;
      amqtt 0.12 sets RETAIN on them.
    - A QoS 1 message is kept until acknowledged (`CorrectedProtocolHandler`).
    - A new connection gets retained messages only for filters it holds itself (amqtt 0.12
      walks the broker-wide subscription table, so a bridge would receive other kiosks'
      retained snapshots), as MQTT 3.1.1 section 3.3.1.3 says.
    - A connection is served while the messages queued for its session, or retained for its new
      subscription, wait for their acknowledgements. amqtt 0.12 reads nothing more from the
      client until they are acknowledged, and the service acknowledges a kiosk's events only
      once it holds the kiosk's lease, which it takes only once the broker has granted its
      subscription to that kiosk (ADR 0044): a restarted service waited out its SUBACK timeouts
      (5 s each) before it handled anything.
    """

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[Any, Any]:
        try:
            handler, incoming = await CorrectedProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except NoDataError as exc:
            # A readiness probe that connects and says nothing: logged as amqtt does, and
            # dropped by _DropPortProbes.
            raise AMQTTError(exc) from exc
        # (an MQTTError here was answered and closed by amqtt, which logs it)
        plugin = self.plugins_manager.get_plugin("AccountAccess")
        refusal = plugin.refusal(incoming) if plugin is not None else None
        if plugin is None or refusal is not None:
            reason = refusal.reason if refusal else "no access plugin loaded"
            code = refusal.connack_code if refusal else CONNACK_NOT_AUTHORIZED
            await ConnackPacket.build(0, code).to_stream(writer)
            await writer.close()
            raise AMQTTError(f"refused {remote_address}:{remote_port}: {reason}")
        return await self._attach_session(handler, incoming)

    async def _attach_session(self, handler: Any, incoming: Any) -> tuple[Any, Any]:
        """amqtt 0.12's session lookup (Broker._initialize_client_session), run only for
        an authenticated CONNECT."""
        session = incoming
        if incoming.clean_session:
            await self._delete_session(incoming.client_id)
            session.parent = 0
        elif incoming.client_id in self._sessions:
            session, _ = self._sessions[incoming.client_id]
            for name in (
                "will_flag",
                "will_message",
                "will_topic",
                "will_qos",
                "will_retain",
                "keep_alive",
                "username",
                "password",
            ):
                setattr(session, name, getattr(incoming, name))
            session.parent = 1  # CONNACK "session present"
        else:
            session.parent = 0
        delay_s = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay_s, int):
            session.keep_alive += delay_s
        return handler, session

    async def _publish_session_retained_messages(self, session: Any) -> None:
        handler = self._get_handler(session)
        while handler is not None and not session.retained_messages.empty():
            queued = session.retained_messages.get_nowait()
            handler.deliver(queued.topic, queued.data, queued.qos, retain=False)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Any
    ) -> None:
        topic_filter, qos = subscription
        holders = self._subscriptions.get(topic_filter, [])
        handler = self._get_handler(session)
        if handler is None or not any(holder is session for holder, _qos in holders):
            return
        for topic, retained in list(self._retained_messages.items()):
            if self._matches(topic, topic_filter):
                handler.deliver(topic, retained.data, min(qos, retained.qos or qos), retain=True)


class EmbeddedBroker:
    """An amqtt broker running on the current event loop."""

    def __init__(self, password_file: Path, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.password_file = password_file
        self.host = host
        self.port = port
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        logging.getLogger("amqtt").setLevel(AMQTT_LOG_LEVEL)
        logging.getLogger("amqtt.broker").addFilter(_DropPortProbes())
        logging.getLogger("transitions").setLevel(AMQTT_LOG_LEVEL)
        config = broker_config(self.host, self.port, self.password_file)
        self._broker = CorrectedBroker(config)
        await self._broker.start()

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None


async def serve(host: str, port: int, password_file: Path) -> None:
    """Run until SIGINT or SIGTERM, then shut down cleanly."""
    broker = EmbeddedBroker(password_file, host, port)
    await broker.start()
    log.info("embedded MQTT broker listening on %s", broker.url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping the embedded MQTT broker")
    await broker.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Embedded MQTT broker (amqtt) for lockerctl up")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument(
        "--password-file",
        type=Path,
        required=True,
        help="Mosquitto-format password file (user:$7$...); nobody else gets in",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args.host, args.port, args.password_file))


if __name__ == "__main__":
    main()
