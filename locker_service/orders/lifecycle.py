"""The order lifecycle as a transition table: pure, no I/O (docs/contracts/lifecycles.md).

created -> assigned -> deposited -> disinfecting -> ready -> picked_up, plus cancelled, expired
and failed. `next_state` is the only way a state changes; the repository persists its answer
with compare-and-set, so two racing requests can never both make the same step. A terminal state
is final but for `CORRECTIONS`: an end the service decided on its own clock that a fact from
before it, learned after, proves wrong (ADR 0112).
"""

from __future__ import annotations

from enum import StrEnum

from locker_service.errors import InvalidTransition


class OrderState(StrEnum):
    CREATED = "created"  # waiting for a courier
    ASSIGNED = "assigned"  # a compartment was reserved and unlocked for the courier
    DEPOSITED = "deposited"  # the door shut with the food inside
    DISINFECTING = "disinfecting"  # holding cycle (heat + UV-C) running, door locked
    READY = "ready"  # the purchaser's codes open the compartment
    PICKED_UP = "picked_up"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # not collected within the hold limit, or never dropped off
    FAILED = "failed"  # the cycle could not run or was broken into


class OrderTrigger(StrEnum):
    ASSIGN = "assign"
    RELEASE = "release"  # the courier shut an empty compartment, or the unlock failed
    DEPOSIT = "deposit"
    START_CYCLE = "start_cycle"
    COMPLETE_CYCLE = "complete_cycle"
    PICK_UP = "pick_up"
    CANCEL = "cancel"
    EXPIRE = "expire"
    FAIL = "fail"
    # A pickup made before the order expired, learned after (a kiosk that decided it offline).
    PICKED_UP_BEFORE_END = "picked_up_before_end"


S, T = OrderState, OrderTrigger

TRANSITIONS: dict[tuple[OrderState, OrderTrigger], OrderState] = {
    (S.CREATED, T.ASSIGN): S.ASSIGNED,
    (S.CREATED, T.CANCEL): S.CANCELLED,
    (S.CREATED, T.EXPIRE): S.EXPIRED,
    (S.ASSIGNED, T.RELEASE): S.CREATED,
    (S.ASSIGNED, T.DEPOSIT): S.DEPOSITED,
    (S.ASSIGNED, T.CANCEL): S.CANCELLED,
    (S.ASSIGNED, T.FAIL): S.FAILED,
    (S.DEPOSITED, T.START_CYCLE): S.DISINFECTING,
    (S.DEPOSITED, T.FAIL): S.FAILED,
    (S.DEPOSITED, T.EXPIRE): S.EXPIRED,
    (S.DISINFECTING, T.COMPLETE_CYCLE): S.READY,
    (S.DISINFECTING, T.FAIL): S.FAILED,
    (S.DISINFECTING, T.EXPIRE): S.EXPIRED,
    (S.READY, T.PICK_UP): S.PICKED_UP,
    (S.READY, T.EXPIRE): S.EXPIRED,
    (S.READY, T.FAIL): S.FAILED,
}

# Corrections of a terminal state (ADR 0112): the service expired the order on its own clock,
# while the kiosk, cut off, had let its purchaser collect it before that moment. Terminal to
# terminal, by a trigger no ordinary step uses.
CORRECTIONS: dict[tuple[OrderState, OrderTrigger], OrderState] = {
    (S.EXPIRED, T.PICKED_UP_BEFORE_END): S.PICKED_UP,
}

TERMINAL: frozenset[OrderState] = frozenset({S.PICKED_UP, S.CANCELLED, S.EXPIRED, S.FAILED})
# Food is in the compartment in these states: the compartment is not free.
HOLDING: frozenset[OrderState] = frozenset({S.DEPOSITED, S.DISINFECTING, S.READY})
ACTIVE: frozenset[OrderState] = frozenset({S.ASSIGNED, *HOLDING})


class IllegalOrderTransition(InvalidTransition):
    def __init__(self, state: str, trigger: str) -> None:
        super().__init__(f"an order that is {state} cannot {trigger}")
        self.state = state
        self.trigger = trigger


def next_state(state: str, trigger: OrderTrigger) -> OrderState:
    try:
        key = (OrderState(state), trigger)
        return TRANSITIONS[key] if key in TRANSITIONS else CORRECTIONS[key]
    except (KeyError, ValueError):
        raise IllegalOrderTransition(state, trigger.value) from None


def allowed_triggers(state: str) -> frozenset[OrderTrigger]:
    return frozenset(t for (s, t) in TRANSITIONS if s == state)


# What an order that ended after a heater or lamp fault she was told of says of its end: the
# purchaser's page reads it back (`ended_after_fault`), so it keeps saying what she was told.
AFTER_FAULT = "after its compartment reported"


def after_fault_reason(what: str, fault: str) -> str:
    return f"{what}, {AFTER_FAULT} {fault} (she was told staff would contact her)"


def ended_after_fault(failure_reason: str | None) -> bool:
    return failure_reason is not None and AFTER_FAULT in failure_reason


# The order event of a kill switch's release moving her hold's end (ADR 0123); `over` in its
# detail when the release came after the food's safe time, so nothing could be given back.
HOLD_GIVEN_BACK = "hold_given_back"

# The order event of her accepted code given back unopened (the unlock failed, the latch caught
# again, her door never moved): hers to use again.
CODE_RETURNED = "code_returned"

# What an order staff emptied after a heater fault, with no purpose said, says of its end.
TAKEN_OUT_BY_STAFF = "taken out by staff"

# What an order an operator took out to discard says of its end (ADR 0120), read back the same
# way for her page. The operator's own words stay in the audit, not in what the merchant reads.
DISCARDED = "discarded by staff"


def ended_discarded(failure_reason: str | None) -> bool:
    return failure_reason is not None and failure_reason.startswith(DISCARDED)


# What a ready order says of its end when staff opened it to look in, which keeps the food in,
# and the door shut on an empty compartment (ADR 0129). Read back the same way for her page.
TAKEN_OUT_ON_INSPECTION = f"{TAKEN_OUT_BY_STAFF} during an inspection that was to leave it in"


def ended_taken_out_on_inspection(failure_reason: str | None) -> bool:
    return failure_reason is not None and failure_reason.startswith(TAKEN_OUT_ON_INSPECTION)
