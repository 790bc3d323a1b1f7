"""Protocol errors, split by fault (who broke the rules).

``RemoteProtocolError``: the peer sent something we must refuse (bad version, unknown
kind, malformed or oversized message). The receiver answers with an ``Error`` message
where it can and keeps serving everybody else.

``LocalProtocolError``: we tried to send something the protocol forbids: our bug.
"""

from __future__ import annotations

__all__ = ["ProtocolError", "RemoteProtocolError", "LocalProtocolError"]


class ProtocolError(Exception):
    """Base of every wire-protocol error."""


class RemoteProtocolError(ProtocolError):
    """The peer's message breaks the protocol; it is refused, nothing else is affected."""


class LocalProtocolError(ProtocolError):
    """We were about to send something the protocol forbids (a bug on our side)."""
