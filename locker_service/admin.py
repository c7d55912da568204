"""`lockerctl` commands of the service: serve, migrate, and making sites, kiosks, merchants,
couriers and operators (each prints its credential once; only a hash is kept).

Imports only typer at module level: the service's stack loads when a command runs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from locker_service.config import Settings

T = TypeVar("T")


def _settings(database_url: str | None) -> Settings:
    from locker_service.config import Settings

    overrides: dict[str, Any] = {}
    if database_url:
        overrides["database_url"] = database_url
    return Settings(**overrides)


def _in_session(
    database_url: str | None, work: Callable[[AsyncSession, Settings], Awaitable[T]]
) -> T:
    """Run `work` in one transaction on the migrated database."""
    from locker_service.db import session_scope

    async def in_scope(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> T:
        async with session_scope(sessions) as session:
            return await work(session, settings)

    return _in_database(database_url, in_scope)


def _in_database(
    database_url: str | None,
    work: Callable[[async_sessionmaker[AsyncSession], Settings], Awaitable[T]],
) -> T:
    """Run `work` with sessions of the migrated database (it opens its own transactions)."""
    from locker_service.db import create_engine, create_sessionmaker
    from locker_service.errors import ServiceError
    from migrations import upgrade_async

    settings = _settings(database_url)

    async def run() -> T:
        await upgrade_async(settings.database_url, secret_key=settings.secret_key)
        engine = create_engine(settings.database_url)
        try:
            return await work(create_sessionmaker(engine), settings)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except ServiceError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None


DB_OPTION = typer.Option(
    None,
    "--database-url",
    help="[env LOCKER_DATABASE_URL; default sqlite+aiosqlite:///./var/locker.db]",
)
SITES_OPTION = typer.Option([], "--site", help="Site code (repeat for several); admins see all")


def proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's proxy-header options: X-Forwarded-* believed from LOCKER_TRUSTED_PROXIES only.

    uvicorn's own default believes them from 127.0.0.1, so anything on the service's host (or
    a proxy there that passes the header on unchanged) could name any client address, and each
    address gets its own pickup-throttling bucket."""
    trusted = settings.trusted_proxies.strip()
    if not trusted:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": trusted}


def serve(
    host: str | None = typer.Option(
        None, help="Listen address [env LOCKER_HOST; default 127.0.0.1]"
    ),
    port: int | None = typer.Option(None, help="Listen port [env LOCKER_PORT; default 8000]"),
    database_url: str | None = DB_OPTION,
    mqtt_url: str | None = typer.Option(
        None, help="mqtt://host:port [env LOCKER_MQTT_URL; default mqtt://127.0.0.1:1883]"
    ),
    time_scale: float | None = typer.Option(
        None, "--time-scale", help="Run N times faster [env LOCKER_TIME_SCALE; default 1]"
    ),
    log_level: str = typer.Option("info", help="Logging level"),
    access_log: bool = typer.Option(
        True,
        "--access-log/--no-access-log",
        envvar="LOCKER_ACCESS_LOG",
        help="Log every HTTP request (lockerctl up turns it off)",
    ),
) -> None:
    """Run the locker service (REST API, kiosk link, timers); migrates the database first."""
    import logging

    import uvicorn

    from locker_service import heap
    from locker_service.config import Settings
    from locker_service.db import PRIVATE_UMASK
    from locker_service.main import create_app

    os.umask(PRIVATE_UMASK)  # the SQLite database and anything else written here: ours only
    overrides: dict[str, Any] = {
        key: value
        for key, value in {
            "host": host,
            "port": port,
            "database_url": database_url,
            "mqtt_url": mqtt_url,
            "time_scale": time_scale,
        }.items()
        if value is not None
    }
    settings = Settings(**overrides)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings)
    heap.PAUSES.install()
    heap.settle()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level.lower(),
        access_log=access_log,
        timeout_graceful_shutdown=5,
        **proxy_options(settings),
    )


def migrate(database_url: str | None = DB_OPTION) -> None:
    """Bring the database schema to the newest version (alembic upgrade head)."""
    from migrations import upgrade

    settings = _settings(database_url)
    upgrade(settings.database_url, secret_key=settings.secret_key)
    typer.echo("database is at the newest schema")


def create_site(
    code: str = typer.Option(..., help="Short unique code, e.g. hq"),
    name: str = typer.Option(..., help="Shown to people"),
    timezone: str = typer.Option("UTC"),
    database_url: str | None = DB_OPTION,
) -> None:
    """Make a site (a building with one or more kiosks)."""
    from locker_service.sites import service

    made = _in_session(database_url, lambda s, _: service.create_site(s, code, name, timezone))
    typer.echo(f"site {code} created (id {made.id})")


def create_kiosk(
    site: str = typer.Option(..., help="Site code"),
    code: str = typer.Option(..., help="Kiosk id on MQTT, e.g. hq-lobby"),
    name: str = typer.Option(..., help="Shown to people"),
    layout: str = typer.Option("M:8", help="Compartment sizes in order, e.g. S:2,M:4,L:2"),
    unheated: str = typer.Option("", help="Numbers of compartments without heater, e.g. 1,2"),
    database_url: str | None = DB_OPTION,
) -> None:
    """Make a kiosk with its compartments; prints the kiosk screen's token once."""
    from locker_service.sites import service

    numbers = frozenset(int(n) for n in unheated.split(",") if n.strip())
    made = _in_session(
        database_url,
        lambda s, _: service.create_kiosk(s, site, code, name, layout, numbers),
    )
    typer.echo(f"kiosk {code} created (id {made.id})")
    typer.echo(f"kiosk token (shown once): {made.secret}")


MERCHANT_SITES_OPTION = typer.Option(
    [], "--site", help="Site code it may order into (repeat for several)"
)


def create_merchant(
    name: str = typer.Option(...),
    site: list[str] = MERCHANT_SITES_OPTION,
    database_url: str | None = DB_OPTION,
) -> None:
    """Make a merchant allowed to order into the given sites; prints its API key once."""
    from locker_service.sites import service

    made = _in_session(database_url, lambda s, _: service.create_merchant(s, name, site))
    typer.echo(
        f"merchant {name} created (id {made.id}), ordering into: {', '.join(site) or 'no site yet'}"
    )
    typer.echo(f"API key (shown once): {made.secret}")


def allow_site(
    merchant: int = typer.Option(..., help="Merchant id"),
    site: str = typer.Option(..., help="Site code"),
    revoke: bool = typer.Option(False, "--revoke", help="Stop new orders there instead"),
    database_url: str | None = DB_OPTION,
) -> None:
    """Allow a merchant to order into a site, or (--revoke) stop it; orders there go on."""
    from locker_service.sites import service

    _in_session(
        database_url,
        lambda s, _: service.set_merchant_site(s, merchant, site, allowed=not revoke),
    )
    verb = "may no longer order into" if revoke else "may order into"
    typer.echo(f"merchant {merchant} {verb} {site} (each replica within its credential cache)")


def set_food_profile(
    site: str = typer.Option(..., help="Site code"),
    profile: str = typer.Option(
        ..., help="us-fda, uk-fsa, cn or custom (the LOCKER_HOLD_* and LOCKER_FOOD_* settings)"
    ),
    database_url: str | None = DB_OPTION,
) -> None:
    """Choose the food-safety rules a site holds food under: its floor, setpoint, time limits
    and excursion rule. Food dropped off from now on gets the new deadline; food inside is
    checked against the new rules from its next check."""
    typer.echo(
        _in_session(database_url, lambda s, settings: _set_profile(s, settings, site, profile))
    )


async def _set_profile(session: AsyncSession, settings: Settings, site: str, name: str) -> str:
    from locker_service.foodsafety import profiles
    from locker_service.sites import service

    await service.set_food_profile(session, site, name)
    rules = profiles.nominal(settings, name)
    return (
        f"site {site}: {rules.name}, floor {rules.floor_c:g} °C, setpoint {rules.setpoint_c:g} °C, "
        f"{rules.cooking_limit_s / 3600:g} h from cooking, {rules.ready_limit_s / 3600:g} h "
        f"from ready, {rules.excursions_allowed} excursion(s) past {rules.grace_s / 60:g} min "
        "tolerated"
    )


def create_courier(
    code: str = typer.Option(..., help="What the courier types at the kiosk"),
    name: str = typer.Option(...),
    merchant: int | None = typer.Option(None, help="Merchant id: only its orders"),
    company: str | None = typer.Option(None, help="Delivery company"),
    pin: str | None = typer.Option(None, help="4-12 digits; generated when left out"),
    database_url: str | None = DB_OPTION,
) -> None:
    """Make a courier; prints the PIN once."""
    from locker_service.sites import service

    made = _in_session(
        database_url,
        lambda s, settings: service.create_courier(
            s, settings.secret_key, code, name, merchant, company, pin
        ),
    )
    typer.echo(f"courier {code} created (id {made.id})")
    typer.echo(f"PIN (shown once): {made.secret}")


OPERATOR_MERCHANTS_OPTION = typer.Option(
    [],
    "--merchant",
    help="Merchant id (repeat): an operator for merchants sees and acts on their orders only",
)


def create_operator(
    name: str = typer.Option(...),
    role: str = typer.Option("operator", help="viewer, operator or admin"),
    site: list[str] = SITES_OPTION,
    merchant: list[int] = OPERATOR_MERCHANTS_OPTION,
    database_url: str | None = DB_OPTION,
) -> None:
    """Make an operator for the dashboard; prints the token once. With --merchant, an
    operator for those merchants' orders, at --site or wherever they may order."""
    from locker_service.sites import service

    made = _in_session(
        database_url, lambda s, _: service.create_operator(s, name, role, site, merchant)
    )
    scope = f", for merchant(s) {', '.join(map(str, merchant))}" if merchant else ""
    typer.echo(f"operator {name} created (id {made.id}, {role}{scope})")
    typer.echo(f"operator token (shown once): {made.secret}")


ONCALL_URL_OPTION = typer.Option(
    [], "--url", help="Apprise URL told of each new alert and the digest (repeat)"
)
ESCALATION_URL_OPTION = typer.Option(
    [], "--escalation-url", help="Apprise URL told when an alert is not acknowledged in time"
)


def set_oncall(
    site: str = typer.Option(..., help="Site code"),
    url: list[str] = ONCALL_URL_OPTION,
    escalation_url: list[str] = ESCALATION_URL_OPTION,
    database_url: str | None = DB_OPTION,
) -> None:
    """Set who is told of a site's alerts (no --url: nobody). Each URL is checked: scheme on
    LOCKER_ONCALL_SCHEMES, no internal host outside LOCKER_NOTIFY_CONTACT_ALLOWED_NETWORKS."""
    from sqlalchemy import select

    from locker_service.errors import NotFound
    from locker_service.models import Site
    from locker_service.notifications.oncall_lists import set_oncall as write

    async def work(session: AsyncSession, settings: Settings) -> int:
        found = await session.scalar(select(Site).where(Site.code == site))
        if found is None:
            raise NotFound(f"no site {site}")
        await write(session, settings, found.id, url, escalation_url, operator_id=None)
        return found.id

    _in_session(database_url, work)
    typer.echo(f"site {site}: {len(url)} on-call URL(s), {len(escalation_url)} escalation URL(s)")


# -- HACCP records (locker_service/haccp) -------------------------------------------------------

HACCP = typer.Typer(
    help="HACCP records: each site's days, sealed and hash-chained; export and verify.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@HACCP.command("seal")
def haccp_seal(database_url: str | None = DB_OPTION) -> None:
    """Seal every site's days that are due now (the service does this every ten minutes;
    a day is due an hour after it ends in its site's time zone)."""

    async def work(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> int:
        from locker_service.haccp import service
        from locker_service.models import utcnow

        return await service.seal_due(sessions, settings, utcnow())

    typer.echo(f"sealed {_in_database(database_url, work)} day(s)")


@HACCP.command("export")
def haccp_export(
    site: str = typer.Option(..., help="Site code"),
    first: str = typer.Option(..., "--from", help="First day, YYYY-MM-DD"),
    last: str | None = typer.Option(None, "--to", help="Last day (default: --from)"),
    out: str = typer.Option(..., "--out", help="File to write (.csv or .pdf)"),
    database_url: str | None = DB_OPTION,
) -> None:
    """Write sealed days as CSV (checked by `lockerctl haccp verify --file`) or PDF."""
    from datetime import date
    from pathlib import Path

    try:
        start = date.fromisoformat(first)
        end = date.fromisoformat(last) if last else start
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    async def work(session: AsyncSession, _: Settings) -> tuple[str, list[Any]]:
        from locker_service.haccp import service
        from locker_service.sites.service import site_by_code

        found = await site_by_code(session, site)
        return found.name, await service.sealed_days(session, found.id, start, end)

    name, days = _in_session(database_url, work)
    if not days:
        typer.echo(f"error: no sealed day of site {site} from {start} to {end}", err=True)
        raise typer.Exit(1)
    path = Path(out)
    if path.suffix.lower() == ".pdf":
        from locker_service.haccp import pdf

        path.write_bytes(pdf.render(name, days))
    else:
        from locker_service.haccp.record import export_text

        path.write_bytes(export_text(days).encode("utf-8"))
    typer.echo(f"wrote {len(days)} day(s) of site {site} to {path}")


@HACCP.command("verify")
def haccp_verify(
    file: str | None = typer.Option(
        None, "--file", help="Check an exported CSV (alone, or against --site's database seals)"
    ),
    site: str | None = typer.Option(None, help="Site code (default: every site)"),
    database_url: str | None = DB_OPTION,
) -> None:
    """Check the HACCP chain: every day's seal matches its record and follows the day
    before. Names each day that fails; exits 1 if any does."""
    from pathlib import Path

    from locker_service.haccp.record import ExportError, check_chain, parse_export

    problems: list[str] = []
    if file is not None:
        try:
            days = parse_export(Path(file).read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, ExportError) as exc:
            typer.echo(f"{file}: not a HACCP export: {exc}", err=True)
            raise typer.Exit(1) from None
        problems += [f"{file}: {p}" for p in check_chain(days, first_prev=None)]
        if site is not None:
            problems += [f"{file}: {p}" for p in _against_database(database_url, site, days)]
        checked = f"{file}: {len(days)} day(s), {days[0].day} to {days[-1].day}"
    else:

        async def work(session: AsyncSession, _: Settings) -> dict[str, list[str]]:
            from locker_service.haccp import service
            from locker_service.sites.service import site_by_code

            if site is None:
                return await service.verify_all(session)
            found = await site_by_code(session, site)
            return {site: await service.verify_site(session, found.id)}

        found = _in_session(database_url, work)
        problems += [f"site {code}: {p}" for code, ps in found.items() for p in ps]
        checked = f"{len(found)} site(s) in the database"
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        typer.echo(f"FAILED: {checked}", err=True)
        raise typer.Exit(1)
    typer.echo(f"intact: {checked}")


def _against_database(database_url: str | None, site: str, days: list[Any]) -> list[str]:
    """A file re-sealed after a change passes its own check: compare with the database."""

    async def work(session: AsyncSession, _: Settings) -> dict[Any, str]:
        from locker_service.haccp import service
        from locker_service.sites.service import site_by_code

        found = await site_by_code(session, site)
        sealed = await service.sealed_days(session, found.id, days[0].day, days[-1].day)
        return {d.day: d.seal for d in sealed}

    sealed = _in_session(database_url, work)
    return [
        f"{d.day}: not the day sealed in the database" for d in days if sealed.get(d.day) != d.seal
    ]


def erase_purchaser(
    contact: str | None = typer.Option(
        None, help="Her contact exactly as given on her orders (e.g. mailto://ada@example.com)"
    ),
    order: str | None = typer.Option(None, help="One order's id"),
    database_url: str | None = DB_OPTION,
) -> None:
    """A purchaser's request to be forgotten: her name and contact erased from her ended orders,
    their messages and alerts; what the orders were (states, times, openings, food records)
    stays. An order still in progress keeps them until it ends, then the retention erases it."""
    import uuid

    from locker_service.orders.privacy import erase_purchaser as erase

    if (contact is None) == (order is None):
        typer.echo("error: give --contact or --order", err=True)
        raise typer.Exit(2)
    try:
        order_id = uuid.UUID(order) if order is not None else None
    except ValueError:
        typer.echo(f"error: {order!r} is not an order id", err=True)
        raise typer.Exit(2) from None

    async def work(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> Any:
        engine = sessions.kw["bind"]
        return await erase(engine, contact=contact, order_id=order_id)

    done = _in_database(database_url, work)
    typer.echo(f"erased the purchaser's name and contact from {len(done.erased)} ended order(s)")
    for kept in done.in_progress:
        typer.echo(
            f"order {kept} is in progress: kept until it ends (she may still be told of her "
            "food), then erased by the retention"
        )


# -- keys and tokens (locker_service/credentials) -----------------------------------------------

KEYS = typer.Typer(
    help="Keys and tokens of merchants, kiosks and operators: list, create, rotate, revoke.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
MERCHANT_OWNER = typer.Option(None, "--merchant", help="Merchant id")
KIOSK_OWNER = typer.Option(None, "--kiosk", help="Kiosk code")
OPERATOR_OWNER = typer.Option(None, "--operator", help="Operator id")


def _owner_of(merchant: int | None, kiosk: str | None, operator: int | None) -> tuple[str, str]:
    given = [
        (kind, str(name))
        for kind, name in (("merchant", merchant), ("kiosk", kiosk), ("operator", operator))
        if name is not None
    ]
    if len(given) != 1:
        typer.echo("error: give one of --merchant, --kiosk or --operator", err=True)
        raise typer.Exit(2)
    return given[0]


def _key_line(key: Any) -> str:
    from locker_service.credentials import rules
    from locker_service.models import utcnow

    def when(value: Any) -> str:
        return value.isoformat(timespec="minutes") if value is not None else "-"

    return (
        f"{key.id:>6}  {key.prefix or '(unknown)':<12} {rules.status(key, utcnow()):<8} "
        f"created {when(key.created_at)}  expires {when(key.expires_at)}  "
        f"last used {when(key.last_used_at)}  {key.label or ''}"
    ).rstrip()


@KEYS.command("list")
def keys_list(
    merchant: int | None = MERCHANT_OWNER,
    kiosk: str | None = KIOSK_OWNER,
    operator: int | None = OPERATOR_OWNER,
    database_url: str | None = DB_OPTION,
) -> None:
    """Every key of one merchant, kiosk or operator: id, prefix, status, dates, label."""
    from locker_service.credentials import store

    kind, name = _owner_of(merchant, kiosk, operator)

    async def work(session: AsyncSession, _: Settings) -> list[str]:
        owner = await store.owner_by_name(session, kind, name)  # type: ignore[arg-type]
        return [_key_line(key) for key in await store.list_keys(session, owner)]

    for line in _in_session(database_url, work):
        typer.echo(line)


@KEYS.command("create")
def keys_create(
    merchant: int | None = MERCHANT_OWNER,
    kiosk: str | None = KIOSK_OWNER,
    operator: int | None = OPERATOR_OWNER,
    label: str | None = typer.Option(None, help="What the key is for"),
    expires_in_days: float | None = typer.Option(None, help="It stops after this (default: never)"),
    database_url: str | None = DB_OPTION,
) -> None:
    """A new key beside the owner's others; prints it once."""
    from datetime import timedelta

    from locker_service.credentials import store
    from locker_service.models import utcnow

    kind, name = _owner_of(merchant, kiosk, operator)
    expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days is not None else None

    async def work(session: AsyncSession, _: Settings) -> tuple[str, str]:
        owner = await store.owner_by_name(session, kind, name)  # type: ignore[arg-type]
        issued = await store.issue(session, owner, label=label, expires_at=expires_at)
        return _key_line(issued.key), issued.secret

    line, secret = _in_session(database_url, work)
    typer.echo(line)
    typer.echo(f"key (shown once): {secret}")


@KEYS.command("rotate")
def keys_rotate(
    key_id: int = typer.Argument(..., help="The key to replace (its id in `keys list`)"),
    overlap_hours: float = typer.Option(24.0, help="How long the old key keeps working"),
    database_url: str | None = DB_OPTION,
) -> None:
    """A new key for the same owner; the old one works --overlap-hours more, then stops."""
    from datetime import timedelta

    from locker_service.credentials import store

    async def work(session: AsyncSession, _: Settings) -> tuple[str, str, str]:
        issued = await store.rotate(session, key_id, overlap=timedelta(hours=overlap_hours))
        assert issued.replaces is not None
        return _key_line(issued.replaces), _key_line(issued.key), issued.secret

    old, new, secret = _in_session(database_url, work)
    typer.echo(f"old: {old}")
    typer.echo(f"new: {new}")
    typer.echo(f"key (shown once): {secret}")


@KEYS.command("revoke")
def keys_revoke(
    key_id: int = typer.Argument(..., help="The key to stop (its id in `keys list`)"),
    database_url: str | None = DB_OPTION,
) -> None:
    """Stop a key now (a merchant's: on each replica within LOCKER_CREDENTIAL_CACHE_S)."""
    from locker_service.credentials import store

    async def work(session: AsyncSession, _: Settings) -> str:
        return _key_line(await store.revoke(session, key_id))

    typer.echo(_in_session(database_url, work))


COMMANDS: dict[str, Callable[..., None]] = {
    "serve": serve,
    "migrate": migrate,
    "create-site": create_site,
    "create-kiosk": create_kiosk,
    "create-merchant": create_merchant,
    "allow-site": allow_site,
    "set-food-profile": set_food_profile,
    "create-courier": create_courier,
    "create-operator": create_operator,
    "set-oncall": set_oncall,
    "erase-purchaser": erase_purchaser,
}
