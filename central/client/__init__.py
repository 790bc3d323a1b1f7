"""Baton's Python SDK: ``Client``, ``AsyncClient``, typed errors, the wire ledger and load tools.
Imports the protocol (and plumbing's token/CURVE helpers) only: never torch, a policy or a shell."""

from .client import DEFAULT_ADDRESS, AsyncClient, Client, query_stats
from .errors import (
    BadRequest,
    BatonError,
    ClientTimeout,
    DeadlineExceeded,
    InferenceFailed,
    Rejected,
    Unauthorized,
    Unavailable,
)
from .inputs import cosine, image_bytes, image_file, text

__all__ = [
    "DEFAULT_ADDRESS",
    "AsyncClient",
    "Client",
    "query_stats",
    "BadRequest",
    "BatonError",
    "ClientTimeout",
    "DeadlineExceeded",
    "InferenceFailed",
    "Rejected",
    "Unavailable",
    "Unauthorized",
    "cosine",
    "image_bytes",
    "image_file",
    "text",
]
