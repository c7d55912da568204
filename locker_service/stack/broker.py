"""The embedded MQTT broker of `lockerctl up`: amqtt on one TCP port, anonymous, in memory.

It exists so a newcomer needs nothing but `pip install`: production uses Mosquitto (with
per-kiosk passwords and an ACL, see docs/deploy/) or an EMQX cluster. What amqtt 0.12 gives us,
checked by tests/stack/test_embedded_broker.py with paho-mqtt 2 over MQTT 3.1.1: QoS 0 and 1,
retained messages (and clearing them with an empty payload), the last will on an abrupt
disconnect. What it does not give: MQTT 5 (clients must fall back to 3.1.1), shared
subscriptions (`$share/...` is treated as a plain topic filter that never matches; the service
does not need them, its replicas share the kiosks by database leases, ADR 0044), persistence
(retained messages are lost when it restarts; the bridge republishes its status and snapshots
on reconnect), authentication and ACLs. One
amqtt defect is corrected here (see `_corrected_broker_class`).

Run on its own: `python -m locker_service.stack.broker --port 18830`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

log = logging.getLogger("locker.broker")

# amqtt logs every connection and packet at INFO; the supervisor prefixes and shows all output,
# so keep only what an operator must see.
AMQTT_LOG_LEVEL = logging.WARNING


class _DropPortProbes(logging.Filter):
    """A readiness or health probe opens a TCP connection and closes it without a word of MQTT;
    amqtt logs each as an error. They are expected, so they are not shown."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No data to decode MQTT packet fixed header" not in record.getMessage()


def broker_config(host: str, port: int) -> dict[str, Any]:
    """amqtt configuration: one TCP listener, anonymous clients, no $SYS publishing."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        # A client silent for 1.5x its keep-alive is dropped and its last will published.
        "timeout_disconnect_delay": 0,
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
        },
    }


def _corrected_broker_class() -> Any:
    """amqtt's Broker with one defect fixed.

    amqtt 0.12 sends every new connection the retained messages matching *any* client's
    subscriptions (its reconnect path walks the broker-wide subscription table), so a bridge would
    receive other kiosks' retained snapshots it never asked for. Here a client gets retained
    messages only for filters it holds itself, as MQTT 3.1.1 section 3.3.1.3 says.
    """
    from amqtt.broker import Broker

    class CorrectedBroker(Broker):  # type: ignore[misc]
        async def _publish_retained_messages_for_subscription(
            self, subscription: tuple[str, int], session: Any
        ) -> None:
            holders = self._subscriptions.get(subscription[0], [])
            if any(holder is session for holder, _qos in holders):
                await super()._publish_retained_messages_for_subscription(subscription, session)

    return CorrectedBroker


class EmbeddedBroker:
    """An amqtt broker running on the current event loop."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
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
        self._broker = _corrected_broker_class()(broker_config(self.host, self.port))
        await self._broker.start()

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None


async def serve(host: str, port: int) -> None:
    """Run until SIGINT or SIGTERM, then shut down cleanly."""
    broker = EmbeddedBroker(host, port)
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
