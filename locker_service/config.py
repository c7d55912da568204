"""Settings of the locker service: one pydantic-settings class, environment prefix `LOCKER_`.

Every duration here is nominal (as in production); `scaled()` divides by `time_scale` so a demo
or a test sees a 30-minute disinfection cycle in seconds (docs/contracts/README.md, "Time").
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from firmware_bridge.contract.broker import BrokerEndpoint

DEFAULT_SECRET_KEY = "insecure-development-secret-change-me"  # refused when environment=production
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/locker.db"
DEFAULT_CONTACT_SCHEMES = ("mailto", "mailtos", "tgram", "discord", "wecombot", "twilio")
# Where an admin may point a site's on-call (ADR 0045): e-mail, the paging and chat services
# Apprise talks to at their vendors' fixed addresses, and HTTPS webhooks (an incident tool's
# inbound hook). Plain-HTTP webhooks only when the operator adds them.
DEFAULT_ONCALL_SCHEMES = (
    "mailto", "mailtos", "jsons", "forms", "pagerduty", "opsgenie", "slack", "msteams",
    "tgram", "discord", "wecombot", "dingtalk", "ntfys",
)  # fmt: skip


def _default_replica_id(database_url: str) -> str:
    """Host name and a digest of the database URL: the same after a restart, so the MQTT session
    (and the kiosk events the broker queued in it while the service was down) is picked up
    again; different for two services on one host with different databases. Two replicas of
    one deployment on the same host must set LOCKER_REPLICA_ID each."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:48] or "host"
    return f"{host}-{hashlib.sha256(database_url.encode()).hexdigest()[:8]}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOCKER_", env_file=".env", extra="ignore")

    environment: Literal["development", "production", "test"] = "development"
    database_url: str = DEFAULT_DATABASE_URL
    # Keys the HMACs behind pickup tokens, fallback codes and stored credential hashes.
    secret_key: str = DEFAULT_SECRET_KEY
    time_scale: float = Field(default=1.0, gt=0)
    host: str = "127.0.0.1"
    port: int = 8000
    # Addresses (comma-separated IPs or CIDR networks, "*" for any) of reverse proxies whose
    # X-Forwarded-For / X-Forwarded-Proto are believed. Empty: none, the peer is the client, so
    # a caller cannot pick its own address for pickup throttling by sending the header.
    trusted_proxies: str = ""
    public_base_url: str = "http://127.0.0.1:8000"
    migrate_on_start: bool = True

    # MQTT (used by the kiosk link)
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    mqtt_tls_ca: str | None = None
    mqtt_protocol: str = "auto"  # "auto" (5, else 3.1.1), "5" or "3.1.1"
    mqtt_keepalive_s: int = 30
    replica_id: str = ""  # empty: derived from the host name and database (see above)
    kiosk_link_enabled: bool = True
    command_timeout_s: float = 10.0  # unlock: lock pulse + two board polls + network, with margin
    # Kiosk leases (ADR 0044): wall-clock infrastructure, never scaled by LOCKER_TIME_SCALE.
    # A replica renews every lease_renew_s; one silent for lease_ttl_s is taken for dead and
    # its kiosks move. 2 s keeps a handover (and a new kiosk's first lease) to about 2 s;
    # 10 s rides out five missed renewals (a database failover, a long pause under load)
    # before a live replica loses its kiosks, and bounds a dead replica's kiosks' outage.
    lease_ttl_s: float = Field(default=10.0, gt=0)
    lease_renew_s: float = Field(default=2.0, gt=0)
    # PostgreSQL ends a session left idle inside a transaction this long (real seconds; 0: never)
    # and frees its locks: a replica frozen mid-transaction (SIGSTOP, a paused VM) would
    # otherwise hold the lease row it shares and stall its kiosks' takeover for as long as it
    # sleeps. The service's transactions never wait on anything but the database.
    db_idle_in_transaction_s: float = Field(default=15.0, ge=0)
    # The main pool's connections to PostgreSQL: kept open, and lent beyond those at a peak. A
    # replica holds at most db_pool_size + db_max_overflow + 15 (the attended and lease pools'
    # 14, the HACCP sealing's one; the live relay listens on one of the main pool's). The sum
    # over every replica and tool must stay under the server's max_connections (100 by
    # default), or a busy moment is refused with "too many clients".
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=20, ge=0)

    # The story
    hold_setpoint_c: float = 65.0  # hot holding default
    hold_floor_c: float = 60.0  # food-safety floor: below it longer than the grace is an alert
    hold_floor_grace_s: float = 300.0
    hold_ceiling_c: float = 80.0
    disinfection_s: float = 1800.0  # the nominal 30-minute UV-C cycle
    cleaning_s: float = 300.0  # the short cycle after pickup
    cycle_watchdog_margin_s: float = 300.0  # a cycle not reported done by then is an alert
    # Proof of disinfection (docs/adr/0073). Each compartment size's rated UV-C irradiance at
    # its farthest surface (mW/cm2, JSON in the environment); a cycle whose lamp on-time gives
    # less than `uv_min_dose_fraction` of the full commanded cycle's dose is short and runs
    # again. A lamp that has shone `uv_lamp_warn_fraction` of its rated life is an alert.
    uv_irradiance_mw_cm2: dict[str, float] = Field(
        default_factory=lambda: {"S": 0.10, "M": 0.08, "L": 0.06}
    )
    uv_min_dose_fraction: float = Field(default=0.95, gt=0, le=1)
    uv_lamp_rated_hours: float = Field(default=9000.0, gt=0)
    uv_lamp_warn_fraction: float = Field(default=0.9, gt=0, le=1)
    # This many short cycles in a row since the lamp was fitted: the lamp has failed. No cycle
    # runs again until it is marked replaced; everyone waiting on it is told (ADR 0073).
    uv_max_short_cycles: int = Field(default=3, ge=1, le=20)
    # A kiosk's report that a cycle ended is believed from the cycle's end time minus this
    # (nominal seconds, ADR 0037). The service records a cycle before commanding it, so the
    # board's cycle ends after the recorded end; only its timer running fast (crystal, 100 ppm:
    # 0.2 s in 30 min) or the host clock stepped by NTP can make a true report early. 5 s covers
    # both and is 0.3 % of the cycle: a report one second into it is plainly impossible.
    cycle_end_tolerance_s: float = Field(default=5.0, ge=0)
    dropoff_door_timeout_s: float = 300.0  # courier has this long to put the food in and shut
    door_left_open_s: float = 60.0  # any other door still open this long: staff are told
    dropoff_window_s: float = 24 * 3600.0  # an order never dropped off expires after this
    hold_limit_s: float = 4 * 3600.0  # not collected by then: expired (food-safety clock)
    # The `custom` food-safety profile is the hold settings above and these (nominal seconds;
    # locker_service/foodsafety/profiles.py has the jurisdictions' own): the limit from cooking
    # (or the drop-off), the excursions below the floor tolerated past the grace and how long
    # each may last, and how long the food may go with no temperature reading.
    food_cooking_limit_s: float = Field(default=4 * 3600.0, gt=0)
    food_excursions_allowed: int = Field(default=0, ge=0)
    food_excursion_limit_s: float = Field(default=0.0, ge=0)
    food_unknown_limit_s: float = Field(default=900.0, gt=0)
    food_warmup_s: float = Field(default=1800.0, gt=0)  # to reach the floor after a drop-off
    food_cn_cooking_limit_s: float = Field(default=4 * 3600.0, gt=0)  # `cn`: the site's to set
    food_check_s: float = Field(default=60.0, gt=0)  # how often a held order's food is checked
    # A cooked_at that leaves less than the cycle plus this for the purchaser is refused.
    food_min_pickup_window_s: float = Field(default=1800.0, ge=0)
    reminder_after_s: float = 1800.0  # purchaser reminded when food has waited 30 minutes
    timers_enabled: bool = True
    timer_poll_s: float = 1.0  # real seconds between claims of due timers (not scaled)
    timer_lease_s: float = 60.0  # a claimed timer is retried if its worker died holding it

    # A scan is a person at the kiosk now. One older than this (the bridge replaying its disk
    # buffer after an outage, or the broker delivering a queued one after a service restart)
    # opens nothing: it is recorded, audited and counted. Real seconds, never scaled: a person
    # at the kiosk does not get faster under LOCKER_TIME_SCALE. 5 s covers the bridge -> broker
    # -> service path on a loaded host; the skew allowance covers kiosk PC and service clocks
    # that disagree a little (NTP keeps them well inside it) in either direction.
    scan_max_age_s: float = Field(default=5.0, gt=0)
    scan_clock_skew_s: float = Field(default=2.0, ge=0)

    # Each kiosk's bridge is sent what it needs to decide pickups alone (docs/adr/0077): at
    # once when it changes, and at least this often (real seconds, never scaled); a bridge that
    # hears nothing for three of these counts the service as lost and decides pickups itself.
    # 0: nothing is sent, and bridges never decide alone.
    offline_supply_refresh_s: float = Field(default=30.0, ge=0, le=3600)

    # A merchant API key found in the database is trusted this long (real seconds, not scaled)
    # before it is looked up again: the bound on how long a revoked key still works. The same
    # bound applies to the site code -> id lookup of order creation. 0: no cache.
    credential_cache_s: float = Field(default=5.0, ge=0)

    # Throttling of tries to open (nominal seconds; docs/adr/0039). 8-digit codes, per source:
    # a few typos are free, then the wait doubles from 2 s up to the source's maximum.
    pickup_source_window_s: float = Field(default=600.0, gt=0)
    pickup_source_free_failures: int = Field(default=5, ge=0)
    pickup_source_max_delay_s: float = Field(default=120.0, gt=0)
    # 8-digit codes, per kiosk over a day: a budget of free failures, then one failure per
    # spacing. With 12 ready codes the guesser's daily chance is 12 * (40 + 86400 / 120) / 1e8
    # = 9.1e-5, under 1e-4; the budget's end raises `kiosk_under_attack`.
    pickup_kiosk_free_failures_per_day: int = Field(default=40, ge=0)
    pickup_kiosk_spacing_s: float = Field(default=120.0, gt=0)
    # Refusals of one order's own code (used, expired): a code passed around.
    pickup_order_free_failures: int = Field(default=5, ge=0)
    pickup_order_lockout_s: float = Field(default=900.0, gt=0)
    # Courier logins: their own failures, per courier id and per kiosk; never a pickup's.
    courier_free_failures: int = Field(default=5, ge=0)
    courier_lockout_s: float = Field(default=900.0, gt=0)
    courier_kiosk_free_failures: int = Field(default=20, ge=0)

    # Purchaser notifications (Apprise URLs). A contact that is an e-mail address goes through
    # notify_email_url, a phone number through notify_sms_url ("{to}" is replaced by the
    # contact); a contact that is itself an Apprise URL (mailtos://..., tgram://...) is used as
    # is when notify_contact_urls is on, its scheme is in notify_contact_schemes and its host
    # resolves to no internal address outside notify_contact_allowed_networks (ADR 0038).
    notify_enabled: bool = True
    notify_email_url: str | None = None  # e.g. mailtos://user:pw@smtp.example.com?to={to}
    notify_sms_url: str | None = None  # e.g. an SMS gateway: twilio://sid:token@+15550001111/{to}
    notify_contact_urls: bool = True
    # Comma-separated. E-mail, and chat/SMS plugins that talk only to their vendor's public API;
    # never webhooks (json://, form://, ...), which post wherever the merchant points them.
    notify_contact_schemes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_CONTACT_SCHEMES)
    )
    # Comma-separated CIDR networks a contact URL may reach although they are not global
    # (loopback, private, link-local), e.g. "127.0.0.1/32" for a webhook on this machine.
    notify_contact_allowed_networks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    notify_max_attempts: int = Field(default=8, ge=1)  # about 10 minutes of retries with backoff
    notify_backoff_s: float = Field(default=5.0, gt=0)  # first retry delay (real s); doubles
    notify_backoff_max_s: float = Field(default=300.0, gt=0)
    notify_poll_s: float = Field(default=0.5, gt=0)  # real seconds between outbox polls
    notify_lease_s: float = Field(default=120.0, gt=0)  # a send taking longer is retried
    notify_send_timeout_s: float = Field(default=30.0, gt=0)
    # Merchants' webhooks (ADR 0072): real seconds. 20 attempts with backoff doubling from 5 s
    # to an hour are about 10 hours of retries before a delivery goes to the dead letters (the
    # doubling reaches the hour in 1.4 hours, then nine hourly waits).
    webhook_max_attempts: int = Field(default=20, ge=1)
    webhook_backoff_s: float = Field(default=5.0, gt=0)
    webhook_backoff_max_s: float = Field(default=3600.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_poll_s: float = Field(default=0.5, gt=0)
    webhook_lease_s: float = Field(default=60.0, gt=0)  # a send taking longer is retried
    # Delivered and dead deliveries are kept this long (the merchant's log, and the dead ones
    # to redeliver), then deleted; open ones never are.
    webhook_retention_days: float = Field(default=30.0, gt=0)
    # Comma-separated CIDR networks a merchant's webhook may reach although they are not global
    # (and where plain http is allowed), e.g. "127.0.0.1/32" for a receiver on this machine.
    webhook_allowed_networks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Temperature readings older than this are deleted (wall-clock days, not scaled).
    telemetry_retention_days: float = Field(default=30.0, gt=0)
    # A purchaser's name and contact are blanked this long after her order ended (ADR 0067).
    purchaser_data_retention_days: float = Field(default=30.0, gt=0)

    # Alerts pushed to each site's on-call (ADR 0045). The URLs are set per site by an admin
    # (API or `lockerctl set-oncall`); their scheme must be on this comma-separated list, and
    # their host must resolve to global addresses only, unless inside one of
    # notify_contact_allowed_networks (the same networks every notification URL may reach).
    oncall_schemes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_ONCALL_SCHEMES)
    )
    # An alert not acknowledged this long after it was raised goes to the escalation list
    # (nominal seconds, scaled like the story's clocks).
    oncall_escalate_after_s: float = Field(default=900.0, gt=0)
    # The daily digest of each site, at this hour of the site's own time zone (wall clock, not
    # scaled: a person reads it with the morning's coffee); -1: no digest.
    oncall_digest_hour: int = Field(default=8, ge=-1, le=23)
    oncall_digest_poll_s: float = Field(default=60.0, gt=0)  # real seconds between looks

    @field_validator(
        "notify_contact_schemes",
        "notify_contact_allowed_networks",
        "webhook_allowed_networks",
        "oncall_schemes",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("notify_contact_allowed_networks", "webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)  # a ValueError names the bad one
        return value

    @field_validator("uv_irradiance_mw_cm2")
    @classmethod
    def _irradiance(cls, value: dict[str, float]) -> dict[str, float]:
        missing = {"S", "M", "L"} - set(value)
        if missing:
            raise ValueError(f"no UV-C irradiance for size {', '.join(sorted(missing))}")
        if any(not 0 < v < 100 for v in value.values()):
            raise ValueError("a UV-C irradiance is more than 0 and less than 100 mW/cm2")
        return value

    @model_validator(mode="after")
    def _stable_replica_id(self) -> Settings:
        if not self.replica_id:
            self.replica_id = _default_replica_id(self.database_url)
        return self

    @model_validator(mode="after")
    def _broker_settings_fit(self) -> Settings:
        # The bridge's rules, from the contract's one client setup: refused here, at start,
        # rather than when the kiosk link first connects.
        BrokerEndpoint.parse(self.mqtt_url, ca_file=self.mqtt_tls_ca)
        return self

    @model_validator(mode="after")
    def _renew_within_the_ttl(self) -> Settings:
        if self.lease_renew_s >= self.lease_ttl_s:
            raise ValueError(
                f"LOCKER_LEASE_RENEW_S ({self.lease_renew_s}) must be below "
                f"LOCKER_LEASE_TTL_S ({self.lease_ttl_s})"
            )
        return self

    @model_validator(mode="after")
    def _hold_above_the_floor(self) -> Settings:
        if self.hold_setpoint_c < self.hold_floor_c:
            raise ValueError(
                f"LOCKER_HOLD_SETPOINT_C ({self.hold_setpoint_c}) is below the food-safety floor "
                f"LOCKER_HOLD_FLOOR_C ({self.hold_floor_c})"
            )
        return self

    @model_validator(mode="after")
    def _refuse_default_secret_in_production(self) -> Settings:
        if self.environment == "production" and self.secret_key == DEFAULT_SECRET_KEY:
            raise ValueError("LOCKER_SECRET_KEY must be set in production")
        if self.environment == "production" and len(self.secret_key) < 32:
            raise ValueError("LOCKER_SECRET_KEY must be at least 32 characters in production")
        return self

    def scaled(self, nominal_s: float) -> float:
        """Real seconds for a nominal duration under LOCKER_TIME_SCALE."""
        return nominal_s / self.time_scale


@lru_cache
def get_settings() -> Settings:
    return Settings()
