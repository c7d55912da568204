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

A supply carries the service's throttling rules of 8-digit codes (`code_rules`, in real
seconds): the keypad applies them while cut off, so a site configured stricter or looser than
ADR 0039's defaults is throttled the same at its screen and its keypad (docs/adr/0119). A supply
without them (an older service) leaves the bridge on those defaults.

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
# Bounds of a throttling rule on the wire: a longer wait is as good as forever, and more free
# failures than this are no throttling at all (the bridge keeps that many refusals on its disk).
RULE_S_MAX = 1e7
RULE_S_MIN = 1e-6  # a span or wait a time scale shrank to nothing (a timedelta rounds to 0)
FREE_FAILURES_MAX = 1000


class OfflineOrder(WireModel):
    """One ready order at the kiosk: what a pickup of it needs checked."""

    order_id: str = Field(min_length=1, max_length=64)
    compartment: CompartmentNumber
    token_sha256: Hex64
    code_mac: Hex64
    deadline: AwareDatetime  # not to be opened offline from then on (expiry or food safety)
    used: bool = False  # her code opened the latch and the door has not opened yet
    # Her food is held for staff after a fault she was told of (ADR 0128): it opens nothing.
    held: bool = False


class CodeBackoff(WireModel):
    """One throttling rule (ADR 0039), in real seconds: `free` failures within `window_s` cost
    nothing; then each try waits from the newest failure `first_delay_s`, doubled per further
    failure, at most `max_delay_s`."""

    window_s: float = Field(gt=0, le=RULE_S_MAX)
    free: int = Field(ge=0, le=FREE_FAILURES_MAX)
    first_delay_s: float = Field(gt=0, le=RULE_S_MAX)
    max_delay_s: float = Field(gt=0, le=RULE_S_MAX)

    @classmethod
    def bounded(
        cls, *, window_s: float, free: int, first_delay_s: float, max_delay_s: float
    ) -> CodeBackoff:
        """A rule within the wire's bounds: a longer span or more free failures than it carries
        act the same as its bound (a sender's settings are not the contract's limits), and a
        span a time scale shrank below a microsecond is one."""

        def span(seconds: float) -> float:
            return min(max(seconds, RULE_S_MIN), RULE_S_MAX)

        return cls(
            window_s=span(window_s),
            free=min(free, FREE_FAILURES_MAX),
            first_delay_s=span(first_delay_s),
            max_delay_s=span(max_delay_s),
        )

    def delay_s(self, recent: int) -> float:
        """The wait after the newest of `recent` failures within the window."""
        if recent < self.free:
            return 0.0
        return min(self.first_delay_s * 2.0 ** min(recent - self.free, 1000), self.max_delay_s)


class CodeRules(WireModel):
    """The service's throttling of typed 8-digit codes, as the keypad applies it alone."""

    source: CodeBackoff  # the keypad's own wrong codes: a few typos free, then a doubling wait
    # Every wrong code at the kiosk, the service's count included, within `window_s` (the day):
    # a budget of free ones, then one per `first_delay_s` (`first_delay_s == max_delay_s`).
    kiosk: CodeBackoff


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
    # The throttling the keypad applies (docs/adr/0119); None: ADR 0039's defaults.
    code_rules: CodeRules | None = None

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
