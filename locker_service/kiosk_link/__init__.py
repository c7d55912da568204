"""The service's link to its kiosks over MQTT (docs/contracts/mqtt.md)."""

from locker_service.kiosk_link.errors import (
    CommandTimeout,
    InvalidCommand,
    KioskLinkError,
    KioskUnreachable,
)
from locker_service.kiosk_link.handler import KioskHandler, SiteResolver, TelemetrySink
from locker_service.kiosk_link.link import KioskLink, reply_topic

__all__ = [
    "CommandTimeout",
    "InvalidCommand",
    "KioskHandler",
    "KioskLink",
    "KioskLinkError",
    "KioskUnreachable",
    "SiteResolver",
    "TelemetrySink",
    "reply_topic",
]
