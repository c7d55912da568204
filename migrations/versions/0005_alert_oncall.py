"""site_oncall (who is told of a site's alerts), alerts.notification_id, timers.alert_id

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "site_oncall",
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("urls", sa.Text(), nullable=False),
        sa.Column("escalation_urls", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
            name=op.f("fk_site_oncall_site_id_sites"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["updated_by"], ["operators.id"], name=op.f("fk_site_oncall_updated_by_operators")
        ),
        sa.PrimaryKeyConstraint("site_id", name=op.f("pk_site_oncall")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notification_id", BIGINT, nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_alerts_notification_id_notification_outbox"),
            "notification_outbox",
            ["notification_id"],
            ["id"],
        )
    with op.batch_alter_table("timers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("alert_id", BIGINT, nullable=True))
        batch_op.create_index(batch_op.f("ix_timers_alert_id"), ["alert_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_timers_alert_id_alerts"), "alerts", ["alert_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("timers", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_timers_alert_id_alerts"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_timers_alert_id"))
        batch_op.drop_column("alert_id")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_alerts_notification_id_notification_outbox"), type_="foreignkey"
        )
        batch_op.drop_column("notification_id")
    op.drop_table("site_oncall")
