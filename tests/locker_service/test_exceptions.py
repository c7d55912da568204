"""What each person is told for each exception: the pure table of `kiosks.exceptions`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import get_args

import pytest

from locker_service.foodsafety.faults import keeps_food_hot, may_be_collected
from locker_service.kiosks import exceptions
from locker_service.kiosks.exceptions import Exceptional
from locker_service.orders import outbox
from locker_service.orders.outbox import Place, _text
from locker_service.orders.schemas import PurchaserLanguage
from locker_service.web import i18n


def test_every_exception_has_a_decision_with_words_in_both_languages() -> None:
    for exception in Exceptional:
        told = exceptions.decide(exception)
        for language in i18n.CATALOGUES:
            assert told.purchaser_status in i18n.CATALOGUES[language], (exception, language)
        assert told.operator_message
        assert (told.merchant_event is None) == (told.merchant_message == "")


@pytest.mark.parametrize(
    ("exception", "purchaser_status", "message", "merchant"),
    [
        (
            Exceptional.HEATER_FAULT,
            "status.fault",
            "fault",
            "compartment_fault",
        ),
        (
            Exceptional.LAMP_FAULT,
            "status.fault",
            "fault",
            "compartment_fault",
        ),
        (
            Exceptional.LOCK_JAMMED,
            "status.lock_jammed",
            "lock_jammed",
            "lock_jammed",
        ),
        (Exceptional.DOOR_LEFT_OPEN, "status.deposited", None, None),
        (
            Exceptional.REMOVED_EARLY,
            "status.failed",
            "removed_early",
            "removed_early",
        ),
        (Exceptional.KIOSK_OFFLINE, "status.kiosk_offline", None, None),
        (
            Exceptional.EXPIRED_BEFORE_DROPOFF,
            "status.expired_never_dropped_off",
            "never_dropped_off",
            "expired_never_dropped_off",
        ),
        (
            Exceptional.EXPIRED_UNCOLLECTED,
            "status.expired",
            "expired",
            "expired_uncollected",
        ),
    ],
)
def test_what_each_person_is_told(
    exception: Exceptional,
    purchaser_status: str,
    message: str | None,
    merchant: str | None,
) -> None:
    told = exceptions.decide(exception)
    assert told.purchaser_status == purchaser_status
    assert told.purchaser_message == message
    assert told.merchant_event == merchant


@pytest.mark.parametrize(
    ("fault", "exception"),
    [
        ("sensor_open", Exceptional.HEATER_FAULT),
        ("sensor_short", Exceptional.HEATER_FAULT),
        ("over_temperature", Exceptional.HEATER_FAULT),
        ("heating_watchdog", Exceptional.HEATER_FAULT),
        ("uv_timeout", Exceptional.LAMP_FAULT),
        ("lock_jammed", Exceptional.LOCK_JAMMED),
        ("unknown", Exceptional.HEATER_FAULT),  # not left alone with food inside
    ],
)
def test_board_faults_map_to_exceptions(fault: str, exception: Exceptional) -> None:
    assert exceptions.fault_exception(fault) is exception
    # What an operator's handover reads (ADR 0120) agrees with what everyone was told.
    assert keeps_food_hot(fault) is (exception is not Exceptional.HEATER_FAULT)
    # Her code opens her door unless her message told her not to collect the food.
    told_not_to_collect = exceptions.decide(exception).purchaser_message == "fault"
    assert may_be_collected(fault) is not told_not_to_collect


@pytest.mark.parametrize(
    ("state", "deposited", "fault", "online", "key"),
    [
        ("disinfecting", True, None, True, "status.disinfecting"),
        ("disinfecting", True, "sensor_open", True, "status.fault"),  # never "being kept hot"
        ("deposited", True, "heating_watchdog", True, "status.fault"),
        ("ready", True, "uv_timeout", True, "status.fault"),
        ("ready", True, "lock_jammed", True, "status.lock_jammed"),
        ("disinfecting", True, "lock_jammed", True, "status.disinfecting"),
        ("disinfecting", True, None, False, "status.kiosk_offline"),
        ("ready", True, "sensor_open", False, "status.fault"),  # the fault says more
        ("created", False, None, False, "status.created"),  # no food inside: nothing to say
        ("expired", False, None, True, "status.expired_never_dropped_off"),
        ("expired", True, None, True, "status.expired"),
        # The compartment's fault now is a later order's: she was not told of it.
        ("expired", True, "heating_watchdog", True, "status.expired"),
        ("picked_up", True, "sensor_open", True, "status.picked_up"),
        # Ended after a fault she was told of, cleared since or not: what she was told.
        ("expired+after_fault", True, None, True, "status.fault"),
        ("failed+after_fault", True, None, True, "status.fault"),
        # Staff took it out to discard it, or while looking in (ADR 0120, 0129).
        ("failed+discarded", True, None, True, "status.discarded"),
        ("failed+taken_out", True, None, True, "status.taken_out"),
    ],
)
def test_the_purchaser_page_says_the_truth_first(
    state: str, deposited: bool, fault: str | None, online: bool, key: str
) -> None:
    state, _, after = state.partition("+")
    assert (
        exceptions.purchaser_status(
            state,
            deposited=deposited,
            compartment_fault=fault,
            kiosk_online=online,
            after_fault=after == "after_fault",
            discarded=after == "discarded",
            taken_out=after == "taken_out",
        )
        == key
    )


class _Order:
    external_ref = "R-1"
    purchaser_name = "Li"
    purchaser_language = "en"
    failure_reason = None
    code_used_at = None


class _ZhOrder(_Order):
    purchaser_language = "zh-Hans"


def test_every_message_is_written_in_both_languages() -> None:
    """Each message a purchaser can be sent has its own words in each language she may read
    (ADR 0122), every field filled: none falls back to the bare kind."""
    kinds = {"ready", "reminder", "collected", outbox.RESUMED} | {
        told.purchaser_message
        for told in map(exceptions.decide, Exceptional)
        if told.purchaser_message is not None
    }
    assert set(outbox.MESSAGES) == set(i18n.LANGUAGES) == set(get_args(PurchaserLanguage))
    for language in i18n.LANGUAGES:
        assert set(outbox.MESSAGES[language]) >= kinds, language
        order = _Order()
        order.purchaser_language = language
        for kind in kinds:
            subject, body = _text(kind, order, Place("Site", "Kiosk", 2), None)
            assert "{" not in subject + body and "}" not in subject + body, (language, kind)
    _, chinese = _text("fault", _ZhOrder(), Place("Harbour Tower", "Lobby", 2), None)  # type: ignore[arg-type]
    assert chinese == (
        "Li，您好：存放您订单的柜格（Harbour Tower Lobby 2 号柜格）出现故障。请勿取餐，"
        "工作人员会与您联系。"
    )
    by = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
    _, ready = _text("ready", _ZhOrder(), Place("T", "L", 1), by)  # type: ignore[arg-type]
    assert ready == "Li，您好：您的订单已在T L 1 号柜格等您。请在 2026-01-01 12:30（UTC）前取餐。"


def test_no_message_says_removed_before_it_is() -> None:
    here = Place("Site", "Kiosk", 2)
    for kind in ("expired", "never_dropped_off", "fault"):
        _, body = _text(kind, _Order(), here, None)  # type: ignore[arg-type]
        assert "removed" not in body, kind
    assert "discarded" in _text("expired", _Order(), here, None)[1]  # type: ignore[arg-type]
    assert "merchant" in _text("never_dropped_off", _Order(), here, None)[1]  # type: ignore[arg-type]
    assert "kept hot" not in i18n.CATALOGUES["en"]["status.fault"]
