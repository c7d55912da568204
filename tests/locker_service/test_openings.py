"""The vocabulary of a door opening's `who`: what the writers build is what the audit reads."""

from __future__ import annotations

from locker_service.compartments import openings
from locker_service.compartments.openings import OpeningKind, OpenPurpose, PickupMethod


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


def _refused(purpose: OpenPurpose, **facts: object) -> str | None:
    given: dict[str, object] = {
        "order_state": "ready",
        "occupied": True,
        "kept_hot": True,
        "food_unsafe": False,
        **facts,
    }
    refusal = openings.purpose_refusal(purpose, **given)  # type: ignore[arg-type]
    return refusal.code if refusal is not None else None


def test_food_is_handed_over_only_when_ready_and_kept_hot() -> None:
    assert _refused(OpenPurpose.HANDOVER) is None
    assert _refused(OpenPurpose.HANDOVER, order_state=None) == "nothing_to_hand_over"
    assert _refused(OpenPurpose.HANDOVER, order_state="expired") == "hold_over"
    unsafe = _refused(OpenPurpose.HANDOVER, order_state="expired", food_unsafe=True)
    assert unsafe == "food_unsafe"
    for state in ("deposited", "disinfecting"):
        assert _refused(OpenPurpose.HANDOVER, order_state=state) == "not_ready"
    assert _refused(OpenPurpose.HANDOVER, kept_hot=False) == "not_kept_hot"


def test_only_food_that_is_there_is_discarded_and_a_look_is_always_allowed() -> None:
    for state in ("ready", "deposited", "disinfecting", "expired"):
        assert _refused(OpenPurpose.DISCARD, order_state=state, kept_hot=False) is None
    # Something the sensor sees that no order explains (an item left in a free compartment).
    assert _refused(OpenPurpose.DISCARD, order_state=None) is None
    assert _refused(OpenPurpose.DISCARD, order_state=None, occupied=False) == "nothing_to_discard"
    for state in (None, "ready", "expired"):
        assert _refused(OpenPurpose.INSPECT, order_state=state, occupied=False) is None


def test_a_door_opening_row_reads_back_its_purpose() -> None:
    assert openings.Opener.of("operator:7", "discard").purpose is OpenPurpose.DISCARD
    assert openings.Opener.of("operator:7", None).purpose is None
    assert openings.Opener.of("operator:7", "a newer purpose").purpose is None
