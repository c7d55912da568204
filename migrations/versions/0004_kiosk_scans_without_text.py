"""kiosk_events: scans keep a keyed hash of what was read and the outcome, never the text

What a kiosk's scanner reads is a pickup token or an 8-digit code. Rows written before this
revision held it as `data.text`; it is replaced by `text_hmac` (HMAC-SHA256 under the service
secret, as the service now writes it) and `outcome: "unknown"`. Run without the secret (plain
`alembic upgrade`), the text is dropped with no hash. There is no way back: downgrade keeps the
hashes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 09:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from locker_service.kiosks.scans import scan_hash

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH_ROWS = 1000  # rows read and rewritten per round: bounded memory on a long history

kiosk_events = sa.table(
    "kiosk_events",
    sa.column("id", sa.BigInteger),
    sa.column("type", sa.String),
    sa.column("data", sa.JSON),
)


def upgrade() -> None:
    connection = op.get_bind()
    config = op.get_context().config
    secret_key = config.attributes.get("secret_key") if config is not None else None
    last_id = 0
    while True:
        rows = connection.execute(
            sa.select(kiosk_events.c.id, kiosk_events.c.data)
            .where(kiosk_events.c.type == "scan", kiosk_events.c.id > last_id)
            .order_by(kiosk_events.c.id)
            .limit(BATCH_ROWS)
        ).all()
        if not rows:
            return
        last_id = rows[-1].id
        rewritten = [
            {
                "row_id": row.id,
                "new_data": {
                    "text_hmac": scan_hash(secret_key, text)
                    if secret_key and isinstance(text, str)
                    else None,
                    "outcome": "unknown",
                },
            }
            for row in rows
            if isinstance(row.data, dict) and "text" in row.data
            for text in [row.data["text"]]
        ]
        if rewritten:
            connection.execute(
                kiosk_events.update()
                .where(kiosk_events.c.id == sa.bindparam("row_id"))
                .values(data=sa.bindparam("new_data", type_=sa.JSON)),
                rewritten,
            )


def downgrade() -> None:
    """Nothing to undo: the texts are gone for good, and the hashes harm no older code."""
