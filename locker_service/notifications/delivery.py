"""Sending one message through Apprise (e-mail, SMS gateways, webhooks, WeCom, ...)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import apprise
from apprise.attachment.memory import AttachMemory

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Attachment:
    name: str
    content: bytes
    mimetype: str


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    ok: bool
    error: str | None = None
    # Something was handed to a provider: a failed try may still have reached the purchaser.
    # False only when nothing left this process (a URL no plugin knows).
    handed_over: bool = True


class Delivery(Protocol):
    async def send(
        self, urls: Sequence[str], subject: str, body: str, attachments: Sequence[Attachment]
    ) -> DeliveryResult: ...


class AppriseDelivery:
    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s

    async def send(
        self, urls: Sequence[str], subject: str, body: str, attachments: Sequence[Attachment]
    ) -> DeliveryResult:
        notifier = apprise.Apprise()
        for i, url in enumerate(urls):
            if not notifier.add(url):
                # The URL itself may hold credentials: name it by position only.
                return DeliveryResult(
                    False, f"notification URL #{i + 1} is not one Apprise knows", handed_over=False
                )
        attach = apprise.AppriseAttachment()
        for a in attachments:
            attach.add(AttachMemory(content=a.content, name=a.name, mimetype=a.mimetype))  # type: ignore[no-untyped-call]
        result = await notifier.async_notify(
            body=body,
            title=subject,
            body_format=apprise.NotifyFormat.TEXT,  # keep the line breaks of the plain text
            attach=attach or None,
            timeout=self._timeout_s,
        )
        if result:
            return DeliveryResult(True)
        problems = [e.message for e in result.logs() if e.level in ("ERROR", "WARNING")]
        return DeliveryResult(False, "; ".join(problems)[-1000:] or "delivery failed")
