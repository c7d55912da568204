"""A cycle's end, as proof: the board's lamp record checked, the dose recorded, lamp hours kept.

Called by the story when a kiosk reports a cycle ended (docs/adr/0073). The record and the
verdict go on the cycle's row, where the order's food record and the site's HACCP day read
them. A cycle short of its dose, or whose record no board could have made, is not complete: the
story runs it again, and the operator is told why.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.alerts.catalogue import LAMP_LIFE_ALERT
from locker_service.alerts.service import raise_compartment_alert
from locker_service.compartments import repository as compartments
from locker_service.context import ServiceContext
from locker_service.foodsafety.uv_dose import (
    ImpossibleRecord,
    LampRecord,
    Outcome,
    judge,
    lamp_failed,
)
from locker_service.models import Compartment, DisinfectionCycle, Kiosk

log = logging.getLogger(__name__)

SHORT_DOSE_ALERT = "cycle_short_dose"
IMPOSSIBLE_RECORD_ALERT = "cycle_report_impossible"
# Not complete: the cycle runs again.
NOT_COMPLETE: tuple[Outcome, ...] = ("short_dose", "impossible")


async def record_cycle_end(
    session: AsyncSession,
    ctx: ServiceContext,
    kiosk: Kiosk,
    c: Compartment,
    cycle: DisinfectionCycle,
    data: Mapping[str, Any] | None,
    *,
    completed: bool,
) -> Outcome:
    """Check and record the lamp record of `cycle` (in the end event's `data`; None when the
    end was seen otherwise, e.g. by the watchdog's snapshot) and return the verdict."""
    settings = ctx.settings
    commanded = cycle.commanded_s or (
        settings.disinfection_s if cycle.kind == "hold" else settings.cleaning_s
    )
    # Every size has one (config); a size added later gets the weakest until it is set.
    irradiance = settings.uv_irradiance_mw_cm2.get(
        c.size, min(settings.uv_irradiance_mw_cm2.values())
    )
    try:
        record = LampRecord.from_event(data or {}, commanded, completed=completed)
    except ImpossibleRecord as exc:
        log.warning("kiosk %s compartment %s: %s", kiosk.code, c.number, exc)
        cycle.outcome = "impossible"  # what it said is not kept: the alert says why
        await raise_compartment_alert(
            session,
            ctx.hub,
            kiosk,
            c,
            kind=IMPOSSIBLE_RECORD_ALERT,
            severity="critical",
            what=f"the board's record of the {cycle.kind} cycle cannot be true ({exc})"
            # A faulted compartment starts no cycle until the fault is cleared (its own alert).
            + ("; the cycle runs again" if c.fault is None else ""),
            dedupe_key=f"{IMPOSSIBLE_RECORD_ALERT}:{c.id}",
        )
        return "impossible"
    dose = judge(record, irradiance, commanded, settings.uv_min_dose_fraction)
    cycle.commanded_s = commanded
    cycle.lamp = record.to_json() if record else None
    cycle.dose_mj_cm2 = dose.dose_mj_cm2
    cycle.dose_required_mj_cm2 = dose.required_mj_cm2
    cycle.outcome = dose.outcome
    if record is not None:
        c.lamp_on_s = (c.lamp_on_s or 0.0) + record.lamp_on_s
        await _lamp_life(session, ctx, kiosk, c)
    if completed and dose.outcome == "short_dose" and record is not None:
        assert dose.dose_mj_cm2 is not None
        dark = record.interruptions
        limit = settings.uv_max_short_cycles
        before = await compartments.finished_cycle_states(session, c, limit - 1)
        then = (
            f"; {limit} cycles in a row short: the lamp has failed, no cycle runs until it is "
            "replaced and marked replaced"
            if lamp_failed(["short", *before], limit)
            else "; the cycle runs again"
        )
        await raise_compartment_alert(
            session,
            ctx.hub,
            kiosk,
            c,
            kind=SHORT_DOSE_ALERT,
            severity="warning",
            what=f"the UV-C lamp shone {record.lamp_on_s:g} s of the {record.duration_s:g} s "
            f"{cycle.kind} cycle ({dark} time{'s' if dark != 1 else ''} dark): "
            f"{dose.dose_mj_cm2:.1f} of {dose.required_mj_cm2:.1f} mJ/cm2{then}",
            dedupe_key=f"{SHORT_DOSE_ALERT}:{c.id}",
        )
    return dose.outcome


async def lamp_has_failed(session: AsyncSession, ctx: ServiceContext, c: Compartment) -> bool:
    """Whether the compartment's lamp has failed: its last `uv_max_short_cycles` cycles since
    it was fitted all short (the one just ended included, once it is marked so)."""
    await session.flush()
    return await compartments.lamp_has_failed(session, c, ctx.settings.uv_max_short_cycles)


async def _lamp_life(
    session: AsyncSession, ctx: ServiceContext, kiosk: Kiosk, c: Compartment
) -> None:
    rated_h = ctx.settings.uv_lamp_rated_hours
    shone_h = c.lamp_on_s / 3600
    if shone_h < rated_h * ctx.settings.uv_lamp_warn_fraction:
        return
    await raise_compartment_alert(
        session,
        ctx.hub,
        kiosk,
        c,
        kind=LAMP_LIFE_ALERT,
        severity="warning",
        what=f"the UV-C lamp has shone {shone_h:.1f} h of its rated {rated_h:g} h: replace it "
        "and record the replacement",
        dedupe_key=f"{LAMP_LIFE_ALERT}:{c.id}",
    )
