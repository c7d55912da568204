"""The compartment lifecycle as a transition table: pure, no I/O (docs/contracts/lifecycles.md).

available -> reserved -> occupied -> disinfecting -> awaiting_pickup -> cleaning -> available,
plus out_of_service (an operator's decision) and faulted (the board reported a fault while the
compartment held no order).
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from locker_service.errors import InvalidTransition

# The kiosk PC's clock (event and snapshot stamps) against the service's: NTP keeps them well
# inside this. Used wherever a kiosk's stamp is set against the service's own records.
KIOSK_CLOCK_SKEW = timedelta(seconds=5)


class CompartmentState(StrEnum):
    AVAILABLE = "available"
    RESERVED = "reserved"  # unlocked for a courier's drop-off
    OCCUPIED = "occupied"  # food inside, cycle not started yet
    DISINFECTING = "disinfecting"
    AWAITING_PICKUP = "awaiting_pickup"
    CLEANING = "cleaning"  # the short cycle after the food left
    OUT_OF_SERVICE = "out_of_service"
    FAULTED = "faulted"


# Food behind the door: only there can a low temperature or a fault spoil an order.
FOOD_INSIDE: frozenset[str] = frozenset(
    {CompartmentState.OCCUPIED, CompartmentState.DISINFECTING, CompartmentState.AWAITING_PICKUP}
)


class CompartmentTrigger(StrEnum):
    RESERVE = "reserve"
    RELEASE = "release"
    OCCUPY = "occupy"
    START_CYCLE = "start_cycle"
    COMPLETE_CYCLE = "complete_cycle"
    EMPTY = "empty"  # the food left (picked up, or removed by staff): clean it
    COMPLETE_CLEANING = "complete_cleaning"
    TAKE_OUT_OF_SERVICE = "take_out_of_service"
    BACK_IN_SERVICE = "back_in_service"
    FAULT = "fault"
    CLEAR_FAULT = "clear_fault"


S, T = CompartmentState, CompartmentTrigger

TRANSITIONS: dict[tuple[CompartmentState, CompartmentTrigger], CompartmentState] = {
    (S.AVAILABLE, T.RESERVE): S.RESERVED,
    (S.AVAILABLE, T.TAKE_OUT_OF_SERVICE): S.OUT_OF_SERVICE,
    (S.AVAILABLE, T.FAULT): S.FAULTED,
    (S.RESERVED, T.RELEASE): S.AVAILABLE,
    (S.RESERVED, T.OCCUPY): S.OCCUPIED,
    (S.OCCUPIED, T.START_CYCLE): S.DISINFECTING,
    (S.OCCUPIED, T.EMPTY): S.CLEANING,
    (S.DISINFECTING, T.COMPLETE_CYCLE): S.AWAITING_PICKUP,
    (S.DISINFECTING, T.EMPTY): S.CLEANING,
    (S.AWAITING_PICKUP, T.EMPTY): S.CLEANING,
    (S.CLEANING, T.COMPLETE_CLEANING): S.AVAILABLE,
    (S.CLEANING, T.TAKE_OUT_OF_SERVICE): S.OUT_OF_SERVICE,
    (S.CLEANING, T.FAULT): S.FAULTED,
    (S.OUT_OF_SERVICE, T.BACK_IN_SERVICE): S.AVAILABLE,
    (S.FAULTED, T.CLEAR_FAULT): S.AVAILABLE,
    (S.FAULTED, T.TAKE_OUT_OF_SERVICE): S.OUT_OF_SERVICE,
}

# States in which an order's food may be inside.
WITH_ORDER: frozenset[CompartmentState] = frozenset(
    {S.RESERVED, S.OCCUPIED, S.DISINFECTING, S.AWAITING_PICKUP}
)


class IllegalCompartmentTransition(InvalidTransition):
    def __init__(self, state: str, trigger: str) -> None:
        super().__init__(f"a compartment that is {state} cannot {trigger}")
        self.state = state
        self.trigger = trigger


def next_state(state: str, trigger: CompartmentTrigger) -> CompartmentState:
    try:
        return TRANSITIONS[(CompartmentState(state), trigger)]
    except (KeyError, ValueError):
        raise IllegalCompartmentTransition(state, trigger.value) from None
