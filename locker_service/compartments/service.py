"""Opening a compartment's door: authorise (audited), command the kiosk, account for the answer.

The door-opening row, with the request id the unlock will be sent under, is committed before the
unlock command leaves, so the kiosk's door_opened event, whenever it arrives, finds the reason it
was opened, and nothing is left to write once the lock has released: a database gone away after
the kiosk answered cannot make a door that opened look as if it had not. A door that opens with no
such row behind it is an unexplained opening (an alert).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from firmware_bridge import contract
from locker_service.compartments.lifecycle import KIOSK_CLOCK_SKEW
from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.errors import ServiceUnavailable
from locker_service.kiosk_link.errors import CommandTimeout
from locker_service.models import Compartment, DoorOpening, Kiosk, utcnow

log = logging.getLogger(__name__)

UNLOCK_PULSE_MS = 500  # long enough for the solenoid latch on every board we know
# An authorised opening explains a door_opened event this long after it (nominal seconds): the
# unlock deadline plus the time a person takes to pull the door.
AUTHORISATION_WINDOW_S = 120.0
# An event stamped slightly before the authorisation (kiosk clock behind) is still explained by it.
CLOCK_SKEW = KIOSK_CLOCK_SKEW


class UnlockFailed(ServiceUnavailable):
    code = "unlock_failed"


@dataclass(frozen=True)
class Authorised:
    """An opening's row as committed: what its unlock is sent with."""

    id: int
    request_id: str

    @classmethod
    def of(cls, opening: DoorOpening) -> Authorised:
        """Of a row flushed by `authorise` (so its id is known)."""
        assert opening.request_id is not None
        return cls(opening.id, opening.request_id)


def authorise(
    session: AsyncSession,
    compartment: Compartment,
    *,
    who: str,
    why: str,
    order_id: uuid.UUID | None,
    at: datetime | None = None,
    request_id: str | None = None,
) -> DoorOpening:
    """An opening asked for now, under the request id its unlock will be sent with; or one a
    kiosk decided alone at `at` (its journal, replayed), under the id the kiosk used, if any."""
    if at is None:
        request_id = request_id or uuid.uuid4().hex
    opening = DoorOpening(
        compartment_id=compartment.id,
        order_id=order_id,
        at=at or utcnow(),
        who=who,
        why=why,
        request_id=request_id,
    )
    session.add(opening)
    return opening


async def send(
    ctx: ServiceContext,
    kiosk_code: str,
    action: str,
    number: int,
    args: dict[str, object],
    timeout_s: float | None = None,
    *,
    request_id: str | None = None,
) -> contract.Reply:
    if ctx.commander is None:
        raise ServiceUnavailable("the kiosk link is not running", code="kiosk_link_down")
    return await ctx.commander.command(
        kiosk_code,
        action,
        number,
        dict(args),
        timeout_s or ctx.settings.command_timeout_s,
        request_id=request_id,
    )


async def unlock(
    ctx: ServiceContext,
    kiosk: Kiosk,
    compartment: Compartment,
    opening: Authorised,
    *,
    override_cycle: bool = False,
) -> contract.Reply:
    """Send the unlock for an authorised opening; raise a `ServiceUnavailable` if the kiosk says
    the lock did not release or nothing answered (the command's `expires_at` has a late copy
    rejected), anything else if it may have released.

    On a definite failure the authorisation is withdrawn; on a timeout it stays, because the
    lock may have released and the door_opened event must then find its reason. A success
    writes nothing: the row already names the request.
    """
    args = contract.UnlockArgs(pulse_ms=UNLOCK_PULSE_MS, override_cycle=override_cycle)
    try:
        reply = await send(
            ctx,
            kiosk.code,
            "unlock",
            compartment.number,
            args.model_dump(),
            request_id=opening.request_id,
        )
    except CommandTimeout:
        raise
    except ServiceUnavailable:  # the kiosk link's errors among them
        await _withdraw(ctx, opening.id)
        raise
    if reply.status != "succeeded":
        await _withdraw(ctx, opening.id)
        raise UnlockFailed(
            f"compartment {compartment.number} did not open: {reply.status}"
            + (f" ({reply.detail})" if reply.detail else "")
        )
    return reply


async def _withdraw(ctx: ServiceContext, opening_id: int) -> None:
    """Best effort: a database gone away here must not hide that the door did not open (the
    caller gives a purchaser's code back on that). A row left behind only explains a door
    opening within its window. Someone at the kiosk waits for the refusal meanwhile: on the
    connections of attended work (ADR 0096)."""
    try:
        async with session_scope(ctx.attended_sessions) as session:
            await session.execute(
                delete(DoorOpening).where(
                    DoorOpening.id == opening_id, DoorOpening.door_opened_at.is_(None)
                )
            )
    except Exception:
        log.exception(
            "the authorised opening %s of an unlock that failed was not withdrawn", opening_id
        )


def authorisation_window_s(ctx: ServiceContext) -> float:
    """How long an authorised opening may wait for its door (real seconds)."""
    return max(ctx.settings.scaled(AUTHORISATION_WINDOW_S), ctx.settings.command_timeout_s * 2)


async def explain_opening(
    session: AsyncSession, ctx: ServiceContext, compartment: Compartment, opened_at: datetime
) -> DoorOpening | None:
    """The authorised opening behind a door that opened at `opened_at`, marked as used.

    Matched on the event's own time, so an event handled late (after a restart) still finds the
    reason it was opened.
    """
    window = timedelta(seconds=authorisation_window_s(ctx))
    opening = await session.scalar(
        select(DoorOpening)
        .where(
            DoorOpening.compartment_id == compartment.id,
            DoorOpening.door_opened_at.is_(None),
            DoorOpening.at >= opened_at - window,
            DoorOpening.at <= opened_at + CLOCK_SKEW,
        )
        .order_by(DoorOpening.at.desc())
        .limit(1)
    )
    if opening is not None:
        opening.door_opened_at = opened_at
    return opening
