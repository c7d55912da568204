"""Bodies of the kiosk screen's endpoints."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field

from locker_service.bounds import Text


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

    courier_code: Text = Field(min_length=1, max_length=64)
    pin: Text = Field(min_length=4, max_length=12)
    order_ref: Text = Field(min_length=1, max_length=128)


class DropoffAnswer(BaseModel):
    compartment: int
    order_id: uuid.UUID
    state: str
    message: str


class PickupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Text = Field(min_length=1, max_length=32, description="the 8-digit fallback code")


class PickupAnswer(BaseModel):
    compartment: int
    message: str
