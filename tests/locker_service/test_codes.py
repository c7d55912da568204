"""Pickup codes as pure functions (their throttling: test_throttle.py)."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from locker_service.orders import codes

SECRET = "s" * 40


@given(st.uuids())
def test_token_is_256_bits_and_the_code_8_digits(order_id: uuid.UUID) -> None:
    salt = codes.new_salt()
    token = codes.pickup_token(SECRET, order_id, salt)
    assert codes.looks_like_token(token) and len(token) == 43
    code = codes.fallback_code(SECRET, token)
    assert len(code) == 8 and code.isdigit()
    assert codes.pickup_token(SECRET, order_id, salt) == token  # derivable again by the service
    assert codes.pickup_token("t" * 40, order_id, salt) != token  # but not without the key
    assert codes.code_hash(SECRET, code) != codes.code_hash("t" * 40, code)


def test_fresh_salts_make_unrelated_tokens() -> None:
    order_id = uuid.uuid4()
    tokens = {codes.pickup_token(SECRET, order_id, codes.new_salt()) for _ in range(200)}
    assert len(tokens) == 200


@given(st.text(max_size=60))
def test_scans_and_typed_codes_never_crash(text: str) -> None:
    token = codes.token_from_scan(text)
    assert token is None or codes.looks_like_token(token)
    code = codes.normalise_code(text)
    assert code is None or (len(code) == 8 and code.isdigit())


def test_scan_accepts_the_page_url() -> None:
    token = codes.pickup_token(SECRET, uuid.uuid4(), codes.new_salt())
    assert codes.token_from_scan(f"https://lockers.example/p/{token}?x=1\r\n") == token
    assert codes.token_from_scan(token) == token
    assert codes.normalise_code(" 1234-5678 ") == "12345678"
    assert codes.normalise_code("1234567") is None
