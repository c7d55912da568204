"""Live updates published only once the transaction that made them has committed.

Services call `publish_after_commit(session, hub, kind, data, site_id)`; the message reaches
the live hub (and so the dashboards' SSE streams) after COMMIT, and is dropped on rollback, so a
dashboard never shows a change the database does not hold. A savepoint rolled back drops only
what was published inside it: what came before it in the transaction still goes out with the
commit (a kiosk's run of snapshots, one of which a door event reconciled first: ADR 0095).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from locker_service.live import LiveHub

_PENDING = "live_pending"
_MARKS = "live_pending_at_savepoints"  # savepoint -> how many were pending as it began


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
    if session.in_nested_transaction():
        return  # a savepoint released: the transaction may still roll back
    for hub, kind, data, site_id in session.info.pop(_PENDING, []):
        hub.publish(kind, data, site_id)


@event.listens_for(Session, "after_transaction_create")
def _mark_savepoint(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        marks = session.info.setdefault(_MARKS, {})
        marks[transaction] = len(session.info.get(_PENDING, ()))


@event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    """A savepoint's rollback drops what was published since it began; the transaction's, all.
    A flush's own subtransaction failing (a unique key met inside a savepoint) is neither: the
    savepoint or the transaction around it is rolled back in turn, and that decides."""
    if previous_transaction.parent is not None and not previous_transaction.nested:
        return
    # Fired once the savepoint has ended (`after_transaction_end`), so its mark is still here.
    mark = session.info.get(_MARKS, {}).pop(previous_transaction, None)
    pending = session.info.get(_PENDING)
    if not pending:
        return
    if previous_transaction.nested and mark is not None:
        del pending[mark:]
    else:
        session.info.pop(_PENDING, None)


@event.listens_for(Session, "after_transaction_end")
def _end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        # The outermost transaction is over: a commit has published what was pending (after
        # commit comes first); whatever is left was never committed (a close without commit).
        session.info.pop(_PENDING, None)
        session.info.pop(_MARKS, None)
