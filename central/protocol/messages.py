"""Every message Baton's processes exchange, as frozen slotted dataclasses.

Theory of operation: a message is a header frame (msgpack array
``[version, kind, *fields]``, fields positional in declaration order) followed, for the
four message kinds that carry data (``Infer``, ``Reply``, ``Payloads``, ``Results``), by
one raw frame per tensor. Tensor frames are described in the header by ``TensorMeta``
triples ``(name, dtype, shape)``; the codec (``codec.py``) moves them, this module only
names them. Times are integer nanoseconds on the *sender's* clock unless a field says
otherwise. ``docs/protocol.md`` is the specification; keep the two in step.

Nothing here does I/O or imports anything beyond the standard library.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "VERSION",
    "Kind",
    "Status",
    "TensorMeta",
    "GpuSpec",
    "ModelSignature",
    "DescribeModels",
    "ModelsDescribed",
    "RegisterWorker",
    "WorkerRegistered",
    "RegisterFrontend",
    "FrontendRegistered",
    "WorkerDirectory",
    "Heartbeat",
    "HeartbeatAck",
    "Leaving",
    "Requests",
    "Execute",
    "Route",
    "DropRequests",
    "Done",
    "Payloads",
    "Results",
    "Infer",
    "Reply",
    "Error",
    "StatsQuery",
    "StatsReply",
    "RegisterShard",
    "ShardModels",
    "PoolStates",
    "ShardNotes",
    "GrantBatch",
    "Offers",
    "Dispatched",
    "ShardDirectory",
    "AttachFrontend",
    "MoveModel",
    "ModelState",
    "Requeue",
    "ShardStats",
    "Message",
    "MESSAGE_TYPES",
]

VERSION = 1


class Kind(enum.IntEnum):
    """One byte that names the message type; stable across versions."""

    REGISTER_WORKER = 1
    WORKER_REGISTERED = 2
    REGISTER_FRONTEND = 3
    FRONTEND_REGISTERED = 4
    WORKER_DIRECTORY = 5
    HEARTBEAT = 6
    HEARTBEAT_ACK = 7
    LEAVING = 8
    REQUESTS = 10
    EXECUTE = 11
    ROUTE = 12
    DROP = 13
    DONE = 14
    PAYLOADS = 20
    RESULTS = 21
    DESCRIBE_MODELS = 22
    MODELS_DESCRIBED = 23
    INFER = 30
    REPLY = 31
    ERROR = 40
    STATS_QUERY = 50
    STATS_REPLY = 51
    # the multicore split (DESIGN §5): between the matcher and its model shards
    REGISTER_SHARD = 60
    SHARD_MODELS = 61
    POOL_STATES = 62
    SHARD_NOTES = 63
    GRANT_BATCH = 64
    OFFERS = 65
    DISPATCHED = 66
    SHARD_DIRECTORY = 67
    ATTACH_FRONTEND = 68
    MOVE_MODEL = 69
    MODEL_STATE = 70
    REQUEUE = 71
    SHARD_STATS = 72


class Status(enum.IntEnum):
    """Terminal status of one request, as the client sees it (``Reply.status``)."""

    OK = 0
    REJECTED = 1  # not accepted (unknown model, overload)
    DEADLINE_EXCEEDED = 2  # dropped: it could no longer meet its deadline
    UNAVAILABLE = 3  # no worker can serve it (all gone) or the service is down
    BAD_REQUEST = 4  # the request itself is wrong (inputs, names, dtypes)
    FAILED = 5  # accepted, dispatched, and the execution failed (reason in the text)
    UNAUTHORIZED = 6  # the client's token (or key) is not the one this frontend requires


# (name, dtype, shape): dtype is a numpy dtype string ("float32", "uint8", ...) or
# "BYTES" (length-prefixed byte strings, as in KServe v2's binary tensor extension).
TensorMeta = tuple[str, str, tuple[int, ...]]

# (model, max_batch, inputs, outputs): what a model takes and gives, for KServe metadata.
# Inputs and outputs are TensorMetas whose shape marks a variable dimension with -1.
ModelSignature = tuple[str, int, tuple[TensorMeta, ...], tuple[TensorMeta, ...]]

# (gpu index within the worker process, models served, profiles as
# (model, k_ns, c_ns, max_batch) tuples from the worker's offline measurements)
GpuSpec = tuple[int, tuple[str, ...], tuple[tuple[str, int, int, int], ...]]


@dataclass(frozen=True, slots=True)
class RegisterWorker:
    """worker -> scheduler: a worker process and its GPUs announce themselves."""

    KIND: ClassVar[Kind] = Kind.REGISTER_WORKER
    name: str  # human-readable, unique per process (host:pid by default)
    data_addr: str  # where frontends connect to push payloads (tcp://host:port)
    gpus: tuple[GpuSpec, ...]


@dataclass(frozen=True, slots=True)
class WorkerRegistered:
    """scheduler -> worker: accepted; the scheduler-wide id of each GPU, in order."""

    KIND: ClassVar[Kind] = Kind.WORKER_REGISTERED
    process_id: int  # this worker process's id (used in Route)
    gpu_ids: tuple[int, ...]  # scheduler-wide worker id of gpus[i]
    heartbeat_interval_ns: int


@dataclass(frozen=True, slots=True)
class RegisterFrontend:
    """frontend -> scheduler: a frontend announces itself."""

    KIND: ClassVar[Kind] = Kind.REGISTER_FRONTEND
    name: str


@dataclass(frozen=True, slots=True)
class FrontendRegistered:
    """scheduler -> frontend: its index (request ids carry it in their high bits)."""

    KIND: ClassVar[Kind] = Kind.FRONTEND_REGISTERED
    frontend_index: int
    models: tuple[str, ...]  # models some live worker serves right now


@dataclass(frozen=True, slots=True)
class WorkerDirectory:
    """scheduler -> frontends: the worker processes and their data addresses (full list)."""

    KIND: ClassVar[Kind] = Kind.WORKER_DIRECTORY
    workers: tuple[tuple[int, str], ...]  # (process_id, data_addr)
    models: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """worker or frontend -> scheduler, periodically: liveness and clock sampling."""

    KIND: ClassVar[Kind] = Kind.HEARTBEAT
    sent_ns: int  # sender's clock


@dataclass(frozen=True, slots=True)
class HeartbeatAck:
    """scheduler -> sender: echo plus the scheduler's clock, for offset estimation."""

    KIND: ClassVar[Kind] = Kind.HEARTBEAT_ACK
    echo_sent_ns: int  # the Heartbeat's sent_ns, unchanged
    scheduler_ns: int  # scheduler clock when it answered
    # 1: the scheduler knows the sender as registered; 0: it does not (it restarted, or
    # declared the sender dead): the sender must register again.
    registered: int = 1


@dataclass(frozen=True, slots=True)
class Leaving:
    """worker -> scheduler: draining (SIGTERM); plan nothing more on me, my batches in
    flight still finish and report ``Done``."""

    KIND: ClassVar[Kind] = Kind.LEAVING
    name: str


@dataclass(frozen=True, slots=True)
class Requests:
    """frontend -> scheduler: metadata of newly accepted requests, coalesced per loop turn.

    Parallel tuples (one entry per request) keep the message small and cheap to decode.
    """

    KIND: ClassVar[Kind] = Kind.REQUESTS
    request_ids: tuple[int, ...]
    models: tuple[str, ...]
    budgets_ns: tuple[int, ...]  # remaining time to the deadline when sent (not absolute)
    sizes: tuple[int, ...]  # payload bytes, informational


@dataclass(frozen=True, slots=True)
class Execute:
    """scheduler -> worker: run this batch on GPU ``gpu`` inside the window.

    ``earliest_ns``/``latest_ns`` are on the *scheduler's* clock; the worker converts them
    with its heartbeat-estimated offset.
    """

    KIND: ClassVar[Kind] = Kind.EXECUTE
    batch_id: int
    gpu: int  # index within the worker process
    model: str
    request_ids: tuple[int, ...]
    earliest_ns: int
    latest_ns: int
    expected_ns: int  # l(b) the scheduler planned with


@dataclass(frozen=True, slots=True)
class Route:
    """scheduler -> frontend: ship these payloads to that worker for that batch."""

    KIND: ClassVar[Kind] = Kind.ROUTE
    batch_id: int
    process_id: int
    gpu: int
    request_ids: tuple[int, ...]  # only this frontend's requests


@dataclass(frozen=True, slots=True)
class DropRequests:
    """scheduler -> frontend: these requests will never run; answer their clients."""

    KIND: ClassVar[Kind] = Kind.DROP
    request_ids: tuple[int, ...]
    reason: int  # central.protocol.conventions.DropReason value
    detail: str


@dataclass(frozen=True, slots=True)
class Done:
    """worker -> scheduler: a batch finished or was refused; times on the scheduler clock."""

    KIND: ClassVar[Kind] = Kind.DONE
    batch_id: int
    gpu: int
    status: int  # central.protocol.conventions.BatchStatus value
    start_ns: int
    end_ns: int
    batch_size: int


@dataclass(frozen=True, slots=True)
class Payloads:
    """frontend -> worker data socket: the inputs of some requests of one batch.

    ``tensors[i]`` describes request ``request_ids[i]``'s inputs; their raw frames follow
    the header in the same order, request by request.
    """

    KIND: ClassVar[Kind] = Kind.PAYLOADS
    batch_id: int
    gpu: int
    request_ids: tuple[int, ...]
    tensors: tuple[tuple[TensorMeta, ...], ...]


@dataclass(frozen=True, slots=True)
class Results:
    """worker -> frontend: outcomes of this frontend's requests of one batch.

    ``statuses[i]`` is a ``Status``; ``errors[i]`` is "" on success; ``tensors[i]``
    describes the outputs whose raw frames follow, request by request.
    """

    KIND: ClassVar[Kind] = Kind.RESULTS
    batch_id: int
    request_ids: tuple[int, ...]
    statuses: tuple[int, ...]
    errors: tuple[str, ...]
    tensors: tuple[tuple[TensorMeta, ...], ...]


@dataclass(frozen=True, slots=True)
class DescribeModels:
    """frontend -> worker data socket: which inputs and outputs do your models have?"""

    KIND: ClassVar[Kind] = Kind.DESCRIBE_MODELS
    tag: int


@dataclass(frozen=True, slots=True)
class ModelsDescribed:
    """worker -> frontend: the signature of every model the worker process serves."""

    KIND: ClassVar[Kind] = Kind.MODELS_DESCRIBED
    tag: int
    models: tuple[ModelSignature, ...]


@dataclass(frozen=True, slots=True)
class Infer:
    """client -> frontend: one inference request; input frames follow the header."""

    KIND: ClassVar[Kind] = Kind.INFER
    tag: int  # client-chosen, echoed in the Reply
    model: str
    slo_ns: int  # 0: the frontend's default SLO for the model
    tensors: tuple[TensorMeta, ...]


@dataclass(frozen=True, slots=True)
class Reply:
    """frontend -> client: the one terminal answer to an Infer."""

    KIND: ClassVar[Kind] = Kind.REPLY
    tag: int
    status: int  # Status
    error: str
    tensors: tuple[TensorMeta, ...]


@dataclass(frozen=True, slots=True)
class Error:
    """anyone -> peer: your message was refused (the peer's fault)."""

    KIND: ClassVar[Kind] = Kind.ERROR
    code: int  # Status value (BAD_REQUEST for protocol violations)
    message: str


@dataclass(frozen=True, slots=True)
class StatsQuery:
    """anyone -> scheduler or frontend: ask for a statistics snapshot."""

    KIND: ClassVar[Kind] = Kind.STATS_QUERY
    tag: int


@dataclass(frozen=True, slots=True)
class StatsReply:
    """scheduler or frontend -> asker: a JSON statistics snapshot (see docs/protocol.md)."""

    KIND: ClassVar[Kind] = Kind.STATS_REPLY
    tag: int
    json: str


# ---------------------------------------------------------------- the multicore split
# A scheduler started with ``--shards K`` (K >= 2) is one *matcher* process (it binds the
# scheduler address: workers and frontends register there as always) and K *model shard*
# processes, each binding a ROUTER of its own that frontends send ``Requests`` to. All of
# them run on one host and share its monotonic clock, so absolute times pass between them
# unchanged. The values mirror ``central.policy.exchange`` (docs/protocol.md §4.8).

# A pool as the shards see it: (models served, earliest free_at_ns, busy 0/1, live size).
PoolView = tuple[tuple[str, ...], int, int, int]


@dataclass(frozen=True, slots=True)
class RegisterShard:
    """shard -> matcher: shard ``index`` serves frontends at ``address``."""

    KIND: ClassVar[Kind] = Kind.REGISTER_SHARD
    index: int
    address: str  # where frontends connect their DEALERs (tcp://host:port, bound)
    name: str


@dataclass(frozen=True, slots=True)
class ShardModels:
    """matcher -> shard: own these models; (model, k_ns, c_ns, max_batch) is the profile a
    worker offered (0, 0, 0: none offered)."""

    KIND: ClassVar[Kind] = Kind.SHARD_MODELS
    models: tuple[tuple[str, int, int, int], ...]


@dataclass(frozen=True, slots=True)
class PoolStates:
    """matcher -> shards: pools whose earliest ``free_at`` or size changed (size 0: gone)."""

    KIND: ClassVar[Kind] = Kind.POOL_STATES
    pools: tuple[PoolView, ...]


@dataclass(frozen=True, slots=True)
class ShardNotes:
    """matcher -> shard, per loop turn: what happened to the shard's models.

    ``wakes``: models to recompute and re-offer (a worker is about to be free);
    ``finished``: (batch_id, model, ok 0/1, batch_size, duration_ns, late_ns) of ended
    batches (``late_ns``: how much later than it could have each started, for the margin);
    ``orphaned``: models that lost their last worker; ``lost``: batches whose worker
    was lost (their requests go back to the queue with their deadlines)."""

    KIND: ClassVar[Kind] = Kind.SHARD_NOTES
    wakes: tuple[str, ...]
    finished: tuple[tuple[int, str, int, int, int, int], ...]
    orphaned: tuple[str, ...]
    lost: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class GrantBatch:
    """matcher -> shard: dispatch ``model``'s current candidate as ``batch_id`` on worker
    ``worker_id``, starting no earlier than ``earliest_ns``."""

    KIND: ClassVar[Kind] = Kind.GRANT_BATCH
    model: str
    batch_id: int
    worker_id: int
    earliest_ns: int


@dataclass(frozen=True, slots=True)
class Offers:
    """shard -> matcher, per loop turn: ready candidates (model, version, latest_ns,
    expected_ns, margin_ns) and models whose candidate is no longer ready."""

    KIND: ClassVar[Kind] = Kind.OFFERS
    offers: tuple[tuple[str, int, int, int, int], ...]
    withdrawn: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Dispatched:
    """shard -> matcher: the answer to a ``GrantBatch``. With request ids: the batch, for
    the matcher to send as ``Execute`` and ``Route``; without: declined (the candidate
    had gone), the worker is free again."""

    KIND: ClassVar[Kind] = Kind.DISPATCHED
    batch_id: int
    model: str
    worker_id: int
    request_ids: tuple[int, ...]
    earliest_ns: int
    latest_ns: int
    expected_ns: int
    margin_ns: int


@dataclass(frozen=True, slots=True)
class ShardDirectory:
    """matcher -> frontends and shards: the shards, and which one owns each model (a
    model not listed goes to shard ``crc32(name) % len(shards)``). ``version`` grows."""

    KIND: ClassVar[Kind] = Kind.SHARD_DIRECTORY
    version: int
    shards: tuple[tuple[int, str], ...]  # (index, address)
    owners: tuple[tuple[str, int], ...]  # (model, shard index)


@dataclass(frozen=True, slots=True)
class AttachFrontend:
    """frontend -> shard: I am frontend ``frontend_index`` (request ids carry it)."""

    KIND: ClassVar[Kind] = Kind.ATTACH_FRONTEND
    frontend_index: int


@dataclass(frozen=True, slots=True)
class MoveModel:
    """matcher -> shard: hand ``model`` (its queue included) over to shard ``to``."""

    KIND: ClassVar[Kind] = Kind.MOVE_MODEL
    model: str
    to: int


@dataclass(frozen=True, slots=True)
class ModelState:
    """shard -> matcher -> shard ``to``: a moved model, its profile and queued requests
    (absolute times on the host's monotonic clock)."""

    KIND: ClassVar[Kind] = Kind.MODEL_STATE
    model: str
    to: int
    profile: tuple[int, int, int]  # k_ns, c_ns, max_batch (0, 0, 0: none yet)
    request_ids: tuple[int, ...]
    deadlines_ns: tuple[int, ...]
    arrivals_ns: tuple[int, ...]
    sizes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Requeue:
    """shard -> matcher -> shard, or shard -> shard through the matcher: requests that
    belong to another shard now (sent to the old owner after a move), with their
    absolute deadlines."""

    KIND: ClassVar[Kind] = Kind.REQUEUE
    request_ids: tuple[int, ...]
    models: tuple[str, ...]
    deadlines_ns: tuple[int, ...]
    arrivals_ns: tuple[int, ...]
    sizes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ShardStats:
    """shard -> matcher, periodically: the shard's statistics as JSON (docs/capacity.md)."""

    KIND: ClassVar[Kind] = Kind.SHARD_STATS
    index: int
    json: str


Message = (
    RegisterWorker
    | WorkerRegistered
    | RegisterFrontend
    | FrontendRegistered
    | WorkerDirectory
    | Heartbeat
    | HeartbeatAck
    | Leaving
    | Requests
    | Execute
    | Route
    | DropRequests
    | Done
    | Payloads
    | Results
    | DescribeModels
    | ModelsDescribed
    | Infer
    | Reply
    | Error
    | StatsQuery
    | StatsReply
    | RegisterShard
    | ShardModels
    | PoolStates
    | ShardNotes
    | GrantBatch
    | Offers
    | Dispatched
    | ShardDirectory
    | AttachFrontend
    | MoveModel
    | ModelState
    | Requeue
    | ShardStats
)

MESSAGE_TYPES: dict[int, type] = {
    cls.KIND: cls
    for cls in (
        RegisterWorker,
        WorkerRegistered,
        RegisterFrontend,
        FrontendRegistered,
        WorkerDirectory,
        Heartbeat,
        HeartbeatAck,
        Leaving,
        Requests,
        Execute,
        Route,
        DropRequests,
        Done,
        Payloads,
        Results,
        DescribeModels,
        ModelsDescribed,
        Infer,
        Reply,
        Error,
        StatsQuery,
        StatsReply,
        RegisterShard,
        ShardModels,
        PoolStates,
        ShardNotes,
        GrantBatch,
        Offers,
        Dispatched,
        ShardDirectory,
        AttachFrontend,
        MoveModel,
        ModelState,
        Requeue,
        ShardStats,
    )
}
