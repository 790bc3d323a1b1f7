"""Baton's wire protocol: messages, conventions (statuses, drop reasons, request ids,
shard ownership), the header + raw-frame codec, errors. Imports only the standard library
and msgpack (``arrays`` also numpy); never a policy, a shell or plumbing.

``import central.protocol`` loads the standard library only; the codec (and msgpack) is
loaded on first use of ``encode``, ``decode``, ``Limits`` or ``DEFAULT_LIMITS``, so the
policy can share ``conventions`` without pulling msgpack in. ``docs/protocol.md`` is the
specification.
"""

from typing import TYPE_CHECKING, Any

from .conventions import BatchStatus, DropReason
from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .messages import *  # noqa: F403
from .messages import __all__ as _messages_all

if TYPE_CHECKING:
    from .codec import DEFAULT_LIMITS, Limits, decode, encode

_LAZY = frozenset({"DEFAULT_LIMITS", "Limits", "decode", "encode"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import codec

        return getattr(codec, name)
    raise AttributeError(f"module 'central.protocol' has no attribute {name!r}")


__all__ = [
    "DEFAULT_LIMITS",
    "Limits",
    "decode",
    "encode",
    "BatchStatus",
    "DropReason",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    *_messages_all,
]
