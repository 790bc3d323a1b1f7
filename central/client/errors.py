"""Typed errors of the client SDK: one class per terminal status a request can get."""

from __future__ import annotations

from central.protocol.messages import Status

__all__ = [
    "BatonError",
    "Rejected",
    "DeadlineExceeded",
    "Unavailable",
    "ClientTimeout",
    "BadRequest",
    "InferenceFailed",
    "Unauthorized",
    "error_for",
]


class BatonError(Exception):
    """Base of every error the SDK raises for a request; ``status`` says which."""

    status: Status = Status.FAILED


class Rejected(BatonError):
    """Not accepted: unknown model, or the service is overloaded."""

    status = Status.REJECTED


class DeadlineExceeded(BatonError):
    """Dropped or refused because it could no longer finish within its SLO."""

    status = Status.DEADLINE_EXCEEDED


class Unavailable(BatonError):
    """No answer could be had: no worker serves the model, or the service is down."""

    status = Status.UNAVAILABLE


class ClientTimeout(Unavailable):
    """No reply came within this client's own wait (the SLO plus ``grace_s``).

    Not an answer from the service: the frontend may be unreachable, or it lost the
    request (every accepted request is answered, so that would be a bug). A subclass of
    ``Unavailable`` so that ``except Unavailable`` still catches it; tell the two apart by
    type.
    """


class BadRequest(BatonError):
    """The request itself is wrong (input names, dtypes, shapes, undecodable data)."""

    status = Status.BAD_REQUEST


class InferenceFailed(BatonError):
    """Accepted and dispatched, but execution failed; the message says why."""

    status = Status.FAILED


class Unauthorized(BatonError):
    """The frontend requires a token (or key) this client did not present."""

    status = Status.UNAUTHORIZED


_BY_STATUS = {
    cls.status: cls
    for cls in (Rejected, DeadlineExceeded, Unavailable, BadRequest, InferenceFailed, Unauthorized)
}


def error_for(status: int, message: str) -> BatonError:
    """The typed error for a non-OK wire status."""
    try:
        cls = _BY_STATUS[Status(status)]
    except (ValueError, KeyError):
        cls = InferenceFailed
    return cls(message)
