"""From a purchaser's contact to the Apprise URLs that reach it (pure, no I/O)."""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

EMAIL_RE = re.compile(r"^[^@\s:/]+@[^@\s:/]+\.[^@\s:/]+$")
PHONE_RE = re.compile(r"^\+?[0-9][0-9 ()-]{5,20}$")
# Apprise schemes whose plugins take custom headers (`+Name=value`): the notification's dedupe
# key goes there, so a receiver can drop the copy a crash-and-retry may produce.
HEADER_SCHEMES = frozenset({"json", "jsons", "form", "forms", "xml", "xmls", "mailto", "mailtos"})
DEDUPE_HEADER = "X-Locker-Notification"


class NoChannel(ValueError):
    """The contact cannot be reached with this deployment's settings."""


class ContactRefused(NoChannel):
    """A contact given as notification URLs that this deployment will not send to: URLs off, a
    scheme not on the allowlist, or a host that is (or resolves to) an internal address."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


def channels_for(
    contact: str,
    *,
    email_url: str | None,
    sms_url: str | None,
    allow_contact_urls: bool,
) -> list[str]:
    """The Apprise URLs for one contact: a templated e-mail/SMS URL, or the contact itself."""
    contact = contact.strip()
    if "://" in contact:
        if not allow_contact_urls:
            raise NoChannel("contacts given as notification URLs are switched off")
        # Several URLs are separated by white space (not commas: `to=a@x,b@y` is one URL).
        urls = contact.split()
        if not all("://" in url for url in urls):
            raise NoChannel("every part of a contact given as URLs must be a URL")
        return urls
    if EMAIL_RE.match(contact):
        if not email_url:
            raise NoChannel("no e-mail channel configured (LOCKER_NOTIFY_EMAIL_URL)")
        return [email_url.replace("{to}", quote(contact, safe="@+"))]
    if PHONE_RE.match(contact):
        if not sms_url:
            raise NoChannel("no SMS channel configured (LOCKER_NOTIFY_SMS_URL)")
        phone = re.sub(r"[ ()-]", "", contact)
        return [sms_url.replace("{to}", quote(phone, safe="+"))]
    raise NoChannel("the contact is neither an e-mail address, a phone number nor a URL")


def with_dedupe_header(url: str, dedupe_key: str) -> str:
    """`url` plus the dedupe key as a header, where the scheme supports headers."""
    if urlsplit(url).scheme.lower() not in HEADER_SCHEMES:
        return url
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}+{DEDUPE_HEADER}={quote(dedupe_key, safe='')}"
