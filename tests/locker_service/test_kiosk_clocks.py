"""How far behind a kiosk's clock may be, from the times it stamps (pure, no broker), and
the operators told of a clock that is off."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from firmware_bridge import contract
from locker_service.context import ServiceContext
from locker_service.kiosk_link.clocks import ALLOWANCE_S, MAX_KEPT, MAX_WAIT_S, KioskClocks
from locker_service.kiosk_link.errors import KioskUnreachable
from locker_service.kiosk_link.pending import PendingCommands
from locker_service.kiosks.clock_watch import SETTLE_S, ClockWatch
from locker_service.models import Alert
from tests.locker_service.world import World

T0 = 1_800_000_000.0  # seconds since the epoch, by the service's clock


def test_the_bound_is_the_least_delay_seen_and_a_message_kept_in_the_broker_does_not_raise_it() -> (
    None
):
    clocks = KioskClocks()
    clocks.observe("k", T0, T0 - 8.2)  # a reply, 8 s behind and 0.2 s on its way
    clocks.observe("k", T0 + 1, T0 + 1 - 3600)  # an event journalled an hour ago, sent now
    clocks.observe("k", T0 + 2, T0 + 2 - 8.05)
    clock = clocks.clock("k", T0 + 3)
    assert clock is not None
    assert clock.behind_at_most_s == pytest.approx(8.05)
    assert clock.wait_s == pytest.approx(8.05)
    assert clock.off
    assert clocks.clock("unheard", T0) is None


def test_a_kiosk_ahead_is_waited_for_not_at_all_and_reported_off() -> None:
    clocks = KioskClocks()
    clocks.observe("k", T0, T0 + 30)
    clock = clocks.clock("k", T0)
    assert clock is not None and clock.wait_s == 0.0 and clock.off


def test_a_clock_set_right_is_seen_at_once_and_a_clock_set_back_once_the_window_has_passed() -> (
    None
):
    clocks = KioskClocks(window_s=600)
    clocks.observe("k", T0, T0 - 40)
    clocks.observe("k", T0 + 10, T0 + 10 - 0.01)  # set right: a smaller value wins at once
    clock = clocks.clock("k", T0 + 10)
    assert clock is not None and not clock.off and clock.wait_s < ALLOWANCE_S
    clocks.observe("k", T0 + 20, T0 + 20 - 40)  # set back: the good value holds its window
    assert clocks.clock("k", T0 + 20).behind_at_most_s == pytest.approx(0.01)  # type: ignore[union-attr]
    clocks.observe("k", T0 + 700, T0 + 700 - 40)
    assert clocks.clock("k", T0 + 700).behind_at_most_s == pytest.approx(40)  # type: ignore[union-attr]


def test_a_clock_set_back_is_waited_for_within_a_minute_while_stamps_keep_the_window() -> None:
    """Set back by 20 s, its telemetry every 10 s: within a minute a command waits the 20 s
    (its copy may run that late), while the window's least, still the right clock's, judges
    its reports' stamps (taking them for newer than they can be would be the danger there)."""
    clocks = KioskClocks(window_s=600, recent_s=60)
    clocks.observe("k", T0, T0 - 0.05)  # right
    seen = []
    for t in range(10, 130, 10):  # set back by 20 s just before T0 + 10
        clocks.observe("k", T0 + t, T0 + t - 20.05)
        clock = clocks.clock("k", T0 + t)
        assert clock is not None and clock.stamps_behind_s == pytest.approx(0.05)
        seen.append((t, round(clock.wait_s, 2)))
    assert seen == [(t, 0.05) for t in range(10, 70, 10)] + [(t, 20.05) for t in range(70, 130, 10)]
    quiet = clocks.clock("k", T0 + 300)  # nothing for a minute: the window's least again
    assert quiet is not None and quiet.wait_s == pytest.approx(0.05)


def test_the_wait_is_capped_and_a_kiosk_quiet_for_the_window_is_unknown_again() -> None:
    clocks = KioskClocks(window_s=600)
    clocks.observe("k", T0, T0 - 3600)
    clocks.observe("k", T0 + 300, T0 + 300 - 3600)
    clock = clocks.clock("k", T0 + 500)
    assert clock is not None and clock.wait_s == MAX_WAIT_S and clock.heard_for_s == 500
    assert clocks.clock("k", T0 + 901) is None
    clocks.observe("k", T0 + 1000, T0 + 1000)  # back: a new run, heard for no time yet
    assert clocks.clock("k", T0 + 1000).heard_for_s == 0  # type: ignore[union-attr]


def test_a_clock_falling_behind_with_every_message_keeps_a_bounded_queue() -> None:
    clocks = KioskClocks(window_s=600)
    for i in range(10 * MAX_KEPT):
        clocks.observe("k", T0 + i, T0 + i - 0.01 * i)
    clock = clocks.clock("k", T0 + 10 * MAX_KEPT)
    # The newest MAX_KEPT values are kept: the least of them, not of the whole window (which
    # goes back to message 40), and still an upper bound.
    assert clock is not None
    assert clock.behind_at_most_s == pytest.approx(0.01 * 9 * MAX_KEPT)


async def test_an_answer_within_the_clock_wait_counts_and_silence_is_unreachable_after_it() -> None:
    pending_commands = PendingCommands()
    with pending_commands.expect("r1", "k", "unlock", 1) as pending:
        waiting = asyncio.create_task(pending_commands.final_reply(pending, 0.05, 30.0))
        await asyncio.sleep(0.2)  # past the deadline, within the kiosk's
        assert not waiting.done()
        pending_commands.resolve("k", contract.Reply(request_id="r1", status="succeeded"))
        assert (await waiting).status == "succeeded"
    with (
        pending_commands.expect("r2", "k", "unlock", 1) as pending,
        pytest.raises(KioskUnreachable, match=r"within 0\.15 s"),
    ):
        await pending_commands.final_reply(pending, 0.05, 0.1)


class _Link:
    """The kiosk link as the watch sees it: the clocks, and the kiosks this replica handles."""

    def __init__(self, handled: frozenset[str] | None = None) -> None:
        self.clocks = KioskClocks()
        self.handled = handled

    def handled_kiosks(self) -> frozenset[str] | None:
        return self.handled


async def _clock_alerts(service: ServiceContext) -> list[Alert]:
    async with service.sessionmaker() as session:
        return list(
            (await session.scalars(select(Alert).where(Alert.kind == "kiosk_clock_off"))).all()
        )


async def test_operators_are_told_of_a_kiosk_clock_behind_and_of_it_set_right(
    service: ServiceContext, world: World
) -> None:
    link = _Link()
    now = [T0]
    watch = ClockWatch(service.sessionmaker, service.hub, link, now=lambda: now[0])
    link.clocks.observe(world.kiosk_code, T0, T0 - 42.3)
    await watch.round()  # heard for no time yet: its first messages may all have waited
    assert await _clock_alerts(service) == []
    now[0] = T0 + SETTLE_S
    link.clocks.observe(world.kiosk_code, now[0], now[0] - 42.3)
    await watch.round()
    await watch.round()  # nothing changed: nothing written again
    [alert] = await _clock_alerts(service)
    assert alert.state == "open" and alert.count == 1 and alert.kiosk_id == world.kiosk_id
    assert "up to 42 s behind" in alert.message
    now[0] += 30
    link.clocks.observe(world.kiosk_code, now[0], now[0] - 0.02)  # its time service fixed it
    await watch.round()
    [alert] = await _clock_alerts(service)
    assert alert.state == "resolved"


async def test_a_replica_tells_only_of_the_kiosks_it_handles_and_a_kiosk_ahead_too(
    service: ServiceContext, world: World
) -> None:
    link = _Link(handled=frozenset({world.kiosk_code}))
    for at in (T0, T0 + SETTLE_S):
        link.clocks.observe("held-elsewhere", at, at - 60)
        link.clocks.observe(world.kiosk_code, at, at + 12)
    await ClockWatch(service.sessionmaker, service.hub, link, now=lambda: T0 + SETTLE_S).round()
    [alert] = await _clock_alerts(service)
    assert alert.kiosk_id == world.kiosk_id
    assert "at least 12 s ahead" in alert.message
