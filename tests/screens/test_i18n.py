"""The kiosk screen and purchaser page speak English and Simplified Chinese, word for word."""

from __future__ import annotations

import re

import pytest

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
