"""Baton's wire protocol: messages, the header + raw-frame codec, errors.

Imports only the standard library and msgpack (``arrays`` also numpy). See
``docs/protocol.md`` for the specification.
"""

from .codec import DEFAULT_LIMITS, Limits, decode, encode
from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .messages import *  # noqa: F401,F403
from .messages import __all__ as _messages_all

__all__ = [
    "DEFAULT_LIMITS",
    "Limits",
    "decode",
    "encode",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    *_messages_all,
]
