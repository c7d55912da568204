"""The decision records keep their shape: every ADR has its status, date and the alternatives
it weighed, cites only documents in the repository, and a superseding ADR exists."""

from __future__ import annotations

import re
from pathlib import Path

ADR_DIR = Path(__file__).resolve().parents[2] / "docs" / "adr"
SECTIONS = [
    "## Status",
    "## Date",
    "## Context",
    "## Decision",
    "## Alternatives",
    "## Consequences",
]


def adrs() -> list[Path]:
    found = sorted(ADR_DIR.glob("[0-9][0-9][0-9][0-9]-*.md"))
    assert len(found) > 20, "the checker found no ADRs"
    return found


def test_every_adr_has_its_sections_in_order() -> None:
    for path in adrs():
        lines = path.read_text().splitlines()
        headings = [line for line in lines if line.startswith("## ")]
        assert headings == SECTIONS, path.name
        status = lines[lines.index("## Status") + 1]
        assert re.match(r"^(Accepted|Superseded by \d{4})", status), (path.name, status)
        date = lines[lines.index("## Date") + 1]
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", date), (path.name, date)


def test_adrs_cite_no_document_outside_the_repository() -> None:
    for path in adrs():
        assert "DESIGN.md" not in path.read_text(), path.name


def test_every_adr_named_in_a_status_exists() -> None:
    numbers = {path.name[:4] for path in adrs()}
    for path in adrs():
        text = path.read_text()
        status = text.split("## Status\n", 1)[1].split("\n", 1)[0]
        for named in re.findall(r"\b(\d{4})\b", status):
            assert named in numbers, (path.name, named)
