"""webhook_endpoints: an endpoint that asked for every event type hears `order.hold_extended`

An endpoint registered without naming its event types was stored with the list of every type
there was (ADR 0072); `order.hold_extended` (ADR 0123) came later. An endpoint whose list holds
every type webhooks began with asked for all of them (`order.accepted`, ADR 0076, came later
too and was never added to the lists): the new type is added to it. An endpoint that named
fewer keeps its choice. Going back changes nothing: an endpoint may have chosen the type
itself, and a list naming a type the code does not know is only never matched.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW = "order.hold_extended"
# The event types webhooks began with (ADR 0072).
FIRST = (
    "order.dropped_off",
    "order.ready",
    "order.reminder_sent",
    "order.picked_up",
    "order.expired",
    "order.food_unsafe",
    "order.cancelled",
    "order.failed",
)

endpoints = sa.table("webhook_endpoints", sa.column("id", sa.Integer), sa.column("events", sa.JSON))


def _added(events: list[str]) -> list[str] | None:
    """The endpoint's list with the new type, if it asked for every type; else None."""
    if NEW in events or not set(FIRST) <= set(events):
        return None
    at = events.index("order.reminder_sent") + 1
    return [*events[:at], NEW, *events[at:]]


def upgrade() -> None:
    bind = op.get_bind()
    for endpoint_id, events in bind.execute(sa.select(endpoints.c.id, endpoints.c.events)).all():
        changed = _added(list(events))
        if changed is not None:
            bind.execute(
                endpoints.update().where(endpoints.c.id == endpoint_id).values(events=changed)
            )


def downgrade() -> None:
    pass
