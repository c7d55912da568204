"""HACCP records: sealed days (append-only, hash-chained) and alerts' corrective actions

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 19:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REFUSE = "haccp_days is append-only: a sealed day is never changed or removed"


def upgrade() -> None:
    op.create_table(
        "haccp_days",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("prev", sa.String(64), nullable=False),
        sa.Column("seal", sa.String(64), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_haccp_days_site_id_sites")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_haccp_days")),
        sa.UniqueConstraint("site_id", "day", name=op.f("uq_haccp_days_site_id_day")),
    )
    op.add_column("alerts", sa.Column("corrective_action", sa.String(1000), nullable=True))
    op.add_column("alerts", sa.Column("action_by", sa.String(200), nullable=True))
    op.add_column("alerts", sa.Column("action_at", sa.DateTime(timezone=True), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION haccp_days_append_only() RETURNS trigger AS $$ BEGIN "
            f"RAISE EXCEPTION '{REFUSE}'; END $$ LANGUAGE plpgsql"
        )
        op.execute(
            "CREATE TRIGGER haccp_days_append_only BEFORE UPDATE OR DELETE ON haccp_days "
            "FOR EACH ROW EXECUTE FUNCTION haccp_days_append_only()"
        )
        # TRUNCATE fires no row trigger: refused on its own.
        op.execute(
            "CREATE TRIGGER haccp_days_no_truncate BEFORE TRUNCATE ON haccp_days "
            "FOR EACH STATEMENT EXECUTE FUNCTION haccp_days_append_only()"
        )
    else:
        for what in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER haccp_days_no_{what.lower()} BEFORE {what} ON haccp_days "
                f"BEGIN SELECT RAISE(ABORT, '{REFUSE}'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER haccp_days_no_truncate ON haccp_days")
        op.execute("DROP TRIGGER haccp_days_append_only ON haccp_days")
        op.execute("DROP FUNCTION haccp_days_append_only()")
    op.drop_table("haccp_days")
    for column in ("action_at", "action_by", "corrective_action"):
        op.drop_column("alerts", column)
