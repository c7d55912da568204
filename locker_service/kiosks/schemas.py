"""Bodies of the kiosk screen's endpoints."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field


class KioskMe(BaseModel):
    code: str
    name: str
    site_code: str
    site_name: str
    online: bool
    kill_switch_engaged: bool
    compartments_total: int
    compartments_free: int


class DropoffRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    courier_code: str = Field(min_length=1, max_length=64)
    pin: str = Field(min_length=4, max_length=12)
    order_ref: str = Field(min_length=1, max_length=128)


class DropoffAnswer(BaseModel):
    compartment: int
    order_id: uuid.UUID
    state: str
    message: str


class PickupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=32, description="the 8-digit fallback code")


class PickupAnswer(BaseModel):
    compartment: int
    message: str
