"""Pickup codes: the QR token and the 8-digit fallback, pure functions (no I/O).

The token carries 256 bits: HMAC-SHA256 over the order id and a random per-order salt, keyed
with the server secret. Only its SHA-256 is stored; the service can re-derive it (to put the QR
into a message when the order becomes ready) because it holds the key, a copy of the database
cannot. The fallback code is derived from the token with another keyed HMAC, so the purchaser's
page can show it, and is stored only as a keyed hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid

# How a scanned or typed code is read is the kiosk contract's: the bridge reads it the same way.
from firmware_bridge.contract.codes import (
    FALLBACK_DIGITS,
    looks_like_token,
    normalise_code,
    token_from_scan,
    token_hash,
)

__all__ = [
    "FALLBACK_DIGITS",
    "code_hash",
    "fallback_code",
    "looks_like_token",
    "new_salt",
    "normalise_code",
    "pickup_token",
    "token_from_scan",
    "token_hash",
]

SALT_BYTES = 16


def _mac(secret_key: str, label: str, message: bytes) -> bytes:
    return hmac.new(
        secret_key.encode(), label.encode() + b"\x00" + message, hashlib.sha256
    ).digest()


def new_salt() -> str:
    return secrets.token_hex(SALT_BYTES)


def pickup_token(secret_key: str, order_id: uuid.UUID, salt: str) -> str:
    raw = _mac(secret_key, "pickup-token", order_id.bytes + bytes.fromhex(salt))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def page_url(base_url: str, token: str, language: str | None = None) -> str:
    """Her page's address under the service's public base URL, opening in her language."""
    return in_language(f"{base_url.rstrip('/')}/p/{token}", language)


def in_language(page: str, language: str | None) -> str:
    """Her page's address opening in her language when it is not English (ADR 0122): the
    merchant's `purchaser_url` and the link in her messages alike."""
    return page if language in (None, "en") else f"{page}?lang={language}"


def fallback_code(secret_key: str, token: str) -> str:
    number = int.from_bytes(_mac(secret_key, "fallback-code", token.encode())[:8], "big")
    return f"{number % 10**FALLBACK_DIGITS:0{FALLBACK_DIGITS}d}"


def code_hash(secret_key: str, code: str) -> str:
    return _mac(secret_key, "code-hash", code.encode()).hex()
