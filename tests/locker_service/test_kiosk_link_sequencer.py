"""A kiosk's events back in its bridge's order (`locker_service.kiosk_link.sequencer`), on a
clock the test moves."""

from __future__ import annotations

from locker_service.kiosk_link.sequencer import RecordedUpTo, Sequencer, recorded_up_to


def test_events_in_order_go_straight_on() -> None:
    s: Sequencer[str] = Sequencer(wait_s=5)
    assert [s.offer(n, f"e{n}", now=0) for n in (7, 8, 9)] == [["e7"], ["e8"], ["e9"]]
    assert s.deadline() is None


def test_an_event_ahead_of_a_gap_waits_for_the_missing_one() -> None:
    s: Sequencer[str] = Sequencer(wait_s=5)
    assert s.offer(1, "e1", now=0) == ["e1"]
    assert s.offer(4, "e4", now=0.1) == []
    assert s.offer(3, "e3", now=0.2) == []
    assert s.held == 2 and s.deadline() == 5.1  # from when the gap opened
    assert s.offer(2, "e2", now=0.3) == ["e2", "e3", "e4"]
    assert s.held == 0 and s.deadline() is None
    assert s.offer(5, "e5", now=0.4) == ["e5"]


def test_a_gap_that_stays_open_is_given_up_after_the_wait_and_a_late_one_goes_on() -> None:
    s: Sequencer[str] = Sequencer(wait_s=5)
    s.offer(1, "e1", now=0)
    assert s.offer(3, "e3", now=1) == []
    assert s.offer(5, "e5", now=2) == []  # a second gap behind the first
    assert s.offer(6, "e6", now=5.5) == []  # arrivals do not prolong the wait
    assert s.give_up(now=5.9) == []
    assert s.give_up(now=6) == ["e3"]
    assert s.deadline() == 11  # the gap before 5 gets a wait of its own
    s.touch(now=10)  # earlier events still being handled: wait again
    assert s.give_up(now=11) == []
    assert s.give_up(now=15) == ["e5", "e6"]
    assert s.offer(2, "e2", now=16) == ["e2"]  # late: handled when it comes
    assert s.offer(4, "e4", now=16) == ["e4"]
    assert s.offer(7, "e7", now=16) == ["e7"]


def test_each_gap_is_asked_about_once_until_it_closes() -> None:
    s: Sequencer[str] = Sequencer(wait_s=5)
    s.offer(1, "e1", now=0)
    assert s.ask() is None  # nothing missing
    s.offer(3, "e3", now=1)
    assert s.ask() == 2 and s.ask() is None  # once for this gap
    s.offer(5, "e5", now=2)
    assert s.offer(2, "e2", now=3) == ["e2", "e3"]  # filled: the gap before 5 is a new one
    assert s.ask() == 4 and s.ask() is None
    assert s.give_up(now=8) == ["e5"]
    s.offer(1, "new disk e1", now=9)  # a bridge whose outbox started again
    s.offer(3, "new disk e3", now=9)
    assert s.ask() == 2  # the same number, a new gap
    s.offer(1, "newer disk e1", now=10)  # started again once more, that gap still open
    assert s.ask() == 2  # its #2 is another event: asked for again


def test_redeliveries_of_handled_ones_go_on_and_a_held_one_is_replaced() -> None:
    s: Sequencer[str] = Sequencer(wait_s=5)
    s.offer(1, "e1", now=0)
    s.offer(3, "e3", now=0)
    assert s.offer(1, "e1 again", now=0) == ["e1 again"]  # handled already: the handler knows
    assert s.holds(3) and not s.holds(2) and not s.holds(None)
    assert s.replace(3, "e3 again") == "e3"  # after a reconnect: the live copy waits
    assert s.offer(2, "e2", now=0) == ["e2", "e3 again"]


def test_a_bridge_whose_outbox_started_again_is_followed_from_its_first_event() -> None:
    s: Sequencer[str] = Sequencer(wait_s=5)
    s.offer(500, "old", now=0)
    assert s.offer(1, "new 1", now=1) == ["new 1"]
    assert s.offer(3, "new 3", now=1) == []  # ordered again from the new start
    assert s.offer(2, "new 2", now=1) == ["new 2", "new 3"]


def test_events_without_a_number_keep_their_arrival_order() -> None:
    s: Sequencer[str] = Sequencer(wait_s=5)
    s.offer(1, "e1", now=0)
    s.offer(3, "e3", now=0)
    assert s.offer(None, "old bridge", now=0) == ["old bridge"]


def test_flush_hands_on_everything_held_in_order_and_starts_again() -> None:
    s: Sequencer[str] = Sequencer(wait_s=5)
    s.offer(1, "e1", now=0)
    s.offer(4, "e4", now=0)
    s.offer(3, "e3", now=0)
    assert s.flush() == ["e3", "e4"]
    assert s.offer(9, "e9", now=0) == ["e9"]


def test_what_a_new_holder_finds_recorded_per_lane() -> None:
    # A scan (its own lane) recorded ahead of the door event before it: neither is past.
    assert recorded_up_to([(7, False), (8, True), (6, False)]) == RecordedUpTo(8, 7, 8)
    # Not from before the outbox started again.
    assert recorded_up_to([(2, False), (1, False), (401, True), (400, False)]) == RecordedUpTo(
        None, 2, 2
    )
    assert recorded_up_to([(None, False), (5, False)]) == RecordedUpTo(None, 5, 5)  # unnumbered
    assert recorded_up_to([]) == RecordedUpTo()


def test_a_new_holder_asks_from_a_number_missing_between_the_lanes_records() -> None:
    """ADR 0092: scan #30 recorded while door event #29 was not (the old holder had it in hand):
    the kiosk is asked for the events after #28, not after #30."""
    recorded = recorded_up_to([(30, True), (28, False), (27, False), (26, True)])
    assert recorded == RecordedUpTo(scans=30, others=28, complete_to=28)
    assert recorded.resend_after == 28
    assert recorded_up_to([(30, True), (29, False), (28, False)]).resend_after == 30
    # Long since the last scan, every number between is recorded: after the newest.
    newest_first = [(n, False) for n in range(60, 10, -1)] + [(10, True)]
    assert recorded_up_to(newest_first).resend_after == 60
    assert RecordedUpTo(scans=30, others=28).resend_after == 30  # nothing known between
    assert RecordedUpTo().resend_after is None


def test_an_event_at_or_below_its_lanes_record_is_stale() -> None:
    up_to = RecordedUpTo(scans=30, others=28)
    assert up_to.stale(21, scan=False) and up_to.stale(28, scan=False)
    assert not up_to.stale(29, scan=False)  # a door event still to be handled behind scan #30
    assert up_to.stale(30, scan=True) and not up_to.stale(31, scan=True)
    assert not up_to.stale(1, scan=False)  # a bridge whose outbox started again
    assert not up_to.stale(None, scan=False)  # a bridge that does not number its events
    assert not RecordedUpTo().stale(5, scan=False)


def test_a_new_holder_that_asked_for_what_its_record_lacks_starts_just_after_it() -> None:
    """ADR 0092: the kiosk sends again its events after its record (30); one it sends anew
    may come first and waits for them; a stale copy below the start goes on (the worker drops
    it); the kiosk's number 1 (a new outbox) is followed from there."""
    s: Sequencer[str] = Sequencer(wait_s=5, start=31)
    assert s.started and not Sequencer[str](wait_s=5).started
    assert s.offer(33, "e33", now=0) == []
    assert s.deadline() == 5
    assert s.offer(29, "e29", now=0.1) == ["e29"]  # below the start: handed on, judged there
    assert s.offer(31, "e31", now=0.2) == ["e31"]
    assert s.offer(32, "e32", now=0.3) == ["e32", "e33"]
    assert s.offer(1, "e1", now=0.4) == ["e1"] and s.offer(2, "e2", now=0.5) == ["e2"]
