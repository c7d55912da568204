"""What each person is told, and may do, when the story leaves its path (ADR 0047).

One pure table: for each exception (a fault with food inside, a jammed lock, a door left open,
food taken out early, the kiosk offline, an order expiring before or after it was ready), what
the purchaser's page says, which message the purchaser gets, which event the merchant can read
on the order, and which alert the operator sees (its words say what to do). The handler and
the timers look the decision up here and carry it out. Whether a cycle may start is not
decided here: any latched fault stops it (the board refuses one, PROTOCOL.md section 6).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Literal

from locker_service.foodsafety.faults import LAMP_FAULTS, LOCK_JAMMED

Severity = Literal["info", "warning", "critical"]  # as locker_service.alerts.service
# The alerts this table raises (each has its words in locker_service/alerts/catalogue.py).
ExceptionAlertKind = Literal[
    "compartment_fault",
    "door_left_open",
    "expired_food",
    "food_unsafe",
    "kiosk_offline",
    "order_never_dropped_off",
    "removed_during_hold",
    "taken_out_on_inspection",
]


class Exceptional(enum.StrEnum):
    """The ways the story can leave its path while a person waits on it."""

    HEATER_FAULT = "heater_fault"  # heater or temperature probe: the food cannot be kept hot
    LAMP_FAULT = "lamp_fault"  # the UV lamp: the disinfection cannot run
    LOCK_JAMMED = "lock_jammed"  # the latch did not release on an unlock
    DOOR_LEFT_OPEN = "door_left_open"
    REMOVED_EARLY = "removed_early"  # the food taken out before it was ready
    KIOSK_OFFLINE = "kiosk_offline"  # with food inside
    EXPIRED_BEFORE_DROPOFF = "expired_before_dropoff"  # never dropped off
    EXPIRED_UNCOLLECTED = "expired_uncollected"  # ready, not collected within the hold limit
    # Ready, its hold over after a heater or lamp fault she was told of (staff to contact her).
    EXPIRED_AFTER_FAULT = "expired_after_fault"
    FOOD_UNSAFE = "food_unsafe"  # the site's food-safety profile was broken: excursion, time
    # An operator opened the compartment to discard the food, and took it out (ADR 0120).
    DISCARDED_BY_STAFF = "discarded_by_staff"
    # An operator opened it to look in, which leaves the food in, and it was taken out (0129).
    TAKEN_OUT_ON_INSPECTION = "taken_out_on_inspection"


@dataclass(frozen=True)
class Told:
    """The decision for one exception.

    `purchaser_status` is an i18n key (locker_service.web.i18n) for the purchaser's page;
    `purchaser_message` an outbox kind (locker_service.orders.outbox) or None when the
    purchaser is not messaged; `merchant_event` the notice the merchant API shows on the
    order (`OrderRead.notices`) with `merchant_message`; `alert_kind` the operator's alert,
    None when the operator's own act is the exception. Templates take `{fault}`, `{ref}` and
    `{why}`.
    """

    purchaser_status: str
    purchaser_message: str | None
    merchant_event: str | None
    merchant_message: str
    alert_kind: ExceptionAlertKind | None
    severity: Severity
    operator_message: str


_TABLE: Final[dict[Exceptional, Told]] = {
    Exceptional.HEATER_FAULT: Told(
        purchaser_status="status.fault",
        purchaser_message="fault",
        merchant_event="compartment_fault",
        merchant_message="the compartment holding order {ref} reported {fault}: the food is no "
        "longer kept hot; staff will take it out and contact the purchaser",
        alert_kind="compartment_fault",
        severity="critical",
        operator_message="{fault} with food inside: it is no longer kept hot; abort the cycle "
        "and open to take it out",
    ),
    Exceptional.LAMP_FAULT: Told(
        purchaser_status="status.fault",
        purchaser_message="fault",
        merchant_event="compartment_fault",
        merchant_message="the compartment holding order {ref} reported {fault}: it cannot be "
        "disinfected; staff will take it out and contact the purchaser",
        alert_kind="compartment_fault",
        severity="critical",
        operator_message="{fault} with food inside: the disinfection cannot run; abort the "
        "cycle and open to take it out",
    ),
    Exceptional.LOCK_JAMMED: Told(
        purchaser_status="status.lock_jammed",
        purchaser_message="lock_jammed",
        merchant_event="lock_jammed",
        merchant_message="the lock holding order {ref} did not open for the purchaser; staff "
        "will open it",
        alert_kind="compartment_fault",
        severity="critical",
        operator_message="{fault}: the latch did not release; the purchaser is waiting at the "
        "locker",
    ),
    Exceptional.DOOR_LEFT_OPEN: Told(
        purchaser_status="status.deposited",
        purchaser_message=None,
        merchant_event=None,
        merchant_message="",
        alert_kind="door_left_open",
        severity="warning",
        operator_message="door left open: the cycle waits until it is shut",
    ),
    Exceptional.REMOVED_EARLY: Told(
        purchaser_status="status.failed",
        purchaser_message="removed_early",
        merchant_event="removed_early",
        merchant_message="order {ref} was taken out of the locker before it was ready",
        alert_kind="removed_during_hold",
        severity="warning",
        operator_message="food removed before it was ready",
    ),
    Exceptional.KIOSK_OFFLINE: Told(
        purchaser_status="status.kiosk_offline",
        purchaser_message=None,  # most outages are short; the page says it while it lasts
        merchant_event=None,
        merchant_message="",
        alert_kind="kiosk_offline",
        severity="critical",
        operator_message="kiosk offline with food inside",
    ),
    Exceptional.EXPIRED_BEFORE_DROPOFF: Told(
        purchaser_status="status.expired_never_dropped_off",
        purchaser_message="never_dropped_off",
        merchant_event="expired_never_dropped_off",
        merchant_message="order {ref} was never dropped off and has expired; a message to the "
        "purchaser says so",
        alert_kind="order_never_dropped_off",
        severity="info",
        operator_message="order {ref} was never dropped off and expired",
    ),
    Exceptional.EXPIRED_UNCOLLECTED: Told(
        purchaser_status="status.expired",
        purchaser_message="expired",
        merchant_event="expired_uncollected",
        merchant_message="order {ref} was not collected within the hold limit and has expired; "
        "the food will be discarded, and a message to the purchaser says so",
        alert_kind="expired_food",
        severity="warning",
        operator_message="order {ref} expired, remove the food",
    ),
    Exceptional.EXPIRED_AFTER_FAULT: Told(
        purchaser_status="status.fault",  # what she was told: staff will contact her
        purchaser_message=None,  # nothing new for her: not "you did not collect it"
        merchant_event="expired_after_fault",
        merchant_message="order {ref}: {why}; staff will take the food out",
        alert_kind="expired_food",
        severity="warning",
        operator_message="order {ref}: {why}. Remove the food: open the compartment to discard "
        "it (audited)",
    ),
    Exceptional.FOOD_UNSAFE: Told(
        purchaser_status="status.food_unsafe",
        purchaser_message="food_unsafe",
        merchant_event="food_unsafe",
        merchant_message="order {ref}: {why}; it cannot be collected and will be discarded, "
        "and a message to the purchaser says so",
        alert_kind="food_unsafe",
        severity="critical",
        operator_message="order {ref}: {why}. Discard it: open the compartment to discard "
        "the food (audited) and take it out; the compartment is cleaned after",
    ),
    Exceptional.DISCARDED_BY_STAFF: Told(
        purchaser_status="status.discarded",
        purchaser_message="discarded",  # unless she was told of a fault: staff contact her
        merchant_event="discarded_by_staff",
        merchant_message="order {ref}: {why}; it cannot be collected",
        alert_kind=None,  # the operator's own act, recorded in the audit with the reason
        severity="info",
        operator_message="order {ref} discarded: {why}",
    ),
    Exceptional.TAKEN_OUT_ON_INSPECTION: Told(
        purchaser_status="status.taken_out",
        purchaser_message="taken_out",  # unless she was told of a fault: staff contact her
        merchant_event="taken_out_on_inspection",
        merchant_message="order {ref}: {why}; it cannot be collected from the locker, and "
        "staff are asked where it went",
        alert_kind="taken_out_on_inspection",
        severity="warning",
        operator_message="order {ref}: {why}. Find out where the food went (it is listed with "
        "the day's discards); if it was handed to her, tell the merchant",
    ),
}


def decide(exception: Exceptional) -> Told:
    """The decision for an exception (every member has one: tested)."""
    return _TABLE[exception]


def fault_exception(fault: str) -> Exceptional:
    """The exception a board fault is: an unknown fault is treated as a heater fault, the one
    that cannot be left alone with food inside."""
    if fault == LOCK_JAMMED:
        return Exceptional.LOCK_JAMMED
    if fault in LAMP_FAULTS:
        return Exceptional.LAMP_FAULT
    return Exceptional.HEATER_FAULT


def expiry_exception(deposited: bool) -> Exceptional:
    """An expiring order: never dropped off, or its food in the compartment."""
    return Exceptional.EXPIRED_UNCOLLECTED if deposited else Exceptional.EXPIRED_BEFORE_DROPOFF


def purchaser_status(
    order_state: str,
    *,
    deposited: bool,
    compartment_fault: str | None,
    kiosk_online: bool,
    food_unsafe: bool = False,
    after_fault: bool = False,
    discarded: bool = False,
    taken_out: bool = False,
) -> str:
    """The i18n key of the purchaser page's status line: the truth before the order's state.
    `after_fault`: it ended after a fault she was told of (`ended_after_fault`), cleared since
    or not: she still reads that staff will contact her. `discarded`: staff took it out to
    discard it (`ended_discarded`, ADR 0120). `taken_out`: staff took it out while looking in
    (`ended_taken_out_on_inspection`, ADR 0129)."""
    food_inside = order_state in ("deposited", "disinfecting", "ready")
    if order_state in ("expired", "failed") and after_fault and not food_unsafe:
        return decide(Exceptional.EXPIRED_AFTER_FAULT).purchaser_status
    if order_state == "failed" and discarded:
        return decide(Exceptional.DISCARDED_BY_STAFF).purchaser_status
    if order_state == "failed" and taken_out:
        return decide(Exceptional.TAKEN_OUT_ON_INSPECTION).purchaser_status
    if order_state == "expired" and food_unsafe:
        return decide(Exceptional.FOOD_UNSAFE).purchaser_status
    if order_state == "expired":
        # Not the compartment's fault now: it holds later orders' food, and their faults.
        return decide(expiry_exception(deposited)).purchaser_status
    if food_inside and compartment_fault is not None:
        exception = fault_exception(compartment_fault)
        if exception is not Exceptional.LOCK_JAMMED or order_state == "ready":
            return decide(exception).purchaser_status
    if food_inside and not kiosk_online:
        return decide(Exceptional.KIOSK_OFFLINE).purchaser_status
    return f"status.{order_state}"
