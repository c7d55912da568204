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
import re
import secrets
import uuid

FALLBACK_DIGITS = 8
SALT_BYTES = 16
_CODE_RE = re.compile(r"^\d{8}$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # 32 bytes, unpadded base64url


def _mac(secret_key: str, label: str, message: bytes) -> bytes:
    return hmac.new(
        secret_key.encode(), label.encode() + b"\x00" + message, hashlib.sha256
    ).digest()


def new_salt() -> str:
    return secrets.token_hex(SALT_BYTES)


def pickup_token(secret_key: str, order_id: uuid.UUID, salt: str) -> str:
    raw = _mac(secret_key, "pickup-token", order_id.bytes + bytes.fromhex(salt))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def fallback_code(secret_key: str, token: str) -> str:
    number = int.from_bytes(_mac(secret_key, "fallback-code", token.encode())[:8], "big")
    return f"{number % 10**FALLBACK_DIGITS:0{FALLBACK_DIGITS}d}"


def code_hash(secret_key: str, code: str) -> str:
    return _mac(secret_key, "code-hash", code.encode()).hex()


def normalise_code(text: str) -> str | None:
    """What a purchaser types, with spaces or dashes dropped; None unless it is 8 digits."""
    digits = re.sub(r"[\s-]", "", text)
    return digits if _CODE_RE.match(digits) else None


def token_from_scan(text: str) -> str | None:
    """The token in a scanned line: the bare token, or the purchaser page URL `.../p/{token}`."""
    candidate = text.strip()
    if "/p/" in candidate:
        candidate = candidate.rsplit("/p/", 1)[1].split("/")[0].split("?")[0].split("#")[0]
    return candidate if _TOKEN_RE.match(candidate) else None


def looks_like_token(text: str) -> bool:
    return bool(_TOKEN_RE.match(text))
