"""HACCP days as text, their seals and the chain's checks (pure)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from locker_service.haccp.record import (
    GENESIS,
    DayText,
    ExportError,
    SealedDay,
    check_chain,
    export_text,
    parse_export,
    rows_of,
    seal,
)

D0 = date(2026, 12, 1)


def day_text(day: date, low: float) -> str:
    record = DayText(day)
    record.add("site", ("hq", "Tower A, lobby", "Asia/Shanghai", "cn", 60.1, 65.0, str(day)))
    record.add("reading", ("k1", 1, f"{day}T10:00:00+08:00", low, 65.2, 64.6, 65.0, 6))
    record.add(
        "excursion",
        (
            "k1",
            1,
            f"{day}T10:05:00+08:00",
            "below_floor",
            "warning",
            'below 60 °C, "door"',
            None,
            "food discarded",
            "operator:3 (Olga)",
            f"{day}T10:20:00+08:00",
        ),
    )
    return record.text()


def chain(n: int) -> list[SealedDay]:
    days, prev = [], GENESIS
    for i in range(n):
        day = D0 + timedelta(days=i)
        text = day_text(day, 60.0 + i)
        days.append(SealedDay(day, text, prev, seal(prev, text)))
        prev = days[-1].seal
    return days


def test_a_day_is_csv_in_sections_with_its_own_headers() -> None:
    rows = rows_of(day_text(D0, 61.25))
    assert rows[0][0] == "site" and rows[1][:3] == ["site", "hq", "Tower A, lobby"]
    assert rows[3][:7] == [
        "reading",
        "k1",
        "1",
        "2026-12-01T10:00:00+08:00",
        "61.2",
        "65.2",
        "64.6",
    ]
    assert rows[5][6] == 'below 60 °C, "door"' and rows[5][7] == ""  # quoted, None empty
    with pytest.raises(ValueError, match="a reading row has 8 values"):
        DayText(D0).add("reading", ("k1", 1))


def test_an_intact_chain_has_no_problem_and_survives_an_export() -> None:
    days = chain(3)
    assert check_chain(days) == []
    assert parse_export(export_text(days)) == days
    assert check_chain(days[1:], first_prev=None) == []  # a range from mid-chain


@pytest.mark.parametrize("at", [0, 1, 2])
def test_one_changed_byte_names_its_day(at: int) -> None:
    days = chain(3)
    changed = days[at].text.replace("65.2", "65.3", 1)
    days[at] = SealedDay(days[at].day, changed, days[at].prev, days[at].seal)
    assert check_chain(days) == [
        f"{D0 + timedelta(days=at)}: its record does not match its seal (changed after sealing)"
    ]


def test_a_resealed_day_breaks_the_next_link_and_a_missing_day_is_named() -> None:
    days = chain(3)
    forged = days[1].text.replace("61.0", "63.0")
    days[1] = SealedDay(days[1].day, forged, days[1].prev, seal(days[1].prev, forged))
    assert check_chain(days) == [
        f"{D0 + timedelta(days=2)}: it does not follow {D0 + timedelta(days=1)}'s seal"
    ]
    gap = [chain(3)[0], chain(3)[2]]
    assert f"{D0 + timedelta(days=2)}: the days between {D0} and it are missing" in check_chain(gap)
    assert check_chain(chain(3)[1:]) == [
        f"{D0 + timedelta(days=1)}: the first day does not start the chain"
    ]


def test_a_file_changed_by_one_byte_fails_and_names_the_day() -> None:
    text = export_text(chain(2))
    at = text.rindex("65.2")  # in the second day
    days = parse_export(text[:at] + "66" + text[at + 2 :])
    assert check_chain(days) == [
        f"{D0 + timedelta(days=1)}: its record does not match its seal (changed after sealing)"
    ]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello\n",
        "#day,2026-12-01,x,y,99\nsite\n",
        "#day,someday,x,y,0\n",
        "#day,2026-12-01,x\n",
    ],
)
def test_what_is_not_an_export_is_refused(text: str) -> None:
    with pytest.raises(ExportError):
        parse_export(text)


def test_a_site_s_day_is_its_local_day_with_23_or_25_hours_at_a_clock_change() -> None:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from locker_service.haccp.service import Bounds

    london = ZoneInfo("Europe/London")
    spring = Bounds.of(date(2026, 3, 29), london)
    assert spring.end - spring.start == timedelta(hours=23) and spring.fixed is None
    assert spring.local(datetime(2026, 3, 29, 0, 30, tzinfo=UTC)) == "2026-03-29T00:30:00+00:00"
    assert spring.local(datetime(2026, 3, 29, 1, 30, tzinfo=UTC)) == "2026-03-29T02:30:00+01:00"
    autumn = Bounds.of(date(2026, 10, 25), london)
    assert autumn.end - autumn.start == timedelta(hours=25)
    shanghai = Bounds.of(date(2026, 12, 1), ZoneInfo("Asia/Shanghai"))
    assert shanghai.start == datetime(2026, 11, 30, 16, 0, tzinfo=UTC) and shanghai.fixed
    assert shanghai.local(datetime(2026, 12, 1, 2, 5, tzinfo=UTC)) == "2026-12-01T10:05:00+08:00"


@pytest.mark.parametrize("value", ["k-1", "a,b", 'say "hi"', "two\nlines", "", " spaced ", "°C"])
def test_a_cell_made_by_hand_is_what_the_csv_writer_writes(value: str) -> None:
    import csv
    import io

    from locker_service.haccp.record import quoted

    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(["x", value])
    assert f"x,{quoted(value)}\n" == out.getvalue()


def test_control_characters_in_free_text_survive_an_export_byte_for_byte() -> None:
    """A corrective action typed with a carriage return, a form feed, a line or paragraph
    separator: lines are counted and split at "\\n" alone, so the intact file verifies."""
    record = DayText(D0)
    record.add("site", ("hq", "Tower A", "UTC", "custom", 60.0, 65.0, str(D0)))
    for i, text in enumerate(["a\rb", "c\x0cd", "e\x85f", "g\u2028h", "i\r\nj", "k\nl"]):
        record.add("action", (f"{D0}T0{i}:00:00+00:00", "below_floor", "m", text, "o", None))
    text = record.text()
    days = [SealedDay(D0, text, GENESIS, seal(GENESIS, text))]
    exported = export_text(days)
    assert parse_export(exported) == days and check_chain(parse_export(exported)) == []
    # The last line's break removed: a change like any other.
    assert check_chain(parse_export(exported[:-1])) != []


def test_a_clock_change_at_midnight_stamps_the_day_s_last_hour_on_its_own_date() -> None:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from locker_service.haccp.service import Bounds

    cairo = Bounds.of(date(2026, 10, 29), ZoneInfo("Africa/Cairo"))  # 24:00 falls back to 23:00
    assert cairo.end - cairo.start == timedelta(hours=25) and cairo.fixed is None
    last = cairo.end - timedelta(minutes=1)
    assert cairo.local(last) == "2026-10-29T23:59:00+02:00"
    assert cairo.local(datetime(2026, 10, 28, 22, 30, tzinfo=UTC)) == "2026-10-29T01:30:00+03:00"
