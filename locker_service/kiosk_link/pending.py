"""Commands waiting for their kiosk's final reply, by request id: pure, on the event loop.

A command is answered by zero or more non-final replies (`accepted`, `in_progress`) and one
final one (`succeeded`, `failed`, `rejected`, `timed_out`). Which error a caller gets when no
final reply comes in time depends on what did come: nothing at all means the kiosk never had
the command (`KioskUnreachable`, the action surely not done); a non-final reply means it did
and may have acted (`CommandTimeout`, reconcile from the next snapshot).

Only the deadline makes "never had it" true, because the command's `expires_at` is what has the
bridge refuse a late copy (ADR 0087). A kiosk that reports itself offline therefore does not end
its waiting commands early: its broker session keeps a command sent meanwhile, and the bridge
runs it on its return if it has not expired, and its answer then still counts. The service
stopping ends them as `CommandTimeout`: they were sent and may still be carried out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from firmware_bridge import contract
from locker_service.kiosk_link.errors import CommandTimeout, KioskUnreachable

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PendingCommand:
    """One command sent and not yet finally answered."""

    request_id: str
    kiosk_id: str
    action: str
    compartment: int | None  # None: a command to the whole kiosk (`report_state`)
    future: asyncio.Future[contract.Reply]
    last_status: str | None = None  # the last non-final status seen (accepted/in_progress)

    @property
    def what(self) -> str:
        """The action and what it acts on, as the messages name them."""
        if self.compartment is None:
            return self.action
        return f"{self.action} on compartment {self.compartment}"


class PendingCommands:
    """The commands waiting for a reply; every method runs on the event loop."""

    def __init__(self) -> None:
        self._by_request: dict[str, PendingCommand] = {}

    def __len__(self) -> int:
        return len(self._by_request)

    @contextmanager
    def expect(
        self, request_id: str, kiosk_id: str, action: str, compartment: int | None
    ) -> Iterator[PendingCommand]:
        """Wait for replies to `request_id` while the block runs (send the command inside it,
        so a reply that comes at once finds it waiting)."""
        future: asyncio.Future[contract.Reply] = asyncio.get_running_loop().create_future()
        pending = PendingCommand(request_id, kiosk_id, action, compartment, future)
        self._by_request[request_id] = pending
        try:
            yield pending
        finally:
            self._by_request.pop(request_id, None)

    @staticmethod
    async def final_reply(
        pending: PendingCommand, timeout_s: float, clock_wait_s: float = 0.0
    ) -> contract.Reply:
        """The final reply, or the error that says how far the command got in `timeout_s`.

        `clock_wait_s`: how far behind the service's clock the kiosk's may be (`clocks.py`).
        Until its own clock passes the deadline too, the kiosk may still run a late copy, so
        "it never had the command" waits that long more; an answer meanwhile still counts.
        """
        waited = timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(pending.future)
        except TimeoutError:
            if pending.future.done():  # answered in the same turn as the deadline
                return pending.future.result()
        if pending.last_status is None and clock_wait_s > 0:
            waited += clock_wait_s
            try:
                async with asyncio.timeout(clock_wait_s):
                    return await asyncio.shield(pending.future)
            except TimeoutError:
                if pending.future.done():
                    return pending.future.result()
        if pending.last_status is None:
            raise KioskUnreachable(
                f"kiosk {pending.kiosk_id} did not answer {pending.action} within {waited:g} s"
            )
        raise CommandTimeout(
            f"kiosk {pending.kiosk_id} accepted {pending.what} but did not finish it within "
            f"{waited:g} s"
        )

    def resolve(self, kiosk_id: str, reply: contract.Reply) -> None:
        """A reply arrived on `kiosk_id`'s reply topic."""
        pending = self._by_request.get(reply.request_id)
        if pending is None:
            log.debug("reply %s for no waiting command (late or duplicate)", reply.request_id)
            return
        if pending.kiosk_id != kiosk_id:
            # A kiosk's account may publish only under its own topics: answering another
            # kiosk's command is a forgery or a bug, never an answer.
            log.warning(
                "kiosk %s answered request %s sent to kiosk %s; ignored",
                kiosk_id,
                reply.request_id,
                pending.kiosk_id,
            )
            return
        if reply.final:
            if not pending.future.done():
                pending.future.set_result(reply)
        else:
            pending.last_status = reply.status

    def fail_all(self, reason: str) -> None:
        """Nothing will be waited for any more (the link stops). Each command was published and
        may still be carried out before its `expires_at`: its outcome is unknown."""
        for pending in self._by_request.values():
            if not pending.future.done():
                pending.future.set_exception(
                    CommandTimeout(
                        f"{reason} before kiosk {pending.kiosk_id} finished {pending.what}; it "
                        "may still be carried out"
                    )
                )
