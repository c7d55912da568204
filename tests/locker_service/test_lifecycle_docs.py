"""docs/contracts/lifecycles.md stays true: its diagrams and transition tables are generated from
the transition tables in code, and its state lists name exactly the states the code has.

After changing a lifecycle, regenerate the generated parts with
`PYTHONPATH=. python tests/locker_service/test_lifecycle_docs.py` and describe any new state.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path

from locker_service.compartments import lifecycle as compartments
from locker_service.orders import lifecycle as orders

DOC = Path(__file__).resolve().parents[2] / "docs" / "contracts" / "lifecycles.md"
LIFECYCLES: dict[str, Mapping[tuple[StrEnum, StrEnum], StrEnum]] = {
    "order": orders.TRANSITIONS | orders.CORRECTIONS,  # corrections: ADR 0112
    "compartment": compartments.TRANSITIONS,
}
STATES: dict[str, type[StrEnum]] = {
    "order": orders.OrderState,
    "compartment": compartments.CompartmentState,
}
INITIAL = {
    "order": orders.OrderState.CREATED,
    "compartment": compartments.CompartmentState.AVAILABLE,
}


def render(name: str) -> str:
    """The generated part of one lifecycle: a state diagram and the transition table."""
    table = LIFECYCLES[name]
    lines = ["```mermaid", "stateDiagram-v2", f"    [*] --> {INITIAL[name].value}"]
    lines += [f"    {s.value} --> {to.value} : {t.value}" for (s, t), to in table.items()]
    if name == "order":
        lines += [f"    {s.value} --> [*]" for s in sorted(orders.TERMINAL)]
    lines += ["```", "", "| from | trigger | to |", "|---|---|---|"]
    lines += [f"| `{s.value}` | `{t.value}` | `{to.value}` |" for (s, t), to in table.items()]
    return "\n".join(lines)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- generated: {name} transitions -->", f"<!-- end generated: {name} -->"


def generated_part(text: str, name: str) -> str:
    start, end = _markers(name)
    match = re.search(re.escape(start) + r"\n(.*?)\n" + re.escape(end), text, re.S)
    assert match is not None, f"{DOC.name} lacks the markers of the {name} transitions"
    return match.group(1)


def described_states(text: str, name: str) -> set[str]:
    """The states in the "| state | meaning |" table under the lifecycle's heading."""
    section = text.split(f"## The {name} lifecycle", 1)[1].split("\n## ", 1)[0]
    table = section.split("| state | meaning |", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", table, re.M))


def test_the_generated_diagrams_and_tables_match_the_code() -> None:
    text = DOC.read_text()
    for name in LIFECYCLES:
        assert generated_part(text, name) == render(name), (
            f"the {name} lifecycle changed: regenerate with "
            "`PYTHONPATH=. python tests/locker_service/test_lifecycle_docs.py`"
        )


def test_every_state_is_described_and_no_other() -> None:
    text = DOC.read_text()
    for name, states in STATES.items():
        assert described_states(text, name) == {s.value for s in states}, name


def test_the_check_would_see_a_transition_the_doc_lacks() -> None:
    text = DOC.read_text()
    row = "| `ready` | `pick_up` | `picked_up` |"
    assert row in generated_part(text, "order")
    assert generated_part(text.replace(row + "\n", ""), "order") != render("order")


def write() -> None:
    text = DOC.read_text()
    for name in LIFECYCLES:
        start, end = _markers(name)
        text = re.sub(
            re.escape(start) + r"\n.*?" + re.escape(end),
            lambda _m, n=name, s=start, e=end: f"{s}\n{render(n)}\n{e}",
            text,
            flags=re.S,
        )
    DOC.write_text(text)


if __name__ == "__main__":
    write()
    sys.exit(0)
