"""Events in, actions out: the vocabulary of the sans-I/O policy core.

Theory of operation: a driver (the real-time scheduler loop in ``central.runtime``
or the discrete-event simulator in ``bench``) turns whatever happened into one of
the *events* below and calls ``policy.handle(event, now_ns)``. The policy answers
with a list of *actions*; the driver carries them out. Every time here is an
integer nanosecond on the scheduler's own clock; the driver converts at its edge.

Events are named as facts, actions as commands. Nothing here does I/O, reads a
clock or draws randomness. Every class is a frozen, slotted dataclass so that
events and actions can be logged, compared in tests and replayed.
"""

from __future__ import annotations

from dataclasses import dataclass

# wire conventions the policy shares with every role (stdlib only)
from central.protocol.conventions import BatchStatus, DropReason

__all__ = [
    "Profile",
    "Request",
    "RequestsArrived",
    "BatchDone",
    "BatchStatus",
    "WorkerJoined",
    "WorkerLost",
    "Tick",
    "Event",
    "Dispatch",
    "Drop",
    "DropReason",
    "Action",
]


@dataclass(frozen=True, slots=True)
class Profile:
    """Batch latency model ``l(b) = k_ns * b + c_ns`` for one model."""

    k_ns: int  # marginal cost of one more request in a batch
    c_ns: int  # fixed cost of a batch (may be <= 0 for CPU CNNs, see DESIGN §6)
    max_batch: int = 64  # the largest batch the executor accepts

    def latency_ns(self, b: int) -> int:
        """Expected duration of a batch of ``b`` requests (never below ``k_ns``)."""
        return max(self.k_ns * b + self.c_ns, self.k_ns, 1)


# --------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Request:
    """Metadata of one request: the scheduler never sees its payload."""

    request_id: int  # unique across the whole cluster (frontend index in the high bits)
    model: str
    deadline_ns: int  # absolute, scheduler clock: the result must be back by then
    arrival_ns: int  # when the scheduler learnt of it, scheduler clock
    size: int = 1  # payload bytes (informational; batching counts requests)


@dataclass(frozen=True, slots=True)
class RequestsArrived:
    """A batch of request metadata reached the scheduler (one message, many requests)."""

    requests: tuple[Request, ...]


@dataclass(frozen=True, slots=True)
class BatchDone:
    """A worker finished (or refused) a batch; times are on the scheduler clock."""

    batch_id: int
    worker_id: int
    status: BatchStatus
    start_ns: int  # when execution started (== end_ns when refused)
    end_ns: int  # when the worker became free again
    batch_size: int


@dataclass(frozen=True, slots=True)
class WorkerJoined:
    """A GPU (real or emulated) is ready to serve these models.

    ``profiles`` are the worker's own offline measurements; the policy uses them for a
    model it has no profile for yet and otherwise keeps its configured one.
    """

    worker_id: int
    models: tuple[str, ...]
    profiles: tuple[tuple[str, Profile], ...] = ()


@dataclass(frozen=True, slots=True)
class WorkerLost:
    """A GPU stopped answering or left; it gets no more batches."""

    worker_id: int


@dataclass(frozen=True, slots=True)
class Tick:
    """The wake-up the policy asked for through ``next_wakeup_ns`` (or any later one)."""


Event = RequestsArrived | BatchDone | WorkerJoined | WorkerLost | Tick


# -------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Run ``request_ids`` as one batch of ``model`` on ``worker_id``.

    The worker must start inside ``[earliest_ns, latest_ns]`` or refuse with a status.
    """

    batch_id: int
    model: str
    worker_id: int
    request_ids: tuple[int, ...]  # deadline order: the head first
    earliest_ns: int  # not before: the worker is still busy until then
    latest_ns: int  # not after: the head would miss its deadline
    expected_ns: int  # l(b) from the profile the decision used


@dataclass(frozen=True, slots=True)
class Drop:
    """Answer these requests with a drop now; they will never run."""

    request_ids: tuple[int, ...]
    reason: DropReason


Action = Dispatch | Drop
