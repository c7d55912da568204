"""credentials: several keys per merchant, kiosk and operator, with expiry, revocation, last use

Each principal's one hash column becomes its first row here (label "first key"; its prefix is
not known, only its hash was kept), then the column goes.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 02:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OWNERS = (  # (table, its hash column, the owner column in credentials)
    ("merchants", "api_key_hash", "merchant_id"),
    ("kiosks", "token_hash", "kiosk_id"),
    ("operators", "token_hash", "operator_id"),
)
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "credentials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("merchant_id", sa.Integer(), nullable=True),
        sa.Column("kiosk_id", sa.Integer(), nullable=True),
        sa.Column("operator_id", sa.Integer(), nullable=True),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("expires_at", WHEN, nullable=True),
        sa.Column("revoked_at", WHEN, nullable=True),
        sa.Column("replaced_at", WHEN, nullable=True),
        sa.Column("last_used_at", WHEN, nullable=True),
        sa.CheckConstraint(
            "(CASE WHEN merchant_id IS NULL THEN 0 ELSE 1 END)"
            " + (CASE WHEN kiosk_id IS NULL THEN 0 ELSE 1 END)"
            " + (CASE WHEN operator_id IS NULL THEN 0 ELSE 1 END) = 1",
            name=op.f("ck_credentials_one_owner"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
            name=op.f("fk_credentials_merchant_id_merchants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["kiosk_id"],
            ["kiosks.id"],
            name=op.f("fk_credentials_kiosk_id_kiosks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name=op.f("fk_credentials_operator_id_operators"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credentials")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_credentials_key_hash")),
    )
    with op.batch_alter_table("credentials") as batch:
        for owner in ("merchant_id", "kiosk_id", "operator_id"):
            batch.create_index(batch.f(f"ix_credentials_{owner}"), [owner], unique=False)
    for table, column, owner in OWNERS:
        op.execute(
            f"INSERT INTO credentials ({owner}, key_hash, prefix, label, created_at) "
            f"SELECT id, {column}, '', 'first key', created_at FROM {table}"
        )
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"uq_{table}_{column}", type_="unique")
            batch.drop_column(column)


def downgrade() -> None:
    # Each principal gets back its newest key that neither was revoked nor expires (else its
    # newest): the one in use after a rotation, not the one left to expire.
    for table, column, owner in OWNERS:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column(column, sa.String(length=64), nullable=True))
        op.execute(
            f"UPDATE {table} SET {column} = (SELECT c.key_hash FROM credentials c "
            f"WHERE c.{owner} = {table}.id ORDER BY c.revoked_at IS NOT NULL, "
            "c.expires_at IS NOT NULL, c.id DESC LIMIT 1)"
        )
        op.execute(f"UPDATE {table} SET {column} = 'none-' || id WHERE {column} IS NULL")
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, existing_type=sa.String(length=64), nullable=False)
            batch.create_unique_constraint(f"uq_{table}_{column}", [column])
    op.drop_table("credentials")
