"""Who the scheduler knows: worker processes and their GPUs, frontends, and liveness.

A part of the scheduler's shell (``Scheduler`` and ``SplitScheduler`` both hold one):
plain bookkeeping with no sockets and no policy. It hands out ids (worker processes
from 1, GPUs from 0, frontend indices from 1), remembers what each worker registered
with and when each peer was last heard, and answers the liveness rule (``is_silent``).
What a change means for the policy is the caller's business (``central.runtime.control``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from central.protocol import RegisterWorker, WorkerDirectory

__all__ = ["Registry", "WorkerProc", "is_silent"]


def is_silent(last_seen_ns: int, now: int, timeout_ns: int) -> bool:
    """The liveness rule: a peer last heard at ``last_seen_ns`` is lost at ``now`` when
    strictly more than ``timeout_ns`` has passed (heard exactly ``timeout_ns`` ago: alive)."""
    return now - last_seen_ns > timeout_ns


@dataclass
class WorkerProc:
    """One registered worker process."""

    identity: bytes
    process_id: int
    name: str
    data_addr: str
    gpu_ids: tuple[int, ...]
    last_seen_ns: int
    register: RegisterWorker | None = None  # the message it registered with
    leaving: bool = False  # draining: no new batches; forgotten once silent
    models: tuple[tuple[str, ...], ...] = field(default=())  # per GPU, as registered


class Registry:
    """Worker processes, their GPUs and the frontends, by routing id and by index."""

    def __init__(self) -> None:
        self.procs: dict[bytes, WorkerProc] = {}
        self.gpu: dict[int, tuple[WorkerProc, int]] = {}  # worker id -> (proc, index)
        self.frontends: dict[int, bytes] = {}  # frontend index -> routing id
        self.frontend_seen: dict[bytes, int] = {}
        self.frontend_index: dict[bytes, int] = {}
        self.models: set[str] = set()  # served by some registered GPU
        self._next_process = 1
        self._next_gpu = 0
        self._next_frontend = 1

    # ------------------------------------------------------------------ workers

    def add_worker(self, identity: bytes, msg: RegisterWorker, now: int) -> WorkerProc:
        """A new worker process (an old one under ``identity`` must be removed first):
        ids for it and each of its GPUs, in ``msg.gpus`` order."""
        proc = WorkerProc(identity, self._next_process, msg.name, msg.data_addr, (), now, msg)
        self._next_process += 1
        gpu_ids: list[int] = []
        models: list[tuple[str, ...]] = []
        for index, spec in enumerate(msg.gpus):
            gid = self._next_gpu
            self._next_gpu += 1
            gpu_ids.append(gid)
            self.gpu[gid] = (proc, index)
            served = tuple(spec[1])
            models.append(served)
            self.models.update(served)
        proc.gpu_ids = tuple(gpu_ids)
        proc.models = tuple(models)
        self.procs[identity] = proc
        return proc

    def remove_worker(self, identity: bytes) -> WorkerProc | None:
        """Forget the process under ``identity`` (its GPUs stay in ``gpu`` until the
        policy has heard of each)."""
        return self.procs.pop(identity, None)

    def silent(self, now: int, timeout_ns: int) -> list[WorkerProc]:
        """The workers ``is_silent`` at ``now``."""
        return [p for p in self.procs.values() if is_silent(p.last_seen_ns, now, timeout_ns)]

    def recount_models(self) -> None:
        """The served models again, from the processes still registered."""
        self.models = {m for p in self.procs.values() for served in p.models for m in served}

    def heard(self, identity: bytes, now: int) -> bool:
        """Note a sign of life; whether the sender is a known worker or frontend."""
        proc = self.procs.get(identity)
        if proc is not None:
            proc.last_seen_ns = now
            return True
        return identity in self.frontend_index

    # ---------------------------------------------------------------- frontends

    def add_frontend(self, identity: bytes, now: int) -> int:
        """A frontend's index; a known identity keeps its index (re-registering is
        idempotent)."""
        index = self.frontend_index.get(identity)
        if index is None:
            index = self._next_frontend
            self._next_frontend += 1
        self.frontends[index] = identity
        self.frontend_index[identity] = index
        self.frontend_seen[identity] = now
        return index

    def directory(self) -> WorkerDirectory:
        """Every worker process's data address and the models served."""
        return WorkerDirectory(
            tuple((p.process_id, p.data_addr) for p in self.procs.values()),
            tuple(sorted(self.models)),
        )
