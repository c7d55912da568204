"""The service's one error root: what domain code raises when a step cannot be done.

Every error names what went wrong in the domain's words (`code`, `message`) and knows nothing of
HTTP: `locker_service.api.errors` maps each class to its status and headers in one handler, and
the kiosk event handler and `lockerctl` read the same `code` and `message`. Packages subclass
these (the lifecycles' illegal steps, the kiosk link's command failures, a used pickup code).
"""

from __future__ import annotations


class ServiceError(Exception):
    """The root: the request is wrong in a way its sender can fix.

    `details` are facts the person at a screen needs to act on the refusal in her own language
    (the compartment to look at), answered beside the code and the message.
    """

    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, int | str] = {}
        if code is not None:
            self.code = code


class BadRequest(ServiceError):
    pass


class Unauthorized(ServiceError):
    """The caller did not say who they are, or is unknown."""

    code = "unauthorized"


class Forbidden(ServiceError):
    """The caller is known but may not do this."""

    code = "forbidden"


class NotFound(ServiceError):
    code = "not_found"


class Conflict(ServiceError):
    """The thing changed or is in a state where this cannot happen now."""

    code = "conflict"


class InvalidTransition(Conflict):
    """A lifecycle step its transition table forbids: asked at the wrong time."""

    code = "invalid_transition"


class Unprocessable(ServiceError):
    """Well-formed, but it does not make sense (a compartment that does not exist, say)."""

    code = "unprocessable"


class TooManyRequests(ServiceError):
    """Too many attempts: try again after `retry_after_s`."""

    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after_s: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class ServiceUnavailable(ServiceError):
    """Something the step needs (the database, a kiosk) cannot be reached now."""

    code = "unavailable"


class NoAnswerInTime(ServiceUnavailable):
    """Asked, but no final answer came before the deadline: the step may or may not have
    happened, so the caller must look again rather than retry blindly."""

    code = "no_answer_in_time"
