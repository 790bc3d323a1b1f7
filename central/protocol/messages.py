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
    reason: int  # central.policy.DropReason value
    detail: str


@dataclass(frozen=True, slots=True)
class Done:
    """worker -> scheduler: a batch finished or was refused; times on the scheduler clock."""

    KIND: ClassVar[Kind] = Kind.DONE
    batch_id: int
    gpu: int
    status: int  # central.policy.BatchStatus value
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
    )
}
