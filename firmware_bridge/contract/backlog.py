"""Telemetry a bridge kept while it was cut off, sent once it can: one bucket of time a message.

While a bridge cannot reach the service (its broker link down, or the service silent: docs/adr
/0077), each telemetry reading it would have published is folded into its bucket on the kiosk's
disk: per compartment the lowest, mean and highest temperature and how many readings had one.
Back in touch, it sends the buckets oldest first on `lockers/v1/<kiosk>/telemetry/minutes`
(QoS 1, not retained) and forgets each only once the broker acknowledged it, so the food's
temperature record has no hole where it matters most.

A bucket is `seconds` of real time from `minute` (UTC): 60 s in production, starting on the
minute, so a bucket is one minute of the service's rollups; a bridge run with a time scale has
narrower buckets. MQTT delivers at least once: the service stores a bucket once however often
it comes, by (kiosk, minute, seconds).
"""

from __future__ import annotations

from pydantic import AwareDatetime, Field, model_validator

from firmware_bridge.contract.payloads import CompartmentNumber, WireModel

# The mean of readings lies between their min and max; summing floats may put it a hair outside.
MEAN_TOLERANCE_C = 0.001


class BucketReading(WireModel):
    """One compartment over one bucket. The temperatures are those of the `count` readings that
    had one; a compartment whose sensor read open or shorted all along has none (`faulted`)."""

    n: CompartmentNumber
    min_c: float | None
    mean_c: float | None
    max_c: float | None
    count: int = Field(ge=0)  # readings with a temperature
    setpoint_c: float | None  # the bucket's highest: it was holding if it held at all
    faulted: int = Field(default=0, ge=0)  # readings without a temperature (a sensor fault)
    heater_on: int = Field(default=0, ge=0)  # readings with the heater on

    @model_validator(mode="after")
    def _adds_up(self) -> BucketReading:
        temps = (self.min_c, self.mean_c, self.max_c)
        if self.count == 0:
            if any(t is not None for t in temps):
                raise ValueError("temperatures given for a bucket of no reading with one")
            if self.faulted == 0:
                raise ValueError("a bucket reading folds at least one reading")
        elif self.min_c is None or self.mean_c is None or self.max_c is None:
            raise ValueError("min_c, mean_c and max_c are given when count is above 0")
        elif not (
            self.min_c - MEAN_TOLERANCE_C <= self.mean_c <= self.max_c + MEAN_TOLERANCE_C
            and self.min_c <= self.max_c
        ):
            raise ValueError("min_c <= mean_c <= max_c does not hold")
        if self.heater_on > self.count + self.faulted:
            raise ValueError("heater_on counts more readings than the bucket has")
        return self


class TelemetryMinutes(WireModel):
    """Published by the bridge on `telemetry/minutes`: one bucket it kept while cut off."""

    minute: AwareDatetime  # the bucket's first instant, UTC
    seconds: float = Field(gt=0, le=3600)  # its width in real seconds
    readings: list[BucketReading] = Field(min_length=1, max_length=255)

    @model_validator(mode="after")
    def _one_reading_per_compartment(self) -> TelemetryMinutes:
        numbers = [r.n for r in self.readings]
        if len(set(numbers)) != len(numbers):
            raise ValueError("a compartment appears twice in one bucket")
        return self
