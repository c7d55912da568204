"""Which notification URLs the service may send to: a scheme allowlist and no internal hosts.

Sending to an Apprise URL makes this service open a connection wherever the URL points. Left
open, whoever sets the URL could make the service POST to its own admin ports, a cloud metadata
address or anything else on its network. So a URL must use a scheme on the policy's list, and
every address its host resolves to must be global (not loopback, private, link-local,
multicast ...), unless it lies inside one of the networks the operator allowed
(LOCKER_NOTIFY_CONTACT_ALLOWED_NETWORKS).
The check runs when the URL is set (a 422) and again before each send (DNS may have changed).

The pure part (which hosts a URL connects to, whether an address may be reached) is apart from
the resolver, so it is tested without DNS. Used for each site's on-call URLs (ADR 0045) and,
through `contacts.policy`, for purchasers' contact URLs with their own scheme list (ADR 0038).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from locker_service.errors import Unprocessable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str], Awaitable[list[str]]]

# Apprise plugins that connect to their vendor's fixed public API (the URL's "host" is a token or
# a channel name, not where the connection goes): there is no host of ours to check.
FIXED_ENDPOINT_SCHEMES = frozenset(
    {
        "pagerduty", "opsgenie", "slack", "msteams", "tgram", "discord", "wecombot", "dingtalk",
        "twilio",
    }
)  # fmt: skip
# Apprise's e-mail plugin connects to the `smtp=` server when one is given, else to the host.
SMTP_HOST_SCHEMES = frozenset({"mailto", "mailtos"})
RESOLVE_TIMEOUT_S = 5.0  # a resolver slower than this is treated as one that found nothing
MAX_URLS = 10  # a site's list is a handful of people or one paging hook, not a mailing list


class TargetRefused(Unprocessable):
    """A notification URL the service will not send to (the code says why)."""

    code = "target_refused"


def split_urls(text: str) -> list[str]:
    """URLs separated by white space or new lines (not commas: `to=a@x,b@y` is one URL)."""
    return text.split()


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    schemes: frozenset[str] | None  # None: any scheme (another check decided which)
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(
        cls, schemes: Iterable[str] | None, allowed_networks: Iterable[str] = ()
    ) -> TargetPolicy:
        return cls(
            None if schemes is None else frozenset(s.strip().lower() for s in schemes if s.strip()),
            tuple(ipaddress.ip_network(n.strip(), strict=False) for n in allowed_networks),
        )

    def hosts(self, url: str) -> list[str]:
        """The hosts sending to `url` connects to; TargetRefused if it may not be sent to."""
        try:
            parts = urlsplit(url)
            hostname = parts.hostname
        except ValueError as exc:
            raise TargetRefused(f"not a notification URL: {exc}", code="target_invalid") from None
        scheme = parts.scheme.lower()
        if not scheme or "://" not in url:
            raise TargetRefused("not a notification URL (scheme://...)", code="target_invalid")
        if self.schemes is not None and scheme not in self.schemes:
            allowed = ", ".join(sorted(self.schemes)) or "none"
            raise TargetRefused(
                f"notification URLs of scheme {scheme!r} are not accepted (allowed: {allowed})",
                code="target_scheme_not_allowed",
            )
        if scheme in FIXED_ENDPOINT_SCHEMES:
            return []
        hosts = [hostname] if hostname else []
        if scheme in SMTP_HOST_SCHEMES:
            for server in parse_qs(parts.query).get("smtp", []):
                hosts.append(urlsplit(f"//{server}").hostname or server)
        if not hosts:
            raise TargetRefused("the notification URL names no host", code="target_invalid")
        return hosts

    def refused_address(self, addresses: Iterable[str]) -> str | None:
        """The first address a send may not connect to, or None if all may be reached."""
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
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


async def check_urls(
    urls: Sequence[str], policy: TargetPolicy, resolver: Resolver = resolve
) -> Sequence[str]:
    """`urls` if every one may be sent to now; TargetRefused naming the first that may not.

    A host that does not resolve is let through: nothing can be connected to, and the check
    before each send looks again."""
    if len(urls) > MAX_URLS:
        raise TargetRefused(f"at most {MAX_URLS} notification URLs", code="target_too_many")
    for url in urls:
        for host in policy.hosts(url):
            refused = policy.refused_address(await resolver(host))
            if refused is not None:
                raise TargetRefused(
                    f"notification URL host {host!r} is an internal address ({refused})",
                    code="target_address_not_allowed",
                )
    return urls
