"""Errors of the kiosk link: what a caller of `KioskLink.command()` may have to handle.

They sit under the service's one error root (`locker_service.errors`), so the one handler answers
them like any other: unreachable 503, no final answer 504, a command that does not fit 422.
"""

from __future__ import annotations

from locker_service.errors import NoAnswerInTime, ServiceUnavailable, Unprocessable


class KioskLinkError(ServiceUnavailable):
    """Base of the kiosk link's errors."""

    code = "kiosk_link_error"


class KioskUnreachable(KioskLinkError):
    """The command could not reach the kiosk, or the kiosk never answered it.

    The command carried an `expires_at`, so a copy delivered later is rejected by the bridge: the
    caller may treat the action as not done, unless its answers, not the command, were lost. An
    action that must not run twice (a cycle start) is sent again under the same request id,
    which the bridge answers from its record if it ran it (ADR 0082).
    """

    code = "kiosk_unreachable"


class CommandTimeout(NoAnswerInTime, KioskLinkError):
    """The command's outcome is unknown: the kiosk accepted it but gave no final answer before
    the deadline, or the service stopped waiting before its `expires_at` (ADR 0087).

    Unlike `KioskUnreachable`, the action may have happened (e.g. a lock pulse was sent): the
    caller must reconcile from the next compartment snapshot.
    """

    code = "kiosk_command_timeout"


class InvalidCommand(Unprocessable, KioskLinkError):
    """The action, compartment or arguments do not fit the wire contract; nothing was sent."""

    code = "invalid_kiosk_command"
