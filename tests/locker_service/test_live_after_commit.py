"""Live updates go out once their transaction has committed, and only what it committed: a
savepoint rolled back drops what was published inside it, not what came before it (a kiosk's
run of snapshots, one of which lost a race to a door event: ADR 0095); a savepoint released
publishes nothing until the transaction commits. On SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from locker_service.context import ServiceContext
from locker_service.events import publish_after_commit
from locker_service.live import LiveHub, Subscription
from locker_service.models import Alert, utcnow
from tests.locker_service import world


class Refused(Exception):
    pass


async def published(hub: LiveHub, live: Subscription) -> list[str]:
    """What reached the hub so far: each message's `what`."""
    return [str(message.data["what"]) for message in await world.published(hub, live)]


async def test_a_savepoint_rolled_back_drops_only_what_it_published(
    service: ServiceContext,
) -> None:
    hub = LiveHub()
    with hub.subscription() as live:
        async with service.sessionmaker() as session, session.begin():
            await session.execute(text("SELECT 1"))
            publish_after_commit(session, hub, "order", {"what": "before"}, None)
            with pytest.raises(Refused):
                async with session.begin_nested():
                    publish_after_commit(session, hub, "order", {"what": "inside"}, None)
                    raise Refused
            async with session.begin_nested():
                publish_after_commit(session, hub, "order", {"what": "kept inside"}, None)
            assert await published(hub, live) == []  # a savepoint released publishes nothing
            publish_after_commit(session, hub, "order", {"what": "after"}, None)
        assert await published(hub, live) == ["before", "kept inside", "after"]


async def test_a_flush_that_fails_inside_a_savepoint_drops_only_that_savepoint_s(
    service: ServiceContext,
) -> None:
    """As `raise_alert` does when another transaction raised the same alert first: the insert's
    flush meets the open alert's unique key inside a savepoint, which is rolled back, and the
    transaction goes on and commits what it published before and after."""
    hub = LiveHub()
    now = utcnow()

    def alert() -> Alert:
        return Alert(
            kind="door_left_open",
            severity="warning",
            message="a door left open",
            dedupe_key=f"door_left_open:{now.timestamp()}",
            state="open",
            raised_at=now,
            last_raised_at=now,
            count=1,
        )

    async with service.sessionmaker() as session, session.begin():
        session.add(alert())
        await session.flush()
    with hub.subscription() as live:
        async with service.sessionmaker() as session, session.begin():
            publish_after_commit(session, hub, "order", {"what": "before"}, None)
            async with session.begin_nested():
                publish_after_commit(session, hub, "order", {"what": "outer savepoint"}, None)
                with pytest.raises(IntegrityError):
                    async with session.begin_nested():
                        publish_after_commit(session, hub, "order", {"what": "inside"}, None)
                        session.add(alert())
            publish_after_commit(session, hub, "order", {"what": "after"}, None)
        assert await published(hub, live) == ["before", "outer savepoint", "after"]


async def test_a_transaction_rolled_back_publishes_nothing_and_leaves_nothing_behind(
    service: ServiceContext,
) -> None:
    hub = LiveHub()
    with hub.subscription() as live:
        async with service.sessionmaker() as session:
            with pytest.raises(Refused):
                async with session.begin():
                    await session.execute(text("SELECT 1"))
                    async with session.begin_nested():
                        publish_after_commit(session, hub, "order", {"what": "released"}, None)
                    publish_after_commit(session, hub, "order", {"what": "rolled back"}, None)
                    raise Refused
            async with session.begin():  # the same session's next transaction
                await session.execute(text("SELECT 1"))
                publish_after_commit(session, hub, "order", {"what": "next"}, None)
            publish_after_commit(session, hub, "order", {"what": "never committed"}, None)
            await session.execute(text("SELECT 1"))
        # closed without a commit: what it held is dropped with it
        assert await published(hub, live) == ["next"]
