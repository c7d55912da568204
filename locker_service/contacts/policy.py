"""Which contact URLs the service sends to: the operator's scheme allowlist and no internal hosts.

A merchant names the purchaser's contact; when that contact is an Apprise URL, sending to it
makes this service open a connection wherever the URL points. Left open, a merchant could make
it POST to the service's own admin ports, a cloud metadata address or anything else on its
network. So a contact URL must use a scheme on LOCKER_NOTIFY_CONTACT_SCHEMES, and the host it
connects to must resolve only to global addresses, unless the address is inside one of
LOCKER_NOTIFY_CONTACT_ALLOWED_NETWORKS. The check runs when the order is created (a 422) and
again before every send (DNS may have changed since): a refused send fails without a connection.

The pure part (which hosts a URL connects to, whether an address is allowed) is separate from
the resolver, so it is tested without DNS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from locker_service.config import Settings
from locker_service.contacts.channels import ContactRefused

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str], Awaitable[list[str]]]

# Apprise schemes whose plugin connects to its vendor's fixed public API (Telegram, Discord, WeCom,
# Twilio): the URL's "host" part is a token, not where the connection goes, so no host is
# checked for them. Every other allowed scheme connects to the host the URL names.
FIXED_ENDPOINT_SCHEMES = frozenset({"tgram", "discord", "wecombot", "twilio"})
# Apprise's e-mail plugin connects to the `smtp=` server when one is given, not to the host.
SMTP_HOST_SCHEMES = frozenset({"mailto", "mailtos"})
RESOLVE_TIMEOUT_S = 5.0  # a resolver slower than this is treated as one that found nothing


def contact_urls(contact: str) -> list[str] | None:
    """The URLs of a contact given as notification URLs (white-space separated); None for an
    e-mail address or phone number, which go through the operator's own channels."""
    contact = contact.strip()
    return contact.split() if "://" in contact else None


@dataclass(frozen=True, slots=True)
class ContactPolicy:
    allow_urls: bool
    schemes: frozenset[str]
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(
        cls, allow_urls: bool, schemes: Iterable[str], allowed_networks: Iterable[str] = ()
    ) -> ContactPolicy:
        return cls(
            allow_urls,
            frozenset(s.strip().lower() for s in schemes if s.strip()),
            tuple(ipaddress.ip_network(n.strip(), strict=False) for n in allowed_networks),
        )

    @classmethod
    def of_settings(cls, settings: Settings) -> ContactPolicy:
        return cls.of(
            settings.notify_contact_urls,
            settings.notify_contact_schemes,
            settings.notify_contact_allowed_networks,
        )

    def hosts(self, url: str) -> list[str]:
        """The hosts sending to `url` connects to; ContactRefused if it may not be sent at all."""
        if not self.allow_urls:
            raise ContactRefused(
                "contacts given as notification URLs are switched off", code="contact_urls_off"
            )
        try:
            parts = urlsplit(url)
            hostname = parts.hostname
        except ValueError as exc:
            raise ContactRefused(
                f"not a notification URL: {exc}", code="contact_url_invalid"
            ) from None
        scheme = parts.scheme.lower()
        if scheme not in self.schemes:
            allowed = ", ".join(sorted(self.schemes)) or "none"
            raise ContactRefused(
                f"notification URLs of scheme {scheme!r} are not accepted (allowed: {allowed})",
                code="contact_scheme_not_allowed",
            )
        if scheme in FIXED_ENDPOINT_SCHEMES:
            return []
        hosts = [hostname] if hostname else []
        if scheme in SMTP_HOST_SCHEMES:
            for server in parse_qs(parts.query).get("smtp", []):
                hosts.append(urlsplit(f"//{server}").hostname or server)
        if not hosts:
            raise ContactRefused("the notification URL names no host", code="contact_url_invalid")
        return hosts

    def refused_address(self, addresses: Iterable[str]) -> str | None:
        """The first address a send may not connect to, or None if all are allowed."""
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone index
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
            if any(address in network for network in self.allowed_networks):
                continue
            if not address.is_global or address.is_multicast:
                return str(address)
        return None


async def resolve(host: str) -> list[str]:
    """Every address `host` resolves to (an IP literal resolves to itself); [] if none."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
        )
    except (OSError, TimeoutError, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


async def check_contact(
    contact: str, policy: ContactPolicy, resolver: Resolver = resolve
) -> Sequence[str]:
    """The contact's URLs if every one may be sent to now; ContactRefused naming why not.

    A host that does not resolve is let through: nothing can be connected to, and the check
    before each send looks again."""
    urls = contact_urls(contact) or []
    for url in urls:
        for host in policy.hosts(url):
            refused = policy.refused_address(await resolver(host))
            if refused is not None:
                raise ContactRefused(
                    f"notification URL host {host!r} is an internal address ({refused})",
                    code="contact_address_not_allowed",
                )
    return urls
