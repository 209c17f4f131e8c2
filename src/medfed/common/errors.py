"""Errors shared by hub, node, SDK and CLI.

Every error carries a message that names the problem. The hub maps each class to an HTTP
status (``status_code``); the SDK maps the status back to the same class, so a caller sees
one error type whether the check ran locally or on the hub.
"""

from __future__ import annotations

from datetime import datetime


class MedfedError(Exception):
    """Base class: a clear, one-line message for the person who caused it."""

    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(MedfedError):
    """The input is malformed or names something that does not fit (unknown column, type)."""

    status_code = 422


class Unauthorized(MedfedError):
    """No credentials, or credentials that are not valid (unknown, revoked, expired)."""

    status_code = 401


class Forbidden(MedfedError):
    """Valid credentials that do not allow this action."""

    status_code = 403


class NotFound(MedfedError):
    """The named object does not exist (or the caller may not know that it exists)."""

    status_code = 404


class Conflict(MedfedError):
    """The request clashes with the current state (duplicate name, stale lease)."""

    status_code = 409


class Refused(MedfedError):
    """A disclosure or policy rule refused the request; the message names the rule."""

    status_code = 403


class PolicyRefused(Refused):
    """A node's policy refused a run for what it asks, not for what the data holds.

    The node answers ``refused`` with this message (plan not approved, algorithm not
    allowed). A refusal that depends on the data (row counts, values) is a plain
    :class:`Refused`, which the node turns into a withheld answer without text.
    """


class RateLimited(Refused):
    """A budget is used up (HTTP 429); ``resets_at`` says when the next request may pass.

    The hub answers ``{"detail": message, "resets_at": ISO time}`` with a ``Retry-After``
    header (seconds); the SDK raises this class again with ``resets_at`` read back.
    """

    status_code = 429

    def __init__(self, message: str, *, resets_at: datetime | None = None) -> None:
        super().__init__(message)
        self.resets_at = resets_at


ERRORS_BY_STATUS: dict[int, type[MedfedError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    429: RateLimited,
    400: BadRequest,
    422: BadRequest,
}
