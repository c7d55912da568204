"""Every kind of alert the code raises has a title and advice in English and Chinese, and the
durations people read are in story time."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import get_args

from locker_service.alerts import catalogue
from locker_service.kiosks.exceptions import ExceptionAlertKind
from locker_service.telemetry.alerts import describe
from locker_service.telemetry.monitor import Finding, FindingKind

ROOT = Path(__file__).resolve().parents[2]
RAISERS = {"raise_alert", "raise_compartment_alert"}
# A kind given as an expression rather than a literal, and the type listing what it can be.
KIND_EXPRESSIONS = {"finding.kind": FindingKind, "told.alert_kind": ExceptionAlertKind}


def kinds_raised() -> set[str]:
    """Every `kind=` of a call to the alert service anywhere in the service's code."""
    found: set[str] = set()
    trees = {
        path: ast.parse(path.read_text(), str(path))
        for path in sorted((ROOT / "locker_service").rglob("*.py"))
    }
    shared = {  # UPPER_CASE = "text" at module level anywhere: a kind named once, imported
        target.id: node.value.value
        for tree in trees.values()
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name) and target.id.isupper()
    }
    for path, tree in trees.items():
        constants = {  # module-level NAME = "text": a kind named once and used by name
            **shared,
            **{
                target.id: node.value.value
                for node in tree.body
                if isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
                for target in node.targets
                if isinstance(target, ast.Name)
            },
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name not in RAISERS:
                continue
            for keyword in node.keywords:
                if keyword.arg != "kind":
                    continue
                value = keyword.value
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    found.add(value.value)
                elif isinstance(value, ast.Name) and value.id in constants:
                    found.add(constants[value.id])
                elif isinstance(value, ast.Name) and path.name == "service.py":
                    continue  # the alert service passing its own parameter on
                else:
                    expression = ast.unparse(value)
                    assert expression in KIND_EXPRESSIONS, f"{path}: kind={expression}"
                    found |= set(get_args(KIND_EXPRESSIONS[expression]))
    return found


def test_every_kind_raised_in_the_code_has_words_in_both_languages() -> None:
    raised = kinds_raised()
    # The scan sees literal kinds, the telemetry's kinds and the outbox's give-up.
    assert {"door_opened_unexplained", "below_floor", "notification_undeliverable"} <= raised
    missing = {
        (kind, language)
        for kind in raised
        for language in catalogue.LANGUAGES
        if not (
            (words := catalogue.CATALOGUE.get(kind, {}).get(language))
            and words.title
            and words.advice
        )
    }
    assert missing == set()


def test_the_catalogue_holds_no_kind_the_code_no_longer_raises() -> None:
    assert set(catalogue.CATALOGUE) <= kinds_raised()


def test_a_summary_tells_the_count_and_how_long_in_story_time() -> None:
    raised = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    now = raised + timedelta(seconds=5)  # five real seconds at 60x: five story minutes
    assert (
        catalogue.summary("door_opened_unexplained", 255, raised, now, 60.0)
        == "Door opened without a command · 255 times · for 5 min"
    )
    assert catalogue.summary("below_floor", 1, raised, now, 60.0, "zh-Hans") == (
        "食物低于安全温度 · 已持续 5 分钟"
    )


def test_durations_read_at_a_glance() -> None:
    assert catalogue.duration(30) == "< 1 min"
    assert catalogue.duration(12 * 60 + 59) == "12 min"
    assert catalogue.duration(2 * 3600 + 5 * 60) == "2 h 5 min"
    assert catalogue.duration(3 * 86400 + 3600) == "3 d 1 h"
    assert catalogue.duration(3600, "zh-Hans") == "1 小时"


def test_an_unknown_kind_reads_as_words_not_a_code() -> None:
    assert catalogue.words("brand_new_kind").title == "Brand new kind"


def test_below_the_floor_for_is_story_time() -> None:
    since = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    finding = Finding(
        "below_floor", "raise", "k-1", 3, 52.0, since, since + timedelta(seconds=5), 60.0
    )
    # At 60x time scale five real seconds of readings are five minutes of the story.
    assert "below the 60 °C floor for 5 min (now 52.0 °C)" in describe(finding, 60.0)
    assert "for < 1 min" in describe(finding, 1.0)
