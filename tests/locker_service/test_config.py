"""Settings: production refuses default secrets; durations scale; URLs get async drivers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from locker_service.config import DEFAULT_SECRET_KEY, Settings
from locker_service.db import normalise_url


def test_production_refuses_the_default_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKER_ENVIRONMENT", "production")
    monkeypatch.delenv("LOCKER_SECRET_KEY", raising=False)
    with pytest.raises(ValidationError, match="LOCKER_SECRET_KEY"):
        Settings()
    with pytest.raises(ValidationError, match="32 characters"):
        Settings(secret_key="short")
    assert Settings(secret_key="p" * 40).secret_key != DEFAULT_SECRET_KEY


def test_development_runs_with_the_default_secret() -> None:
    assert Settings(environment="development").secret_key == DEFAULT_SECRET_KEY


def test_every_duration_scales_with_the_time_scale() -> None:
    settings = Settings(time_scale=600)
    assert settings.scaled(settings.disinfection_s) == pytest.approx(3.0)
    assert settings.scaled(settings.reminder_after_s) == pytest.approx(3.0)
    with pytest.raises(ValidationError):
        Settings(time_scale=0)


def test_plain_database_urls_get_async_drivers() -> None:
    assert normalise_url("postgresql://u@h/db").drivername == "postgresql+asyncpg"
    assert normalise_url("sqlite:///./var/x.db").drivername == "sqlite+aiosqlite"
    assert normalise_url("sqlite+aiosqlite:///x.db").drivername == "sqlite+aiosqlite"


def test_hot_holding_never_below_the_food_safety_floor() -> None:
    with pytest.raises(ValidationError, match="floor"):
        Settings(hold_setpoint_c=55.0)
    assert Settings(hold_setpoint_c=70.0, hold_floor_c=60.0).hold_setpoint_c == 70.0


def test_leases_renew_within_their_ttl_and_ignore_the_time_scale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOCKER_TIME_SCALE", "60")
    settings = Settings()
    assert (settings.lease_renew_s, settings.lease_ttl_s) == (2.0, 10.0)  # wall clock, unscaled
    with pytest.raises(ValidationError, match="LOCKER_LEASE_RENEW_S"):
        Settings(lease_renew_s=10.0, lease_ttl_s=10.0)


def test_uv_irradiance_is_set_for_every_size_and_believable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOCKER_UV_IRRADIANCE_MW_CM2", '{"S": 0.2, "M": 0.1, "L": 0.05}')
    assert Settings().uv_irradiance_mw_cm2 == {"S": 0.2, "M": 0.1, "L": 0.05}
    monkeypatch.setenv("LOCKER_UV_IRRADIANCE_MW_CM2", '{"S": 0.2, "M": 0.1}')
    with pytest.raises(ValidationError, match="no UV-C irradiance for size L"):
        Settings()
    monkeypatch.setenv("LOCKER_UV_IRRADIANCE_MW_CM2", '{"S": 0.2, "M": 0, "L": 0.05}')
    with pytest.raises(ValidationError, match="more than 0"):
        Settings()
