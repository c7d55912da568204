"""The text a purchaser receives: the outbox row's words plus what may not be stored in clear.

The outbox row (written by the story, `locker_service.orders.outbox`) holds the subject and the
opening sentence; the pickup link and fallback code are re-derived at send time, since the
database keeps codes only hashed. Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from locker_service.orders.codes import in_language


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
    language: str = "en"  # hers (ADR 0122): the lines below, and her page, in it


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


# The lines added to her message, in each language (as orders/outbox's messages).
_LINES: dict[str, dict[str, str]] = {
    "en": {
        "compartment": "compartment {}",
        "locker": "Locker: {}",
        "code": "Pickup code: {}",
        "scan": "Scan the attached QR code at the locker's scanner, or type the code.",
        "before": "Collect before: {}",
        "page": "Your pickup page: {}",
    },
    "zh-Hans": {
        "compartment": "{} 号柜格",
        "locker": "取餐柜：{}",
        "code": "取餐码：{}",
        "scan": "请在取餐柜的扫码口扫描附件中的二维码，或输入取餐码。",
        "before": "请在此时间前取餐：{}",
        "page": "您的取餐页面：{}",
    },
}


def compose(body: str, details: PickupDetails) -> str:
    words = _LINES.get(details.language, _LINES["en"])
    lines = [body.rstrip(), ""]
    place = [details.site_name, details.kiosk_name]
    if details.compartment is not None:
        place.append(words["compartment"].format(details.compartment))
    lines.append(words["locker"].format(", ".join(part for part in place if part)))
    if details.code is not None:
        lines.append(words["code"].format(format_code(details.code)))
        lines.append(words["scan"])
    if details.deadline is not None and details.code is not None:
        lines.append(words["before"].format(local_time(details.deadline, details.timezone)))
    if details.page_url is not None:
        language = details.language if details.language in _LINES else None
        lines.append(words["page"].format(in_language(details.page_url, language)))
    return "\n".join(lines) + "\n"
