"""Scanner lines: however the bytes are chunked by the port, the same scans come out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.scanner import MAX_SCAN_CHARS, split_lines

texts = st.lists(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1
    ).filter(lambda s: s.strip() != ""),
    max_size=10,
)


@given(texts, st.sampled_from([b"\r\n", b"\n", b"\r"]), st.data())
def test_chunking_does_not_change_the_scans(
    lines: list[str], end: bytes, data: st.DataObject
) -> None:
    stream = b"".join(text.encode() + end for text in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    out: list[str] = []
    rest = b""
    for piece in pieces:
        got, rest = split_lines(rest + piece)
        out.extend(got)
    assert out == [text.strip()[:MAX_SCAN_CHARS] for text in lines]
    assert rest == b""


def test_blank_lines_are_not_scans_and_bad_utf8_is_replaced() -> None:
    lines, rest = split_lines(b"\r\n\r\nABC\r\n\xff\xfeQR\npartial")
    assert lines == ["ABC", "\ufffd\ufffdQR"]
    assert rest == b"partial"


def test_a_line_that_never_ends_is_dropped_not_hoarded() -> None:
    lines, rest = split_lines(b"x" * (MAX_SCAN_CHARS * 4 + 1))
    assert lines == [] and rest == b""
