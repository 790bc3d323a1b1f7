"""Records that travel inside stats snapshots (``StatsReply.json``): named, so no reader
indexes a list by a bare number. Standard library only.

A batch record is one row of the scheduler's batch log (``stats(with_batches=True)
["batches"]``, ``recent_batches`` on the stats PUB). JSON carries it as a plain list in
this field order, so old readers keep working; ``BatchRecord.of(row)`` names the fields
of a row read back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

__all__ = ["BatchRecord"]


class BatchRecord(NamedTuple):
    """One dispatched batch, its window and how it ended; times are scheduler-clock ns."""

    batch_id: int
    worker: int  # the worker process's id
    model: str
    size: int  # requests the batch ran (``Done.batch_size``: 0 for a refused batch)
    sent_ns: int  # when the scheduler sent the Execute
    earliest_ns: int  # the window it was given
    latest_ns: int
    start_ns: int  # what the worker reported in its Done
    end_ns: int
    status: int  # a ``BatchStatus`` value

    @classmethod
    def of(cls, row: Sequence[Any]) -> BatchRecord:
        """A record from a row as JSON gives it back (a list in field order)."""
        if len(row) != len(cls._fields):
            raise ValueError(f"a batch record has {len(cls._fields)} fields, got {len(row)}")
        return cls(
            int(row[0]),
            int(row[1]),
            str(row[2]),
            int(row[3]),
            int(row[4]),
            int(row[5]),
            int(row[6]),
            int(row[7]),
            int(row[8]),
            int(row[9]),
        )
