"""The everyday selection's rule for tests of both backends (tests/conftest.py, ADR 0127)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from tests import conftest


class Item:
    """What the rule reads of a collected test: its id, its parameters and its module."""

    def __init__(self, nodeid: str, params: dict[str, Any] | None, module: object = None) -> None:
        self.nodeid = nodeid
        if params is not None:
            self.callspec = SimpleNamespace(params=params)
        self.module = module or SimpleNamespace()
        self.marks: list[str] = []

    def add_marker(self, mark: pytest.MarkDecorator) -> None:
        self.marks.append(mark.name)


def marked(*items: Item) -> dict[str, list[str]]:
    conftest.pytest_collection_modifyitems(list(items))  # type: ignore[arg-type]
    return {item.nodeid: item.marks for item in items}


def test_the_postgresql_run_of_a_test_of_both_backends_is_left_to_the_whole_suite() -> None:
    assert marked(
        Item("t.py::a[sqlite]", {"database_url": "sqlite"}),
        Item("t.py::a[postgres]", {"database_url": "postgres"}),
        Item("t.py::b[sqlite-sent]", {"database_url": "sqlite", "when": "sent"}),
        Item("t.py::b[postgres-sent]", {"database_url": "postgres", "when": "sent"}),
        Item("t.py::c[sqlite]", {"empty_database_url": "sqlite"}),
        Item("t.py::c[postgres]", {"empty_database_url": "postgres"}),
    ) == {
        "t.py::a[sqlite]": [],
        "t.py::a[postgres]": ["slow"],
        "t.py::b[sqlite-sent]": [],
        "t.py::b[postgres-sent]": ["slow"],
        "t.py::c[sqlite]": [],
        "t.py::c[postgres]": ["slow"],
    }


def test_a_test_narrowed_to_postgresql_keeps_its_only_run_every_day() -> None:
    """`@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)`: row locks."""
    assert marked(Item("t.py::locks[postgres]", {"database_url": "postgres"})) == {
        "t.py::locks[postgres]": []
    }


def test_a_module_about_sql_written_per_backend_keeps_both_every_day() -> None:
    per_backend = SimpleNamespace(POSTGRES_EVERY_DAY=True)
    assert marked(
        Item("w.py::a[sqlite]", {"database_url": "sqlite"}, per_backend),
        Item("w.py::a[postgres]", {"database_url": "postgres"}, per_backend),
    ) == {"w.py::a[sqlite]": [], "w.py::a[postgres]": []}


def test_a_test_of_its_own_backend_and_an_unparametrized_one_are_left_as_they_are() -> None:
    """A migration's test takes `backend` itself and runs on both every day."""
    assert marked(
        Item("m.py::up", None),
        Item("m.py::mig[sqlite]", {"backend": "sqlite"}),
        Item("m.py::mig[postgres]", {"backend": "postgres"}),
    ) == {"m.py::up": [], "m.py::mig[sqlite]": [], "m.py::mig[postgres]": []}


def test_no_test_process_loads_the_schemathesis_plugin(pytestconfig: pytest.Config) -> None:
    """pyproject.toml's addopts: the API fuzz imports schemathesis itself, when it runs."""
    assert not pytestconfig.pluginmanager.has_plugin("schemathesis")
