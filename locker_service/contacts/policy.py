"""Which contact URLs the service sends to: the operator's scheme allowlist and no internal hosts.

A merchant names the purchaser's contact; when that contact is an Apprise URL, sending to it
makes this service open a connection wherever the URL points. Left open, a merchant could make
it POST to the service's own admin ports, a cloud metadata address or anything else on its
network. So a contact URL must use a scheme on LOCKER_NOTIFY_CONTACT_SCHEMES, and the host it
connects to must resolve only to global addresses, unless the address is inside one of
LOCKER_NOTIFY_CONTACT_ALLOWED_NETWORKS. The check runs when the order is created (a 422) and
again before every send (DNS may have changed since): a refused send fails without a connection.

The URL rules themselves are `contacts.targets` (the same for a site's on-call URLs); this module
adds the switch that turns contact URLs off and says each refusal in the contact's own codes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from locker_service.config import Settings
from locker_service.contacts.channels import ContactRefused
from locker_service.contacts.targets import (
    Resolver,
    TargetPolicy,
    TargetRefused,
    check_urls,
    resolve,
)

# A target's refusal, said as a contact's (the codes order creation answers with, ADR 0038).
CONTACT_CODES = {
    "target_invalid": "contact_url_invalid",
    "target_scheme_not_allowed": "contact_scheme_not_allowed",
    "target_address_not_allowed": "contact_address_not_allowed",
    "target_too_many": "contact_url_invalid",
}


def contact_urls(contact: str) -> list[str] | None:
    """The URLs of a contact given as notification URLs (white-space separated); None for an
    e-mail address or phone number, which go through the operator's own channels."""
    contact = contact.strip()
    return contact.split() if "://" in contact else None


def _as_contact(refused: TargetRefused) -> ContactRefused:
    return ContactRefused(str(refused), code=CONTACT_CODES.get(refused.code, "contact_url_invalid"))


@dataclass(frozen=True, slots=True)
class ContactPolicy:
    allow_urls: bool
    targets: TargetPolicy

    @classmethod
    def of(
        cls, allow_urls: bool, schemes: Iterable[str], allowed_networks: Iterable[str] = ()
    ) -> ContactPolicy:
        return cls(allow_urls, TargetPolicy.of(schemes, allowed_networks))

    @classmethod
    def of_settings(cls, settings: Settings) -> ContactPolicy:
        return cls.of(
            settings.notify_contact_urls,
            settings.notify_contact_schemes,
            settings.notify_contact_allowed_networks,
        )

    def require_urls_on(self) -> None:
        """ContactRefused when this deployment takes no contact given as URLs."""
        if not self.allow_urls:
            raise ContactRefused(
                "contacts given as notification URLs are switched off", code="contact_urls_off"
            )

    def hosts(self, url: str) -> list[str]:
        """The hosts sending to `url` connects to; ContactRefused if it may not be sent at all."""
        self.require_urls_on()
        try:
            return self.targets.hosts(url)
        except TargetRefused as refused:
            raise _as_contact(refused) from None

    def refused_address(self, addresses: Iterable[str]) -> str | None:
        """The first address a send may not connect to, or None if all are allowed."""
        return self.targets.refused_address(addresses)


async def check_contact(
    contact: str, policy: ContactPolicy, resolver: Resolver = resolve
) -> Sequence[str]:
    """The contact's URLs if every one may be sent to now; ContactRefused naming why not.

    A host that does not resolve is let through: nothing can be connected to, and the check
    before each send looks again."""
    urls = contact_urls(contact) or []
    if urls:
        policy.require_urls_on()
    try:
        return await check_urls(urls, policy.targets, resolver)
    except TargetRefused as refused:
        raise _as_contact(refused) from None
