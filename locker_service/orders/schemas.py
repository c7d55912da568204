"""Request and answer bodies of the order endpoints, and the live (SSE) view of an order."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from locker_service.bounds import Text
from locker_service.models import Order

Size = Literal["S", "M", "L"]
TemperatureClass = Literal["hot", "ambient"]
PurchaserLanguage = Literal["en", "zh-Hans"]  # as web/i18n.LANGUAGES (a test holds them together)


class OrderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_ref: Text = Field(min_length=1, max_length=128, description="the merchant's own id")
    site: Text = Field(min_length=1, max_length=64, description="site code")
    purchaser_name: Text = Field(min_length=1, max_length=200)
    purchaser_contact: Text = Field(
        min_length=3,
        max_length=1000,
        description="where to notify the purchaser: Apprise URL(s), e.g. mailto://..., json://...",
    )
    size: Size = "M"
    temperature_class: TemperatureClass = "hot"
    purchaser_language: PurchaserLanguage | None = Field(
        default=None,
        description="the language of her messages: `en` (English, when left out) or `zh-Hans` "
        "(Simplified Chinese); the link to her pickup page in them opens it in that language",
    )
    cooked_at: AwareDatetime | None = Field(
        default=None,
        description="when the food was cooked, with its time zone: the food-safety clock starts "
        "here (else at the drop-off). One that leaves less than the disinfection cycle and the "
        "purchaser's minimum window before the site profile's limit is refused (422 "
        "`too_little_food_safety_time`)",
    )


NOTICE_PREFIX = "notice:"  # order events the merchant reads: what went wrong (ADR 0047)
FAULT_NOTICE = "compartment_fault"  # her compartment faulted with her food inside


class OrderNotice(BaseModel):
    """Something the merchant should know about the order: a fault, an expiry."""

    kind: str = Field(description="e.g. compartment_fault, expired_uncollected")
    at: datetime
    message: str


class OrderRead(BaseModel):
    id: uuid.UUID
    external_ref: str
    site_id: int
    state: str
    size: str
    temperature_class: str
    purchaser_name: str
    purchaser_language: str = "en"
    compartment_number: int | None = None
    kiosk_code: str | None = None
    created_at: datetime
    assigned_at: datetime | None = None
    deposited_at: datetime | None = None
    ready_at: datetime | None = None
    picked_up_at: datetime | None = None
    hold_until: datetime | None = None
    expires_at: datetime | None = None
    closed_at: datetime | None = Field(
        default=None, description="when it was cancelled, expired or failed"
    )
    failure_reason: str | None = None
    version: int = Field(
        default=1,
        description="grows with every step of the order, as `data.version` of its webhook "
        "events: an event older than what you read here is out of date",
    )
    cooked_at: datetime | None = None
    food_deadline: datetime | None = Field(
        default=None,
        description="when the food's time is up under the site's food-safety profile (set at "
        "the drop-off)",
    )
    food_unsafe_at: datetime | None = Field(
        default=None,
        description="when the food stopped being safe (an excursion, no temperature, its time "
        "up before ready); the order is then expired and `failure_reason` says why",
    )
    notices: list[OrderNotice] = Field(
        default_factory=list, description="faults and expiries the merchant should know of"
    )


class OrderPage(BaseModel):
    """One page of a merchant's orders, newest first."""

    orders: list[OrderRead]
    next_cursor: str | None = Field(
        default=None, description="pass as `cursor` for the next page; null on the last"
    )


class KioskCapacity(BaseModel):
    kiosk: str
    online: bool
    fits: dict[str, dict[str, int]] = Field(
        description="per order size (S, M, L): free compartments a `hot` and an `ambient` "
        "order would fit"
    )


class SiteCapacity(BaseModel):
    """What a site can take now, before ordering: free compartments that fit each order."""

    site: str
    dropoffs_frozen: bool = Field(description="the site's kill switch: no drop-off now")
    fits: dict[str, dict[str, int]] = Field(
        description="the online kiosks' total, per order size and temperature class"
    )
    kiosks: list[KioskCapacity]


class OrderCreated(OrderRead):
    purchaser_url: str = Field(description="the purchaser's page; its token is shown only here")


class PurchaserStatus(BaseModel):
    state: str
    external_ref: str
    site_name: str
    kiosk_name: str | None
    compartment_number: int | None
    ready: bool
    hold_until: datetime | None
    fallback_code: str | None = Field(
        description="8 digits, only while the order is ready and its food not held for staff "
        "after a fault she was told of (ADR 0128)"
    )
    qr_url: str | None = Field(description="her QR code's image, when `fallback_code` is given")
    picked_up_at: datetime | None
    deposited: bool = Field(description="the food was put in the locker")
    fault: bool = Field(
        description="the compartment holding the order reports a fault, or her ready food is "
        "held for staff after one she was told of, cleared since (ADR 0128)"
    )
    fault_code: str | None = Field(
        default=None,
        description="which fault (e.g. lock_jammed, heating_watchdog), when there is one",
    )
    kiosk_online: bool | None = Field(description="the locker's kiosk is connected")
    food_unsafe: bool = Field(
        default=False,
        description="the food broke its site's food-safety rules: it will be discarded",
    )
    ended_after_fault: bool = Field(
        default=False,
        description="it ended after a compartment fault she was told of (staff will contact "
        "her), whether or not the fault has cleared since",
    )
    discarded: bool = Field(
        default=False,
        description="staff took the food out of the locker and discarded it: it cannot be "
        "collected",
    )
    taken_out: bool = Field(
        default=False,
        description="staff took the food out of the locker while looking in, which was to "
        "leave it there: it cannot be collected from the locker (contact the merchant)",
    )


def live_view(order: Order) -> dict[str, object]:
    return {
        "id": str(order.id),
        "external_ref": order.external_ref,
        "state": order.state,
        "site_id": order.site_id,
        "compartment_id": order.compartment_id,
        "updated_at": order.updated_at.isoformat() if order.updated_at else None,
    }


def live_view_of_new(row: Mapping[str, Any]) -> dict[str, object]:
    """`live_view` of an order just written, from its column values (no ORM object)."""
    return {
        "id": str(row["id"]),
        "external_ref": row["external_ref"],
        "state": row["state"],
        "site_id": row["site_id"],
        "compartment_id": None,
        "updated_at": row["updated_at"].isoformat(),
    }
