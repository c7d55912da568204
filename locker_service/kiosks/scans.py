"""Whether a scan event is a person at the kiosk now or a record of the past (pure, no I/O).

The bridge stamps a scan with the kiosk PC's clock when the scanner sends its line, buffers
events on disk while the broker is unreachable and replays them later with that original stamp;
the broker also keeps events queued for the service while it is down. A replayed scan must not
open a door with nobody standing there, nor use up the purchaser's single-use code.

What a scan read is a pickup token or code: it is never stored. The scan's `kiosk_events` row
keeps a keyed hash of the text (to tell repeats of one code apart in an investigation, which
nobody without the service secret can turn back into a code) and what the scan came to.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Freshness = Literal["fresh", "stale", "ahead"]
SCAN_HASH_LABEL = b"kiosk-scan\x00"  # keeps this HMAC apart from the pickup codes' ones
# Outcomes: a scan is stored as ignored (stale, replayed, no text, unknown kiosk), and its row
# says `claimed` or the refusal's error code once the decision is made, in the same transaction.
IGNORED = "ignored"
CLAIMED = "claimed"  # the order's compartment was claimed for this scan; the unlock follows


def scan_hash(secret_key: str, text: str) -> str:
    """HMAC-SHA256 of a scanned text under the service secret, hex."""
    return hmac.new(
        secret_key.encode(), SCAN_HASH_LABEL + text.encode(), hashlib.sha256
    ).hexdigest()


def stored_scan(secret_key: str, data: dict[str, Any], outcome: str = IGNORED) -> dict[str, Any]:
    """The `data` a scan event is stored with: the text's keyed hash and the outcome, no text."""
    text = data.get("text")
    return {
        "text_hmac": scan_hash(secret_key, text) if isinstance(text, str) else None,
        "outcome": outcome,
    }


@dataclass(frozen=True, slots=True)
class ScanAge:
    verdict: Freshness
    age_s: float  # now - ts in real seconds; negative when the kiosk's clock is ahead


def judge(ts: datetime, now: datetime, *, max_age_s: float, clock_skew_s: float) -> ScanAge:
    """`fresh` when `ts` lies within [now - max_age - skew, now + skew].

    `ahead` (a stamp further in the future than the skew allowance) is refused as well: a kiosk
    clock that far ahead would make a replay minutes old look fresh, so its scans cannot be
    judged and the purchaser types the code on the screen instead (that path needs no stamp).
    """
    age_s = (now - ts).total_seconds()
    if age_s > max_age_s + clock_skew_s:
        return ScanAge("stale", age_s)
    if age_s < -clock_skew_s:
        return ScanAge("ahead", age_s)
    return ScanAge("fresh", age_s)
