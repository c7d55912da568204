"""Pending kiosk commands, without a broker: which reply ends a command, and which error a
caller gets when none does (`locker_service.kiosk_link.pending`)."""

from __future__ import annotations

import asyncio

import pytest

from firmware_bridge import contract
from locker_service.kiosk_link.errors import CommandTimeout, KioskUnreachable
from locker_service.kiosk_link.pending import PendingCommands

# Long enough that a reply handed over in the same test always comes first; short enough that
# the timeout tests, which wait for it in full, stay fast.
SHORT_TIMEOUT_S = 0.05
LONG_TIMEOUT_S = 30.0  # never reached: the command is answered or failed before


def reply(request_id: str, status: contract.ReplyStatus) -> contract.Reply:
    return contract.Reply(request_id=request_id, status=status)


async def test_the_final_reply_ends_the_command_and_earlier_non_final_ones_do_not() -> None:
    pending = PendingCommands()
    with pending.expect("r1", "k1", "unlock", 3) as command:
        answer = asyncio.ensure_future(pending.final_reply(command, LONG_TIMEOUT_S))
        pending.resolve("k1", reply("r1", "accepted"))
        pending.resolve("k1", reply("r1", "in_progress"))
        await asyncio.sleep(0)
        assert not answer.done()
        pending.resolve("k1", reply("r1", "succeeded"))
        assert (await answer).status == "succeeded"
        assert command.last_status == "in_progress"
    assert len(pending) == 0  # forgotten once the block ends


async def test_a_command_nobody_answered_is_unreachable_not_timed_out() -> None:
    pending = PendingCommands()
    with (
        pending.expect("r1", "k1", "unlock", 3) as command,
        pytest.raises(KioskUnreachable, match="did not answer unlock"),
    ):
        await pending.final_reply(command, SHORT_TIMEOUT_S)


async def test_an_accepted_command_without_a_final_reply_times_out() -> None:
    """The kiosk had it and may have acted: the caller must reconcile, not retry blindly."""
    pending = PendingCommands()
    with pending.expect("r1", "k1", "unlock", 3) as command:
        pending.resolve("k1", reply("r1", "accepted"))
        with pytest.raises(CommandTimeout, match="accepted unlock on compartment 3"):
            await pending.final_reply(command, SHORT_TIMEOUT_S)


async def test_a_reply_from_another_kiosk_is_ignored() -> None:
    pending = PendingCommands()
    with pending.expect("r1", "k1", "unlock", 3) as command:
        pending.resolve("k2", reply("r1", "accepted"))
        pending.resolve("k2", reply("r1", "succeeded"))
        assert not command.future.done() and command.last_status is None
        pending.resolve("k1", reply("r1", "failed"))
        assert (await pending.final_reply(command, LONG_TIMEOUT_S)).status == "failed"


async def test_late_and_duplicate_replies_change_nothing() -> None:
    pending = PendingCommands()
    pending.resolve("k1", reply("gone", "succeeded"))  # no such command: dropped
    with pending.expect("r1", "k1", "unlock", 3) as command:
        pending.resolve("k1", reply("r1", "succeeded"))
        pending.resolve("k1", reply("r1", "failed"))  # a second final reply: the first stands
        assert (await pending.final_reply(command, LONG_TIMEOUT_S)).status == "succeeded"
    pending.resolve("k1", reply("r1", "succeeded"))  # after the caller left: dropped
    assert len(pending) == 0


async def test_stopping_leaves_every_waiting_command_s_outcome_unknown() -> None:
    """Sent, unanswered and not yet expired: the kiosk may still carry it out, so a caller must
    not take it as not done (a pickup would give back a code whose door may open)."""
    pending = PendingCommands()
    with (
        pending.expect("r1", "k1", "unlock", 1) as first,
        pending.expect("r2", "k2", "unlock", 2) as accepted,
    ):
        pending.resolve("k2", reply("r2", "accepted"))
        pending.fail_all("the service is shutting down")
        for command in (first, accepted):
            with pytest.raises(CommandTimeout, match=r"shutting down.*may still be carried out"):
                await pending.final_reply(command, LONG_TIMEOUT_S)
