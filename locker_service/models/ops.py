"""Operational tables: alerts, notification outbox, timers, processed kiosk events."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, false, text
from sqlalchemy.orm import Mapped, mapped_column

from locker_service.models.base import Base, BigIntPK, UTCDateTime, utcnow


class Alert(Base):
    __tablename__ = "alerts"
    __table_args__ = (
        # At most one unresolved alert per dedupe key: a repeat bumps `count` instead.
        Index(
            "uq_alerts_dedupe_key_unresolved",
            "dedupe_key",
            unique=True,
            sqlite_where=text("state != 'resolved'"),
            postgresql_where=text("state != 'resolved'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), index=True)
    kiosk_id: Mapped[int | None] = mapped_column(ForeignKey("kiosks.id"))
    compartment_id: Mapped[int | None] = mapped_column(ForeignKey("compartments.id"))
    severity: Mapped[str] = mapped_column(String(10))  # info, warning, critical
    message: Mapped[str] = mapped_column(String(1000))
    dedupe_key: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(15), default="open", index=True)
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_raised_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    acked_by: Mapped[int | None] = mapped_column(ForeignKey("operators.id"))
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    count: Mapped[int] = mapped_column(Integer, default=1)
    # What an operator did about it (HACCP's corrective action), by whom and when.
    corrective_action: Mapped[str | None] = mapped_column(String(1000))
    action_by: Mapped[str | None] = mapped_column(String(200))  # "operator:7 (name)"
    action_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The purchaser message this alert is about (a message the outbox gave up on), if any.
    notification_id: Mapped[int | None] = mapped_column(
        BigIntPK,
        ForeignKey("notification_outbox.id"),
    )


class NotificationOutbox(Base):
    """Messages to purchasers, written in the transaction that decided them."""

    __tablename__ = "notification_outbox"
    __table_args__ = (Index("ix_notification_outbox_status_next", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    order_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("orders.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # ready, reminder, expired, cancelled, ...
    channel: Mapped[str] = mapped_column(Text)  # Apprise URL(s), one a line
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    attachment: Mapped[str | None] = mapped_column(String(200))  # e.g. "qr" (pickup QR image)
    status: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # A try was handed to a provider (or its outcome was never written): it may have reached
    # the purchaser even if it failed. Tries that ended before (no channel for her contact, a
    # URL refused) leave it false; an operator's resend keeps it (migration 0019).
    may_have_reached: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Timer(Base):
    """A durable deadline: claimed by whichever replica sees it due (FOR UPDATE SKIP LOCKED)."""

    __tablename__ = "timers"
    __table_args__ = (Index("ix_timers_state_due", "state", "due_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    kind: Mapped[str] = mapped_column(String(30))
    order_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("orders.id"), index=True)
    compartment_id: Mapped[int | None] = mapped_column(ForeignKey("compartments.id"), index=True)
    alert_id: Mapped[int | None] = mapped_column(BigIntPK, ForeignKey("alerts.id"), index=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    state: Mapped[str] = mapped_column(String(10), default="pending")  # done, cancelled
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class KioskEvent(Base):
    """Kiosk events handled once: MQTT is at-least-once, `event_id` makes it idempotent."""

    __tablename__ = "kiosk_events"
    # A kiosk's events newest first: how far its record goes, read on taking its lease (0080).
    __table_args__ = (Index("ix_kiosk_events_kiosk_id_id", "kiosk_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    kiosk_id: Mapped[int | None] = mapped_column(ForeignKey("kiosks.id"))
    seq: Mapped[int | None] = mapped_column(Integer)  # the bridge's number (`Event.seq`)
    type: Mapped[str] = mapped_column(String(30))
    compartment: Mapped[int | None] = mapped_column(Integer)
    ts: Mapped[datetime] = mapped_column(UTCDateTime())
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
