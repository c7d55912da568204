"""The kiosk screen and purchaser page speak English and Simplified Chinese, word for word."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from locker_service.kiosks import schemas as kiosk_schemas
from locker_service.web import i18n


def test_every_language_has_every_key() -> None:
    english = set(i18n.CATALOGUES["en"])
    for language, words in i18n.CATALOGUES.items():
        assert set(words) == english, f"{language} differs from English"
        assert all(text.strip() for text in words.values()), f"{language} has an empty text"


def test_placeholders_match_across_languages() -> None:
    for key, text in i18n.CATALOGUES["en"].items():
        wanted = set(re.findall(r"\{(\w+)\}", text))
        for language, words in i18n.CATALOGUES.items():
            assert set(re.findall(r"\{(\w+)\}", words[key])) == wanted, (language, key)


def test_chinese_is_really_chinese() -> None:
    han = re.compile(r"[\u4e00-\u9fff]")
    untranslated = [k for k, v in i18n.CATALOGUES["zh-Hans"].items() if not han.search(v)]
    assert untranslated == []


@pytest.mark.parametrize(
    ("requested", "accept", "expected"),
    [
        ("zh-Hans", None, "zh-Hans"),
        ("en", "zh-CN,zh;q=0.9", "en"),
        (None, "zh-CN,zh;q=0.9,en;q=0.8", "zh-Hans"),
        (None, "en-GB,en;q=0.9", "en"),
        (None, "fr-FR, zh-TW;q=0.5", "zh-Hans"),
        ("klingon", None, "en"),
        (None, None, "en"),
    ],
)
def test_language_choice(requested: str | None, accept: str | None, expected: str) -> None:
    assert i18n.pick_language(requested, accept) == expected


def test_translate_fills_values() -> None:
    assert i18n.translate("en", "courier.opened_title", n=7) == "Compartment 7 is open"
    assert i18n.translate("zh-Hans", "courier.opened_title", n=7) == "7 号柜门已打开"


# Packages behind the kiosk screen's endpoints: every refusal they can give needs words.
KIOSK_PATH_SOURCES = [
    "locker_service/errors.py",
    "locker_service/kiosks",
    "locker_service/dropoff",
    "locker_service/pickup",
    "locker_service/compartments",
    "locker_service/kiosk_link/errors.py",
]


def test_every_refusal_the_kiosk_can_meet_has_words() -> None:
    root = Path(__file__).resolve().parents[2]
    found: set[str] = set()
    for source in KIOSK_PATH_SOURCES:
        path = root / source
        files = [path] if path.is_file() else sorted(path.rglob("*.py"))
        for file in files:
            found |= set(re.findall(r'\bcode(?:=| = )"([a-z_]+)"', file.read_text()))
    assert {"bad_courier_credentials", "invalid_code", "locked_out"} <= found  # the scan works
    missing = sorted(code for code in found if f"error.{code}" not in i18n.CATALOGUES["en"])
    assert missing == []


def test_the_kiosk_keypads_take_what_the_service_takes() -> None:
    """The PIN keypad's bounds are the drop-off's (a shorter PIN is never sent to be refused as
    "input not understood"); the code keypad's are the 8 digits of a pickup code."""
    page = (Path(kiosk_schemas.__file__).parents[1] / "web/templates/kiosk.html").read_text()
    pin = re.search(r'data-target="pin" data-min="(\d+)" data-max="(\d+)"', page)
    assert pin is not None
    bounds = {
        type(m).__name__: m for m in kiosk_schemas.DropoffRequest.model_fields["pin"].metadata
    }
    assert int(pin[1]) == bounds["MinLen"].min_length
    assert int(pin[2]) == bounds["MaxLen"].max_length
    assert 'data-target="code" data-max="8"' in page
