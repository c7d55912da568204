"""Sites, their kiosks (locker banks) and the compartments in them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from locker_service.models.base import Base, UTCDateTime, utcnow

REASON_COLUMN_LENGTH = 500  # an operator's reason and who gave it (operators/notes.py)


class Site(Base):
    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    kill_switch_engaged: Mapped[bool] = mapped_column(Boolean, default=False)
    kill_switch_reason: Mapped[str | None] = mapped_column(String(REASON_COLUMN_LENGTH))
    kill_switch_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The rules its hot food is held under (locker_service.foodsafety.profiles).
    food_safety_profile: Mapped[str] = mapped_column(
        String(16), default="custom", server_default="custom"
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SiteOncall(Base):
    """Who is told of a site's alerts: Apprise URLs, one a line (set by an admin, checked by
    `locker_service.contacts.targets` when set and again before each send)."""

    __tablename__ = "site_oncall"

    site_id: Mapped[int] = mapped_column(
        ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True
    )
    urls: Mapped[str] = mapped_column(Text)  # told of each new alert, and the daily digest
    # Told when an alert is still open (not acknowledged) after LOCKER_ONCALL_ESCALATE_AFTER_S;
    # empty: the first list is told again.
    escalation_urls: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("operators.id"))


class Kiosk(Base):
    __tablename__ = "kiosks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)  # the MQTT kiosk_id
    name: Mapped[str] = mapped_column(String(200))
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    boot_id: Mapped[str | None] = mapped_column(String(64))
    fw: Mapped[str | None] = mapped_column(String(64))
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Compartment(Base):
    __tablename__ = "compartments"
    __table_args__ = (UniqueConstraint("kiosk_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kiosk_id: Mapped[int] = mapped_column(ForeignKey("kiosks.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    size: Mapped[str] = mapped_column(String(1))  # S, M, L
    heated: Mapped[bool] = mapped_column(Boolean, default=True)
    state: Mapped[str] = mapped_column(String(20), default="available", index=True)
    out_of_service_reason: Mapped[str | None] = mapped_column(String(REASON_COLUMN_LENGTH))
    # Live fields: a copy of the kiosk's last snapshot of this compartment.
    door_open: Mapped[bool] = mapped_column(Boolean, default=False)
    lock_released: Mapped[bool] = mapped_column(Boolean, default=False)
    occupied: Mapped[bool] = mapped_column(Boolean, default=False)
    heater_on: Mapped[bool] = mapped_column(Boolean, default=False)
    uv_on: Mapped[bool] = mapped_column(Boolean, default=False)
    temp_c: Mapped[float | None] = mapped_column(Float)
    setpoint_c: Mapped[float | None] = mapped_column(Float)
    disinfect_remaining_s: Mapped[int] = mapped_column(Integer, default=0)
    fault: Mapped[str | None] = mapped_column(String(32))
    snapshot_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The UV-C lamp's on-time since it was fitted (nominal seconds, from the board's cycle
    # records), against its rated life.
    lamp_on_s: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    lamp_fitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lamp_fitted_by: Mapped[str | None] = mapped_column(String(REASON_COLUMN_LENGTH))
    # Compare-and-set counter: every state change bumps it.
    version: Mapped[int] = mapped_column(Integer, default=1)
