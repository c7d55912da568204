"""The status tracker: door events from latched counters, cycle endings, when a snapshot is due."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.tracker import CompartmentTracker, CompartmentView, door_events
from hardware.protocol import CompartmentStatus, FaultCode
from hardware.protocol.messages import CompartmentFlags as F

BOOT = 0xB007
NO_FLAGS = F(0)


def record(
    n: int = 1,
    flags: F = NO_FLAGS,
    temp_dc: int | None = 650,
    setpoint_dc: int | None = 650,
    remaining_s: int = 0,
    fault: FaultCode = FaultCode.NONE,
    opens: int = 0,
    closes: int = 0,
) -> CompartmentStatus:
    return CompartmentStatus(
        n, flags, temp_dc, setpoint_dc, remaining_s, fault, opens % 256, closes % 256
    )


def types(tracker: CompartmentTracker, *records: CompartmentStatus, now: float = 0.0) -> list[str]:
    return [e.type for e in tracker.observe(BOOT, list(records), now).events]


def test_open_and_shut_between_two_polls_yields_both_events_in_order() -> None:
    t = CompartmentTracker()
    types(t, record(opens=4, closes=4))
    assert types(t, record(opens=5, closes=5)) == ["door_opened", "door_closed"]


def test_an_item_placed_between_two_polls_is_inside_before_the_door_shuts() -> None:
    t = CompartmentTracker()
    types(t, record(opens=4, closes=4))
    obs = t.observe(BOOT, [record(flags=F.OCCUPIED, opens=5, closes=5)], 1.0)
    assert [(e.type, e.data) for e in obs.events] == [
        ("door_opened", {}),
        ("item_placed", {}),
        ("door_closed", {"occupied": True}),
    ]


def test_an_item_taken_out_of_an_open_door_is_gone_before_the_door_shuts() -> None:
    t = CompartmentTracker()
    types(t, record(flags=F.DOOR_OPEN | F.OCCUPIED, opens=1))
    obs = t.observe(BOOT, [record(opens=1, closes=1)], 1.0)
    assert [(e.type, e.data) for e in obs.events] == [
        ("item_removed", {}),
        ("door_closed", {"occupied": False}),
    ]


def test_door_closed_says_what_is_inside_even_when_nothing_changed() -> None:
    t = CompartmentTracker()
    types(t, record(flags=F.DOOR_OPEN | F.OCCUPIED, opens=1))
    obs = t.observe(BOOT, [record(flags=F.OCCUPIED, opens=1, closes=1)], 1.0)
    assert [(e.type, e.data) for e in obs.events] == [("door_closed", {"occupied": True})]


def test_counters_wrap_at_256() -> None:
    t = CompartmentTracker()
    types(t, record(opens=255, closes=255))
    assert types(t, record(flags=F.DOOR_OPEN, opens=256, closes=255)) == ["door_opened"]


@given(
    prev_open=st.booleans(),
    cycles=st.integers(0, 100),
)
def test_counter_differences_alternate_from_the_previous_state(
    prev_open: bool, cycles: int
) -> None:
    # A door that was shut and moved `cycles` full times plus maybe once more.
    for extra in (0, 1):
        opens = cycles + (extra if not prev_open else 0)
        closes = cycles + (extra if prev_open else 0)
        now_open = prev_open != bool(extra)
        events = door_events(prev_open, opens, closes, now_open)
        assert len(events) == opens + closes
        first = "door_closed" if prev_open else "door_opened"
        assert all(
            e == (first if i % 2 == 0 else ({"door_opened", "door_closed"} - {first}).pop())
            for i, e in enumerate(events)
        )
        if events:
            assert events[-1] == ("door_opened" if now_open else "door_closed")


def test_a_flag_change_without_counters_still_yields_an_event() -> None:
    assert door_events(False, 0, 0, True) == ["door_opened"]
    assert door_events(True, 0, 0, False) == ["door_closed"]


def test_occupancy_changes_are_item_events() -> None:
    t = CompartmentTracker()
    types(t, record())
    assert types(t, record(flags=F.OCCUPIED)) == ["item_placed"]
    assert types(t, record()) == ["item_removed"]


def test_a_cycle_that_ran_out_completes() -> None:
    t = CompartmentTracker()
    types(t, record(flags=F.DISINFECTING | F.UV_ON, remaining_s=1800), now=0.0)
    types(t, record(flags=F.DISINFECTING | F.UV_ON, remaining_s=6), now=29.9)
    assert types(t, record(), now=30.05) == ["disinfection_completed"]


def test_a_cycle_stopped_early_by_the_board_is_aborted_with_a_reason() -> None:
    t = CompartmentTracker()
    types(t, record(flags=F.DISINFECTING, remaining_s=900), now=0.0)
    obs = t.observe(BOOT, [record(flags=F.CYCLE_ABORTED, fault=FaultCode.UV_TIMEOUT)], 0.15)
    assert [(e.type, e.data.get("reason")) for e in obs.events] == [
        ("fault_raised", None),
        ("disinfection_aborted", "fault:uv_timeout"),
    ]
    types(t, record(flags=F.DISINFECTING, remaining_s=900), now=1.0)
    obs = t.observe(BOOT, [record(flags=F.DOOR_OPEN | F.CYCLE_ABORTED, opens=1)], 1.15)
    assert [e.type for e in obs.events] == ["door_opened", "disinfection_aborted"]
    assert obs.events[1].data["reason"] == "door_opened"


def test_an_abort_the_bridge_commanded_carries_its_reason() -> None:
    t = CompartmentTracker()
    types(t, record(flags=F.DISINFECTING, remaining_s=900), now=0.0)
    t.expect_abort(1, "aborted_by_command")
    obs = t.observe(BOOT, [record(flags=F.CYCLE_ABORTED)], 0.15)
    assert obs.events[0].type == "disinfection_aborted"
    assert obs.events[0].data == {"reason": "aborted_by_command", "remaining_s": 900}


def test_faults_raise_and_clear() -> None:
    t = CompartmentTracker()
    types(t, record())
    assert types(t, record(fault=FaultCode.OVER_TEMPERATURE)) == ["fault_raised"]
    assert types(t, record()) == ["fault_cleared"]


def test_a_new_boot_id_is_reported_and_resets_the_counter_baseline() -> None:
    t = CompartmentTracker()
    types(t, record(opens=40, closes=40))
    obs = t.observe(BOOT + 1, [record(opens=0, closes=0)], 1.0)
    assert [e.type for e in obs.events] == ["board_rebooted"]
    assert obs.events[0].data["previous_boot_id"] == f"{BOOT:08x}"


def test_a_restarted_bridge_beside_a_restarted_bank_reports_only_the_reboot() -> None:
    # `lockerctl up` stopped and started: the bridge restores what it saw from disk (food in 3,
    # one opening counted), the bank comes back with its food, a new boot and counters at 0.
    before = CompartmentTracker()
    before.observe(BOOT, [record(n=3, flags=F.OCCUPIED, opens=1, closes=1)], 0.0)
    after = CompartmentTracker()
    after.restore(before.boot_id, dict(before.views))
    obs = after.observe(BOOT + 1, [record(n=3, flags=F.OCCUPIED, setpoint_dc=None)], 9.0)
    assert [e.type for e in obs.events] == ["board_rebooted"]
    # Under the old boot id the same answer would read as 255 openings and closings.
    same_boot = CompartmentTracker()
    same_boot.restore(BOOT, dict(before.views))
    stale = same_boot.observe(BOOT, [record(n=3, flags=F.OCCUPIED)], 9.0)
    assert [e.type for e in stale.events].count("door_opened") == 255


def test_a_cycle_lost_to_a_reboot_is_aborted() -> None:
    t = CompartmentTracker()
    types(t, record(flags=F.DISINFECTING, remaining_s=900))
    obs = t.observe(BOOT + 1, [record()], 1.0)
    assert [e.type for e in obs.events] == ["board_rebooted", "disinfection_aborted"]
    assert obs.events[1].data["reason"] == "board_rebooted"


def test_snapshot_on_discrete_change_and_half_degree_moves_only() -> None:
    t = CompartmentTracker()
    assert len(t.observe(BOOT, [record(temp_dc=640)], 0).snapshots) == 1
    assert t.observe(BOOT, [record(temp_dc=644)], 1).snapshots == []
    assert t.observe(BOOT, [record(temp_dc=636)], 2).snapshots == []
    assert len(t.observe(BOOT, [record(temp_dc=645)], 3).snapshots) == 1  # 0.5 since last sent
    assert len(t.observe(BOOT, [record(temp_dc=645, flags=F.HEATER_ON)], 4).snapshots) == 1
    assert len(t.observe(BOOT, [record(temp_dc=None, flags=F.HEATER_ON)], 5).snapshots) == 1


def test_a_running_cycle_is_republished_once_a_minute_not_per_second() -> None:
    t = CompartmentTracker()
    running = F.DISINFECTING | F.UV_ON
    t.observe(BOOT, [record(flags=running, remaining_s=1800)], 0)
    due = [
        bool(t.observe(BOOT, [record(flags=running, remaining_s=r)], 1800 - r).snapshots)
        for r in range(1799, 1680, -1)
    ]
    assert sum(due) == 2  # crossing 1799 -> 1740s and 1680s minute marks


def test_restored_memory_reports_what_happened_while_the_bridge_was_away() -> None:
    first = CompartmentTracker()
    first.observe(BOOT, [record(flags=F.DISINFECTING, remaining_s=120, opens=3, closes=3)], 0)
    saved = {n: v for n, v in first.views.items()}
    again = CompartmentTracker()
    again.restore(BOOT, saved)
    obs = again.observe(BOOT, [record(flags=F.OCCUPIED | F.CYCLE_ABORTED, opens=4, closes=4)], 300)
    assert [e.type for e in obs.events] == [
        "door_opened",
        "item_placed",
        "door_closed",
        "disinfection_aborted",  # a door opened: the board stopped the cycle
    ]
    assert obs.events[2].data == {"occupied": True}
    assert obs.snapshots  # a fresh run republishes every snapshot


def test_the_board_flag_decides_completed_or_aborted_not_the_clock() -> None:
    t = CompartmentTracker()
    types(t, record(flags=F.DISINFECTING, remaining_s=1700), now=0.0)
    # Ended long before its time, yet the board says it was not aborted: completed.
    assert types(t, record(), now=0.1) == ["disinfection_completed"]
    types(t, record(flags=F.DISINFECTING, remaining_s=1), now=1.0)
    # Ended right on time, yet the board says it stopped early: aborted.
    obs = t.observe(BOOT, [record(flags=F.CYCLE_ABORTED)], 5.0)
    assert obs.events[0].type == "disinfection_aborted"
    assert obs.events[0].data["reason"] == "stopped_by_board"


def test_memory_saved_by_an_older_bridge_still_loads() -> None:
    t = CompartmentTracker()
    t.observe(BOOT, [record()], 0)
    old = t.views[1].to_dict()
    del old["cycle_aborted"]
    assert CompartmentView.from_dict(old).cycle_aborted is False


@given(toggles_per_poll=st.lists(st.integers(0, 40), max_size=40))
def test_every_door_movement_between_polls_is_reported_in_order(
    toggles_per_poll: list[int],
) -> None:
    """A door moved any number of times between polls: every movement is one event, in order."""
    t = CompartmentTracker()
    door_open, opens, closes = False, 0, 0
    t.observe(BOOT, [record(opens=0, closes=0)], 0)
    expected: list[str] = []
    reported: list[str] = []
    for poll, toggles in enumerate(toggles_per_poll, start=1):
        for _ in range(toggles):
            door_open = not door_open
            if door_open:
                opens += 1
            else:
                closes += 1
            expected.append("door_opened" if door_open else "door_closed")
        flags = F.DOOR_OPEN if door_open else NO_FLAGS
        obs = t.observe(BOOT, [record(flags=flags, opens=opens, closes=closes)], poll)
        reported.extend(e.type for e in obs.events)
    assert reported == expected


def test_a_reboot_seen_in_the_first_page_does_not_fake_door_events_in_the_next() -> None:
    t = CompartmentTracker()
    t.observe(BOOT, [record(n=1, opens=40, closes=40)], 0)
    t.observe(BOOT, [record(n=13, opens=7, closes=7)], 0)
    first_page = t.observe(BOOT + 1, [record(n=1)], 1)
    second_page = t.observe(BOOT + 1, [record(n=13)], 1)  # counters back at zero
    assert [e.type for e in first_page.events] == ["board_rebooted"]
    assert second_page.events == []
    later = t.observe(BOOT + 1, [record(n=13, flags=F.DOOR_OPEN, opens=1)], 2)
    assert [e.type for e in later.events] == ["door_opened"]


@st.composite
def lobby_histories(draw: st.DrawFn) -> list[str]:
    """Doors moved, food put in and taken out through open doors, polls in between."""
    steps: list[str] = []
    door_open = draw(st.booleans())
    occupied = draw(st.booleans())
    steps.append(f"start:{int(door_open)}{int(occupied)}")
    for _ in range(draw(st.integers(1, 60))):
        choice = draw(st.sampled_from(["door", "item", "poll"]))
        if choice == "item" and not door_open:
            choice = "door"
        if choice == "door":
            door_open = not door_open
        elif choice == "item":
            occupied = not occupied
        steps.append(choice)
    steps.append("poll")
    return steps


@given(lobby_histories())
def test_events_of_any_poll_replay_to_a_physically_possible_history(steps: list[str]) -> None:
    """Whatever happened between polls: the door events are exactly the movements; food only
    passes an open door; every door_closed carries the occupancy the poll saw, and the events
    add up to it."""
    start = steps[0].split(":")[1]
    door_open, occupied = start[0] == "1", start[1] == "1"
    opens = closes = 0

    def status() -> CompartmentStatus:
        flags = (F.DOOR_OPEN if door_open else NO_FLAGS) | (F.OCCUPIED if occupied else NO_FLAGS)
        return record(flags=flags, opens=opens, closes=closes)

    t = CompartmentTracker()
    t.observe(BOOT, [status()], 0)
    moved: list[str] = []
    reported: list[str] = []
    # The consumer's replay of the reported events.
    seen_open, seen_occupied = door_open, occupied
    for poll, step in enumerate(steps[1:], start=1):
        if step == "door":
            door_open = not door_open
            opens += door_open
            closes += not door_open
            moved.append("door_opened" if door_open else "door_closed")
            continue
        if step == "item":
            occupied = not occupied
            continue
        for event in t.observe(BOOT, [status()], poll).events:
            reported.append(event.type)
            if event.type in ("door_opened", "door_closed"):
                seen_open = event.type == "door_opened"
            if event.type == "door_closed":
                assert event.data == {"occupied": occupied}
                assert seen_occupied == occupied
            if event.type in ("item_placed", "item_removed"):
                assert seen_open, "food passed a shut door"
                assert seen_occupied != (event.type == "item_placed")
                seen_occupied = event.type == "item_placed"
        assert (seen_open, seen_occupied) == (door_open, occupied)
    assert [e for e in reported if e.startswith("door_")] == moved
