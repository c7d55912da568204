"""Making sites, kiosks with their compartments, merchants, couriers and operators.

Each maker returns the credential it created in clear exactly once; only its hash is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.config import Settings
from locker_service.credentials import store as keys
from locker_service.errors import Conflict, NotFound, Unprocessable
from locker_service.foodsafety import profiles
from locker_service.foodsafety.profiles import Profile
from locker_service.models import (
    Compartment,
    Courier,
    Kiosk,
    Merchant,
    Operator,
    Site,
    merchant_sites,
    operator_merchants,
    operator_sites,
)
from locker_service.security import hash_pin, new_pin

ROLES = ("viewer", "operator", "admin")


@dataclass(frozen=True)
class Made:
    id: int
    secret: str | None  # the token, API key or PIN, shown once


def parse_layout(layout: str) -> list[str]:
    """`"S:2,M:4,L:2"` -> sizes of compartments 1..n in order."""
    sizes: list[str] = []
    for part in layout.split(","):
        size, _, count = part.strip().partition(":")
        size = size.strip().upper()
        if size not in ("S", "M", "L") or not count.strip().isdigit():
            raise Unprocessable(f"layout part {part!r} is not SIZE:COUNT (S, M or L)")
        sizes.extend([size] * int(count))
    if not 1 <= len(sizes) <= 255:
        raise Unprocessable("a kiosk has 1 to 255 compartments")
    return sizes


async def site_by_code(session: AsyncSession, code: str) -> Site:
    site = await session.scalar(select(Site).where(Site.code == code))
    if site is None:
        raise NotFound(f"no site {code!r}")
    return site


async def _first_key(session: AsyncSession, owner: keys.Owner) -> str:
    return (await keys.issue(session, owner, label="first key")).secret


async def create_site(session: AsyncSession, code: str, name: str, timezone: str = "UTC") -> Made:
    if await session.scalar(select(Site.id).where(Site.code == code)):
        raise Conflict(f"site {code!r} exists")
    site = Site(code=code, name=name, timezone=timezone, kill_switch_engaged=False)
    session.add(site)
    await session.flush()
    return Made(site.id, None)


async def create_kiosk(
    session: AsyncSession,
    site_code: str,
    code: str,
    name: str,
    layout: str,
    unheated: frozenset[int] = frozenset(),
) -> Made:
    site = await site_by_code(session, site_code)
    if await session.scalar(select(Kiosk.id).where(Kiosk.code == code)):
        raise Conflict(f"kiosk {code!r} exists")
    kiosk = Kiosk(site_id=site.id, code=code, name=name, online=False)
    session.add(kiosk)
    await session.flush()
    token = await _first_key(session, keys.Owner("kiosk", kiosk.id))
    for number, size in enumerate(parse_layout(layout), start=1):
        session.add(
            Compartment(
                kiosk_id=kiosk.id,
                number=number,
                size=size,
                heated=number not in unheated,
                state="available",
                version=1,
            )
        )
    await session.flush()
    return Made(kiosk.id, token)


async def create_merchant(session: AsyncSession, name: str, site_codes: Sequence[str] = ()) -> Made:
    """A merchant with its API key, allowed to order into `site_codes` (and nowhere else)."""
    sites = [await site_by_code(session, code) for code in site_codes]
    merchant = Merchant(name=name)
    session.add(merchant)
    await session.flush()
    key = await _first_key(session, keys.Owner("merchant", merchant.id))
    for site in sites:
        await session.execute(
            insert(merchant_sites).values(merchant_id=merchant.id, site_id=site.id)
        )
    return Made(merchant.id, key)


async def set_merchant_site(
    session: AsyncSession, merchant_id: int, site_code: str, *, allowed: bool
) -> None:
    """Allow a merchant to order into a site, or stop it (orders already there go on)."""
    site = await site_by_code(session, site_code)
    if await session.get(Merchant, merchant_id) is None:
        raise NotFound(f"no merchant {merchant_id}")
    await session.execute(
        delete(merchant_sites).where(
            merchant_sites.c.merchant_id == merchant_id, merchant_sites.c.site_id == site.id
        )
    )
    if allowed:
        await session.execute(
            insert(merchant_sites).values(merchant_id=merchant_id, site_id=site.id)
        )


async def merchant_site_ids(session: AsyncSession, merchant_id: int) -> frozenset[int]:
    """The sites a merchant may order into."""
    rows = await session.scalars(
        select(merchant_sites.c.site_id).where(merchant_sites.c.merchant_id == merchant_id)
    )
    return frozenset(rows.all())


async def create_courier(
    session: AsyncSession,
    secret_key: str,
    code: str,
    name: str,
    merchant_id: int | None = None,
    company: str | None = None,
    pin: str | None = None,
) -> Made:
    if await session.scalar(select(Courier.id).where(Courier.code == code)):
        raise Conflict(f"courier {code!r} exists")
    if merchant_id is not None and await session.get(Merchant, merchant_id) is None:
        raise NotFound(f"no merchant {merchant_id}")
    pin = pin or new_pin()
    if not pin.isdigit() or not 4 <= len(pin) <= 12:
        raise Unprocessable("a PIN has 4 to 12 digits")
    courier = Courier(
        code=code,
        name=name,
        pin_hash=hash_pin(secret_key, code, pin),
        merchant_id=merchant_id,
        company=company,
    )
    session.add(courier)
    await session.flush()
    return Made(courier.id, pin)


async def create_operator(
    session: AsyncSession,
    name: str,
    role: str,
    site_codes: Sequence[str],
    merchant_ids: Sequence[int] = (),
) -> Made:
    """An operator of `site_codes`; with `merchant_ids`, an operator for those merchants: it
    sees and acts on their orders only, at the given sites or (none given) wherever they may
    order (ADR 0075)."""
    if role not in ROLES:
        raise Unprocessable(f"role must be one of {', '.join(ROLES)}")
    if merchant_ids and role == "admin":
        raise Unprocessable("an admin sees every order: give an operator or viewer role")
    if role != "admin" and not site_codes and not merchant_ids:
        raise Unprocessable("a viewer or operator needs at least one site or merchant")
    sites = [await site_by_code(session, code) for code in site_codes]
    for merchant_id in merchant_ids:
        if await session.get(Merchant, merchant_id) is None:
            raise NotFound(f"no merchant {merchant_id}")
    operator = Operator(name=name, role=role)
    session.add(operator)
    await session.flush()
    token = await _first_key(session, keys.Owner("operator", operator.id))
    for site in sites:
        await session.execute(
            insert(operator_sites).values(operator_id=operator.id, site_id=site.id)
        )
    for merchant_id in sorted(set(merchant_ids)):
        await session.execute(
            insert(operator_merchants).values(operator_id=operator.id, merchant_id=merchant_id)
        )
    return Made(operator.id, token)


async def food_profile(session: AsyncSession, settings: Settings, site_id: int) -> Profile:
    """The food-safety profile the site holds food under, in real seconds."""
    name = await session.scalar(select(Site.food_safety_profile).where(Site.id == site_id))
    return profiles.for_site(settings, name or profiles.DEFAULT_PROFILE)


async def set_food_profile(session: AsyncSession, site_code: str, name: str) -> Site:
    """Choose the site's profile; orders already dropped off keep the deadline they were given,
    their watch follows the new rules from the next check."""
    if name not in profiles.PROFILE_NAMES:
        raise Unprocessable(
            f"unknown food-safety profile {name!r}: one of {', '.join(profiles.PROFILE_NAMES)}",
            code="unknown_profile",
        )
    site = await session.scalar(select(Site).where(Site.code == site_code))
    if site is None:
        raise NotFound(f"no site {site_code!r}")
    site.food_safety_profile = name
    return site
