"""The scheduler process: one ROUTER, one policy, one precise timer. Metadata only.

Theory of operation: frontends and workers connect DEALER sockets to the scheduler's
ROUTER. Each loop turn drains every queued message (``Reader``), turns them into policy
events through ``translate``, feeds them to the policy with the current time, carries out
the returned actions (Execute to the worker and Route to the frontends of a Dispatch,
DropRequests for a Drop), then arms the one ``PreciseTimer`` at ``next_wakeup_ns``. When
it fires, the policy gets a ``Tick``. Metadata is batched end to end: every ``Requests``
message of one turn (from every frontend) becomes a single ``RequestsArrived``, fed once
after the turn's other messages, so a model's candidate is recomputed once per turn
rather than once per message; per request the hot path allocates only the policy's
``Request`` (the metrics keep that object rather than a tuple of their own). Payload
bytes never come here: the frontends ship them to workers directly; ``bytes_in`` in the
stats lets tests prove it.

Liveness: workers and frontends send heartbeats; a worker silent for
``worker_timeout_ns`` is reported to the policy as lost (its GPUs get no more batches).

Observability (docs/metrics.md): per-model counters and histograms are bumped as events
happen (an increment or a bisect each); ``metric_families`` turns them into Prometheus
families for the optional ``/metrics`` endpoint, and an optional PUB socket publishes
``stats()`` plus the batches finished since the last publish every ``stats_interval_ns``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import zmq

from central.policy import PolicyConfig, make_policy
from central.policy.sharded import ShardedPolicy, ShardOptions
from central.policy.types import (
    Action,
    BatchStatus,
    Dispatch,
    Drop,
    DropReason,
    Event,
    Request,
    RequestsArrived,
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
    Leaving,
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

from central.plumbing.clock import ClockLike, LatenessLog, PreciseTimer, as_clock
from central.plumbing.metrics import BATCH_SIZE_BUCKETS, Family, Histogram, MetricsServer, render
from central.protocol.conventions import FRONTEND_SHIFT
from .translate import (
    dispatch_to_messages,
    done_to_event,
    drop_to_messages,
    gpu_profiles,
    requests_to_event,
)
from central.plumbing.security import PeerGate, load_keys, warn_if_exposed
from central.plumbing.zmqio import Reader, close_all, configure, send_frames

__all__ = ["SchedulerConfig", "Scheduler", "is_silent"]

log = logging.getLogger("baton.scheduler")

_NOBLOCK = int(zmq.NOBLOCK)


def _unbound(frames: list[bytes], flags: int) -> None:
    raise RuntimeError("the scheduler has no socket yet: serve() or attach() first")


_STATUS_NAME = {int(s): s.name for s in BatchStatus}  # Done.status -> label, no enum call
_RAN = (int(BatchStatus.OK), int(BatchStatus.FAILED))  # statuses of batches that ran


@dataclass(frozen=True)
class SchedulerConfig:
    """Knobs of the scheduler process (the policy has its own ``PolicyConfig``)."""

    address: str = "tcp://127.0.0.1:5550"  # ROUTER bind address
    policy: str = "symphony"
    # > 0: run the default policy split into this many model shards and a matcher
    # (``central.policy.sharded``), all in this process; 0: the policy named above
    inprocess_shards: int = 0
    # >= 2: this process is the matcher of that many model-shard processes
    # (``central.runtime.matcher``, built by ``make_scheduler``); 0: one process
    shard_processes: int = 0
    placement: tuple[tuple[str, int], ...] = ()  # (model, shard) to start with; else CRC-32
    rebalance_interval_ns: int = 2_000_000_000  # how often shard loads are compared; 0: never
    rebalance_ratio: float = 1.5  # move models when the busiest shard exceeds this x mean
    policy_config: PolicyConfig = field(default_factory=PolicyConfig)
    # A baseline policy's own knobs (``make_policy``'s ``options``: ``UncoordinatedConfig``
    # for "uncoordinated"); None: its defaults.
    policy_options: Any = None
    one_way_ns: int = 50_000  # expected frontend -> scheduler delay, taken off budgets
    heartbeat_interval_ns: int = 200_000_000
    # A worker process silent this long is lost (its heartbeats come from its serving
    # loop every heartbeat_interval_ns): declared within this plus one check interval.
    worker_timeout_ns: int = 900_000_000
    liveness_check_ns: int = 100_000_000
    # CURVE keys (``baton keys DIR``): encrypt, authenticate, authorize peers on their
    # key; None: off (then bind to loopback only).
    keys_dir: str | None = None
    spin_ns: int = 1_000_000  # timer spin window where no kernel timer is available
    batch_log: int = 20_000  # recent batch records kept for Gantt charts
    metrics_host: str = "127.0.0.1"  # where GET /metrics listens
    metrics_port: int | None = None  # None: no /metrics endpoint; 0: any free port
    stats_pub: str | None = None  # PUB bind address for [b"stats", json]; None: off
    stats_interval_ns: int = 250_000_000  # how often the PUB socket publishes
    busy_window_ns: int = 10_000_000_000  # window of the busy-ratio gauge


def is_silent(last_seen_ns: int, now: int, timeout_ns: int) -> bool:
    """The liveness rule: a peer last heard at ``last_seen_ns`` is lost at ``now`` when
    strictly more than ``timeout_ns`` has passed (heard exactly ``timeout_ns`` ago: alive)."""
    return now - last_seen_ns > timeout_ns


@dataclass
class _WorkerProc:
    identity: bytes
    process_id: int
    name: str
    data_addr: str
    gpu_ids: tuple[int, ...]
    last_seen_ns: int
    register: RegisterWorker | None = None  # the message it registered with
    leaving: bool = False  # draining: no new batches; forgotten once silent


class Scheduler:
    """Serve until ``stop`` is set; see the module comment for the loop."""

    def __init__(
        self,
        config: SchedulerConfig,
        *,
        clock: ClockLike = time.monotonic_ns,
        context: zmq.Context | None = None,
    ) -> None:
        self.config = config
        # reads and sleeps (liveness, publishing, precise timers); ``_clock`` is its
        # plain reader, for the hot paths
        self._time = as_clock(clock)
        self._clock = self._time.reader
        self.policy = (
            ShardedPolicy(config.policy_config, ShardOptions(config.inprocess_shards))
            if config.inprocess_shards
            else make_policy(config.policy, config.policy_config, options=config.policy_options))
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._out: Callable[[list[bytes], int], None] = _unbound  # sends one message
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
        # per-model accounting for /metrics (docs/metrics.md says what each measures)
        self._arrivals: dict[int, Request] = {}  # queued request id -> its metadata
        self._turn: list[Request] = []  # this turn's arrivals, fed at its end
        self._inflight_requests: dict[int, list[Request]] = {}  # batch -> its requests
        self.model_requests: Counter[str] = Counter()
        self.model_drops: dict[tuple[str, str], int] = {}  # (model, reason) -> requests
        self.model_batches: dict[str, int] = {}
        self.model_batched_requests: dict[str, int] = {}
        self.model_done: dict[tuple[str, str], list[int]] = {}  # (model, status) -> [b, r]
        self.batch_size_hist: dict[str, Histogram] = {}
        self.queue_hist: dict[str, Histogram] = {}
        self.exec_hist: dict[str, Histogram] = {}
        self._batches_logged = 0  # batch records ever appended (the PUB's cursor)
        self._metrics_server: MetricsServer | None = None
        self._pub: zmq.Socket | None = None

    # ------------------------------------------------------------------ serving

    async def serve(self, stop: asyncio.Event) -> None:
        """Bind, serve until ``stop`` is set, then close every socket."""
        keys = load_keys(self.config.keys_dir, "scheduler") if self.config.keys_dir else None
        warn_if_exposed(self.config.address, keys, "the scheduler")
        sock = self._ctx.socket(zmq.ROUTER)
        if keys is not None:
            keys.server(sock, self._ctx)
        # handover: a restarted worker or shard reconnects under its old routing id and
        # takes the id over at once (without it the new connection may be refused while
        # the old one lingers; with keys, PeerGate still refuses an id moving to another key)
        configure(sock, hwm=0, mandatory=True, handover=True)
        sock.bind(self.config.address)
        self._sock = sock
        self._out = functools.partial(send_frames, sock)
        wakeups = self._time.wakeups(spin_ns=self.config.spin_ns, lateness=self.lateness)
        self._timer = PreciseTimer(self._on_timer, wakeups)
        if keys is None:
            self._reader = Reader(sock, self._on_messages)
        else:  # authorize on the sender's CURVE key before anything else sees the message
            gate = PeerGate(keys)
            self._reader = Reader(
                sock, lambda batch: self._on_messages(gate.admit(batch, self._unauthorized)),
                copy=False)
        tasks = [asyncio.ensure_future(self._liveness_loop())]
        try:
            if self.config.stats_pub:
                pub = self._ctx.socket(zmq.PUB)
                self._pub = pub
                if keys is not None:
                    keys.server(pub, self._ctx)
                configure(pub, sndhwm=16)  # a slow dashboard loses snapshots, not us
                pub.bind(self.config.stats_pub)
                tasks.append(asyncio.ensure_future(self._publish_loop(pub)))
            if self.config.metrics_port is not None:
                self._metrics_server = MetricsServer(
                    self.config.metrics_host, self.config.metrics_port, self.render_metrics
                )
                await self._metrics_server.start()
                log.info("metrics on http://%s:%d/metrics", self.config.metrics_host,
                         self._metrics_server.port)
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._metrics_server is not None:
                await self._metrics_server.close()
            if self._pub is not None:
                close_all([self._pub])
            self._timer.arm(None)
            wakeups.close()
            self._reader.close()
            close_all([sock])
            if keys is not None:
                keys.stop()

    def attach(self, sock: Any, timer: Any) -> None:
        """Drive this scheduler without a socket or loop: ``sock`` needs only
        ``send_multipart(frames, flags)``, ``timer`` only ``arm(t_ns | None)``; feed it
        with ``receive`` and ``tick``. For in-process drivers (the capacity benchmark's
        hot-path replay); ``serve`` does the same with real ones."""
        self._sock = sock
        self._out = sock.send_multipart
        self._timer = timer

    def receive(self, batch: list[Sequence[bytes]]) -> None:
        """One loop turn's messages, each ``[identity, *frames]``."""
        self._on_messages(batch)

    def tick(self) -> None:
        """The timer armed through ``timer.arm`` fired."""
        self._on_timer()

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
                self._refuse(identity, str(exc))
                continue
            try:
                self._handle_message(identity, msg, nbytes, now)
            except (TypeError, ValueError, KeyError, RemoteProtocolError) as exc:
                # a well-framed message with bad contents (e.g. a string where a budget
                # belongs): the peer's fault; refuse it and keep serving the others
                self.counters["protocol_errors"] += 1
                log.warning("refused %s from %r: %s", type(msg).__name__, identity, exc)
                self._refuse(identity, f"{type(msg).__name__}: {exc}")
        if self._turn:
            turn, self._turn = self._turn, []
            self._feed(RequestsArrived(tuple(turn)), now)
        self._after_turn()

    def _handle_message(self, identity: bytes, msg: Any, nbytes: int, now: int) -> None:
        if isinstance(msg, Requests):
            self.counters["request_messages"] += 1
            self.counters["request_bytes_in"] += nbytes
            self.counters["requests_in"] += len(msg.request_ids)
            if not (
                len(msg.request_ids) == len(msg.models) == len(msg.budgets_ns) == len(msg.sizes)
            ):
                self._refuse(identity, "Requests: ragged fields")
                return
            index = self._frontend_index.get(identity)
            if index is None:
                self._refuse(identity, "Requests from an unregistered frontend")
                return
            ids = msg.request_ids
            # ids of one frontend form one interval of values: its ends are enough
            if ids and not (min(ids) >> FRONTEND_SHIFT == index == max(ids) >> FRONTEND_SHIFT):
                self._refuse(identity, "request ids must carry your frontend index")
                return
            requests = requests_to_event(msg, now, self.config.one_way_ns).requests
            self._frontend_seen[identity] = now
            self.model_requests.update(msg.models)
            self._arrivals.update(zip(ids, requests))
            self._turn.extend(requests)
        elif isinstance(msg, Done):
            proc = self._procs.get(identity)
            if proc is None or not 0 <= msg.gpu < len(proc.gpu_ids):
                self._refuse(identity, "Done from unknown worker")
                return
            proc.last_seen_ns = now
            worker_id = proc.gpu_ids[msg.gpu]
            entry = self._dispatched.get(msg.batch_id)
            if entry is None or entry[0].worker_id != worker_id:
                self._refuse(identity, f"Done for batch {msg.batch_id}: not yours")
                return
            self._record_done(msg, worker_id)
            self._feed(done_to_event(msg, worker_id), now)
        elif isinstance(msg, Heartbeat):
            proc = self._procs.get(identity)
            if proc is not None:
                proc.last_seen_ns = now
            known = proc is not None or identity in self._frontend_index
            # registered=0 tells a sender this scheduler does not know it (a restart, or
            # it was declared lost): it registers again. Unknown senders leave no state.
            self._send(identity, HeartbeatAck(msg.sent_ns, self._clock(), int(known)))
        elif isinstance(msg, RegisterWorker):
            self._register_worker(identity, msg, now)
        elif isinstance(msg, Leaving):
            proc = self._procs.get(identity)
            if proc is None:
                self._refuse(identity, "Leaving from an unknown worker")
            elif not proc.leaving:
                # Plan nothing more on its GPUs; its batches in flight finish and report
                # Done as usual. It is forgotten once it falls silent (liveness loop).
                proc.leaving = True
                for gid in proc.gpu_ids:
                    self._feed(WorkerLost(gid), now)
                log.info("worker %s is draining", proc.name)
        elif isinstance(msg, RegisterFrontend):
            index = self._frontend_index.get(identity)
            if index is None:  # a known identity keeps its index: re-registering is idempotent
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
            self._refuse(identity, f"{type(msg).__name__} is not for the scheduler")

    def _register_worker(self, identity: bytes, msg: RegisterWorker, now: int) -> None:
        same = self._procs.get(identity)
        if same is not None and same.register == msg:
            # The same registration again (a retry that crossed our answer): idempotent.
            same.last_seen_ns = now
            self._send(identity, WorkerRegistered(
                same.process_id, same.gpu_ids, self.config.heartbeat_interval_ns))
            return
        old = self._procs.pop(identity, None)
        if old is not None:  # re-registration: the old GPUs are gone
            self._lose(old, now)
        gpu_ids = []
        proc = _WorkerProc(identity, self._next_process, msg.name, msg.data_addr, (), now, msg)
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
            self._account_dispatch(action, now)
        elif isinstance(action, Drop):
            self.counters["dropped"] += len(action.request_ids)
            self.drops_by_reason[action.reason.name] += len(action.request_ids)
            reason, arrivals = action.reason.name, self._arrivals
            for rid in action.request_ids:
                request = arrivals.pop(rid, None)
                key = (request.model if request is not None else "", reason)
                self.model_drops[key] = self.model_drops.get(key, 0) + 1
            for fe, drop in drop_to_messages(action).items():
                identity = self._frontends.get(fe)
                if identity is not None:
                    self._send(identity, drop)

    def _record_done(self, msg: Done, worker_id: int) -> None:
        entry = self._dispatched.pop(msg.batch_id, None)
        self._inflight_requests.pop(msg.batch_id, None)
        status = str(msg.status)
        self.done_by_status[status] = self.done_by_status.get(status, 0) + 1
        self.busy_ns[worker_id] = self.busy_ns.get(worker_id, 0) + max(0, msg.end_ns - msg.start_ns)
        if entry is not None:
            action, sent = entry
            model = action.model
            status_name = _STATUS_NAME.get(msg.status, status)
            done = self.model_done.setdefault((model, status_name), [0, 0])
            done[0] += 1
            done[1] += msg.batch_size
            if msg.status in _RAN:  # it ran (not refused)
                hist = self.exec_hist.get(model)
                if hist is None:
                    hist = self.exec_hist[model] = Histogram()
                hist.observe(max(0, msg.end_ns - msg.start_ns) / 1e9)
            self._batches_logged += 1
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

    def _unauthorized(self, identity: bytes, text: str) -> None:
        self.counters["unauthorized"] = self.counters.get("unauthorized", 0) + 1
        self._send(identity, Error(int(Status.UNAUTHORIZED), text))

    def _refuse(self, identity: bytes, text: str) -> None:
        """Tell a peer its message was refused (its fault); it stays connected."""
        self._send(identity, Error(int(Status.BAD_REQUEST), text))

    def _send(self, identity: bytes, msg: Any) -> None:
        """Send without blocking. A send can swallow the socket descriptor's read edge:
        every path that sends ends in ``_after_turn``, whose ``poke`` re-checks (once per
        turn rather than once per send: the check was 10% of the loop's CPU)."""
        try:
            self._out([identity, *encode(msg)], _NOBLOCK)
        except zmq.ZMQError as exc:  # peer gone (ROUTER_MANDATORY) or HWM: log, go on
            log.warning("send %s to %r failed: %s", type(msg).__name__, identity, exc)

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
        interval = self.config.liveness_check_ns / 1e9
        while True:
            await self._time.sleep(interval)
            self.check_liveness(self._clock())

    def check_liveness(self, now: int) -> list[_WorkerProc]:
        """One liveness check at ``now``: workers silent longer than
        ``worker_timeout_ns`` (``is_silent``) are lost; returns them."""
        timeout = self.config.worker_timeout_ns
        lost = [p for p in self._procs.values() if is_silent(p.last_seen_ns, now, timeout)]
        if lost:
            for proc in lost:
                log.warning("worker %s silent for %.2f s: lost", proc.name,
                            (now - proc.last_seen_ns) / 1e9)
                self.counters["workers_lost"] = self.counters.get("workers_lost", 0) + 1
                del self._procs[proc.identity]
                self._lose(proc, now)
            self._models = {
                m for p in self._procs.values() for m in self._models_of(p)
            }
            self._broadcast_directory()
            self._after_turn()
        return lost

    def _lose(self, proc: _WorkerProc, now: int) -> None:
        """``proc``'s GPUs are gone: tell the policy, then give their in-flight batches'
        requests back to it with their original deadlines. It re-dispatches those that
        can still make it (the frontend ships the payload again, and takes the answer
        only from the new worker: the lost one is fenced) and drops the rest early."""
        gids = set(proc.gpu_ids)
        for gid in proc.gpu_ids:
            self._gpu.pop(gid, None)
            if not proc.leaving:  # a draining worker's GPUs were taken off already
                self._feed(WorkerLost(gid), now)
        orphans = [bid for bid, (action, _) in self._dispatched.items() if action.worker_id in gids]
        again: list[Request] = []
        for bid in orphans:
            del self._dispatched[bid]
            again.extend(self._inflight_requests.pop(bid, ()))
        if again:
            self.counters["redispatched"] = self.counters.get("redispatched", 0) + len(again)
            self._arrivals.update((r.request_id, r) for r in again)
            self._feed(RequestsArrived(tuple(again)), now)
            log.warning("worker %s lost: %d requests of %d in-flight batches given back",
                        proc.name, len(again), len(orphans))

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

    # ---------------------------------------------------------------- metrics

    def _account_dispatch(self, action: Dispatch, now: int) -> None:
        model = action.model
        self.model_batches[model] = self.model_batches.get(model, 0) + 1
        n = len(action.request_ids)
        self.model_batched_requests[model] = self.model_batched_requests.get(model, 0) + n
        sizes = self.batch_size_hist.get(model)
        if sizes is None:
            sizes = self.batch_size_hist[model] = Histogram(BATCH_SIZE_BUCKETS)
        sizes.observe(n)
        queue = self.queue_hist.get(model)
        if queue is None:
            queue = self.queue_hist[model] = Histogram()
        pop, observe = self._arrivals.pop, queue.observe
        inflight = self._inflight_requests[action.batch_id] = []
        for rid in action.request_ids:
            request = pop(rid, None)
            if request is not None:
                observe(max(0, now - request.arrival_ns) / 1e9)
                inflight.append(request)  # given back to the policy if its worker is lost

    def recent_batches(self, count: int) -> list[list[Any]]:
        """The last ``count`` batch records (fewer if the log holds fewer), oldest first."""
        count = min(count, len(self.batches))
        out = [list(self.batches[-i]) for i in range(count, 0, -1)]
        return out

    async def _publish_loop(self, pub: zmq.Socket) -> None:
        cursor = self._batches_logged
        while True:
            await self._time.sleep(self.config.stats_interval_ns / 1e9)
            new = self._batches_logged - cursor
            cursor = self._batches_logged
            snap = self.stats(with_batches=False)
            snap["recent_batches"] = self.recent_batches(new)
            try:
                pub.send_multipart([b"stats", json.dumps(snap).encode()], zmq.NOBLOCK)
            except zmq.ZMQError as exc:  # HWM with a stalled subscriber: skip this one
                log.debug("stats publish skipped: %s", exc)

    def _busy_ratios(self, now: int) -> dict[int, float]:
        """Per worker: the fraction of the last ``busy_window_ns`` covered by batches that
        finished (a batch still running is not counted), from the batch log."""
        window = self.config.busy_window_ns
        since = now - window
        busy: dict[int, int] = {gid: 0 for gid in self._gpu}
        for i in range(len(self.batches) - 1, -1, -1):
            rec = self.batches[i]
            start, end = rec[7], rec[8]
            if end < since - window:  # the log is in finish order; allow for stragglers
                break
            overlap = min(end, now) - max(start, since)
            if overlap > 0 and rec[1] in busy:
                busy[rec[1]] += overlap
        return {gid: min(1.0, ns / window) for gid, ns in busy.items()}

    def metric_families(self) -> list[Family]:
        """The scheduler's Prometheus families (docs/metrics.md lists each)."""
        now = self._clock()
        fams: list[Family] = []

        def fam(name: str, kind: str, text: str) -> Family:
            f = Family(name, kind, text)
            fams.append(f)
            return f

        fam("baton_scheduler_requests_total", "counter",
            "Requests whose metadata reached the scheduler, per model.").add_all(
            self.model_requests, "model")
        fam("baton_scheduler_requests_dropped_total", "counter",
            "Requests the scheduler dropped before they ran, per model and reason.").add_all(
            self.model_drops, "model", "reason")
        fam("baton_scheduler_batches_total", "counter",
            "Batches dispatched (Execute sent), per model.").add_all(
            self.model_batches, "model")
        fam("baton_scheduler_batched_requests_total", "counter",
            "Requests dispatched in batches, per model.").add_all(
            self.model_batched_requests, "model")
        f = fam("baton_scheduler_batches_done_total", "counter",
                "Batches a worker reported Done, per model and batch status.")
        g = fam("baton_scheduler_executed_requests_total", "counter",
                "Requests in batches a worker reported Done, per model and batch status.")
        for (model, status), (nb, nr) in sorted(self.model_done.items()):
            f.add(nb, model=model, status=status)
            g.add(nr, model=model, status=status)
        fam("baton_scheduler_batch_size", "histogram",
            "Requests per dispatched batch, per model.").add_all(
            self.batch_size_hist, "model")
        fam("baton_scheduler_queue_seconds", "histogram",
            "Per request: scheduler receipt of its metadata to the dispatch of its batch.").add_all(
            self.queue_hist, "model")
        fam("baton_scheduler_execution_seconds", "histogram",
            "Per batch that ran (OK or FAILED): end_ns - start_ns from its Done.").add_all(
            self.exec_hist, "model")
        f = fam("baton_scheduler_worker_busy_seconds_total", "counter",
                "Per worker: sum of its finished batches' execution times.")
        for gid, ns in sorted(self.busy_ns.items()):
            f.add(ns / 1e9, worker=str(gid))
        f = fam("baton_scheduler_worker_busy_ratio", "gauge",
                "Per live worker: fraction of the last busy_window executing finished batches.")
        for gid, ratio in sorted(self._busy_ratios(now).items()):
            proc, index = self._gpu[gid]
            f.add(ratio, worker=str(gid), process=proc.name, gpu=str(index))
        models = self.policy.snapshot().get("models", {})
        gauges = (
            ("baton_scheduler_model_profile_k_seconds", "k_ns",
             "The policy's current profile slope k of l(b) = k*b + c, per model."),
            ("baton_scheduler_model_profile_c_seconds", "c_ns",
             "The policy's current profile intercept c of l(b) = k*b + c, per model."),
            ("baton_scheduler_model_margin_seconds", "margin_ns",
             "The policy's safety margin on batch latency, per model."),
        )
        for name, key, text in gauges:
            f = fam(name, "gauge", text)
            for model, m in sorted(models.items()):
                if isinstance(m, dict) and isinstance(m.get(key), (int, float)):
                    f.add(m[key] / 1e9, model=model)
        f = fam("baton_scheduler_model_queue_length", "gauge",
                "Requests queued at the policy, per model.")
        for model, m in sorted(models.items()):
            if isinstance(m, dict) and isinstance(m.get("queue"), int):
                f.add(m["queue"], model=model)
        fam("baton_scheduler_workers", "gauge", "Live workers (GPUs).").add(len(self._gpu))
        fam("baton_scheduler_frontends", "gauge",
            "Frontend registrations.").add(len(self._frontends))
        fam("baton_scheduler_protocol_errors_total", "counter",
            "Messages refused as malformed.").add(self.counters["protocol_errors"])
        fam("baton_scheduler_uptime_seconds", "gauge",
            "Seconds since the scheduler started.").add((now - self._started_ns) / 1e9)
        f = fam("baton_scheduler_timer_lateness_seconds", "gauge",
                "Lateness of the scheduler's timer wake-ups over the recent log.")
        for q, label in ((0.5, "0.5"), (0.99, "0.99"), (1.0, "1")):
            f.add(self.lateness.percentile(q) / 1e9, quantile=label)
        return fams

    def render_metrics(self) -> str:
        """The Prometheus text (format 0.0.4) that ``GET /metrics`` returns."""
        return render(self.metric_families())
