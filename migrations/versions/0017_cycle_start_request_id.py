"""disinfection_cycles: the request id a cycle's start is sent under

A cycle start sent again after an unknown outcome (the service died waiting for the answer, or
none came in time) goes under the id it was first sent with, which a kiosk that ran it answers
from its record instead of running the cycle a second time (ADR 0082).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("disinfection_cycles", schema=None) as batch_op:
        batch_op.add_column(sa.Column("start_request_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("disinfection_cycles", schema=None) as batch_op:
        batch_op.drop_column("start_request_id")
