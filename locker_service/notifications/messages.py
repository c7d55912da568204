"""The text a purchaser receives: the outbox row's words plus what may not be stored in clear.

The outbox row (written by the story, `locker_service.orders.outbox`) holds the subject and the
opening sentence; the pickup link and fallback code are re-derived at send time, since the
database keeps codes only hashed. Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@dataclass(frozen=True, slots=True)
class PickupDetails:
    """Where and until when the food waits, and how to open the compartment."""

    site_name: str
    kiosk_name: str
    compartment: int | None
    deadline: datetime | None
    timezone: str
    code: str | None  # 8 digits; None when the order is no longer collectable
    page_url: str | None


def format_code(code: str) -> str:
    """`1234 5678`: two groups are easier to read off a phone and type on the kiosk."""
    return f"{code[:4]} {code[4:]}" if len(code) == 8 else code


def local_time(when: datetime, timezone: str) -> str:
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    local = when.astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M} ({local.tzname()})"


def compose(body: str, details: PickupDetails) -> str:
    lines = [body.rstrip(), ""]
    place = [details.site_name, details.kiosk_name]
    if details.compartment is not None:
        place.append(f"compartment {details.compartment}")
    lines.append("Locker: " + ", ".join(part for part in place if part))
    if details.code is not None:
        lines.append(f"Pickup code: {format_code(details.code)}")
        lines.append("Scan the attached QR code at the locker's scanner, or type the code.")
    if details.deadline is not None and details.code is not None:
        lines.append(f"Collect before: {local_time(details.deadline, details.timezone)}")
    if details.page_url is not None:
        lines.append(f"Your pickup page: {details.page_url}")
    return "\n".join(lines) + "\n"
