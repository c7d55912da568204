"""The reasons operators give, as stored: the text followed by who gave it (pure, no I/O).

The stored text is the reason plus " (operator N)" (", every site" added when an admin froze
every site at once), so the API's own limit on a reason leaves room for the longest such suffix:
whatever the API accepts fits the column it is stored in.
"""

from __future__ import annotations

from locker_service.bounds import INT4_MAX
from locker_service.models.site import REASON_COLUMN_LENGTH

# The longest suffix: operator ids are `integer` columns, so at most INT4_MAX.
LONGEST_SUFFIX = len(f" (operator {INT4_MAX}, every site)")
REASON_MAX_LENGTH = REASON_COLUMN_LENGTH - LONGEST_SUFFIX


def signed(reason: str, operator_id: int, *, every_site: bool = False) -> str:
    """The reason as stored on a compartment or site: who gave it follows the text."""
    scope = ", every site" if every_site else ""
    return f"{reason} (operator {operator_id}{scope})"
