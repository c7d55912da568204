"""The hot-holding monitor: below the floor past the grace period, above the ceiling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from locker_service.telemetry.alerts import describe
from locker_service.telemetry.monitor import Carried, HoldingMonitor

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def monitor() -> HoldingMonitor:
    return HoldingMonitor(floor_c=60.0, ceiling_c=80.0, grace_s=300.0)


def test_below_floor_raises_only_after_the_grace_period_and_only_once() -> None:
    m = monitor()
    assert m.observe("k", 1, at(0), 58.0, 65.0) == []
    assert m.observe("k", 1, at(299), 57.0, 65.0) == []
    [finding] = m.observe("k", 1, at(300), 57.5, 65.0)
    assert (finding.kind, finding.action, finding.since, finding.at) == (
        "below_floor",
        "raise",
        at(0),
        at(300),
    )
    assert finding.dedupe_key == "below_floor:k:1"
    assert m.observe("k", 1, at(400), 55.0, 65.0) == []


def test_recovering_within_the_grace_period_raises_nothing() -> None:
    m = monitor()
    m.observe("k", 1, at(0), 58.0, 65.0)
    assert m.observe("k", 1, at(200), 61.0, 65.0) == []
    # The clock restarts: 250 s below after recovering is still within grace.
    m.observe("k", 1, at(250), 59.0, 65.0)
    assert m.observe("k", 1, at(500), 59.0, 65.0) == []
    assert m.observe("k", 1, at(550), 59.0, 65.0)[0].action == "raise"


def test_recovery_resolves_with_hysteresis() -> None:
    m = monitor()
    m.observe("k", 1, at(0), 50.0, 65.0)
    m.observe("k", 1, at(300), 50.0, 65.0)
    assert m.observe("k", 1, at(310), 60.2, 65.0) == []  # on the line: not yet
    [finding] = m.observe("k", 1, at(320), 60.5, 65.0)
    assert (finding.kind, finding.action, finding.since) == ("below_floor", "resolve", at(0))


def test_stopping_holding_resolves_the_floor_alert() -> None:
    m = monitor()
    m.observe("k", 1, at(0), 40.0, 65.0)
    m.observe("k", 1, at(301), 40.0, 65.0)
    [finding] = m.observe("k", 1, at(302), 40.0, None)
    assert (finding.kind, finding.action) == ("below_floor", "resolve")


def test_ambient_or_low_setpoint_compartments_are_not_held_hot() -> None:
    m = monitor()
    for s in range(0, 3600, 60):
        assert m.observe("k", 1, at(s), 21.0, None) == []
        assert m.observe("k", 2, at(s), 35.0, 40.0) == []


def test_ceiling_raises_at_once_and_resolves_below_the_hysteresis() -> None:
    m = monitor()
    [finding] = m.observe("k", 3, at(0), 81.0, 65.0)
    assert (finding.kind, finding.action) == ("above_ceiling", "raise")
    assert m.observe("k", 3, at(1), 85.0, 65.0) == []
    assert m.observe("k", 3, at(2), 79.5, 65.0) == []
    [finding] = m.observe("k", 3, at(3), 78.9, 65.0)
    assert (finding.kind, finding.action) == ("above_ceiling", "resolve")


def test_sensor_faults_and_late_readings_decide_nothing() -> None:
    m = monitor()
    m.observe("k", 1, at(0), 50.0, 65.0)
    assert m.observe("k", 1, at(400), None, 65.0) == []
    assert m.observe("k", 1, at(100), 50.0, 65.0) == []  # older than the last one seen
    assert m.observe("k", 1, at(401), 50.0, 65.0)[0].action == "raise"


def test_compartments_are_watched_separately() -> None:
    m = monitor()
    m.observe("k", 1, at(0), 50.0, 65.0)
    m.observe("k2", 1, at(0), 65.0, 65.0)
    assert m.observe("k2", 1, at(400), 65.0, 65.0) == []
    assert len(m.observe("k", 1, at(400), 50.0, 65.0)) == 1


def test_ceiling_must_be_above_floor() -> None:
    with pytest.raises(ValueError):
        HoldingMonitor(floor_c=60, ceiling_c=60, grace_s=1)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.1, max_value=120),
            st.one_of(st.none(), st.floats(min_value=-10, max_value=110)),
            st.sampled_from([None, 40.0, 65.0]),
        ),
        max_size=60,
    )
)
def test_raises_and_resolves_alternate_and_a_raise_is_justified(
    steps: list[tuple[float, float | None, float | None]],
) -> None:
    m = monitor()
    t = 0.0
    open_: dict[str, bool] = {"below_floor": False, "above_ceiling": False}
    for dt, temp, setpoint in steps:
        t += dt
        for f in m.observe("k", 1, at(t), temp, setpoint):
            if f.action == "raise":
                assert not open_[f.kind]
                assert temp is not None
                if f.kind == "below_floor":
                    assert setpoint is not None and setpoint >= 60 and temp < 60
                    assert (f.at - f.since).total_seconds() >= 300
                else:
                    assert temp > 80
            else:
                assert open_[f.kind]
            open_[f.kind] = f.action == "raise"


def test_a_carried_over_watch_keeps_the_grace_period_running() -> None:
    m = monitor()
    assert not m.watches("k", 1)
    m.carry_over("k", 1, Carried(below_since=at(0)))
    assert m.watches("k", 1)
    [finding] = m.observe("k", 1, at(300), 57.0, 65.0)
    assert (finding.action, finding.since) == ("raise", at(0))


def test_carried_over_open_alerts_are_resolved_on_recovery_and_not_raised_again() -> None:
    m = monitor()
    m.carry_over("k", 1, Carried(below_since=at(0), floor_raised=True))
    m.carry_over("k", 2, Carried(above_since=at(0), ceiling_raised=True))
    assert m.observe("k", 1, at(400), 55.0, 65.0) == []  # still below: already raised
    assert m.observe("k", 2, at(400), 90.0, 65.0) == []  # still above: already raised
    [floor] = m.observe("k", 1, at(500), 65.0, 65.0)
    [ceiling] = m.observe("k", 2, at(500), 70.0, 65.0)
    assert (floor.kind, floor.action, floor.since) == ("below_floor", "resolve", at(0))
    assert (ceiling.kind, ceiling.action, ceiling.since) == ("above_ceiling", "resolve", at(0))


def test_a_fault_dropping_the_setpoint_keeps_the_floor_alert_while_the_food_is_inside() -> None:
    m = monitor()
    m.observe("k", 1, at(0), 50.0, 65.0)
    [raised] = m.observe("k", 1, at(301), 45.0, 65.0)
    assert (raised.kind, raised.action) == ("below_floor", "raise")
    # The heater fails: the board drops its setpoint, the food is still behind the door.
    assert m.needs_food_check("k", 1, at(311), None)
    m.food_inside("k", 1, at(311), True)
    assert m.observe("k", 1, at(311), 38.0, None) == []  # still held: the alert stays
    assert not m.needs_food_check("k", 1, at(321), None)  # asked once a minute, not per reading
    assert m.observe("k", 1, at(321), 36.0, None) == []
    assert m.needs_food_check("k", 1, at(371), None)
    m.food_inside("k", 1, at(371), False)  # staff discarded it
    [resolved] = m.observe("k", 1, at(371), 35.0, None)
    assert (resolved.kind, resolved.action, resolved.since) == ("below_floor", "resolve", at(0))


def test_a_fault_before_the_grace_ran_out_still_raises_once_it_has() -> None:
    m = monitor()
    assert m.observe("k", 1, at(0), 58.0, 65.0) == []
    assert m.needs_food_check("k", 1, at(100), None)
    m.food_inside("k", 1, at(100), True)
    assert m.observe("k", 1, at(100), 50.0, None) == []
    m.food_inside("k", 1, at(300), True)
    [raised] = m.observe("k", 1, at(300), 40.0, None)
    assert (raised.kind, raised.action, raised.since) == ("below_floor", "raise", at(0))


def test_a_compartment_never_held_is_never_asked_about_its_food() -> None:
    m = monitor()
    m.observe("k", 1, at(0), 21.0, None)
    assert not m.needs_food_check("k", 1, at(100), None)
    assert not m.needs_food_check("k", 2, at(100), None)  # never seen


def test_a_carried_over_open_floor_alert_is_held_until_a_check_says_the_food_left() -> None:
    m = monitor()
    m.carry_over("k", 1, Carried(floor_raised=True))
    assert m.needs_food_check("k", 1, at(0), None)
    m.food_inside("k", 1, at(0), True)
    assert m.observe("k", 1, at(0), 30.0, None) == []


def test_a_drop_inside_one_batch_keeps_the_answer_given_for_it() -> None:
    """The caller asks about the whole batch first, then observes its readings in order: the
    reading before the drop must not wipe the answer given for the one after it."""
    m = monitor()
    m.observe("k", 1, at(0), 50.0, 65.0)
    m.observe("k", 1, at(301), 45.0, 65.0)  # raised
    assert m.needs_food_check("k", 1, at(311), None)
    m.food_inside("k", 1, at(311), True)
    assert m.observe("k", 1, at(310), 44.0, 65.0) == []  # the batch's last holding reading
    assert m.observe("k", 1, at(311), 40.0, None) == []  # still held: the alert stays


# -- buckets a bridge kept while cut off (`observe_kept`) -------------------------------------


def kept(m: HoldingMonitor, minute: int, low: float, high: float = 66.0, n: int = 1) -> list[Any]:
    """A 60 s bucket from minute `minute`, holding at 65 °C."""
    return m.observe_kept("k", n, at(60 * minute), 60.0, low, high, 65.0)


def test_kept_buckets_in_order_are_judged_by_their_lowest_and_highest() -> None:
    m = monitor()  # a restarted service: nothing seen of the compartment yet
    for minute in range(5):
        assert kept(m, minute, 55.0) == []  # a dip in each minute, mean or not
    [low] = kept(m, 5, 55.0)
    assert (low.kind, low.action, low.since, low.at, low.temp_c, low.kept) == (
        "below_floor",
        "raise",
        at(0),
        at(300),
        55.0,
        True,
    )
    [high] = kept(m, 6, 60.2, high=82.0)  # on the floor's line: not yet recovered
    assert (high.kind, high.temp_c) == ("above_ceiling", 82.0)
    # The live readings go on from there and resolve.
    resolved = m.observe("k", 1, at(430), 65.0, 65.0)
    assert sorted(f.kind for f in resolved if f.action == "resolve") == [
        "above_ceiling",
        "below_floor",
    ]


def test_a_late_dip_is_raised_once_and_resolved_by_the_next_live_reading() -> None:
    m = monitor()
    m.observe("k", 1, at(-10), 65.0, 65.0)
    m.observe("k", 1, at(900), 64.0, 65.0)  # live again before the buckets came
    findings = [f for minute in range(8) for f in kept(m, minute, 55.0 if minute < 6 else 64.0)]
    [raised] = findings  # a late bucket resolves nothing: the live watch does
    assert (raised.action, raised.since, raised.at) == ("raise", at(0), at(300))
    assert m.observe("k", 1, at(905), 59.0, 65.0) == []  # still below: stays raised
    [resolved] = m.observe("k", 1, at(910), 64.0, 65.0)
    assert (resolved.kind, resolved.action, resolved.since) == ("below_floor", "resolve", at(0))


def test_late_buckets_raise_nothing_the_live_watch_has_raised_already() -> None:
    m = monitor()
    m.observe("k", 1, at(0), 50.0, 65.0)
    assert m.observe("k", 1, at(900), 50.0, 65.0)[0].action == "raise"
    assert [f for minute in range(1, 8) for f in kept(m, minute, 50.0)] == []


def test_a_bucket_delivered_again_or_another_outage_starts_no_false_stretch() -> None:
    m = monitor()
    m.observe("k", 1, at(10_000), 65.0, 65.0)
    for minute in range(4):  # 4 minutes below: within the 5 min grace
        assert kept(m, minute, 55.0) == []
    assert kept(m, 3, 55.0) == []  # the same bucket again: judged once
    # Cut off again an hour later: its dips are a stretch of their own, not one of 64 minutes.
    assert kept(m, 64, 55.0) == []
    assert kept(m, 65, 55.0) == []


# -- readings a kiosk sent again for a new holder (`observe_kept(resent=True)`, ADR 0098) -------


def test_readings_sent_again_are_judged_though_newer_ones_were_judged_first() -> None:
    """The new holder judged a live reading before the kiosk's readings from while nobody held
    it came: an overheat and a dip in them are raised all the same, said to come late, and
    resolved by the next live reading in range, not by a late one."""
    m = monitor()
    m.observe("k", 1, at(0), 65.0, 65.0)
    assert m.observe("k", 1, at(400), 65.0, 65.0) == []  # live, heard first
    # `observe` passes over them: older than the reading judged.
    assert m.observe("k", 1, at(100), 85.0, 65.0) == []
    again = []
    for s in range(10, 400, 10):
        temp = 85.0 if s == 50 else 55.0  # one overheat, then a dip past the grace
        again += m.observe_kept("k", 1, at(s), 10.0, temp, temp, 65.0, resent=True)
    assert [(f.kind, f.action, f.resent, f.kept) for f in again] == [
        ("above_ceiling", "raise", True, True),
        ("below_floor", "raise", True, True),
    ]
    assert again[1].since == at(60) and again[1].at == at(360)  # the grace, in their own time
    assert "in readings the service received late" in describe(again[0])
    assert "while the kiosk was cut off" not in describe(again[1])
    resolved = m.observe("k", 1, at(410), 65.0, 65.0)
    assert sorted((f.kind, f.action) for f in resolved) == [
        ("above_ceiling", "resolve"),
        ("below_floor", "resolve"),
    ]
