"""Orders and what befalls them: audit trail, door openings, disinfection cycles, pickup tries."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from locker_service.models.base import Base, BigIntPK, UTCDateTime, utcnow


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (UniqueConstraint("merchant_id", "external_ref"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id"), index=True)
    external_ref: Mapped[str] = mapped_column(String(128))
    # SHA-256 of the create request's body: the same ref with another body is a conflict.
    request_hash: Mapped[str] = mapped_column(String(64))
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    purchaser_name: Mapped[str] = mapped_column(String(200))
    purchaser_contact: Mapped[str] = mapped_column(String(1000))  # Apprise URL(s)
    # The language of her messages (web/i18n.LANGUAGES; ADR 0122).
    purchaser_language: Mapped[str] = mapped_column(String(8), default="en", server_default="en")
    size: Mapped[str] = mapped_column(String(1))
    temperature_class: Mapped[str] = mapped_column(String(10))  # hot, ambient
    state: Mapped[str] = mapped_column(String(20), default="created", index=True)
    compartment_id: Mapped[int | None] = mapped_column(ForeignKey("compartments.id"), index=True)
    courier_id: Mapped[int | None] = mapped_column(ForeignKey("couriers.id"))
    # The pickup token is derived from a per-order random salt with the server key, so the
    # service can put it in a message later while the database alone cannot reproduce it.
    token_salt: Mapped[str] = mapped_column(String(64))
    pickup_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    code_hash: Mapped[str] = mapped_column(String(64), index=True)
    # Set when a code opened the door: the codes are single use. Given back if the door never
    # opened or the food was left inside.
    code_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    hold_until: Mapped[datetime | None] = mapped_column(UTCDateTime())  # ready -> expired after
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # created: no drop-off by
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    deposited_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    disinfecting_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    picked_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # cancelled/expired/failed
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    # The food-safety clock (locker_service.foodsafety): cooked_at as the merchant gave it,
    # the deadline set at the drop-off (from cooked_at, else from the drop-off), when the food
    # became unsafe (an excursion, no temperature, its time up before ready), and the watch's
    # state over the compartment's readings so far.
    cooked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    food_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime())
    food_unsafe_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    food_watch: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Every change stamps it (the offline supply looks for changes by it: ADR 0081).
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)


class OrderEvent(Base):
    """Audit trail: who did what to an order, and when."""

    __tablename__ = "order_events"
    __table_args__ = (
        # A HACCP day looks up the outcomes corrected within it (ADR 0118): a few rows among
        # every order's events.
        Index(
            "ix_order_events_corrections",
            "at",
            sqlite_where=text("action = 'picked_up_before_end'"),
            postgresql_where=text("action = 'picked_up_before_end'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor_type: Mapped[str] = mapped_column(String(20))  # courier purchaser operator ...
    actor_id: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(40))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class DoorOpening(Base):
    """Every opening of a door: asked for (request_id set) or unexplained (request_id NULL)."""

    __tablename__ = "door_openings"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    compartment_id: Mapped[int] = mapped_column(ForeignKey("compartments.id"), index=True)
    order_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("orders.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # courier:C1, purchaser:qr, operator:7, unknown (compartments/openings.py)
    who: Mapped[str] = mapped_column(String(100))
    why: Mapped[str] = mapped_column(String(500))
    request_id: Mapped[str | None] = mapped_column(String(64))
    door_opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # An operator's opening: what it was for (compartments/openings.OpenPurpose, ADR 0120);
    # NULL for every other opening and for one that did not say.
    purpose: Mapped[str | None] = mapped_column(String(16))


class DisinfectionCycle(Base):
    __tablename__ = "disinfection_cycles"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    compartment_id: Mapped[int] = mapped_column(ForeignKey("compartments.id"), index=True)
    order_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("orders.id"))
    kind: Mapped[str] = mapped_column(String(10))  # hold, cleaning
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # running, completed, aborted, or short (ran out short of its UV dose: runs again)
    state: Mapped[str] = mapped_column(String(10), default="running")
    # Proof of disinfection (docs/adr/0073): the cycle commanded (nominal seconds), the board's
    # lamp record of it (uv_dose.LampRecord.to_json), the dose it gave and the one it needed
    # (mJ/cm2), and the verdict (uv_dose.Outcome).
    commanded_s: Mapped[float | None] = mapped_column(Double)
    lamp: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    dose_mj_cm2: Mapped[float | None] = mapped_column(Double)
    dose_required_mj_cm2: Mapped[float | None] = mapped_column(Double)
    outcome: Mapped[str | None] = mapped_column(String(16))
    # The request id its start is sent under, made with the row; a new one once the kiosk has
    # answered that it did not run it (a start sent again after an unknown outcome is the same
    # request: ADR 0082). None on rows from before migration 0017.
    start_request_id: Mapped[str | None] = mapped_column(String(64))
    # When the board first showed this hold cycle running (its start event, a snapshot with the
    # lamp on, its completion): only then may an idle snapshot end it (ADR 0113).
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class PickupAttempt(Base):
    """One try to open with a code, kept for throttling and lockout."""

    __tablename__ = "pickup_attempts"
    __table_args__ = (
        Index("ix_pickup_attempts_kiosk_at", "kiosk_id", "at"),
        Index("ix_pickup_attempts_source_at", "source", "at"),
        Index("ix_pickup_attempts_order_at", "order_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    kiosk_id: Mapped[int] = mapped_column(ForeignKey("kiosks.id"))
    source: Mapped[str] = mapped_column(String(100))  # client address, or "scanner"
    order_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("orders.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    ok: Mapped[bool] = mapped_column(Boolean)


class TemperatureReading(Base):
    __tablename__ = "temperature_readings"
    __table_args__ = (Index("ix_temperature_readings_kiosk_number_ts", "kiosk_id", "number", "ts"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    kiosk_id: Mapped[int] = mapped_column(ForeignKey("kiosks.id"))
    number: Mapped[int] = mapped_column(Integer)  # compartment number within the kiosk
    ts: Mapped[datetime] = mapped_column(UTCDateTime())
    temp_c: Mapped[float | None] = mapped_column()
    setpoint_c: Mapped[float | None] = mapped_column()
    heater: Mapped[bool] = mapped_column(Boolean, default=False)


class TemperatureMinute(Base):
    """One compartment's readings of one minute, rolled up as they are stored; kept long after
    the raw readings are dropped. Sums and counts rather than means, so that merging the minute's
    batches is exact: mean = temp_sum_c / temp_count, heater share = heater_on / readings."""

    __tablename__ = "temperature_minutes"

    kiosk_id: Mapped[int] = mapped_column(ForeignKey("kiosks.id"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    minute: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)  # its first instant
    temp_min_c: Mapped[float | None] = mapped_column(Double)  # None: no valid reading
    temp_max_c: Mapped[float | None] = mapped_column(Double)
    temp_sum_c: Mapped[float] = mapped_column(Double, default=0.0)
    temp_count: Mapped[int] = mapped_column(Integer, default=0)  # readings with a temperature
    readings: Mapped[int] = mapped_column(Integer, default=0)  # all readings, faulted included
    heater_on: Mapped[int] = mapped_column(Integer, default=0)  # readings with the heater on
    setpoint_c: Mapped[float | None] = mapped_column(Double)  # the minute's highest


class TemperatureBacklogBucket(Base):
    """A bucket of telemetry a kiosk's bridge kept while cut off (`contract.TelemetryMinutes`),
    stored. Written in the same transaction as the bucket's readings and minutes: MQTT delivers
    at least once, and a bucket that comes again finds its row and is not stored twice. Kept as
    long as the raw readings."""

    __tablename__ = "temperature_backlog_buckets"

    kiosk_id: Mapped[int] = mapped_column(ForeignKey("kiosks.id"), primary_key=True)
    minute: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)  # its first instant
    seconds: Mapped[float] = mapped_column(Double, primary_key=True)  # its width
    stored_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
