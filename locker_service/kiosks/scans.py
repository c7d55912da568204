"""Whether a scan event is a person at the kiosk now or a record of the past (pure, no I/O).

The bridge stamps a scan with the kiosk PC's clock when the scanner sends its line, buffers
events on disk while the broker is unreachable and replays them later with that original stamp;
the broker also keeps events queued for the service while it is down. A replayed scan must not
open a door with nobody standing there, nor use up the purchaser's single-use code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Freshness = Literal["fresh", "stale", "ahead"]


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
