"""The scan-age verdict: what is fresh, stale or stamped ahead (pure, with hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from locker_service.kiosks.scans import judge

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_the_edges() -> None:
    def verdict(age_s: float) -> str:
        ts = NOW - timedelta(seconds=age_s)
        return judge(ts, NOW, max_age_s=5.0, clock_skew_s=2.0).verdict

    assert verdict(0.0) == "fresh"
    assert verdict(7.0) == "fresh"  # max age plus the skew allowance
    assert verdict(7.001) == "stale"
    assert verdict(600.0) == "stale"  # replayed after a ten-minute outage
    assert verdict(-2.0) == "fresh"  # kiosk clock a little ahead
    assert verdict(-2.001) == "ahead"


@given(
    age_s=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    max_age_s=st.floats(min_value=0.1, max_value=60),
    skew_s=st.floats(min_value=0, max_value=10),
)
def test_fresh_exactly_inside_the_window(age_s: float, max_age_s: float, skew_s: float) -> None:
    ts = NOW - timedelta(seconds=age_s)
    got = judge(ts, NOW, max_age_s=max_age_s, clock_skew_s=skew_s)
    measured = (NOW - ts).total_seconds()  # timedelta rounds to microseconds
    assert got.age_s == measured
    inside = -skew_s <= measured <= max_age_s + skew_s
    assert (got.verdict == "fresh") == inside
    if not inside:
        assert got.verdict == ("stale" if measured > 0 else "ahead")
