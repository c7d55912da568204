"""webhook_endpoints: an endpoint that asked for every event type hears `order.hold_extended`

An endpoint registered without naming its event types was stored with the list of every type
there was (ADR 0072); `order.hold_extended` (ADR 0123) came later. An endpoint whose list holds
every type of that time asked for all of them: the new type is added to it. An endpoint that
named fewer keeps its choice.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07 14:00:00
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW = "order.hold_extended"
# Every event type before it, in their order (locker_service/orders/webhooks.EVENT_TYPES).
BEFORE = (
    "order.accepted",
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


def _rewrite(change: Callable[[list[str]], list[str] | None]) -> None:
    bind = op.get_bind()
    for endpoint_id, events in bind.execute(sa.select(endpoints.c.id, endpoints.c.events)).all():
        changed = change(list(events))
        if changed is not None:
            bind.execute(
                endpoints.update().where(endpoints.c.id == endpoint_id).values(events=changed)
            )


def _added(events: list[str]) -> list[str] | None:
    if NEW in events or not set(BEFORE) <= set(events):
        return None
    at = events.index("order.reminder_sent") + 1
    return [*events[:at], NEW, *events[at:]]


def _removed(events: list[str]) -> list[str] | None:
    return [e for e in events if e != NEW] if NEW in events else None


def upgrade() -> None:
    _rewrite(_added)


def downgrade() -> None:
    _rewrite(_removed)
