"""The scheduler process: one ROUTER, one policy, one precise timer. Metadata only.

Theory of operation: frontends and workers connect DEALER sockets to the scheduler's
ROUTER. Each loop turn drains every queued message (``Reader``), turns them into policy
events through ``translate``, feeds them to the policy with the current time, carries out
the returned actions (Execute to the worker and Route to the frontends of a Dispatch,
DropRequests for a Drop), then arms the one ``PreciseTimer`` at ``next_wakeup_ns``. When
it fires, the policy gets a ``Tick``. Payload bytes never come here: the frontends ship
them to workers directly; ``bytes_in`` in the stats lets tests prove it.

Liveness: workers and frontends send heartbeats; a worker silent for
``worker_timeout_ns`` is reported to the policy as lost (its GPUs get no more batches).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

import zmq

from central.policy import PolicyConfig, make_policy
from central.policy.types import (
    Action,
    BatchDone,
    Dispatch,
    Drop,
    DropReason,
    Event,
    Tick,
    WorkerJoined,
    WorkerLost,
)
from central.protocol import (
    DEFAULT_LIMITS,
    Done,
    Error,
    FrontendRegistered,
    Heartbeat,
    HeartbeatAck,
    RegisterFrontend,
    RegisterWorker,
    RemoteProtocolError,
    Requests,
    StatsQuery,
    StatsReply,
    Status,
    WorkerDirectory,
    WorkerRegistered,
    decode,
    encode,
)

from .clock import Clock, LatenessLog, PreciseTimer, Wakeups
from .translate import (
    FRONTEND_SHIFT,
    dispatch_to_messages,
    done_to_event,
    drop_to_messages,
    gpu_profiles,
    requests_to_event,
)
from .zmqio import Reader, close_all

__all__ = ["SchedulerConfig", "Scheduler"]

log = logging.getLogger("baton.scheduler")


@dataclass(frozen=True)
class SchedulerConfig:
    """Knobs of the scheduler process (the policy has its own ``PolicyConfig``)."""

    address: str = "tcp://127.0.0.1:5550"  # ROUTER bind address
    policy: str = "symphony"
    policy_config: PolicyConfig = field(default_factory=PolicyConfig)
    one_way_ns: int = 50_000  # expected frontend -> scheduler delay, taken off budgets
    heartbeat_interval_ns: int = 250_000_000
    worker_timeout_ns: int = 3_000_000_000
    spin_ns: int = 1_000_000  # timer spin window where no kernel timer is available
    batch_log: int = 20_000  # recent batch records kept for Gantt charts


@dataclass
class _WorkerProc:
    identity: bytes
    process_id: int
    name: str
    data_addr: str
    gpu_ids: tuple[int, ...]
    last_seen_ns: int


class Scheduler:
    """Serve until ``stop`` is set; see the module comment for the loop."""

    def __init__(
        self,
        config: SchedulerConfig,
        *,
        clock: Clock = time.monotonic_ns,
        context: zmq.Context | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self.policy = make_policy(config.policy, config.policy_config)
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._reader: Reader | None = None
        self._timer: PreciseTimer | None = None
        self._procs: dict[bytes, _WorkerProc] = {}
        self._gpu: dict[int, tuple[_WorkerProc, int]] = {}  # worker id -> (proc, index)
        self._frontends: dict[int, bytes] = {}
        self._frontend_seen: dict[bytes, int] = {}
        self._frontend_index: dict[bytes, int] = {}
        self._next_process = 1
        self._next_gpu = 0
        self._next_frontend = 1
        self._models: set[str] = set()
        self._dispatched: dict[int, tuple[Dispatch, int]] = {}  # batch -> (action, sent_ns)
        self.lateness = LatenessLog()
        self.batches: deque[tuple[Any, ...]] = deque(maxlen=config.batch_log)
        self.counters: dict[str, int] = {
            "messages_in": 0,
            "bytes_in": 0,
            "request_messages": 0,
            "request_bytes_in": 0,
            "requests_in": 0,
            "batches": 0,
            "batched_requests": 0,
            "dropped": 0,
            "protocol_errors": 0,
        }
        self.drops_by_reason: dict[str, int] = {r.name: 0 for r in DropReason}
        self.done_by_status: dict[str, int] = {}
        self.batch_sizes: dict[int, int] = {}
        self.busy_ns: dict[int, int] = {}
        self._started_ns = clock()

    # ------------------------------------------------------------------ serving

    async def serve(self, stop: asyncio.Event) -> None:
        """Bind, serve until ``stop`` is set, then close every socket."""
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.bind(self.config.address)
        self._sock = sock
        wakeups = Wakeups(clock=self._clock, spin_ns=self.config.spin_ns, lateness=self.lateness)
        self._timer = PreciseTimer(self._on_timer, wakeups)
        self._reader = Reader(sock, self._on_messages)
        liveness = asyncio.ensure_future(self._liveness_loop())
        try:
            await stop.wait()
        finally:
            liveness.cancel()
            self._timer.arm(None)
            wakeups.close()
            self._reader.close()
            close_all([sock])

    @property
    def bound_address(self) -> str:
        assert self._sock is not None
        return self._sock.getsockopt_string(zmq.LAST_ENDPOINT)

    # ----------------------------------------------------------------- handlers

    def _on_messages(self, batch: list[Sequence[bytes]]) -> None:
        now = self._clock()
        for frames in batch:
            identity = frames[0]
            body = frames[1:]
            self.counters["messages_in"] += 1
            nbytes = sum(len(f) for f in body)
            self.counters["bytes_in"] += nbytes
            try:
                msg, _ = decode(body, DEFAULT_LIMITS)
            except RemoteProtocolError as exc:
                self.counters["protocol_errors"] += 1
                self._send(identity, Error(int(Status.BAD_REQUEST), str(exc)))
                continue
            try:
                self._handle_message(identity, msg, nbytes, now)
            except (TypeError, ValueError, KeyError, RemoteProtocolError) as exc:
                # a well-framed message with bad contents (e.g. a string where a budget
                # belongs): the peer's fault; refuse it and keep serving the others
                self.counters["protocol_errors"] += 1
                log.warning("refused %s from %r: %s", type(msg).__name__, identity, exc)
                self._send(identity, Error(int(Status.BAD_REQUEST), f"{type(msg).__name__}: {exc}"))
        self._after_turn()

    def _handle_message(self, identity: bytes, msg: Any, nbytes: int, now: int) -> None:
        if isinstance(msg, Requests):
            self.counters["request_messages"] += 1
            self.counters["request_bytes_in"] += nbytes
            self.counters["requests_in"] += len(msg.request_ids)
            if not (
                len(msg.request_ids) == len(msg.models) == len(msg.budgets_ns) == len(msg.sizes)
            ):
                self._send(identity, Error(int(Status.BAD_REQUEST), "Requests: ragged fields"))
                return
            index = self._frontend_index.get(identity)
            if index is None:
                self._send(identity, Error(int(Status.BAD_REQUEST), "Requests from an unregistered frontend"))
                return
            if any(rid >> FRONTEND_SHIFT != index for rid in msg.request_ids):
                self._send(identity, Error(int(Status.BAD_REQUEST), "request ids must carry your frontend index"))
                return
            self._frontend_seen[identity] = now
            self._feed(requests_to_event(msg, now, self.config.one_way_ns), now)
        elif isinstance(msg, Done):
            proc = self._procs.get(identity)
            if proc is None or not 0 <= msg.gpu < len(proc.gpu_ids):
                self._send(identity, Error(int(Status.BAD_REQUEST), "Done from unknown worker"))
                return
            proc.last_seen_ns = now
            worker_id = proc.gpu_ids[msg.gpu]
            entry = self._dispatched.get(msg.batch_id)
            if entry is None or entry[0].worker_id != worker_id:
                self._send(identity, Error(int(Status.BAD_REQUEST), f"Done for batch {msg.batch_id}: not yours"))
                return
            self._record_done(msg, worker_id)
            self._feed(done_to_event(msg, worker_id), now)
        elif isinstance(msg, Heartbeat):
            if identity in self._procs:
                self._procs[identity].last_seen_ns = now
            else:
                self._frontend_seen[identity] = now
            self._send(identity, HeartbeatAck(msg.sent_ns, self._clock()))
        elif isinstance(msg, RegisterWorker):
            self._register_worker(identity, msg, now)
        elif isinstance(msg, RegisterFrontend):
            index = self._next_frontend
            self._next_frontend += 1
            self._frontends[index] = identity
            self._frontend_index[identity] = index
            self._frontend_seen[identity] = now
            self._send(identity, FrontendRegistered(index, tuple(sorted(self._models))))
            self._send(identity, self._directory())
            log.info("frontend %s registered as index %d", msg.name, index)
        elif isinstance(msg, StatsQuery):
            self._send(identity, StatsReply(msg.tag, json.dumps(self.stats(msg.tag & 1 == 1))))
        else:
            self._send(
                identity,
                Error(int(Status.BAD_REQUEST), f"{type(msg).__name__} is not for the scheduler"),
            )

    def _register_worker(self, identity: bytes, msg: RegisterWorker, now: int) -> None:
        old = self._procs.pop(identity, None)
        if old is not None:  # re-registration: the old GPUs are gone
            for gid in old.gpu_ids:
                self._gpu.pop(gid, None)
                self._feed(WorkerLost(gid), now)
        gpu_ids = []
        proc = _WorkerProc(identity, self._next_process, msg.name, msg.data_addr, (), now)
        self._next_process += 1
        for index, spec in enumerate(msg.gpus):
            gid = self._next_gpu
            self._next_gpu += 1
            gpu_ids.append(gid)
            self._gpu[gid] = (proc, index)
            models = tuple(spec[1])
            self._models.update(models)
            self._feed(WorkerJoined(gid, models, gpu_profiles(spec)), now)
        proc.gpu_ids = tuple(gpu_ids)
        self._procs[identity] = proc
        self._send(
            identity,
            WorkerRegistered(proc.process_id, proc.gpu_ids, self.config.heartbeat_interval_ns),
        )
        self._broadcast_directory()
        log.info("worker %s registered: gpus %s", msg.name, proc.gpu_ids)

    def _on_timer(self) -> None:
        self._feed(Tick(), self._clock())
        self._after_turn()

    def _feed(self, event: Event, now: int) -> None:
        for action in self.policy.handle(event, now):
            self._carry_out(action, now)

    def _after_turn(self) -> None:
        assert self._timer is not None
        self._timer.arm(self.policy.next_wakeup_ns())
        if self._reader is not None:
            self._reader.poke()

    def _carry_out(self, action: Action, now: int) -> None:
        if isinstance(action, Dispatch):
            proc, index = self._gpu[action.worker_id]
            execute, routes = dispatch_to_messages(action, index, proc.process_id)
            self._send(proc.identity, execute)
            for fe, route in routes.items():
                identity = self._frontends.get(fe)
                if identity is not None:
                    self._send(identity, route)
            self.counters["batches"] += 1
            self.counters["batched_requests"] += len(action.request_ids)
            b = len(action.request_ids)
            self.batch_sizes[b] = self.batch_sizes.get(b, 0) + 1
            self._dispatched[action.batch_id] = (action, now)
        elif isinstance(action, Drop):
            self.counters["dropped"] += len(action.request_ids)
            self.drops_by_reason[action.reason.name] += len(action.request_ids)
            for fe, drop in drop_to_messages(action).items():
                identity = self._frontends.get(fe)
                if identity is not None:
                    self._send(identity, drop)

    def _record_done(self, msg: Done, worker_id: int) -> None:
        entry = self._dispatched.pop(msg.batch_id, None)
        status = str(msg.status)
        self.done_by_status[status] = self.done_by_status.get(status, 0) + 1
        self.busy_ns[worker_id] = self.busy_ns.get(worker_id, 0) + max(0, msg.end_ns - msg.start_ns)
        if entry is not None:
            action, sent = entry
            self.batches.append(
                (
                    msg.batch_id,
                    worker_id,
                    action.model,
                    msg.batch_size,
                    sent,
                    action.earliest_ns,
                    action.latest_ns,
                    msg.start_ns,
                    msg.end_ns,
                    msg.status,
                )
            )

    # --------------------------------------------------------------- plumbing

    def _send(self, identity: bytes, msg: Any) -> None:
        assert self._sock is not None
        try:
            self._sock.send_multipart([identity, *encode(msg)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # peer gone (ROUTER_MANDATORY) or HWM: log, go on
            log.warning("send %s to %r failed: %s", type(msg).__name__, identity, exc)
        if self._reader is not None:
            self._reader.poke()  # a send can swallow the descriptor's read edge

    def _directory(self) -> WorkerDirectory:
        return WorkerDirectory(
            tuple((p.process_id, p.data_addr) for p in self._procs.values()),
            tuple(sorted(self._models)),
        )

    def _broadcast_directory(self) -> None:
        directory = self._directory()
        for identity in self._frontends.values():
            self._send(identity, directory)

    async def _liveness_loop(self) -> None:
        interval = self.config.heartbeat_interval_ns / 1e9
        while True:
            await asyncio.sleep(interval)
            now = self._clock()
            lost = [
                p
                for p in self._procs.values()
                if now - p.last_seen_ns > self.config.worker_timeout_ns
            ]
            for proc in lost:
                log.warning("worker %s silent for too long: lost", proc.name)
                del self._procs[proc.identity]
                for gid in proc.gpu_ids:
                    self._gpu.pop(gid, None)
                    self._feed(WorkerLost(gid), now)
            if lost:
                self._models = {
                    m for p in self._procs.values() for m in self._models_of(p)
                }
                self._broadcast_directory()
                self._after_turn()

    def _models_of(self, proc: _WorkerProc) -> set[str]:
        snap = self.policy.snapshot()
        workers = snap.get("workers", {})
        out: set[str] = set()
        for gid in proc.gpu_ids:
            out.update(workers.get(gid, workers.get(str(gid), {})).get("models", ()))
        return out

    # ------------------------------------------------------------------ stats

    def stats(self, with_batches: bool = False) -> dict[str, Any]:
        """A JSON-able snapshot: counters, drops, batch sizes, policy state, lateness."""
        now = self._clock()
        out: dict[str, Any] = {
            "uptime_s": (now - self._started_ns) / 1e9,
            "counters": dict(self.counters),
            "drops_by_reason": dict(self.drops_by_reason),
            "done_by_status": dict(self.done_by_status),
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "busy_ns": {str(k): v for k, v in self.busy_ns.items()},
            "timer_lateness_us": {
                "p50": self.lateness.percentile(0.5) / 1e3,
                "p99": self.lateness.percentile(0.99) / 1e3,
                "max": self.lateness.percentile(1.0) / 1e3,
            },
            "workers": {
                str(gid): {"process": proc.name, "gpu": index}
                for gid, (proc, index) in self._gpu.items()
            },
            "frontends": len(self._frontends),
            "policy": self.policy.snapshot(),
        }
        if with_batches:
            out["batches"] = [list(b) for b in self.batches]
        return out
