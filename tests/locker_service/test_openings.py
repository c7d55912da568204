"""The vocabulary of a door opening's `who`: what the writers build is what the audit reads."""

from __future__ import annotations

from locker_service.compartments import openings
from locker_service.compartments.openings import OpeningKind, PickupMethod


def test_a_pickup_says_which_code_came_and_from_where() -> None:
    assert openings.pickup_method("scanner:k-1", by_token=True) == PickupMethod.QR
    assert openings.pickup_method("scanner:k-1", by_token=False) == PickupMethod.SCANNER
    assert openings.pickup_method("10.0.0.7", by_token=False) == PickupMethod.KEYPAD
    for method in PickupMethod:
        who = openings.purchaser(method)
        assert (openings.kind_of(who), openings.how_of(who)) == (OpeningKind.PICKUP, method.value)


def test_each_writer_is_read_back_as_its_kind() -> None:
    assert openings.kind_of(openings.courier("C1")) == OpeningKind.DROPOFF
    assert openings.how_of(openings.courier("C1")) == "courier_pin"
    assert openings.courier_code_of(openings.courier("C:1")) == "C:1"
    assert openings.kind_of(openings.operator(7)) == OpeningKind.REMOTE_OPEN
    assert openings.operator_id_of(openings.operator(7)) == 7
    assert openings.operator_id_of(openings.courier("7")) is None
    assert (openings.kind_of(openings.UNKNOWN), openings.how_of(openings.UNKNOWN)) == (
        OpeningKind.UNEXPLAINED,
        "none",
    )


def test_rows_of_before_and_of_unknown_writers_still_read() -> None:
    assert (openings.kind_of("purchaser"), openings.how_of("purchaser")) == ("pickup", "code")
    assert (openings.kind_of("purchaser:teleport"), openings.how_of("purchaser:teleport")) == (
        "pickup",
        "code",
    )
    assert (openings.kind_of("robot:3"), openings.how_of("robot:3")) == ("other", "unknown")
