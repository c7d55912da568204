"""HACCP records: one row per site and sealed day, never changed once written."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from locker_service.models.base import Base, BigIntPK, UTCDateTime, utcnow


class HaccpDay(Base):
    """A site's day as sealed (locker_service/haccp/record.py): its text, the previous day's
    seal and its own. Append-only: the database refuses UPDATE and DELETE (migration 0009)."""

    __tablename__ = "haccp_days"
    __table_args__ = (UniqueConstraint("site_id", "day"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    day: Mapped[date] = mapped_column(Date)  # the site's local day
    text: Mapped[str] = mapped_column(Text)
    prev: Mapped[str] = mapped_column(String(64))
    seal: Mapped[str] = mapped_column(String(64))
    lines: Mapped[int] = mapped_column(Integer)
    sealed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
