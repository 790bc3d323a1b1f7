"""The frontend: clients in, metadata to the scheduler, payloads to workers, answers out.

Theory of operation: clients send ``Infer`` to a ROUTER. The frontend validates the
request, keeps its tensor frames (zero copy), gives it a cluster-unique id, and at the
end of the loop turn sends the scheduler one ``Requests`` message with the metadata of
every request accepted in that turn. A ``Route`` from the scheduler makes it push the
payloads, untouched, to the chosen worker's data socket (one DEALER per worker process);
the worker's ``Results`` come back on that socket and are relayed, again untouched, to
the clients. A ``DropRequests`` is answered at once. Every accepted request ends in
exactly one ``Reply``: the lifecycle table ``TRANSITIONS`` says which moves are legal and
an illegal one raises (our bug). A sweep answers FAILED for anything left without an
answer well past its deadline, so nothing hangs whatever fails downstream.

Model shards (DESIGN §5): a split scheduler is a matcher (at the scheduler address) and K
model-shard processes. After registration the matcher sends a ``ShardDirectory`` (shard
addresses, model owners, a growing version); from then on each turn's metadata is split
by owning shard, order kept, and sent as one ``Requests`` per shard on a DEALER of its
own, while ``Route`` and liveness stay with the matcher. A shard's DEALER is told who we
are (``AttachFrontend``) before its first ``Requests``: the socket refuses sends until
connected, so the attach is retried on every heartbeat tick and before a flush, redone
after each accepted directory (a shard may have restarted at its old address) and after
re-registration (a new index). A request whose shard cannot be reached is answered
UNAVAILABLE at once; shards may answer ``DropRequests``. Without a directory (a
single-process scheduler) everything goes to the scheduler socket, unchanged.

Observability (docs/metrics.md): per-model counters and an accept-to-reply latency
histogram are bumped as requests are accepted and answered; an optional asyncio HTTP
server renders them for ``GET /metrics``.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import json
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq

from central.plumbing.clock import ClockLike, as_clock
from central.plumbing.metrics import Family, Histogram, MetricsServer, render
from central.plumbing.security import (
    TOKEN_PROPERTY,
    Keys,
    load_keys,
    token_ok,
    warn_if_exposed,
)
from central.plumbing.zmqio import Reader, close_all, configure
from central.protocol import (
    DEFAULT_LIMITS,
    AttachFrontend,
    DescribeModels,
    DropRequests,
    Error,
    FrontendRegistered,
    Heartbeat,
    HeartbeatAck,
    Infer,
    Limits,
    ModelsDescribed,
    Payloads,
    RegisterFrontend,
    RemoteProtocolError,
    Reply,
    Requests,
    Results,
    Route,
    ShardDirectory,
    StatsQuery,
    StatsReply,
    Status,
    WorkerDirectory,
    arrays,
    decode,
    encode,
)
from central.protocol.conventions import DropReason, default_shard, make_request_id

__all__ = ["FrontendConfig", "Frontend", "Phase", "TRANSITIONS", "UNKNOWN_MODEL_LABEL"]

log = logging.getLogger("baton.frontend")

# The ``model`` label of a reply to a request naming a model this frontend does not serve:
# client-chosen names must not become label values (unbounded series).
UNKNOWN_MODEL_LABEL = "(unknown)"


class Phase(enum.Enum):
    QUEUED = "queued"  # metadata sent to the scheduler, payload held here
    SHIPPED = "shipped"  # payload pushed to a worker, waiting for its result
    ANSWERED = "answered"  # the client has its one terminal reply


TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.QUEUED: frozenset({Phase.SHIPPED, Phase.ANSWERED}),
    # SHIPPED -> SHIPPED: the scheduler re-dispatched it after its worker was lost
    Phase.SHIPPED: frozenset({Phase.SHIPPED, Phase.ANSWERED}),
    Phase.ANSWERED: frozenset(),
}

_DROP_STATUS = {
    DropReason.DEADLINE: Status.DEADLINE_EXCEEDED,
    DropReason.SHED: Status.DEADLINE_EXCEEDED,
    DropReason.UNKNOWN_MODEL: Status.REJECTED,
    DropReason.NO_WORKER: Status.UNAVAILABLE,
}


@dataclass(frozen=True)
class FrontendConfig:
    scheduler: str = "tcp://127.0.0.1:5550"
    client_bind: str = "tcp://127.0.0.1:5560"
    name: str = ""
    default_slo_ns: int = 100_000_000
    slo_ns: Mapping[str, int] = field(default_factory=dict)  # per-model defaults
    # The reply still has to travel back to the client after the frontend sends it, and
    # the request spent time reaching us: both come off the budget the scheduler sees.
    client_allowance_ns: int = 500_000
    max_pending: int = 200_000  # beyond this, new requests are REJECTED (overload)
    answer_grace_ns: int = 2_000_000_000  # past deadline + grace with no answer: FAILED
    client_limits: Limits = DEFAULT_LIMITS
    metrics_host: str = "127.0.0.1"  # where GET /metrics listens
    metrics_port: int | None = None  # None: no /metrics endpoint; 0: any free port
    heartbeat_interval_ns: int = 250_000_000  # to the scheduler; re-registration at this pace
    # No word from the scheduler for this long: it is lost. Requests it holds (metadata
    # only) are answered UNAVAILABLE at once; the frontend keeps trying to register.
    scheduler_timeout_ns: int = 2_000_000_000
    # On SIGTERM: stop accepting, let in-flight requests finish for up to this long,
    # answer the rest UNAVAILABLE, exit.
    drain_timeout_ns: int = 5_000_000_000
    # CURVE keys (``baton keys DIR``): encrypt and authenticate every socket; None: off.
    keys_dir: str | None = None
    # Clients must present this token (ZMQ: X-Token metadata; KServe: Authorization:
    # Bearer); None: no token check.
    token: str | None = None
    # KServe v2 (Open Inference Protocol) endpoints; None: off, 0: any free port.
    kserve_host: str = "127.0.0.1"
    http_port: int | None = None
    grpc_port: int | None = None
    # A fault for tests only (``--test-fault``): "drop-reply" never sends the answer of
    # the TEST_FAULT_AT-th answered request, "duplicate-reply" sends it twice. The wire
    # ledger's own tests use it to show that a lost or doubled answer is caught.
    test_fault: str = ""


TEST_FAULT_AT = 10  # which answer (counting from 1) the test fault hits
SWEEP_INTERVAL_NS = 100_000_000  # how often unanswered requests past deadline + grace are looked for
_DRAIN_POLL_NS = 20_000_000  # how often a drain looks whether everything was answered

# An in-process client (the KServe gateway): called once with the terminal Reply and its
# output buffers, instead of a ZMQ identity to send them to.
AnswerFn = Callable[[Reply, Sequence[Any]], None]


@dataclass(slots=True)
class _Pending:
    client: bytes | AnswerFn
    tag: int
    model: str
    metas: tuple[Any, ...]
    buffers: list[Any]
    received_ns: int
    deadline_ns: int
    phase: Phase = Phase.QUEUED
    worker: int = -1  # the worker process it was last shipped to (its results only count)


@dataclass(slots=True)
class _Shard:
    """A DEALER to one model shard of a split scheduler."""

    address: str
    sock: zmq.Socket[Any]
    reader: Reader
    attached: bool = False  # AttachFrontend went out on the current connection


def overdue(pending: Mapping[int, _Pending], now: int, grace_ns: int) -> list[int]:
    """The sweep's rule: ids of requests whose deadline plus ``grace_ns`` has passed
    (strictly) at ``now``."""
    return [rid for rid, p in pending.items() if now > p.deadline_ns + grace_ns]


class Frontend:
    """Serve clients until ``stop`` is set."""

    def __init__(
        self,
        config: FrontendConfig,
        *,
        clock: ClockLike = time.monotonic_ns,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.config = config
        # reads and sleeps (sweep, heartbeats, drain); ``_clock`` is its plain reader
        self._time = as_clock(clock)
        self._clock = self._time.reader
        self._ctx = context or zmq.Context.instance()
        self.name = config.name or f"fe-{socket.gethostname()}-{os.getpid()}"
        self._index: int | None = None
        self._seq = 0
        self._models: set[str] = set()
        self._pending: dict[int, _Pending] = {}
        self._workers: dict[int, tuple[str, zmq.Socket[Any], Reader]] = {}
        self._meta: tuple[list[int], list[str], list[int], list[int]] = ([], [], [], [])
        self._clients: zmq.Socket[Any] | None = None
        self._client_reader: Reader | None = None
        self._sched_reader: Reader | None = None
        self._sched: zmq.Socket[Any] | None = None
        self.counters: dict[str, int] = {
            "accepted": 0,
            "ok": 0,
            "rejected": 0,
            "deadline_exceeded": 0,
            "unavailable": 0,
            "bad_request": 0,
            "failed": 0,
            "unauthorized": 0,
            "ok_within_slo": 0,
            "payload_bytes_in": 0,
            "metadata_messages": 0,
        }
        self.registered = asyncio.Event()
        self._allowance_ns = config.client_allowance_ns
        self.latencies: deque[int] = deque(maxlen=100_000)  # accept -> OK reply, ns
        # per model: (answered_ns, latency_ns) of recent OK replies, for `baton top`
        self.model_latencies: dict[str, deque[tuple[int, int]]] = {}
        # per-model accounting for /metrics (docs/metrics.md)
        self.model_accepted: dict[str, int] = {}
        self.model_replies: dict[tuple[str, str], int] = {}  # (model, status) -> replies
        self.model_within_slo: dict[str, int] = {}
        self.latency_hist: dict[tuple[str, str], Histogram] = {}  # (model, status)
        self.metrics_server: MetricsServer | None = None
        self.signatures: dict[str, Any] = {}  # model -> ModelSignature, from the workers
        self._sched_seen_ns = 0  # when the scheduler last said anything
        self._keys: Keys | None = None  # CURVE keys when config.keys_dir is set
        self.draining = False  # SIGTERM: no new requests, in-flight ones may finish
        self.http_server: Any = None  # kserve_http.HttpServer when --http-port is given
        self.grpc_server: Any = None  # kserve_grpc.GrpcServer when --grpc-port is given
        self._flush_soon = False
        # The split scheduler's shards (None: no directory, all metadata to the scheduler)
        self._shard_at: dict[int, _Shard] | None = None  # shard index -> its socket
        self._shards: dict[str, _Shard] = {}  # address -> socket, every one open
        self._shard_owner: dict[str, int] = {}  # model -> shard index (defaults memoized)
        self._shard_count = 0
        self._shard_version = 0  # of the directory in force
        self._shard_floor: int | None = None  # accept only newer; None: any (re-registered)
        self._shard_addresses: list[str] = []  # as the directory lists them, by index
        if config.test_fault not in ("", "drop-reply", "duplicate-reply"):
            raise ValueError(f"unknown test fault {config.test_fault!r}")
        self._answers = 0  # answered requests, for the test fault

    @property
    def client_address(self) -> str:
        assert self._clients is not None
        return self._clients.getsockopt_string(zmq.LAST_ENDPOINT)

    async def serve(self, stop: asyncio.Event) -> None:
        """Bind the client socket, register with the scheduler, serve until ``stop``."""
        keys = self._keys = load_keys(self.config.keys_dir, "frontend") if self.config.keys_dir else None
        warn_if_exposed(self.config.client_bind, keys, "the frontend's client socket")
        clients = self._ctx.socket(zmq.ROUTER)
        if keys is not None:
            keys.server(clients, self._ctx)
        configure(clients, hwm=0)
        clients.bind(self.config.client_bind)
        sched = self._scheduler_dealer()
        sched.connect(self.config.scheduler)
        self._clients, self._sched = clients, sched
        readers = [Reader(clients, self._on_clients, copy=False), Reader(sched, self._on_sched)]
        self._client_reader, self._sched_reader = readers
        tasks = [asyncio.ensure_future(self._sweep_loop()), asyncio.ensure_future(self._heartbeat_loop())]
        try:
            if self.config.metrics_port is not None:
                self.metrics_server = MetricsServer(
                    self.config.metrics_host, self.config.metrics_port, self.render_metrics
                )
                await self.metrics_server.start()
                log.info(
                    "metrics on http://%s:%d/metrics", self.config.metrics_host, self.metrics_server.port
                )
            await self._start_kserve()
            await stop.wait()
            await self._drain()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.metrics_server is not None:
                await self.metrics_server.close()
            for server in (self.http_server, self.grpc_server):
                if server is not None:
                    await server.close()
            for r in readers:
                r.close()
            socks = [clients, sched]
            for _, sock, reader in self._workers.values():
                reader.close()
                socks.append(sock)
            for shard in self._shards.values():
                shard.reader.close()
                socks.append(shard.sock)
            self._answer_leftovers()  # at the drain's end already, unless it was cut short
            close_all(socks)
            if keys is not None:
                keys.stop()

    def _scheduler_dealer(self) -> zmq.Socket[Any]:
        """A DEALER to the scheduler or one of its model shards (not yet connected)."""
        sock = self._ctx.socket(zmq.DEALER)
        if self._keys is not None:
            self._keys.client(sock, "scheduler")  # the shards use the scheduler's key pair
        # immediate: nothing queues for a scheduler that is gone
        return configure(sock, immediate=True, identity=f"f-{self.name}")

    async def _drain(self) -> None:
        """Stop accepting; give in-flight requests ``drain_timeout_ns`` to finish, then
        answer the rest UNAVAILABLE."""
        self.draining = True
        deadline = self._clock() + self.config.drain_timeout_ns
        if self._pending:
            log.info("draining: %d requests in flight", len(self._pending))
        while self._pending and self._clock() < deadline:
            # look every 20 ms, and at the deadline itself
            await self._time.sleep_until(min(self._clock() + _DRAIN_POLL_NS, deadline))
        left = len(self._pending)
        if left:
            log.warning("drain timed out: %d requests answered UNAVAILABLE", left)
            self._answer_leftovers()

    def _answer_leftovers(self) -> None:
        """Shutting down: whatever is still unanswered is answered UNAVAILABLE."""
        now = self._clock()
        for rid in list(self._pending):
            self._reply_status(rid, Status.UNAVAILABLE, "the frontend is shutting down", now)

    @property
    def registered_index(self) -> int | None:
        """This frontend's index at the scheduler, None while not registered."""
        return self._index

    async def _start_kserve(self) -> None:
        """Start the KServe v2 HTTP and gRPC endpoints that the config asks for."""
        cfg = self.config
        if cfg.http_port is None and cfg.grpc_port is None:
            return
        from central import __version__
        from central.frontend.kserve import Gateway

        gateway = Gateway(self, __version__)
        limit = cfg.client_limits.max_total_bytes
        if cfg.http_port is not None:
            from central.frontend.kserve_http import HttpServer

            self.http_server = HttpServer(gateway, cfg.kserve_host, cfg.http_port, limit)
            await self.http_server.start()
            log.info("KServe v2 HTTP on http://%s:%d", cfg.kserve_host, self.http_server.port)
        if cfg.grpc_port is not None:
            from central.frontend.kserve_grpc import GrpcServer

            self.grpc_server = GrpcServer(gateway, cfg.kserve_host, cfg.grpc_port, limit)
            await self.grpc_server.start()
            log.info("KServe v2 gRPC on %s:%d", cfg.kserve_host, self.grpc_server.port)

    # ---------------------------------------------------------------- clients

    def _on_clients(self, batch: list[Sequence[Any]]) -> None:
        now = self._clock()
        token = self.config.token
        for frames in batch:
            identity = frames[0].bytes
            if token is not None and not token_ok(token, _frame_property(frames[0], TOKEN_PROPERTY)):
                self.counters["unauthorized"] += 1
                self._refuse_unauthorized(identity, frames)
                continue
            body = [frames[1].bytes, *(f.buffer for f in frames[2:])]
            try:
                msg, buffers = decode(body, self.config.client_limits)
            except RemoteProtocolError as exc:
                self.counters["bad_request"] += 1
                tag = getattr(exc, "tag", None)
                if tag is not None and getattr(exc, "kind", None) == Infer.KIND:
                    # the tag was readable: the client's call ends now, as BAD_REQUEST
                    self._send_client(identity, Reply(tag, int(Status.BAD_REQUEST), str(exc), ()))
                else:
                    self._send_client(identity, Error(int(Status.BAD_REQUEST), str(exc)))
                continue
            if isinstance(msg, Infer):
                self._accept(identity, msg, buffers, now)
            elif isinstance(msg, StatsQuery):
                self._send_client(identity, StatsReply(msg.tag, json.dumps(self.stats())))
            else:
                self._send_client(
                    identity, Error(int(Status.BAD_REQUEST), f"{type(msg).__name__} not accepted")
                )
        self._flush_meta()

    def submit(
        self,
        model: str,
        metas: tuple[Any, ...],
        buffers: list[Any],
        slo_ns: int,
        answer: AnswerFn,
    ) -> None:
        """Accept one request from an in-process client (the KServe gateway).

        ``answer`` is called exactly once with the terminal ``Reply`` (and its output
        buffers), possibly before this returns (a refusal). Must run on the serving loop.
        """
        self._accept(answer, Infer(0, model, slo_ns, metas), buffers, self._clock())
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush_local)

    def _flush_local(self) -> None:
        self._flush_soon = False
        self._flush_meta()

    def model_signature(self, model: str) -> Any:
        """``(name, max_batch, inputs, outputs)`` as a worker described it, or None."""
        return self.signatures.get(model)

    @property
    def models(self) -> frozenset[str]:
        """Models some live worker serves now, as the scheduler last said."""
        return frozenset(self._models)

    @property
    def ready(self) -> bool:
        """Registered with a scheduler that knows a served model, and not draining."""
        return self._index is not None and bool(self._models) and not self.draining

    def _refuse_unauthorized(self, identity: bytes, frames: Sequence[Any]) -> None:
        """Answer a client without the token: on its Infer's tag when readable."""
        text = "unauthorized: this frontend requires a client token (X-Token)"
        try:
            msg, _ = decode([frames[1].bytes, *(f.buffer for f in frames[2:])], self.config.client_limits)
            tag = msg.tag if isinstance(msg, (Infer, StatsQuery)) else None
        except RemoteProtocolError as exc:
            tag = getattr(exc, "tag", None)
        if tag is not None:
            self._send_client(identity, Reply(tag, int(Status.UNAUTHORIZED), text, ()))
        else:
            self._send_client(identity, Error(int(Status.UNAUTHORIZED), text))

    def _accept(self, client: bytes | AnswerFn, msg: Infer, buffers: list[Any], now: int) -> None:
        def refuse(status: Status, text: str) -> None:
            self.counters[status.name.lower()] += 1
            model = msg.model if msg.model in self._models else UNKNOWN_MODEL_LABEL
            key = (model, status.name)
            self.model_replies[key] = self.model_replies.get(key, 0) + 1
            self._send_client(client, Reply(msg.tag, int(status), text, ()))

        if self.draining:
            refuse(Status.UNAVAILABLE, "the frontend is shutting down")
            return
        if self._index is None:
            refuse(Status.UNAVAILABLE, "the frontend is not connected to a scheduler")
            return
        if msg.model not in self._models:
            known = ", ".join(sorted(self._models)) or "none"
            refuse(Status.REJECTED, f"unknown model {msg.model!r}; served: {known}")
            return
        if msg.slo_ns < 0:
            refuse(Status.BAD_REQUEST, "slo must be positive")
            return
        if not msg.tensors:
            refuse(Status.BAD_REQUEST, "a request needs at least one input tensor")
            return
        try:
            arrays.unpack(msg.tensors, buffers)  # validates names, dtypes, shapes, sizes
        except RemoteProtocolError as exc:
            refuse(Status.BAD_REQUEST, str(exc))
            return
        if len(self._pending) >= self.config.max_pending:
            refuse(Status.REJECTED, "overloaded: too many requests in flight")
            return
        slo_ns = msg.slo_ns or self.config.slo_ns.get(msg.model, self.config.default_slo_ns)
        self._seq += 1
        rid = make_request_id(self._index, self._seq)
        size = sum(len(b) for b in buffers)
        self._pending[rid] = _Pending(client, msg.tag, msg.model, msg.tensors, buffers, now, now + slo_ns)
        self.counters["accepted"] += 1
        self.counters["payload_bytes_in"] += size
        self.model_accepted[msg.model] = self.model_accepted.get(msg.model, 0) + 1
        ids, models, budgets, sizes = self._meta
        ids.append(rid)
        models.append(msg.model)
        budgets.append(slo_ns - self._allowance_ns - (self._clock() - now))
        sizes.append(size)

    def _flush_meta(self) -> None:
        ids, models, budgets, sizes = self._meta
        if not ids:
            return
        self._meta = ([], [], [], [])
        if self._shard_at is not None:
            self._flush_to_shards(ids, models, budgets, sizes)
            return
        self.counters["metadata_messages"] += 1
        if not self._send_sched(Requests(tuple(ids), tuple(models), tuple(budgets), tuple(sizes))):
            now = self._clock()
            for rid in ids:  # the scheduler is unreachable: say so now, not at the sweep
                self._reply_status(rid, Status.UNAVAILABLE, "the scheduler is unreachable", now)

    def _flush_to_shards(
        self, ids: list[int], models: list[str], budgets: list[int], sizes: list[int]
    ) -> None:
        """One ``Requests`` per owning shard, each in acceptance order."""
        owner = self._shard_owner
        groups: dict[int, list[int]] = {}  # shard index -> positions in this turn
        for i, model in enumerate(models):
            s = owner.get(model)
            if s is None:  # not placed: the stable hash, as every process computes it
                count = self._shard_count
                s = owner[model] = default_shard(model, count) if count else -1
            group = groups.get(s)
            if group is None:
                groups[s] = [i]
            else:
                group.append(i)
        if len(groups) == 1:  # one shard this turn: the lists as they are
            self._send_shard(
                next(iter(groups)), ids, Requests(tuple(ids), tuple(models), tuple(budgets), tuple(sizes))
            )
            return
        for s, picks in groups.items():
            part = [ids[i] for i in picks]
            self._send_shard(
                s,
                part,
                Requests(
                    tuple(part),
                    tuple(models[i] for i in picks),
                    tuple(budgets[i] for i in picks),
                    tuple(sizes[i] for i in picks),
                ),
            )

    def _send_shard(self, index: int, ids: list[int], msg: Requests) -> None:
        """Send ``msg`` to shard ``index``; its requests are answered UNAVAILABLE if not."""
        self.counters["metadata_messages"] += 1
        assert self._shard_at is not None
        shard = self._shard_at.get(index)
        if shard is not None and (shard.attached or self._attach(shard)):
            try:
                shard.sock.send_multipart(encode(msg), zmq.NOBLOCK)
                return
            except zmq.ZMQError as exc:  # disconnected: attach again once it is back
                shard.attached = False
                log.debug("send Requests to model shard %d failed: %s", index, exc)
            finally:
                shard.reader.poke()
        now = self._clock()
        for rid in ids:  # the shard is unreachable: say so now, not at the sweep
            self._reply_status(rid, Status.UNAVAILABLE, f"model shard {index} is unreachable", now)

    # -------------------------------------------------------------- scheduler

    def _on_sched(self, batch: list[Sequence[bytes]]) -> None:
        now = self._clock()
        self._sched_seen_ns = now
        for frames in batch:
            try:
                msg, _ = decode(frames, DEFAULT_LIMITS)
            except RemoteProtocolError as exc:
                log.error("bad message from scheduler: %s", exc)
                continue
            if isinstance(msg, Route):
                self._route(msg, now)
            elif isinstance(msg, DropRequests):
                self._drop(msg, now)
            elif isinstance(msg, WorkerDirectory):
                self._update_workers(msg)
            elif isinstance(msg, FrontendRegistered):
                # The latest wins: the scheduler maps this identity to its latest index too.
                self._index = msg.frontend_index
                self._models = set(msg.models)
                self.registered.set()
                log.info("registered as frontend %d", msg.frontend_index)
                self._attach_shards(again=True)  # the shards must learn the new index
            elif isinstance(msg, ShardDirectory):
                self._update_shards(msg)
            elif isinstance(msg, HeartbeatAck):
                if not msg.registered and self._index is not None:
                    self._scheduler_lost("the scheduler no longer knows this frontend", now)
                    self._send_sched(RegisterFrontend(self.name))
            elif isinstance(msg, Error):
                log.error("scheduler refused a message: %s", msg.message)

    def _drop(self, msg: DropRequests, now: int) -> None:
        """Answer requests the scheduler (or a model shard) will never run."""
        try:
            status = _DROP_STATUS[DropReason(msg.reason)]
        except ValueError:  # a newer scheduler's reason: still a terminal answer
            status = Status.FAILED
        for rid in msg.request_ids:
            self._reply_status(rid, status, msg.detail, now)

    def _scheduler_lost(self, why: str, now: int) -> None:
        """Forget the registration; answer what only the scheduler knew about."""
        if self._index is None:
            return
        log.warning("scheduler lost (%s): re-registering", why)
        self._index = None
        self.registered.clear()
        self._forget_shards()  # a restarted scheduler may be split otherwise, or not at all
        queued = [rid for rid, p in self._pending.items() if p.phase is Phase.QUEUED]
        for rid in queued:  # its metadata died with the scheduler's soft state
            self._reply_status(rid, Status.UNAVAILABLE, f"scheduler lost: {why}", now)
        # shipped requests stay: their workers still answer (or the sweep does)

    def _route(self, msg: Route, now: int) -> None:
        worker = self._workers.get(msg.process_id)
        ids: list[int] = []
        metas: list[Any] = []
        buffers: list[Any] = []
        for rid in msg.request_ids:
            p = self._pending.get(rid)
            if p is None or p.phase is Phase.ANSWERED:
                continue  # answered already (e.g. by the sweep)
            if worker is None:
                self._reply_status(rid, Status.UNAVAILABLE, "routed to an unknown worker", now)
                continue
            # QUEUED, or SHIPPED to a worker since declared lost: (re)ship. The payload
            # stays here until the answer, so a re-dispatch can send it again.
            self._move(p, Phase.SHIPPED)
            p.worker = msg.process_id
            ids.append(rid)
            metas.append(p.metas)
            buffers.extend(p.buffers)
        if ids and worker is not None:
            payloads = Payloads(msg.batch_id, msg.gpu, tuple(ids), tuple(metas))
            try:
                worker[1].send_multipart(encode(payloads, buffers), zmq.NOBLOCK, copy=False)
            except zmq.ZMQError as exc:
                for rid in ids:
                    self._reply_status(rid, Status.FAILED, f"could not reach worker: {exc}", now)
            worker[2].poke()

    def _update_workers(self, msg: WorkerDirectory) -> None:
        self._models = set(msg.models)
        listed = dict(msg.workers)
        for pid in list(self._workers):
            if listed.get(pid) != self._workers[pid][0]:
                addr, sock, reader = self._workers.pop(pid)
                reader.close()
                sock.close(linger=0)
        for pid, addr in listed.items():
            if pid in self._workers:
                continue
            sock = configure(self._ctx.socket(zmq.DEALER), hwm=0, identity=self.name)
            if self._keys is not None:
                self._keys.client(sock, "worker")
            try:
                sock.connect(addr)
            except zmq.ZMQError as exc:  # a peer-supplied address: refuse it, keep the rest
                log.error("worker %d advertises an unusable data address %r: %s", pid, addr, exc)
                sock.close(linger=0)
                continue
            reader = Reader(sock, functools.partial(self._on_results, pid), copy=False)
            self._workers[pid] = (addr, sock, reader)
            try:  # learn its models' inputs and outputs (KServe metadata)
                sock.send_multipart(encode(DescribeModels(pid)), zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                log.warning("could not ask worker %d for its models: %s", pid, exc)
            reader.poke()

    # ------------------------------------------------------------ model shards

    def _update_shards(self, msg: ShardDirectory) -> None:
        """Take a newer directory: open, keep or close shard sockets; new owners."""
        if self._shard_floor is not None and msg.version <= self._shard_floor:
            log.debug("shard directory %d ignored: have %d", msg.version, self._shard_floor)
            return
        self._shard_floor = self._shard_version = msg.version
        listed = dict(msg.shards)
        addresses = set(listed.values())
        for addr in [a for a in self._shards if a not in addresses]:
            shard = self._shards.pop(addr)
            shard.reader.close()
            shard.sock.close(linger=0)
        at: dict[int, _Shard] = {}
        for index, addr in listed.items():
            if not addr:  # not registered yet: its models' requests are refused meanwhile
                continue
            opened = self._shards.get(addr) or self._open_shard(index, addr)
            if opened is not None:
                at[index] = opened
        self._shard_at = at
        self._shard_owner = dict(msg.owners)
        self._shard_count = len(listed)
        self._shard_addresses = [listed[i] for i in sorted(listed)]
        self._attach_shards(again=True)  # a shard may have restarted at its old address
        log.info("shard directory %d: %d shards", msg.version, len(listed))

    def _forget_shards(self) -> None:
        """Back to no directory: metadata goes to the scheduler (a split one passes it
        on to its shards until it sends its directory), any directory version is taken.
        The shard sockets stay open (a new directory naming the same addresses reuses
        them, and attaches again; others it closes): a socket reopened at once with the
        same routing id could be refused by the shard while the old one lingers."""
        self._shard_at = None
        self._shard_owner = {}
        self._shard_count = 0
        self._shard_addresses = []
        self._shard_floor = None

    def _open_shard(self, index: int, addr: str) -> _Shard | None:
        sock = self._scheduler_dealer()
        try:
            sock.connect(addr)
        except zmq.ZMQError as exc:  # a peer-supplied address: refuse it, keep the rest
            log.error("model shard %d has an unusable address %r: %s", index, addr, exc)
            sock.close(linger=0)
            return None
        shard = _Shard(addr, sock, Reader(sock, functools.partial(self._on_shard, addr)))
        self._shards[addr] = shard
        return shard

    def _attach_shards(self, again: bool = False) -> None:
        """Send ``AttachFrontend`` to each shard that lacks it (``again``: to every one)."""
        for shard in self._shards.values():
            if again or not shard.attached:
                self._attach(shard)

    def _attach(self, shard: _Shard) -> bool:
        """Tell one shard our index; False while not registered or not connected."""
        shard.attached = False
        if self._index is None:
            return False
        try:
            shard.sock.send_multipart(encode(AttachFrontend(self._index)), zmq.NOBLOCK)
            shard.attached = True
        except zmq.ZMQError as exc:  # not connected yet: the heartbeat tick retries
            log.debug("attach to model shard %s failed: %s", shard.address, exc)
        shard.reader.poke()
        return shard.attached

    def _on_shard(self, addr: str, batch: list[Sequence[bytes]]) -> None:
        # Liveness is the matcher's: a shard's word does not count as the scheduler's.
        now = self._clock()
        for frames in batch:
            try:
                msg, _ = decode(frames, DEFAULT_LIMITS)
            except RemoteProtocolError as exc:
                log.error("bad message from model shard %s: %s", addr, exc)
                continue
            if isinstance(msg, DropRequests):
                self._drop(msg, now)
            elif isinstance(msg, Error):
                log.error("model shard %s refused a message: %s", addr, msg.message)
            elif not isinstance(msg, HeartbeatAck):
                log.debug("ignored %s from model shard %s", type(msg).__name__, addr)

    # ----------------------------------------------------------------- workers

    def _on_results(self, pid: int, batch: list[Sequence[Any]]) -> None:
        for frames in batch:
            body = [frames[0].bytes, *(f.buffer for f in frames[1:])]
            try:
                msg, buffers = decode(body, DEFAULT_LIMITS)
            except RemoteProtocolError as exc:
                log.error("bad message from a worker: %s", exc)
                continue
            if isinstance(msg, Error):
                log.error("worker refused a message: %s", msg.message)
                continue
            if isinstance(msg, ModelsDescribed):
                for sig in msg.models:
                    if isinstance(sig, tuple) and len(sig) == 4 and isinstance(sig[0], str):
                        self.signatures.setdefault(sig[0], sig)
                continue
            if not isinstance(msg, Results):
                continue
            pos = 0
            for rid, status, error, metas in zip(msg.request_ids, msg.statuses, msg.errors, msg.tensors):
                n = len(metas)
                chunk = buffers[pos : pos + n]
                pos += n
                p = self._pending.get(rid)
                if p is None or p.worker != pid:
                    continue  # answered already, or fenced: it was re-dispatched elsewhere
                try:
                    code = Status(status)
                except ValueError:
                    code, error = Status.FAILED, f"worker sent unknown status {status}: {error}"
                self._answer(rid, p, code, error, metas, chunk)

    # ---------------------------------------------------------------- answers

    def _move(self, p: _Pending, phase: Phase) -> None:
        if phase not in TRANSITIONS[p.phase]:
            raise RuntimeError(f"illegal request transition {p.phase.name} -> {phase.name}")
        p.phase = phase

    def _answer(
        self, rid: int, p: _Pending, status: Status, error: str, metas: Any, buffers: list[Any]
    ) -> None:
        self._move(p, Phase.ANSWERED)
        del self._pending[rid]
        self.counters[status.name.lower()] += 1
        now = self._clock()
        key = (p.model, status.name)
        self.model_replies[key] = self.model_replies.get(key, 0) + 1
        hist = self.latency_hist.get(key)
        if hist is None:
            hist = self.latency_hist[key] = Histogram()
        hist.observe((now - p.received_ns) / 1e9)
        if status is Status.OK:
            self.latencies.append(now - p.received_ns)
            recent = self.model_latencies.get(p.model)
            if recent is None:
                recent = self.model_latencies[p.model] = deque(maxlen=4096)
            recent.append((now, now - p.received_ns))
            if now <= p.deadline_ns:
                self.counters["ok_within_slo"] += 1
                self.model_within_slo[p.model] = self.model_within_slo.get(p.model, 0) + 1
        self._answers += 1
        copies = 1
        if self.config.test_fault and self._answers == TEST_FAULT_AT:
            copies = 0 if self.config.test_fault == "drop-reply" else 2
            log.warning(
                "test fault %s: request %d of %s answered %d times",
                self.config.test_fault,
                p.tag,
                p.model,
                copies,
            )
        for _ in range(copies):
            self._send_client(p.client, Reply(p.tag, int(status), error, metas), buffers)

    def _reply_status(self, rid: int, status: Status, text: str, now: int) -> None:
        p = self._pending.get(rid)
        if p is not None:
            self._answer(rid, p, status, text, (), [])

    def _send_client(self, client: bytes | AnswerFn, msg: Any, buffers: Sequence[Any] = ()) -> None:
        if not isinstance(client, bytes):
            try:
                client(msg, buffers)
            except Exception:  # the gateway's bug must not take the frontend down
                log.exception("in-process client failed on its answer")
            return
        assert self._clients is not None
        try:
            self._clients.send_multipart([client, *encode(msg, buffers)], zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:  # the client is gone; its answer is lost with it
            log.warning("reply to client failed: %s", exc)
        if self._client_reader is not None:
            self._client_reader.poke()  # a send can swallow the descriptor's read edge

    def _send_sched(self, msg: Any) -> bool:
        """Send to the scheduler now; False when it is not connected (nothing queues)."""
        assert self._sched is not None
        sent = True
        try:
            self._sched.send_multipart(encode(msg), zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            sent = False
            log.debug("send %s to scheduler failed: %s", type(msg).__name__, exc)
        if self._sched_reader is not None:
            self._sched_reader.poke()
        return sent

    async def _sweep_loop(self) -> None:
        while True:
            await self._time.sleep(SWEEP_INTERVAL_NS / 1e9)
            self.sweep(self._clock())

    def sweep(self, now: int) -> list[int]:
        """Answer FAILED every request still unanswered past its deadline plus
        ``answer_grace_ns``, naming who stayed silent; returns their ids."""
        late = overdue(self._pending, now, self.config.answer_grace_ns)
        for rid in late:
            p = self._pending[rid]
            where = "the scheduler" if p.phase is Phase.QUEUED else "the worker"
            self._reply_status(rid, Status.FAILED, f"no answer from {where} in time", now)
        return late

    async def _heartbeat_loop(self) -> None:
        while True:
            self.heartbeat(self._clock())
            await self._time.sleep(self.config.heartbeat_interval_ns / 1e9)

    def heartbeat(self, now: int) -> None:
        """One heartbeat tick: a scheduler silent longer than ``scheduler_timeout_ns`` is
        lost (what it held is answered UNAVAILABLE); while not registered, registration
        is sent again; then a Heartbeat, and AttachFrontend to shards not yet attached."""
        if self._index is not None and now - self._sched_seen_ns > self.config.scheduler_timeout_ns:
            silent = (now - self._sched_seen_ns) / 1e9
            self._scheduler_lost(f"no word from it for {silent:.1f} s", now)
        if self._index is None:
            self._send_sched(RegisterFrontend(self.name))
        self._send_sched(Heartbeat(now))
        self._attach_shards()

    def stats(self) -> dict[str, Any]:
        """Counters and the number of requests in flight, JSON-able."""
        out: dict[str, Any] = {
            "name": self.name,
            "index": self._index,
            "counters": dict(self.counters),
            "pending": len(self._pending),
            "models": sorted(self._models),
            "workers": len(self._workers),
            "latency_ms": _percentiles(self.latencies),
            "model_latency_ms": self._recent_latency(),
            "described_models": sorted(self.signatures),
            "http_port": self.http_server.port if self.http_server is not None else None,
            "grpc_port": self.grpc_server.port if self.grpc_server is not None else None,
        }
        if self._shard_at is not None:
            out["shards"] = {"version": self._shard_version, "addresses": self._shard_addresses}
        return out

    def _recent_latency(self, window_ns: int = 5_000_000_000) -> dict[str, dict[str, float]]:
        """Per model: p50/p99 accept-to-reply ms of OK replies in the last ``window_ns``."""
        since = self._clock() - window_ns
        out: dict[str, dict[str, float]] = {}
        for model, recent in self.model_latencies.items():
            lat = sorted(x for t, x in recent if t >= since)
            if lat:
                out[model] = {
                    "p50": lat[(len(lat) - 1) // 2] / 1e6,
                    "p99": lat[min(len(lat) - 1, int(0.99 * len(lat)))] / 1e6,
                    "n": len(lat),
                }
        return out

    def metric_families(self) -> list[Family]:
        """The frontend's Prometheus families (docs/metrics.md lists each)."""
        fams: list[Family] = []

        def fam(name: str, kind: str, text: str) -> Family:
            f = Family(name, kind, text)
            fams.append(f)
            return f

        fam(
            "baton_frontend_requests_accepted_total",
            "counter",
            "Infer requests accepted (validated, given an id), per model.",
        ).add_all(self.model_accepted, "model")
        fam(
            "baton_frontend_replies_total",
            "counter",
            "Replies to Infer requests, accepted or refused, per model and status.",
        ).add_all(self.model_replies, "model", "status")
        fam(
            "baton_frontend_requests_within_slo_total",
            "counter",
            "OK replies sent by the request's deadline, per model.",
        ).add_all(self.model_within_slo, "model")
        fam(
            "baton_frontend_request_latency_seconds",
            "histogram",
            "Accepted requests: acceptance to the reply's send, per model and status.",
        ).add_all(self.latency_hist, "model", "status")
        fam("baton_frontend_requests_pending", "gauge", "Accepted requests not yet answered.").add(
            len(self._pending)
        )
        fam(
            "baton_frontend_payload_bytes_total", "counter", "Tensor payload bytes of accepted requests."
        ).add(self.counters["payload_bytes_in"])
        fam(
            "baton_frontend_metadata_messages_total", "counter", "Requests messages sent to the scheduler."
        ).add(self.counters["metadata_messages"])
        fam("baton_frontend_workers", "gauge", "Worker processes with an open data connection.").add(
            len(self._workers)
        )
        return fams

    def render_metrics(self) -> str:
        """The Prometheus text (format 0.0.4) that ``GET /metrics`` returns."""
        return render(self.metric_families())


def _percentiles(samples: deque[int]) -> dict[str, float]:
    if not samples:
        return {}
    data = sorted(samples)

    def pick(q: float) -> float:
        return data[min(len(data) - 1, int(q * len(data)))] / 1e6

    return {"p50": pick(0.5), "p99": pick(0.99), "max": data[-1] / 1e6}


def _frame_property(frame: Any, name: str) -> str | None:
    """A ZMQ connection metadata property of a received frame, None when absent."""
    try:
        value: str | None = frame.get(name)
    except (zmq.ZMQError, AttributeError):
        return None
    return value
