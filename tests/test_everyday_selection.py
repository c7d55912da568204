"""The everyday selection's rule for tests of both backends (tests/conftest.py, ADR 0127)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from tests import conftest


class Item:
    """What the rule reads of a collected test: its parameters and its module."""

    def __init__(self, params: dict[str, Any] | None, module: object = None) -> None:
        if params is not None:
            self.callspec = SimpleNamespace(params=params)
        self.module = module or SimpleNamespace()
        self.marks: list[str] = []

    def add_marker(self, mark: pytest.MarkDecorator) -> None:
        self.marks.append(mark.name)


def marked(*items: Item) -> list[list[str]]:
    conftest.pytest_collection_modifyitems(items)  # type: ignore[arg-type]
    return [item.marks for item in items]


def test_the_postgresql_run_of_a_test_of_both_backends_is_left_to_the_whole_suite() -> None:
    assert marked(
        Item({"database_url": "postgres"}),
        Item({"database_url": "sqlite"}),
        Item({"empty_database_url": "postgres"}),
        Item({"database_url": "postgres", "when": "sent"}),
    ) == [["slow"], [], ["slow"], ["slow"]]


def test_a_module_about_sql_written_per_backend_keeps_both_every_day() -> None:
    per_backend = SimpleNamespace(POSTGRES_EVERY_DAY=True)
    assert marked(Item({"database_url": "postgres"}, per_backend)) == [[]]


def test_tests_of_postgresql_alone_and_unparametrized_ones_are_left_as_they_are() -> None:
    assert marked(Item(None), Item({"backend": "postgres"}), Item({"kind": "nats"})) == [[], [], []]
