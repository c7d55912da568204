"""Ports picked for a run's children: below the kernel's ephemeral range, different, free."""

from __future__ import annotations

import socket

import pytest

from locker_service.stack import ports


def test_picked_ports_are_below_the_ephemeral_range_different_and_free() -> None:
    low = ports.ephemeral_low()
    picked = ports.free_ports(40)
    assert len(set(picked)) == 40
    assert all(ports.LOWEST <= p < low for p in picked)
    for port in picked:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # nothing holds them once chosen


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
