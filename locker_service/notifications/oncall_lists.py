"""Setting and reading each site's on-call lists (admins only, through the API or `lockerctl`).

Every URL is checked against the on-call target policy when it is set (scheme on
LOCKER_ONCALL_SCHEMES, no internal address outside LOCKER_NOTIFY_CONTACT_ALLOWED_NETWORKS); the
worker checks again before each send.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.config import Settings
from locker_service.contacts.targets import Resolver, TargetPolicy, check_urls, resolve
from locker_service.models import SiteOncall, utcnow


def policy_of(settings: Settings) -> TargetPolicy:
    return TargetPolicy.of(settings.oncall_schemes, settings.notify_contact_allowed_networks)


async def set_oncall(
    session: AsyncSession,
    settings: Settings,
    site_id: int,
    urls: Sequence[str],
    escalation_urls: Sequence[str],
    *,
    operator_id: int | None,
    resolver: Resolver = resolve,
) -> SiteOncall:
    """Replace the site's lists; empty `urls` tells nobody (the digest is not sent either)."""
    policy = policy_of(settings)
    urls = [u.strip() for u in urls if u.strip()]
    escalation_urls = [u.strip() for u in escalation_urls if u.strip()]
    await check_urls(urls, policy, resolver)
    await check_urls(escalation_urls, policy, resolver)
    oncall = await session.get(SiteOncall, site_id)
    if oncall is None:
        oncall = SiteOncall(site_id=site_id)
        session.add(oncall)
    oncall.urls = "\n".join(urls)
    oncall.escalation_urls = "\n".join(escalation_urls)
    oncall.updated_at = utcnow()
    oncall.updated_by = operator_id
    await session.flush()
    return oncall
