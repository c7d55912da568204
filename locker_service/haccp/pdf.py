"""A HACCP day (or range) as a PDF an inspector can read, drawn with fpdf2.

Each day starts on its own page with the site, the profile and the day's seals (so a printed
page can be checked against `lockerctl haccp verify`), then its sections as tables: the
compartments' day, excursions and corrective actions, cycles, orders, discards, and last every
minute's readings. The text is the sealed text itself, cell for cell.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from fpdf import FPDF

from locker_service.haccp.record import HEADERS, SealedDay, rows_of

# A Unicode font where the host has one (°C, names in any Latin script); else the PDF's own
# Helvetica, with what Latin-1 cannot hold replaced.
FONT_PATHS = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed.ttf"),
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
)
TITLES = {
    "summary": "Compartments over the day",
    "excursion": "Excursions and alerts, with the corrective action taken",
    "action": "Corrective actions recorded on earlier days' alerts",
    "cycle": "Disinfection cycles",
    "order": "Orders held, with their food-safety clock and outcome",
    "discard": "Food discarded",
    "correction": "Outcomes corrected this day: what the record said, and says now",
    "reading": "Readings, minute by minute",
}
ORDER = ("summary", "excursion", "action", "cycle", "order", "discard", "correction", "reading")
# Relative column widths per section (the first column, the section's name, is not drawn).
WIDTHS = {
    "summary": (3, 1.5, 1.5, 1.5, 1.5, 2),
    "reading": (2.5, 1.2, 4, 1.2, 1.2, 1.2, 1.2, 1.2),
    "excursion": (2.2, 2.4, 4.2, 2.4, 1.6, 5, 4.2, 4, 2.8, 4.2),
    "action": (4.2, 2.4, 6, 4, 2.8, 4.2),
    "cycle": (2.2, 2.4, 6, 1.4, 4.2, 4.2, 4.2, 1.8, 1.6, 1.8, 1.4, 1.8, 1.8, 2.4),
    "order": (6.2, 2.2, 2.4, 4.2, 4.2, 4.2, 4.2, 4.2, 3, 4.2, 4),
    "discard": (2.2, 2.4, 6, 4.2, 3, 6),
    "correction": (6.2, 2.2, 2.4, 4.2, 2.4, 4.2, 4.2, 8),
}


class _Pdf(FPDF):
    def __init__(self) -> None:
        super().__init__(orientation="L", format="A4")
        self.set_auto_page_break(auto=True, margin=12)
        self.unicode = False
        for path in FONT_PATHS:
            if path.exists():
                bold = path.with_name(path.stem + "-Bold.ttf")
                self.add_font("body", "", str(path))
                self.add_font("body", "B", str(bold if bold.exists() else path))
                self.unicode = True
                break
        self.footer_text = ""

    def use(self, size: float, bold: bool = False) -> None:
        if self.unicode:
            self.set_font("body", "B" if bold else "", size)
        else:
            self.set_font("helvetica", "B" if bold else "", size)

    def text_of(self, value: str) -> str:
        return value if self.unicode else value.encode("latin-1", "replace").decode("latin-1")

    def footer(self) -> None:
        self.set_y(-10)
        self.use(7)
        self.cell(0, 5, self.text_of(f"{self.footer_text}  page {self.page_no()}"), align="R")


def render(site_name: str, days: Iterable[SealedDay], problems: Sequence[str] = ()) -> bytes:
    """The days as a PDF; `problems`: what checking their chain found (printed on every
    day's first page, so a tampered record never reads as a good one)."""
    pdf = _Pdf()
    pdf.set_title(f"HACCP record, {site_name}")
    for day in days:
        _day(pdf, site_name, day, problems)
    return bytes(pdf.output())


def _day(pdf: _Pdf, site_name: str, day: SealedDay, problems: Sequence[str]) -> None:
    pdf.footer_text = f"HACCP record, {site_name}, {day.day}"
    pdf.add_page()
    rows = rows_of(day.text)
    sections: dict[str, list[list[str]]] = {}
    for row in rows:
        if row and row[0] in HEADERS and row != list(HEADERS[row[0]]):
            sections.setdefault(row[0], []).append(row[1:])
    site = sections.get("site", [[site_name, site_name, "", "", "", "", str(day.day)]])[0]
    pdf.use(15, bold=True)
    pdf.cell(
        0,
        9,
        pdf.text_of(f"HACCP record: {site[1]} ({site[0]}), {day.day}"),
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.use(9)
    for line in (
        f"Time zone {site[2]}; food-safety profile {site[3]}: floor {site[4]} °C, "
        f"setpoint {site[5]} °C.",
        f"Seal of the day before: {day.prev}",
        f"Seal of this day:       {day.seal}",
        "The seals chain each day to the one before; `lockerctl haccp verify` checks them.",
    ):
        pdf.cell(0, 5, pdf.text_of(line), new_x="LMARGIN", new_y="NEXT")
    pdf.use(10, bold=True)
    if problems:
        for problem in ["CHAIN BROKEN when exported: this record was changed.", *problems]:
            pdf.multi_cell(0, 5, pdf.text_of(problem), new_x="LMARGIN", new_y="NEXT")
    else:
        pdf.cell(0, 6, "Chain intact when exported.", new_x="LMARGIN", new_y="NEXT")
    for section in ORDER:
        _table(pdf, section, sections.get(section, []))


def _table(pdf: _Pdf, section: str, rows: list[list[str]]) -> None:
    pdf.ln(3)
    pdf.use(11, bold=True)
    pdf.cell(0, 7, TITLES[section] + ("" if rows else ": none"), new_x="LMARGIN", new_y="NEXT")
    if not rows:
        return
    header = HEADERS[section][1:]
    weights = WIDTHS[section]
    size = 7.0
    if section != "reading":  # few rows, long words: wrapped in cells, nothing cut
        pdf.use(size)
        with pdf.table(col_widths=weights, line_height=size * 0.5, text_align="LEFT") as table:
            for values in (header, *rows):
                line = table.row()
                for value in values:
                    line.cell(pdf.text_of(value))
        return
    # Every minute of every compartment: plain cells, fast for tens of thousands of rows.
    unit = pdf.epw / sum(weights)
    widths = [w * unit for w in weights]
    pdf.use(size, bold=True)
    _row(pdf, widths, list(header), size)
    pdf.use(size)
    for row in rows:
        if pdf.will_page_break(4):
            pdf.add_page()
            pdf.use(size, bold=True)
            _row(pdf, widths, list(header), size)
            pdf.use(size)
        _row(pdf, widths, row, size)


def _row(pdf: _Pdf, widths: list[float], values: list[str], size: float) -> None:
    for width, value in zip(widths, values, strict=True):
        # An empty cell is a minute without a temperature (a faulted sensor): said so.
        pdf.cell(width, size * 0.5, pdf.text_of(value or "-"), border="B")
    pdf.ln()
