"""Every table of the service, on one DeclarativeBase (import from here)."""

from locker_service.models.base import Base, UTCDateTime, utcnow
from locker_service.models.haccp import HaccpDay
from locker_service.models.lease import KioskLease, ServiceReplica
from locker_service.models.ops import Alert, KioskEvent, NotificationOutbox, Timer
from locker_service.models.order import (
    DisinfectionCycle,
    DoorOpening,
    Order,
    OrderEvent,
    PickupAttempt,
    TemperatureBacklogBucket,
    TemperatureMinute,
    TemperatureReading,
)
from locker_service.models.people import (
    Courier,
    Credential,
    Merchant,
    Operator,
    merchant_sites,
    operator_merchants,
    operator_sites,
)
from locker_service.models.site import Compartment, Kiosk, Site, SiteOncall
from locker_service.models.webhook import WebhookDelivery, WebhookEndpoint

__all__ = [
    "Alert",
    "Base",
    "Compartment",
    "Courier",
    "Credential",
    "DisinfectionCycle",
    "DoorOpening",
    "HaccpDay",
    "Kiosk",
    "KioskEvent",
    "KioskLease",
    "Merchant",
    "NotificationOutbox",
    "Operator",
    "Order",
    "OrderEvent",
    "PickupAttempt",
    "ServiceReplica",
    "Site",
    "SiteOncall",
    "TemperatureBacklogBucket",
    "TemperatureMinute",
    "TemperatureReading",
    "Timer",
    "UTCDateTime",
    "WebhookDelivery",
    "WebhookEndpoint",
    "merchant_sites",
    "operator_merchants",
    "operator_sites",
    "utcnow",
]
