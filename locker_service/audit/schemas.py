"""Bodies of the openings audit: one opening, a page of them, and the search's filters."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, Field

from locker_service.compartments.openings import OpeningKind, OpenPurpose


@dataclass(frozen=True)
class OpeningFilters:
    """What an operator narrows the audit to; None: no narrowing."""

    site_id: int | None = None
    kiosk_id: int | None = None
    compartment: int | None = None  # the compartment's number within its kiosk
    order: str | None = None  # the order's id, or (part of) its reference
    actor: str | None = None  # a role (`operator`) or one actor (`operator:7`, `courier:C1`)
    kind: OpeningKind | None = None
    since: datetime | None = None
    until: datetime | None = None
    # The caller's scope, not a choice: an operator for merchants sees the openings of their
    # orders only (ADR 0075).
    merchant_ids: frozenset[int] | None = None


class OpeningRead(BaseModel):
    id: int
    at: datetime = Field(description="when the opening was authorised (or the door seen open)")
    door_opened_at: datetime | None = Field(description="when the kiosk saw the door open")
    site_id: int
    site_code: str
    kiosk_id: int
    kiosk_code: str
    compartment_id: int
    compartment: int = Field(description="the compartment's number within its kiosk")
    kind: OpeningKind
    actor: str = Field(description="`courier:<code>`, `operator:<id>`, `purchaser:<how>`, ...")
    actor_name: str | None = Field(description="the operator's or courier's name")
    how: str = Field(
        description="courier_pin, qr, keypad, scanner, code, remote, none (unexplained), unknown"
    )
    reason: str = Field(description="why: the operator's typed reason, drop-off, pickup...")
    purpose: OpenPurpose | None = Field(
        default=None,
        description="what an operator's opening was for (ADR 0120): handover, discard, "
        "inspect; none for every other opening and for one that did not say",
    )
    order_id: uuid.UUID | None
    order_ref: str | None
    request_id: str | None = Field(
        description="the id the service's unlock goes out under (kept before it is sent), or "
        "the kiosk's for an opening it decided offline; none for a door no command explains"
    )


class OpeningPage(BaseModel):
    items: list[OpeningRead]
    next_cursor: str | None = Field(description="pass as `cursor` for the next (older) page")
