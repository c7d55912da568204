"""Who opened a door and how, as written in a door-opening row's `who` (pure, no I/O).

A `door_openings.who` is `role` or `role:detail`: `courier:<courier code>`, `operator:<operator
id>`, `purchaser:<how her code came>` (`qr`, `keypad`, `scanner`; rows written before the detail
existed say only `purchaser`), and `unknown` for a door that opened with no command behind it.
The writers build it here and the audit reads it back here, so the two cannot drift apart. The
role names the kind of opening; `why` keeps the reason (the operator's typed reason, "drop-off",
"pickup").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class OpeningKind(StrEnum):
    DROPOFF = "dropoff"  # a courier put food in
    PICKUP = "pickup"  # a purchaser's code opened her compartment
    REMOTE_OPEN = "remote_open"  # an operator opened it from the dashboard or the API
    UNEXPLAINED = "unexplained"  # the door opened with no command behind it
    OTHER = "other"  # a role this version does not know (a newer writer's row)


class PickupMethod(StrEnum):
    QR = "qr"  # the QR code from her message, held under the scanner
    KEYPAD = "keypad"  # the 8-digit code typed on the kiosk screen
    SCANNER = "scanner"  # the 8-digit code read by the scanner (printed or on a phone)
    # Decided by the kiosk's bridge while it could not reach the service (docs/adr/0077).
    QR_OFFLINE = "qr_offline"
    KEYPAD_OFFLINE = "keypad_offline"


UNKNOWN: Final = "unknown"
# The pickup source the kiosk handler gives for a scan (`scanner:<kiosk code>`).
SCANNER_SOURCE_PREFIX: Final = "scanner"

ROLE_OF_KIND: Final[dict[OpeningKind, str]] = {
    OpeningKind.DROPOFF: "courier",
    OpeningKind.PICKUP: "purchaser",
    OpeningKind.REMOTE_OPEN: "operator",
    OpeningKind.UNEXPLAINED: UNKNOWN,
}
KIND_OF_ROLE: Final[dict[str, OpeningKind]] = {role: kind for kind, role in ROLE_OF_KIND.items()}

# How each kind of opening was asked for, for the audit (a purchaser's says which code).
_HOW_OF_KIND: Final[dict[OpeningKind, str]] = {
    OpeningKind.DROPOFF: "courier_pin",
    OpeningKind.PICKUP: "code",
    OpeningKind.REMOTE_OPEN: "remote",
    OpeningKind.UNEXPLAINED: "none",
    OpeningKind.OTHER: "unknown",
}


def courier(code: str) -> str:
    return f"courier:{code}"


def operator(operator_id: int) -> str:
    return f"operator:{operator_id}"


def purchaser(method: PickupMethod) -> str:
    return f"purchaser:{method.value}"


def pickup_method(source: str, *, by_token: bool) -> PickupMethod:
    """How a pickup's code came: a QR token, or a code from the scanner or the screen."""
    if by_token:
        return PickupMethod.QR
    if source.split(":", 1)[0] == SCANNER_SOURCE_PREFIX:
        return PickupMethod.SCANNER
    return PickupMethod.KEYPAD


def role_of(who: str) -> str:
    return who.split(":", 1)[0]


def kind_of(who: str) -> OpeningKind:
    return KIND_OF_ROLE.get(role_of(who), OpeningKind.OTHER)


def how_of(who: str) -> str:
    """`courier_pin`, `qr`, `keypad`, `scanner`, `qr_offline`, `keypad_offline`, `code` (a
    pickup of before the detail),
    `remote`, `none` (unexplained) or `unknown`."""
    kind = kind_of(who)
    if kind == OpeningKind.PICKUP:
        detail = who.partition(":")[2]
        if detail in {m.value for m in PickupMethod}:
            return detail
    return _HOW_OF_KIND[kind]


def operator_id_of(who: str) -> int | None:
    role, _, detail = who.partition(":")
    return int(detail) if role == "operator" and detail.isdigit() else None


def courier_code_of(who: str) -> str | None:
    role, _, detail = who.partition(":")
    return detail if role == "courier" and detail else None


class OpenPurpose(StrEnum):
    """What an operator opens a compartment for (ADR 0120): it says how the order ends when
    the door shuts on an empty compartment."""

    HANDOVER = "handover"  # hand the food to its purchaser, there at the locker: her pickup
    DISCARD = "discard"  # take the food out to throw it away: the order fails, or stays expired
    INSPECT = "inspect"  # look in, clean or mend, and shut it again: the food stays in


@dataclass(frozen=True)
class Opener:
    """Who last opened a door, and what for when an operator said (ADR 0120)."""

    who: str
    purpose: OpenPurpose | None = None

    @classmethod
    def of(cls, who: str, purpose: str | None) -> Opener:
        """Of a door-opening row; a purpose this version does not know reads as none."""
        known = {p.value for p in OpenPurpose}
        return cls(who, OpenPurpose(purpose) if purpose in known else None)


@dataclass(frozen=True)
class Refusal:
    """Why an opening's purpose does not fit what is in the compartment: a 409's code and
    words, saying what the operator can do instead."""

    code: str
    message: str


def purpose_refusal(
    purpose: OpenPurpose,
    *,
    order_state: str | None,
    occupied: bool,
    kept_hot: bool,
    food_unsafe: bool,
    hold_over: bool = False,
) -> Refusal | None:
    """Whether an opening for `purpose` may go ahead (pure, ADR 0120). `order_state`: the
    order whose food is in the compartment (active, or expired with its food still inside),
    None when none is; `occupied`: the board's sensor; `kept_hot`: no heater or probe fault is
    latched; `food_unsafe`: the food-safety watch ended it; `hold_over`: its hold has run out,
    whether or not its expiry has run yet (her code is refused from then on too). Food is
    handed over only when it is ready and safe; only food that is there can be discarded; an
    inspection is always allowed."""
    if purpose is OpenPurpose.HANDOVER:
        if order_state is None:
            return Refusal("nothing_to_hand_over", "no order's food is in this compartment")
        if food_unsafe:
            return Refusal(
                "food_unsafe",
                "the food is no longer safe: it is not handed over; open to discard it",
            )
        if order_state == "expired" or hold_over:
            return Refusal(
                "hold_over",
                "the order's hold is over: its food is not handed over; open to discard it",
            )
        if not kept_hot:
            return Refusal(
                "not_kept_hot",
                "a heater or probe fault is latched: the food was not kept hot and is not "
                "handed over; open to discard it",
            )
        if order_state != "ready":
            return Refusal(
                "not_ready",
                "the order is not ready (its disinfection has not finished): wait for it, or "
                "open to discard it",
            )
    if purpose is OpenPurpose.DISCARD and order_state is None and not occupied:
        return Refusal("nothing_to_discard", "the compartment holds no food to discard")
    return None
