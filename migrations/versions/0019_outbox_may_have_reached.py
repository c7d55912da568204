"""notification_outbox: whether a try of the message may have reached the purchaser

A try handed to a provider (Apprise was asked to send, and did not refuse the URL before
sending) may have reached her, even when it failed; one that ended before that (no channel for
her contact, a URL refused, the database gone while preparing) surely did not. Counting the
tries said too much: a message to a contact with no channel was "maybe seen", and a correction
of it was sent the same way and failed the same way (ADR 0112).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notification_outbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("may_have_reached", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    # Before the upgrade nothing told the tries apart: every message tried is taken as maybe
    # seen, and so is one an operator resent (the resend cleared its attempts, not its past).
    resent = (
        "(order_events.detail->>'notification_id')::bigint"
        if op.get_bind().dialect.name == "postgresql"
        else "json_extract(order_events.detail, '$.notification_id')"
    )
    op.execute(
        "UPDATE notification_outbox SET may_have_reached = true "
        "WHERE attempts > 0 OR status IN ('sending', 'sent') OR id IN ("
        f"SELECT {resent} FROM order_events WHERE order_events.action = 'notification_resent')"
    )


def downgrade() -> None:
    with op.batch_alter_table("notification_outbox", schema=None) as batch_op:
        batch_op.drop_column("may_have_reached")
