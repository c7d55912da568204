"""What a purchaser shows the kiosk, read the same way by the service and the bridge (pure).

A QR code holds her 256-bit pickup token, bare or inside her page's URL (`.../p/{token}`); the
fallback is 8 digits she types. The service checks them against its database; a bridge that
has lost the service checks them against the verifiers the service sent it (`offline`):
SHA-256 of the token, and for a typed code an HMAC under a key that exists only in the bridge's
memory (docs/adr/0077).
"""

from __future__ import annotations

import hashlib
import hmac
import re

FALLBACK_DIGITS = 8
_CODE_RE = re.compile(r"^\d{8}$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # 32 bytes, unpadded base64url


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


def token_hash(token: str) -> str:
    """SHA-256 of a pickup token, hex: what the service stores and sends the kiosk."""
    return hashlib.sha256(token.encode()).hexdigest()


def code_mac(key: bytes, code: str) -> str:
    """The offline verifier of an 8-digit code: HMAC-SHA256 under the kiosk's key, hex."""
    return hmac.new(key, b"offline-code\x00" + code.encode(), hashlib.sha256).hexdigest()
