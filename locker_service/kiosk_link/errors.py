"""Errors of the kiosk link: what a caller of `KioskLink.command()` may have to handle."""

from __future__ import annotations


class KioskLinkError(Exception):
    """Base of the kiosk link's errors; `code` and `status_code` shape the HTTP answer."""

    code = "kiosk_link_error"
    status_code = 503

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class KioskUnreachable(KioskLinkError):
    """The command could not reach the kiosk, or the kiosk never answered it.

    The command carried an `expires_at`, so a copy delivered later is rejected by the bridge: the
    caller may treat the action as not done.
    """

    code = "kiosk_unreachable"
    status_code = 503


class CommandTimeout(KioskLinkError):
    """The kiosk accepted the command but gave no final answer before the deadline.

    Unlike `KioskUnreachable`, the action may have happened (e.g. a lock pulse was sent): the
    caller must reconcile from the next compartment snapshot.
    """

    code = "kiosk_command_timeout"
    status_code = 504


class InvalidCommand(KioskLinkError):
    """The action, compartment or arguments do not fit the wire contract; nothing was sent."""

    code = "invalid_kiosk_command"
    status_code = 422
