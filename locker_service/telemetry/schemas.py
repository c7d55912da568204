"""Answers of the temperature history endpoint."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class TemperaturePoint(BaseModel):
    ts: datetime
    temp_c: float | None  # None: the sensor was faulted for the whole point
    setpoint_c: float | None
    heater: bool


class TemperatureHistory(BaseModel):
    compartment_id: int
    kiosk: str
    number: int
    start: datetime
    end: datetime
    readings_total: int  # stored readings in the window
    points: list[TemperaturePoint]  # at most max_points: readings averaged per time slice
