"""Pickup codes and throttling as pure functions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from locker_service.orders import codes
from locker_service.pickup import throttle

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


LIMITS = throttle.Limits(
    window=timedelta(minutes=10),
    lockout=timedelta(minutes=15),
    per_source=5,
    per_kiosk=20,
    per_order=5,
)
NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def test_four_failures_are_fine_the_fifth_locks() -> None:
    four = [NOW - timedelta(seconds=i) for i in range(4)]
    assert throttle.check(NOW, LIMITS, by_source=four, by_kiosk=four) is None
    five = [*four, NOW - timedelta(seconds=30)]
    lockout = throttle.check(NOW, LIMITS, by_source=five, by_kiosk=five)
    assert lockout is not None and lockout.dimension == "source"
    assert abs(lockout.retry_after_s - 15 * 60) < 1


def test_spread_out_failures_do_not_lock() -> None:
    spread = [NOW - timedelta(minutes=11 * i) for i in range(5)]
    assert throttle.check(NOW, LIMITS, by_source=spread, by_kiosk=spread) is None


def test_the_lockout_ends() -> None:
    old = [NOW - timedelta(minutes=16, seconds=i) for i in range(5)]
    assert throttle.check(NOW, LIMITS, by_source=old, by_kiosk=old) is None


@given(st.lists(st.integers(min_value=0, max_value=3600), max_size=30))
def test_locked_iff_some_window_holds_the_limit(seconds_ago: list[int]) -> None:
    failures = [NOW - timedelta(seconds=s) for s in seconds_ago]
    lockout = throttle.check(NOW, LIMITS, by_source=failures, by_kiosk=[])
    ordered = sorted(failures, reverse=True)
    expected = any(
        ordered[i] - ordered[i + 4] <= LIMITS.window and ordered[i] + LIMITS.lockout > NOW
        for i in range(len(ordered) - 4)
    )
    # the newest qualifying window decides; an older one can only end sooner
    assert (lockout is not None) == expected or (lockout is None and not expected)
    if lockout is not None:
        assert 0 < lockout.retry_after_s <= LIMITS.lockout.total_seconds()
