"""Ports picked for a run's children: below the kernel's ephemeral range, different, free."""

from __future__ import annotations

import socket

import pytest

from locker_service.stack import ports

OWN_ADDRESS = "127.0.0.42"  # a loopback address nothing else here listens on


@pytest.fixture(autouse=True)
def own_reservations(tmp_path: ports.Path, monkeypatch: pytest.MonkeyPatch) -> ports.Path:
    """A reservations file of the test's own: the host's is shared by everything running."""
    path = tmp_path / "ports.json"
    monkeypatch.setattr(ports, "RESERVATIONS", path)
    return path


def test_picked_ports_are_below_the_ephemeral_range_different_and_free() -> None:
    low = ports.ephemeral_low()
    # On a loopback address of its own: this test's reservations are its own, so a test beside
    # it could otherwise pick and bind one of these on 127.0.0.1 before the checks below.
    picked = ports.free_ports(40, OWN_ADDRESS)
    assert len(set(picked)) == 40
    assert all(ports.LOWEST <= p < low for p in picked)
    for port in picked:
        with socket.socket() as s:
            s.bind((OWN_ADDRESS, port))  # nothing holds them once chosen


def test_ports_given_to_other_children_are_never_picked() -> None:
    taken = set(range(ports.LOWEST, ports.ephemeral_low() - 200))
    picked = ports.free_ports(20, taken=taken)
    assert not taken & set(picked)


def test_a_port_in_use_is_never_picked() -> None:
    low = ports.ephemeral_low()
    held: list[socket.socket] = []
    try:
        # Every port of the range but a few is held by someone else.
        spare = set(range(low - 30, low))
        taken = set(range(ports.LOWEST, low - 300))
        for port in range(low - 300, low - 30):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            held.append(s)
        in_use = {s.getsockname()[1] for s in held}
        picked = ports.free_ports(5, taken=taken)
        assert not in_use & set(picked)
        assert set(picked) <= spare
    finally:
        for s in held:
            s.close()


def test_without_the_kernel_s_range_linux_s_default_is_assumed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE_FILE", ports.Path("/nonexistent/range"))
    assert ports.ephemeral_low() == ports.FALLBACK_EPHEMERAL_LOW


def test_two_runs_picking_at_once_do_not_pick_the_same_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each pick is reserved for the others: a port picked and not yet bound by its child is
    not picked again by another run (two `lockerctl up`, tests beside each other).

    On an address of the test's own: on 127.0.0.1 the tests beside it bind ports of the same
    40, and with fewer than 40 free the two picks must share one."""
    low = ports.ephemeral_low()
    taken = set(range(ports.LOWEST, low - 40))  # 40 ports left to choose from
    first = ports.free_ports(20, OWN_ADDRESS, taken=taken)
    second = ports.free_ports(20, OWN_ADDRESS, taken=taken)  # nothing bound them meanwhile
    assert not set(first) & set(second)
    # Every one reserved: a free port is still given rather than none.
    assert len(ports.free_ports(5, OWN_ADDRESS, taken=taken)) == 5
    # Reservations end: after their time the ports are anyone's again.
    monkeypatch.setattr(ports.time, "time", lambda: 10**10)
    assert ports.free_ports(1, OWN_ADDRESS, taken=taken)
    assert len(ports.json.loads(ports.RESERVATIONS.read_text())) == 1


def test_an_unreadable_reservations_file_is_started_afresh() -> None:
    ports.RESERVATIONS.write_text("not json")
    assert len(ports.free_ports(3)) == 3
    assert len(ports.json.loads(ports.RESERVATIONS.read_text())) == 3


def test_a_pick_where_most_of_the_range_is_free_does_not_shuffle_the_whole_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Random draws find free ports at once; listing and shuffling 20,000 ports with the system's
    randomness (40 ms) is kept for a range nearly all taken (the tests above)."""

    def shuffle(*args: object) -> None:
        raise AssertionError("the whole range was shuffled")

    monkeypatch.setattr(ports.random.SystemRandom, "shuffle", shuffle)
    picked = ports.free_ports(3, OWN_ADDRESS)
    assert len(set(picked)) == 3
    assert all(ports.LOWEST <= p < ports.ephemeral_low() for p in picked)


def test_an_ephemeral_range_starting_below_the_lowest_port_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ports, "ephemeral_low", lambda: 1024)
    with pytest.raises(RuntimeError, match="only 0 of 1 ports free"):
        ports.free_ports(1)
