"""Bodies of the operator endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from locker_service.bounds import Text
from locker_service.compartments.openings import OpenPurpose
from locker_service.operators.notes import REASON_MAX_LENGTH


class KioskSummary(BaseModel):
    id: int
    code: str
    name: str
    online: bool
    last_seen_at: datetime | None
    compartments_total: int
    compartments_free: int


class FoodSafetyRead(BaseModel):
    """The rules the site holds food under (`lockerctl set-food-profile`), in nominal seconds."""

    name: str = Field(description="us-fda, uk-fsa, cn or custom")
    floor_c: float = Field(description="the lowest safe reading")
    setpoint_c: float
    grace_s: float = Field(
        description="a stretch below the floor shorter than this is no excursion"
    )
    cooking_limit_s: float = Field(description="from cooked_at (else the drop-off) to the deadline")
    ready_limit_s: float = Field(description="from ready to the end of the purchaser's hold")
    excursions_allowed: int
    excursion_limit_s: float
    unknown_limit_s: float = Field(description="the longest the food may go with no reading")
    warmup_s: float = Field(
        description="how long a compartment may take to reach the floor after a drop-off"
    )


class SiteRead(BaseModel):
    id: int
    code: str
    name: str
    timezone: str
    kill_switch_engaged: bool
    kill_switch_reason: str | None
    kill_switch_at: datetime | None
    kiosks: list[KioskSummary]
    food_safety: FoodSafetyRead


class OrderInside(BaseModel):
    id: uuid.UUID
    external_ref: str
    state: str
    purchaser_name: str
    deposited_at: datetime | None
    ready_at: datetime | None
    hold_until: datetime | None
    waited_s: float | None = Field(description="seconds since the food went in")
    food_deadline: datetime | None = Field(
        default=None, description="when the food's time is up under its site's profile"
    )


class CompartmentRead(BaseModel):
    id: int
    number: int
    size: str
    heated: bool
    state: str
    out_of_service_reason: str | None
    door_open: bool
    lock_released: bool
    occupied: bool
    heater_on: bool
    uv_on: bool
    temp_c: float | None
    setpoint_c: float | None
    disinfect_remaining_s: int
    fault: str | None
    snapshot_at: datetime | None
    lamp_on_s: float  # the UV-C lamp's on-time since it was fitted (nominal seconds)
    lamp_fitted_at: datetime | None
    lamp_fitted_by: str | None
    order: OrderInside | None


class KioskDetail(BaseModel):
    id: int
    code: str
    name: str
    site_id: int
    online: bool
    boot_id: str | None
    fw: str | None
    last_seen_at: datetime | None
    compartments: list[CompartmentRead]


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Text = Field(min_length=3, max_length=REASON_MAX_LENGTH)


class OpenRequest(Reason):
    override_cycle: bool = Field(
        default=False, description="open even during a disinfection cycle (aborts it)"
    )
    purpose: OpenPurpose | None = Field(
        default=None,
        description="what the opening is for (ADR 0120): `handover` (hand the food to its "
        "purchaser: her pickup; only a ready order kept hot), `discard` (take the food out "
        "and throw it away: the order fails, or stays expired), `inspect` (look in and shut "
        "it again: the food stays in; a ready order's food taken out meanwhile, her code "
        "unused and no jam of her lock since, fails it, ADR 0129). Refused with 409 when it "
        "does not fit the compartment. "
        "Omitted: the door's closing is read from the compartment's latched fault",
    )


class OpenAnswer(BaseModel):
    compartment_id: int
    number: int
    request_id: str


class OperatorMe(BaseModel):
    """Who the token belongs to: the dashboard shows admins the freeze of every site."""

    id: int
    name: str
    role: str
    merchant_ids: list[int] | None = Field(
        None,
        description="an operator for merchants: only their orders (ADR 0075); null: every order",
    )


class KillSwitchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    engaged: bool
    reason: Text = Field(min_length=3, max_length=REASON_MAX_LENGTH)


class AlertRead(BaseModel):
    id: int
    kind: str
    site_id: int | None
    kiosk_id: int | None
    compartment_id: int | None
    severity: str
    message: str
    state: str
    count: int
    raised_at: datetime
    last_raised_at: datetime
    acked_by: int | None
    acked_at: datetime | None
    resolved_at: datetime | None
    title: dict[str, str]  # by language: "en", "zh-Hans"
    advice: dict[str, str]
    # The purchaser message the alert is about (it could not be delivered): resend it.
    notification_id: int | None
    # What an operator did about it (HACCP's corrective action), by whom and when.
    corrective_action: str | None = None
    action_by: str | None = None
    action_at: datetime | None = None


class CorrectiveAction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Text = Field(
        min_length=3,
        max_length=500,
        description="what was done about it, e.g. 'food discarded, heater replaced'",
    )


class OncallLists(BaseModel):
    """A site's on-call: Apprise URLs told of each new alert and the daily digest, and those
    told when an alert is not acknowledged in time (empty: the first list again)."""

    model_config = ConfigDict(extra="forbid")

    urls: list[str] = Field(default_factory=list, max_length=10)
    escalation_urls: list[str] = Field(default_factory=list, max_length=10)


class OncallRead(OncallLists):
    site_id: int
    updated_at: datetime | None


class ResendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A corrected contact (e-mail, phone number or notification URL); left out: the same one.
    contact: str | None = Field(default=None, min_length=3, max_length=1000)


class ResendAnswer(BaseModel):
    id: int
    order_id: uuid.UUID
    kind: str
    status: str


class OrderRow(BaseModel):
    id: uuid.UUID
    external_ref: str
    site_id: int
    state: str
    purchaser_name: str
    compartment_id: int | None
    created_at: datetime
    updated_at: datetime


class OpenAlerts(BaseModel):
    critical: int
    warning: int
    info: int


class FleetKiosk(BaseModel):
    id: int
    code: str
    name: str
    site_id: int
    site_code: str
    site_name: str
    online: bool
    status_since: datetime | None = Field(
        description="offline: when the service heard it go; online: its last status's stamp"
    )
    last_seen_at: datetime | None
    compartments_total: int
    compartments_free: int
    compartments_faulted: int = Field(description="reporting a fault, or faulted")
    food_at_risk: int = Field(
        description="compartments holding food below the hold floor, or ready and waiting "
        "past the purchaser's reminder"
    )
    open_alerts: OpenAlerts = Field(description="open (not yet acknowledged) alerts")
    trouble: bool = Field(description="offline, a fault, food at risk or an open alert")


class FleetCounts(BaseModel):
    kiosks: int = Field(description="kiosks matching the search, on every page")
    offline: int
    faulted: int
    food_at_risk: int
    alerting: int


class FleetPage(BaseModel):
    offset: int
    limit: int
    counts: FleetCounts
    kiosks: list[FleetKiosk]
