"""Both ends of the MQTT contract switch Nagle's algorithm off on their broker sockets, on the
first connection and after a reconnect: with it on, a command waits ~40 ms for a delayed ACK
(bench/bridge has the figures)."""

from __future__ import annotations

import socket
from typing import Any

from locker_service.kiosk_link import KioskLink
from locker_service.live import LiveHub
from tests.firmware_bridge.conftest import Kiosk
from tests.firmware_bridge.harness import IgnoringHandler, ServiceLinkSettings
from tests.support.mosquitto import MosquittoProcess


def no_delay(sock: Any) -> bool:
    assert isinstance(sock, socket.socket), sock
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_the_bridge_socket_has_nagle_off_also_after_a_reconnect(kiosk: Kiosk) -> None:
    link, obs = kiosk.bridge.link, kiosk.observer
    assert no_delay(link.client.socket())
    connects = link.connects
    kiosk.broker.stop()
    obs.wait(lambda: not link.connected.is_set(), "the bridge to see the broker gone")
    kiosk.broker.start()
    obs.wait(lambda: link.connects > connects, "the bridge back on the broker", 40)
    assert no_delay(link.client.socket())


async def test_the_service_link_sockets_have_nagle_off(
    private_mosquitto: MosquittoProcess,
) -> None:
    link = KioskLink(ServiceLinkSettings(private_mosquitto.url), IgnoringHandler(), LiveHub())
    await link.start()
    try:
        assert link.ready
        # Commands leave on the main connection, replies come back on the reply connection.
        connection = link._connection
        assert connection._client is not None and connection._reply_client is not None
        assert no_delay(connection._client.socket())
        assert no_delay(connection._reply_client.socket())
    finally:
        await link.stop()
