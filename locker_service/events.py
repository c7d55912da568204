"""Live updates published only once the transaction that made them has committed.

Services call `publish_after_commit(session, hub, kind, data, site_id)`; the message reaches
the live hub (and so the dashboards' SSE streams) after COMMIT, and is dropped on rollback, so a
dashboard never shows a change the database does not hold.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from locker_service.live import LiveHub

_PENDING = "live_pending"


def publish_after_commit(
    session: AsyncSession,
    hub: LiveHub | None,
    kind: str,
    data: dict[str, Any],
    site_id: int | None,
) -> None:
    if hub is None:
        return
    session.sync_session.info.setdefault(_PENDING, []).append((hub, kind, data, site_id))


@event.listens_for(Session, "after_commit")
def _publish_pending(session: Session) -> None:
    for hub, kind, data, site_id in session.info.pop(_PENDING, []):
        hub.publish(kind, data, site_id)


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)
