"""Kiosk leases and the live replicas that share them (ADR 0044)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from locker_service.models.base import Base, UTCDateTime


class ServiceReplica(Base):
    """A running service replica; live while its heartbeat is younger than the lease TTL."""

    __tablename__ = "service_replicas"

    replica_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime())  # the database's clock


class KioskLease(Base):
    """Which replica handles a kiosk's messages. `epoch` grows on every change of holder, so a
    replica that lost the lease (even one that slept through it) is fenced out of the kiosk."""

    __tablename__ = "kiosk_leases"

    kiosk_code: Mapped[str] = mapped_column(
        String(64), ForeignKey("kiosks.code", ondelete="CASCADE"), primary_key=True
    )
    holder: Mapped[str | None] = mapped_column(String(64))  # None: free
    epoch: Mapped[int] = mapped_column(BigInteger, default=0)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())  # the database's clock
    # The replica the assignment names next, once it listens to the kiosk's topics: the holder
    # gives the lease up only then, so no event falls between two subscriptions.
    standby: Mapped[str | None] = mapped_column(String(64))
