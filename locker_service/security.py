"""Credentials and their hashes: API keys, kiosk and operator tokens, courier PINs.

Tokens and keys carry >= 256 random bits, so a plain SHA-256 is enough to store them. A courier
PIN has few digits: it is stored as an HMAC keyed with the server secret, so a copy of the
database alone does not let anyone try all PINs offline.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_BYTES = 32  # 256 bits


def new_token(prefix: str) -> str:
    """A fresh credential, e.g. `kt_...` for a kiosk; the prefix tells a reader what it is."""
    return f"{prefix}_{secrets.token_urlsafe(TOKEN_BYTES)}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hash_pin(secret_key: str, courier_code: str, pin: str) -> str:
    message = f"courier-pin\x00{courier_code}\x00{pin}".encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()


def new_pin(digits: int = 6) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(digits))


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
