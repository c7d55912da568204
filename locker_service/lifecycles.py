"""Saving a lifecycle step with compare-and-set (ADR 0030), for orders and compartments alike.

Each lifecycle's transition table (`orders/lifecycle.py`, `compartments/lifecycle.py`) decides
the next state; this writes it only if the row is still in the state the step was decided from
(`UPDATE ... WHERE id = ? AND state = expected`), bumping `version`. Of two racing requests
exactly one matches a row; the other learns it lost and answers 409.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from locker_service.db import rowcount
from locker_service.models import Compartment, Order

# The rows that have a lifecycle: a `state` column and a `version` counter.
WithLifecycle = TypeVar("WithLifecycle", Order, Compartment)


async def save_step(
    session: AsyncSession,
    row: WithLifecycle,
    expected: str,
    new: str,
    values: dict[str, Any],
    *,
    version: int | None = None,
) -> bool:
    """Write `new` (and `values`) if `row` is still `expected`; False if another step won.

    `version`: also only if the row is still at that version, for a step that keeps the state
    (`expected == new`) and so must lose to any step taken meanwhile, there and back included.

    On success the loaded object is updated in place as if read back (no extra SELECT, and no
    pending change for the session to flush again).
    """
    model = type(row)
    where = [model.id == row.id, model.state == expected]
    if version is not None:
        where.append(model.version == version)
    result = await session.execute(
        update(model)
        .where(*where)
        .values(state=new, version=model.version + 1, **values)
        .execution_options(synchronize_session=False)
    )
    if rowcount(result) != 1:
        return False
    set_committed_value(row, "state", new)
    set_committed_value(row, "version", row.version + 1)
    for key, value in values.items():
        set_committed_value(row, key, value)
    return True
