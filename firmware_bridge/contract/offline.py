"""What the service keeps each kiosk's bridge supplied with, so it can decide a pickup alone.

Published by the replica that holds the kiosk on `lockers/v1/<kiosk>/offline` (QoS 0, never
retained), whenever what it holds changes and at least every `refresh_s`; the bridge counts the
service as reachable while these keep coming (docs/adr/0077). Each ready order at the kiosk
comes with the verifiers of its codes, never the codes:
- `token_sha256`: SHA-256 of the 256-bit QR token, as the service stores it. Safe on a disk:
  nothing derives the token from it.
- `code_mac`: HMAC-SHA256 of the 8-digit code under `code_key`. The key and the MACs together
  would give the code away to a brute force of 10^8 tries in seconds, so the bridge keeps both in
  memory only, never on its disk; the broker never retains them.

A supply with `refresh_s` 0 lists no order and says offline pickups are switched off: the bridge
forgets its list and never decides alone until a supply with a period comes. The service sends
it while it has offline pickups off, so a bridge supplied before cannot take the silence for
being cut off and open on its old list (docs/adr/0077).

A supply sent under a kiosk lease carries the lease's `epoch` and its sender's `seq` (counting
up in one process): the bridge orders supplies by them, not by the senders' clocks, so a late
supply of a replica that has lost the kiosk never replaces its new holder's (docs/adr/0115).
"""

from __future__ import annotations

import base64
from typing import Annotated

from pydantic import AwareDatetime, Field, model_validator

from firmware_bridge.contract.payloads import CompartmentNumber, WireModel, utcnow

Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
OFFLINE_ORDERS_MAX = 255  # a kiosk has at most 255 compartments, each holding one order
CODE_FAILURES_MAX = 1_000_000


class OfflineOrder(WireModel):
    """One ready order at the kiosk: what a pickup of it needs checked."""

    order_id: str = Field(min_length=1, max_length=64)
    compartment: CompartmentNumber
    token_sha256: Hex64
    code_mac: Hex64
    deadline: AwareDatetime  # not to be opened offline from then on (expiry or food safety)
    used: bool = False  # her code opened the latch and the door has not opened yet


class OfflineSupply(WireModel):
    supply_id: str = Field(min_length=1, max_length=64)
    issued_at: AwareDatetime = Field(default_factory=utcnow)
    # The next supply comes within this (real seconds); 0: offline pickups are switched off.
    refresh_s: float = Field(ge=0, le=3600)
    frozen: bool = False  # the site's kill switch: nothing opens, online or not
    code_key: str = Field(pattern=r"^[A-Za-z0-9_-]{43}$")  # 32 bytes, unpadded base64url
    orders: list[OfflineOrder] = Field(default_factory=list, max_length=OFFLINE_ORDERS_MAX)
    # The kiosk lease it was sent under and the sender's count within it; both or neither (a
    # service without leases sends neither, and supplies are then ordered by `issued_at`).
    epoch: int | None = Field(default=None, ge=1)
    seq: int | None = Field(default=None, ge=1)
    # Wrong 8-digit codes the service counted at this kiosk's screen and scanner within the
    # day: the keypad's daily budget adds its own refusals to them (docs/adr/0116).
    code_failures: int = Field(default=0, ge=0, le=CODE_FAILURES_MAX)

    @model_validator(mode="after")
    def _off_lists_nothing(self) -> OfflineSupply:
        if self.switched_off and self.orders:
            raise ValueError("a supply that switches offline pickups off lists no order")
        if (self.epoch is None) != (self.seq is None):
            raise ValueError("a supply carries both its lease's epoch and its seq, or neither")
        return self

    @property
    def lease(self) -> tuple[int, int] | None:
        """(epoch, seq): the later lease, then the later of one sender's supplies."""
        if self.epoch is None or self.seq is None:
            return None
        return (self.epoch, self.seq)

    @property
    def switched_off(self) -> bool:
        return self.refresh_s == 0

    def key_bytes(self) -> bytes:
        return base64.urlsafe_b64decode(self.code_key + "=")


def encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode()
