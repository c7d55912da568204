"""What a board's latched fault means for the food behind its door (pure).

A heater or probe fault (and any fault this version does not know) leaves the food no longer
kept hot; a lamp fault leaves it hot but not disinfected; a jammed lock leaves it as it was.
The exceptions table (kiosks/exceptions.py) decides who is told what from this; an operator's
opening to hand the food over is refused while it is not kept hot (ADR 0120).
"""

from __future__ import annotations

from typing import Final

from locker_service.foodsafety.uv_dose import LAMP_FAILED

LOCK_JAMMED: Final = "lock_jammed"
# The board's UV timeout, and the service's own verdict on a lamp short of its dose too often.
LAMP_FAULTS: Final = frozenset({"uv_timeout", LAMP_FAILED})


def may_be_collected(fault: str | None) -> bool:
    """Whether her code may open her door with this fault latched: with none, or a jammed lock
    (nothing is wrong with the food). A heater, probe, lamp or unknown fault told her not to
    collect it and that staff will contact her (kiosks/exceptions.py): it is not handed out."""
    return fault is None or fault == LOCK_JAMMED


def keeps_food_hot(fault: str | None) -> bool:
    """False for a heater or probe fault, and for an unknown one: the fault that cannot be
    left alone with food inside."""
    return fault is None or fault == LOCK_JAMMED or fault in LAMP_FAULTS
