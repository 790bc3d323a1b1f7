"""Wire <-> policy: the only module that sees both vocabularies.

Theory of operation: incoming protocol messages become policy events with every time
converted to the scheduler's clock (a frontend sends a remaining *budget*; it becomes an
absolute deadline here, less the expected one-way delay); policy actions become the
protocol messages that carry them out. Request ids carry their frontend's index in the
bits above ``FRONTEND_SHIFT``, so routing a batch back to the frontends that hold its
payloads needs no table.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import repeat

from central.policy.types import (
    BatchDone,
    BatchStatus,
    Dispatch,
    Drop,
    Profile,
    Request,
    RequestsArrived,
)
from central.protocol.conventions import DROP_DETAIL, FRONTEND_SHIFT
from central.protocol.errors import RemoteProtocolError
from central.protocol.messages import Done, DropRequests, Execute, GpuSpec, Requests, Route

__all__ = [
    "requests_to_event",
    "done_to_event",
    "dispatch_to_messages",
    "drop_to_messages",
    "gpu_profiles",
]


def requests_to_event(msg: Requests, now_ns: int, one_way_ns: int) -> RequestsArrived:
    """Metadata message -> event; budgets become absolute scheduler-clock deadlines.

    Each request costs one ``Request`` and nothing else: the columns are zipped by
    ``map`` in C rather than unpacked tuple by tuple. Raises ``TypeError`` on a budget
    that is not a number.
    """
    base = now_ns - one_way_ns
    deadlines = [base + budget for budget in msg.budgets_ns]
    return RequestsArrived(
        tuple(map(Request, msg.request_ids, msg.models, deadlines, repeat(now_ns, len(deadlines)), msg.sizes))
    )


def done_to_event(msg: Done, worker_id: int) -> BatchDone:
    """Worker's Done (already on the scheduler clock) -> event."""
    try:
        status = BatchStatus(msg.status)
    except ValueError:
        raise RemoteProtocolError(f"Done: unknown batch status {msg.status}") from None
    return BatchDone(
        msg.batch_id,
        worker_id,
        status,
        msg.start_ns,
        msg.end_ns,
        msg.batch_size,
    )


def dispatch_to_messages(
    action: Dispatch, gpu_index: int, process_id: int
) -> tuple[Execute, dict[int, Route]]:
    """Dispatch -> the worker's Execute and one Route per frontend involved."""
    execute = Execute(
        action.batch_id,
        gpu_index,
        action.model,
        action.request_ids,
        action.earliest_ns,
        action.latest_ns,
        action.expected_ns,
    )
    ids = action.request_ids
    if ids and min(ids) >> FRONTEND_SHIFT == max(ids) >> FRONTEND_SHIFT:  # one frontend
        return execute, {ids[0] >> FRONTEND_SHIFT: Route(action.batch_id, process_id, gpu_index, ids)}
    by_frontend: dict[int, list[int]] = defaultdict(list)
    for rid in ids:
        by_frontend[rid >> FRONTEND_SHIFT].append(rid)
    routes = {
        fe: Route(action.batch_id, process_id, gpu_index, tuple(ids)) for fe, ids in by_frontend.items()
    }
    return execute, routes


def drop_to_messages(action: Drop) -> dict[int, DropRequests]:
    """Drop -> one DropRequests per frontend involved."""
    ids, detail = action.request_ids, DROP_DETAIL[action.reason]
    if ids and min(ids) >> FRONTEND_SHIFT == max(ids) >> FRONTEND_SHIFT:  # one frontend
        return {ids[0] >> FRONTEND_SHIFT: DropRequests(ids, int(action.reason), detail)}
    by_frontend: dict[int, list[int]] = defaultdict(list)
    for rid in ids:
        by_frontend[rid >> FRONTEND_SHIFT].append(rid)
    return {fe: DropRequests(tuple(ids), int(action.reason), detail) for fe, ids in by_frontend.items()}


def gpu_profiles(spec: GpuSpec) -> tuple[tuple[str, Profile], ...]:
    """The profiles a worker announced for one of its GPUs, as policy values."""
    _, _, profiles = spec
    return tuple((m, Profile(int(k), int(c), int(mb))) for m, k, c, mb in profiles)
