"""Which live replica owns which kiosk: rendezvous (highest random weight) hashing, pure.

Every replica reads the same list of live replicas from the database and computes the same
owner for every kiosk, with no coordinator. Rendezvous hashing moves only the kiosks of a replica
that leaves (to the others) and, when one joins, only the kiosks it now wins (about 1/N of them),
so a rebalance disturbs as few kiosks as possible (ADR 0044).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

WEIGHT_DIGEST_BYTES = 8  # 64 bits: ties between two replicas for one kiosk are practically nil


def weight(replica_id: str, kiosk_id: str) -> int:
    """The replica's pseudo-random weight for the kiosk; the heaviest live replica owns it."""
    # The NUL separator keeps ("ab", "c") and ("a", "bc") apart: neither id may contain it.
    digest = hashlib.blake2b(
        f"{replica_id}\0{kiosk_id}".encode(), digest_size=WEIGHT_DIGEST_BYTES
    ).digest()
    return int.from_bytes(digest, "big")


def owner_of(kiosk_id: str, replica_ids: Iterable[str]) -> str | None:
    """The live replica that should hold the kiosk's lease; None when no replica is live."""
    replicas = list(replica_ids)
    if not replicas:
        return None
    return _heaviest(kiosk_id, replicas)


def assign(kiosk_ids: Iterable[str], replica_ids: Iterable[str]) -> dict[str, str]:
    """Every kiosk with its owner among `replica_ids` (empty when no replica is live)."""
    replicas = sorted(set(replica_ids))
    if not replicas:
        return {}
    return {kiosk_id: _heaviest(kiosk_id, replicas) for kiosk_id in kiosk_ids}


def _heaviest(kiosk_id: str, replicas: Sequence[str]) -> str:
    # The replica id breaks a tie, so every replica picks the same owner even then.
    return max(replicas, key=lambda replica_id: (weight(replica_id, kiosk_id), replica_id))
