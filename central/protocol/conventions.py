"""Wire conventions every role agrees on: how a batch ended, why a request was dropped,
how a request id names its frontend, which shard owns a model, what a ``StatsQuery``
tag asks for.

Standard library only: the policy imports this module (and nothing else outside itself),
so its enums are the very values that travel in ``Done.status`` and
``DropRequests.reason``.
"""

from __future__ import annotations

import enum
import zlib
from collections.abc import Mapping

__all__ = [
    "BatchStatus",
    "DropReason",
    "DROP_DETAIL",
    "FRONTEND_SHIFT",
    "make_request_id",
    "frontend_of",
    "default_shard",
    "owner_of",
    "stats_tag",
    "wants_batch_log",
]


class BatchStatus(enum.IntEnum):
    """How a dispatched batch ended, as the worker reports it (``Done.status``)."""

    OK = 0
    TOO_EARLY = 1  # the worker refused: the window opened too far in its future
    TOO_LATE = 2  # the worker refused: it could not start before ``latest``
    FAILED = 3  # the executor raised; every request got a failure answer


class DropReason(enum.IntEnum):
    """Why the scheduler gave up on a request before it ran (``DropRequests.reason``)."""

    DEADLINE = 0  # it can no longer finish by its deadline
    UNKNOWN_MODEL = 1  # no worker has ever served this model
    NO_WORKER = 2  # the model's workers are all gone
    SHED = 3  # dropped to keep a larger batch feasible (a doomed head)


DROP_DETAIL = {
    DropReason.DEADLINE: "the request can no longer finish within its SLO",
    DropReason.UNKNOWN_MODEL: "no worker serves this model",
    DropReason.NO_WORKER: "every worker serving this model is gone",
    DropReason.SHED: "dropped to keep a feasible batch for the requests behind it",
}

# A request id carries its frontend's index in the bits above FRONTEND_SHIFT, so a
# batch is routed back to the frontends that hold its payloads without a table.
FRONTEND_SHIFT = 40
_SEQ_MASK = (1 << FRONTEND_SHIFT) - 1


def make_request_id(frontend_index: int, seq: int) -> int:
    """Cluster-unique request id from a frontend's index and its own counter."""
    return (frontend_index << FRONTEND_SHIFT) | (seq & _SEQ_MASK)


def frontend_of(request_id: int) -> int:
    """The index of the frontend that holds this request's payload."""
    return request_id >> FRONTEND_SHIFT


def default_shard(model: str, shards: int) -> int:
    """The shard that owns ``model`` when no placement names it: CRC-32 of the name."""
    return zlib.crc32(model.encode()) % shards


def owner_of(model: str, owners: Mapping[str, int], shards: int) -> int:
    """The shard that owns ``model``: the directory's (or placement's) word, else
    ``default_shard``."""
    index = owners.get(model)
    return index if index is not None else default_shard(model, shards)


# A StatsQuery's tag is echoed in the StatsReply; its low bit also says whether a
# scheduler should include its batch log (odd: with it, even: without). A frontend or a
# shard answers either way without the log.
_BATCH_LOG_BIT = 1


def stats_tag(seq: int, with_batches: bool) -> int:
    """A ``StatsQuery`` tag from a caller's counter ``seq`` whose low bit asks a scheduler
    for its batch log (``with_batches``) or not: ``stats_tag(0, True) == 1``,
    ``stats_tag(0, False) == 2``."""
    return (seq << 1) + (_BATCH_LOG_BIT if with_batches else 2)


def wants_batch_log(tag: int) -> bool:
    """Whether a ``StatsQuery`` with this tag asks for the batch log (its low bit)."""
    return tag & _BATCH_LOG_BIT == _BATCH_LOG_BIT
