"""Who talks to the service: merchants (API keys), couriers (PINs), operators (tokens, scoped)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Column, ForeignKey, Integer, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from locker_service.models.base import Base, UTCDateTime, utcnow


class Merchant(Base):
    __tablename__ = "merchants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Courier(Base):
    __tablename__ = "couriers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    pin_hash: Mapped[str] = mapped_column(String(64))
    # A merchant's own courier may drop off only that merchant's orders; NULL: a delivery
    # company's courier who carries orders of any merchant.
    merchant_id: Mapped[int | None] = mapped_column(ForeignKey("merchants.id"), index=True)
    company: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # When an operator last lifted his login lockout: his wrong PINs before it no longer count.
    lockout_lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


# A merchant's contracts: the sites it may order into (ADR 0068).
merchant_sites = Table(
    "merchant_sites",
    Base.metadata,
    Column("merchant_id", ForeignKey("merchants.id", ondelete="CASCADE"), primary_key=True),
    Column("site_id", ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True),
)

# An operator for merchants (a restaurant chain's desk): within its sites it sees and acts on
# these merchants' orders only (ADR 0075). No rows: every merchant's.
operator_merchants = Table(
    "operator_merchants",
    Base.metadata,
    Column("operator_id", ForeignKey("operators.id", ondelete="CASCADE"), primary_key=True),
    # Not cascaded: a desk whose merchant went would otherwise see every merchant's orders.
    Column("merchant_id", ForeignKey("merchants.id"), primary_key=True),
)

operator_sites = Table(
    "operator_sites",
    Base.metadata,
    Column("operator_id", ForeignKey("operators.id", ondelete="CASCADE"), primary_key=True),
    Column("site_id", ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True),
)


class Operator(Base):
    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # viewer: read only; operator: acts on its sites; admin: every site.
    role: Mapped[str] = mapped_column(String(20), default="operator")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Credential(Base):
    """One secret a merchant (API key), kiosk or operator (token) signs in with (ADR 0074).

    Each principal may hold several, so a key is rotated with an overlap: the new one works at
    once and the old one until it expires. Only the secret's SHA-256 is kept, with its first
    characters (`prefix`) to tell keys apart in a list. A key is valid while it is not revoked
    and not past `expires_at`; `last_used_at` is written at most once a minute per replica.
    """

    __tablename__ = "credentials"
    __table_args__ = (
        CheckConstraint(
            "(CASE WHEN merchant_id IS NULL THEN 0 ELSE 1 END)"
            " + (CASE WHEN kiosk_id IS NULL THEN 0 ELSE 1 END)"
            " + (CASE WHEN operator_id IS NULL THEN 0 ELSE 1 END) = 1",
            name="one_owner",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_id: Mapped[int | None] = mapped_column(
        ForeignKey("merchants.id", ondelete="CASCADE"), index=True
    )
    kiosk_id: Mapped[int | None] = mapped_column(
        ForeignKey("kiosks.id", ondelete="CASCADE"), index=True
    )
    operator_id: Mapped[int | None] = mapped_column(
        ForeignKey("operators.id", ondelete="CASCADE"), index=True
    )
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    replaced_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # rotated: once only
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
