"""A model-shard process of the multicore scheduler (DESIGN §5). Metadata only.

Theory of operation: a scheduler started with ``--shards K`` is one matcher process
(``central.runtime.matcher``) and K of these. A shard binds a ROUTER of its own that
frontends send ``Requests`` to (they learn its address and which models it owns from the
matcher's ``ShardDirectory``), and connects a DEALER to the matcher. It runs one
``ModelShard`` (``central.policy.shard``): the default policy's queues, estimators,
candidates, deferral timers and drops for the models it owns, against a view of the
worker pools that the matcher keeps up to date (``PoolStates``).

Per loop turn, as in the single-process scheduler: every message read is applied (the
turn's arrivals are queued together), then the shard recomputes its dirty models and
sends the matcher one ``Offers`` message with its ready candidates and withdrawals, sends
``DropRequests`` straight to the frontends, and arms its one precise timer at the next
deferral deadline. The matcher answers a ready candidate with a ``GrantBatch``; the shard
pops the batch's requests and answers ``Dispatched`` (or ``Dispatched`` without ids:
declined, when the candidate went away while the grant was on the wire); the matcher
sends the ``Execute`` and the ``Route``. So the matcher sees a few messages per batch and
none per request.

A batch's requests stay here until the matcher says it finished (``ShardNotes.finished``)
or that its worker was lost (``ShardNotes.lost``: they go back to the queue with their
deadlines, to be dispatched again or dropped early). A moved model (``MoveModel``) leaves
with its queue (``ModelState``, through the matcher); requests for it that still arrive
here are passed on (``Requeue``). Every request that reaches a shard thus ends in a
``Route`` or a ``DropRequests``.

The shard shares the host's monotonic clock with the matcher (the matcher starts its
shards on its own host), so absolute times pass between them unchanged.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import zmq

from central.plumbing.clock import ClockLike, LatenessLog, PreciseTimer, as_clock
from central.plumbing.security import PeerGate, load_keys, warn_if_exposed
from central.plumbing.zmqio import Reader, close_all, configure, send_frames
from central.policy import PolicyConfig
from central.policy.exchange import Finished, Grant, Offer, PoolState, Withdraw
from central.policy.shard import ModelShard
from central.policy.types import Drop, DropReason, Profile, Request
from central.protocol import (
    DEFAULT_LIMITS,
    AttachFrontend,
    Dispatched,
    Error,
    GrantBatch,
    Heartbeat,
    HeartbeatAck,
    Kind,
    ModelState,
    MoveModel,
    Offers,
    PoolStates,
    RegisterShard,
    RemoteProtocolError,
    Requests,
    Requeue,
    ShardDirectory,
    ShardModels,
    ShardNotes,
    ShardStats,
    StatsQuery,
    StatsReply,
    Status,
    decode,
    encode,
)
from central.protocol.conventions import FRONTEND_SHIFT, owner_of

from .translate import drop_to_messages, requests_to_event

__all__ = ["ShardConfig", "ShardServer"]

log = logging.getLogger("baton.shard")

_NOBLOCK = int(zmq.NOBLOCK)
_DECLINED = (0, 0, 0, 0)
# Who may send what to a shard's ROUTER when keys are on: only frontends, and only these.
_SHARD_KINDS: dict[int, frozenset[str]] = {
    Kind.REQUESTS: frozenset({"frontend"}),
    Kind.ATTACH_FRONTEND: frozenset({"frontend"}),
    Kind.STATS_QUERY: frozenset({"frontend", "client", "scheduler"}),
}


@dataclass(frozen=True)
class ShardConfig:
    """Knobs of a shard process; the policy knobs must equal the matcher's."""

    index: int
    scheduler: str = "tcp://127.0.0.1:5550"  # the matcher
    address: str = "tcp://127.0.0.1:0"  # ROUTER bind for frontends (port 0: any free)
    policy_config: PolicyConfig = field(default_factory=PolicyConfig)
    one_way_ns: int = 50_000  # expected frontend -> shard delay, taken off budgets
    heartbeat_interval_ns: int = 200_000_000
    matcher_timeout_ns: int = 2_000_000_000  # silent this long: register again
    stats_interval_ns: int = 250_000_000  # ShardStats to the matcher
    keys_dir: str | None = None  # the scheduler's key pair serves both sockets
    spin_ns: int = 1_000_000


class ShardServer:
    """Serve until ``stop`` is set; see the module docstring."""

    def __init__(
        self,
        config: ShardConfig,
        *,
        clock: ClockLike = time.monotonic_ns,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.config = config
        self._time = as_clock(clock)  # reads and sleeps; ``_clock`` reads, on hot paths
        self._clock = self._time.reader
        self._ctx = context or zmq.Context.instance()
        self.shard = ModelShard(config.policy_config)
        self._front_out: Callable[[list[Any], int], Any] | None = None
        self._up_out: Callable[[list[Any], int], Any] | None = None
        self._up: zmq.Socket[Any] | None = None
        self._front: zmq.Socket[Any] | None = None
        self._readers: list[Reader] = []
        self._timer: PreciseTimer | None = None
        self.lateness = LatenessLog()
        self._frontends: dict[int, bytes] = {}  # frontend index -> routing id here
        self._attached: dict[bytes, int] = {}
        self._owners: dict[str, int] = {}
        self._shards = 1
        self._directory_version = -1
        self._inflight: dict[int, list[Request]] = {}  # batch id -> its requests
        self._arrived: list[Request] = []  # this turn's arrivals
        self._forward: list[Request] = []  # this turn's arrivals owned elsewhere
        self._registered = False
        self._matcher_seen_ns = 0
        self.address = ""
        self.counters: Counter[str] = Counter()
        self.drops_by_reason: dict[str, int] = {r.name: 0 for r in DropReason}
        self.model_requests: Counter[str] = Counter()
        self.model_drops: dict[tuple[str, str], int] = {}
        self._model_of: dict[int, str] = {}  # queued request id -> model (drop accounting)
        self._pending_offers: list[tuple[str, int, int, int, int]] = []  # this turn's
        self._pending_withdrawals: list[str] = []

    # ------------------------------------------------------------------ serving

    async def serve(self, stop: asyncio.Event) -> None:
        """Bind, register with the matcher, serve until ``stop``, close every socket."""
        cfg = self.config
        keys = load_keys(cfg.keys_dir, "scheduler") if cfg.keys_dir else None
        warn_if_exposed(cfg.address, keys, f"shard {cfg.index}")
        front = self._ctx.socket(zmq.ROUTER)
        up = self._ctx.socket(zmq.DEALER)
        if keys is not None:
            keys.server(front, self._ctx)
            keys.client(up, "scheduler")
        # handover: a frontend reconnecting takes its id over
        configure(front, hwm=0, mandatory=True, handover=True)
        configure(up, hwm=0, identity=f"s-{cfg.index}")
        front.bind(cfg.address)
        self.address = front.getsockopt_string(zmq.LAST_ENDPOINT)
        up.connect(cfg.scheduler)
        self._front, self._up = front, up
        self._front_out = functools.partial(send_frames, front)
        self._up_out = functools.partial(send_frames, up)
        wakeups = self._time.wakeups(spin_ns=cfg.spin_ns, lateness=self.lateness)
        self._timer = PreciseTimer(self._on_timer, wakeups)
        if keys is None:
            on_front: Callable[[Sequence[Sequence[bytes]]], None] = self._on_front
            front_reader = Reader(front, on_front)
        else:
            gate = PeerGate(keys, _SHARD_KINDS)
            front_reader = Reader(
                front, lambda b: self._on_front(gate.admit(b, self._unauthorized)), copy=False
            )
        self._readers = [front_reader, Reader(up, self._on_up)]
        log.info("shard %d serving frontends on %s", cfg.index, self.address)
        self._register()
        tasks = [asyncio.ensure_future(self._heartbeat_loop()), asyncio.ensure_future(self._stats_loop())]
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._timer.arm(None)
            wakeups.close()
            for r in self._readers:
                r.close()
            close_all([front, up])
            if keys is not None:
                keys.stop()

    def attach(self, front: Any, up: Any, timer: Any, address: str = "inproc://shard") -> None:
        """Drive this shard without sockets or a loop: ``front`` and ``up`` need only
        ``send_multipart(frames, flags)`` (``front``'s frames start with the frontend's
        routing id), ``timer`` only ``arm(t_ns | None)``; feed it with ``_on_front``,
        ``_on_up`` and ``_on_timer``. For in-process drivers (the capacity benchmark's
        hot path); ``serve`` does the same with real ones."""
        self._front_out = front.send_multipart
        self._up_out = up.send_multipart
        self._timer = timer
        self.address = address

    def _register(self) -> None:
        cfg = self.config
        self._directory_version = -1  # a restarted matcher numbers its directories anew
        self._send_up(RegisterShard(cfg.index, self.address, f"shard{cfg.index}-{os.getpid()}"))

    async def _heartbeat_loop(self) -> None:
        interval = self.config.heartbeat_interval_ns / 1e9
        while True:
            await self._time.sleep(interval)
            self.heartbeat(self._clock())

    def heartbeat(self, now: int) -> None:
        """One heartbeat tick: a matcher silent longer than ``matcher_timeout_ns`` is
        forgotten, registration is (re)sent while not registered, then a Heartbeat."""
        cfg = self.config
        if self._registered and now - self._matcher_seen_ns > cfg.matcher_timeout_ns:
            log.warning("matcher silent for %.1f s: registering again", (now - self._matcher_seen_ns) / 1e9)
            self._registered = False
        if not self._registered:
            self._register()
        self._send_up(Heartbeat(now))

    async def _stats_loop(self) -> None:
        while True:
            await self._time.sleep(self.config.stats_interval_ns / 1e9)
            if self._registered:
                self._send_up(ShardStats(self.config.index, json.dumps(self.stats())))

    # ------------------------------------------------------------ from frontends

    def _on_front(self, batch: Sequence[Sequence[bytes]]) -> None:
        now = self._clock()
        for frames in batch:
            identity, body = frames[0], frames[1:]
            nbytes = sum(len(f) for f in body)
            self.counters["messages_in"] += 1
            self.counters["bytes_in"] += nbytes
            try:
                msg, _ = decode(body, DEFAULT_LIMITS)
                self._handle_front(identity, msg, nbytes, now)
            except (RemoteProtocolError, TypeError, ValueError, KeyError) as exc:
                self.counters["protocol_errors"] += 1
                self._send_front(identity, Error(int(Status.BAD_REQUEST), str(exc)))
        self._end_turn(now)

    def _handle_front(self, identity: bytes, msg: Any, nbytes: int, now: int) -> None:
        if isinstance(msg, Requests):
            self.counters["request_messages"] += 1
            self.counters["request_bytes_in"] += nbytes
            ids = msg.request_ids
            if not len(ids) == len(msg.models) == len(msg.budgets_ns) == len(msg.sizes):
                raise ValueError("Requests: ragged fields")
            index = self._attached.get(identity)
            if index is None:
                raise ValueError("Requests before AttachFrontend")
            if ids and not (min(ids) >> FRONTEND_SHIFT == index == max(ids) >> FRONTEND_SHIFT):
                raise ValueError("request ids must carry your frontend index")
            requests = requests_to_event(msg, now, self.config.one_way_ns).requests
            self.counters["requests_in"] += len(requests)
            self._accept(requests)
        elif isinstance(msg, AttachFrontend):
            old = self._frontends.get(msg.frontend_index)
            if old is not None and old != identity:
                self._attached.pop(old, None)
            self._frontends[msg.frontend_index] = identity
            self._attached[identity] = msg.frontend_index
        elif isinstance(msg, StatsQuery):
            self._send_front(identity, StatsReply(msg.tag, json.dumps(self.stats())))
        elif isinstance(msg, Heartbeat):
            self._send_front(
                identity, HeartbeatAck(msg.sent_ns, self._clock(), int(identity in self._attached))
            )
        else:
            raise ValueError(f"{type(msg).__name__} is not for a shard")

    def _accept(self, requests: Sequence[Request]) -> None:
        """Queue the requests this shard owns; pass the others on (the turn's end)."""
        models = self.shard.models
        owners, me, shards = self._owners, self.config.index, self._shards
        for r in requests:
            if r.model in models or owner_of(r.model, owners, shards) == me:
                self._arrived.append(r)
            else:
                self._forward.append(r)

    # -------------------------------------------------------------- from matcher

    def _on_up(self, batch: list[Sequence[bytes]]) -> None:
        now = self._clock()
        self._matcher_seen_ns = now
        for frames in batch:
            try:
                msg, _ = decode(frames, DEFAULT_LIMITS)
                self._handle_up(msg, now)
            except (RemoteProtocolError, TypeError, ValueError, KeyError) as exc:
                self.counters["protocol_errors"] += 1
                log.error("bad message from the matcher: %s", exc)
        self._end_turn(now)

    def _handle_up(self, msg: Any, now: int) -> None:
        shard = self.shard
        if isinstance(msg, PoolStates):
            for models, free_at, busy, size in msg.pools:
                shard.pool_state(PoolState(tuple(models), free_at, bool(busy), size))
        elif isinstance(msg, GrantBatch):
            self._grant(msg, now)
        elif isinstance(msg, ShardNotes):
            for model in msg.wakes:
                shard.wake(model)
            for bid, model, ok, size, duration, late in msg.finished:
                self._inflight.pop(bid, None)
                shard.finished(Finished(model, bool(ok), size, duration, late))
            for model in msg.orphaned:
                self._offers(shard.orphaned(model))
            again = [r for bid in msg.lost for r in self._inflight.pop(bid, ())]
            if again:  # queued again here, or passed on if their model has moved
                self.counters["redispatched"] += len(again)
                self._accept(again)
        elif isinstance(msg, ShardModels):
            for name, k, c, max_batch in msg.models:
                shard.add_model(name, Profile(k, c, max_batch) if k or c else None)
        elif isinstance(msg, ShardDirectory):  # also the matcher's answer to RegisterShard
            if not self._registered:
                self._registered = True
                log.info("shard %d registered with the matcher", self.config.index)
            if msg.version > self._directory_version:
                self._directory_version = msg.version
                self._owners = dict(msg.owners)
                self._shards = max(1, len(msg.shards))
        elif isinstance(msg, MoveModel):
            self._move_out(msg, now)
        elif isinstance(msg, ModelState):
            self._move_in(msg, now)
        elif isinstance(msg, Requeue):
            self._accept(
                list(map(Request, msg.request_ids, msg.models, msg.deadlines_ns, msg.arrivals_ns, msg.sizes))
            )
        elif isinstance(msg, HeartbeatAck):
            if not msg.registered and self._registered:
                log.warning("the matcher does not know this shard: registering again")
                self._registered = False
                self._register()
        elif isinstance(msg, Error):
            log.error("the matcher refused a message: %s", msg.message)
        else:
            raise ValueError(f"{type(msg).__name__} is not for a shard")

    def _grant(self, msg: GrantBatch, now: int) -> None:
        shard = self.shard
        if self._arrived:  # the candidate must include what came this turn
            self._queue_arrivals(now)
        self._offers(shard.advance(now))
        m = shard.models.get(msg.model)
        if m is None or not m.ready or m.est is None:
            self.counters["declined"] += 1
            self._send_up(Dispatched(msg.batch_id, msg.model, msg.worker_id, (), *_DECLINED))
            return
        dispatch, booked = shard.grant(Grant(msg.model, msg.batch_id, msg.worker_id, msg.earliest_ns), now)
        self._inflight[msg.batch_id] = shard.granted
        model_of = self._model_of
        for rid in dispatch.request_ids:
            model_of.pop(rid, None)
        self.counters["batches"] += 1
        self.counters["batched_requests"] += len(dispatch.request_ids)
        self._send_up(
            Dispatched(
                msg.batch_id,
                msg.model,
                msg.worker_id,
                dispatch.request_ids,
                dispatch.earliest_ns,
                dispatch.latest_ns,
                booked.expected_ns,
                booked.margin_ns,
            )
        )

    def _move_out(self, msg: MoveModel, now: int) -> None:
        """Hand ``msg.model`` with its queue to shard ``msg.to`` (through the matcher)."""
        shard = self.shard
        if self._arrived:
            self._queue_arrivals(now)
        self._owners[msg.model] = msg.to
        if msg.model not in shard.models:
            return
        m, out = shard.export(msg.model)
        self._offers(out)
        requests = m.queue.clear()
        prof = m.est.current() if m.est is not None else None
        profile = (prof.k_ns, prof.c_ns, prof.max_batch) if prof is not None else (0, 0, 0)
        self.counters["moved_out"] += 1
        self._send_up(
            ModelState(
                m.name,
                msg.to,
                profile,
                tuple(r.request_id for r in requests),
                tuple(r.deadline_ns for r in requests),
                tuple(r.arrival_ns for r in requests),
                tuple(r.size for r in requests),
            )
        )
        log.info("model %s moved to shard %d with %d queued requests", m.name, msg.to, len(requests))

    def _move_in(self, msg: ModelState, now: int) -> None:
        k, c, max_batch = msg.profile
        self._owners[msg.model] = self.config.index
        self.shard.add_model(msg.model, Profile(k, c, max_batch) if k or c else None)
        self._arrived.extend(
            map(Request, msg.request_ids, repeat(msg.model), msg.deadlines_ns, msg.arrivals_ns, msg.sizes)
        )
        self.counters["moved_in"] += 1

    # -------------------------------------------------------------- the turn's end

    def _on_timer(self) -> None:
        self._end_turn(self._clock())

    def _queue_arrivals(self, now: int) -> None:
        arrived, self._arrived = self._arrived, []
        self.model_requests.update(r.model for r in arrived)
        self._model_of.update((r.request_id, r.model) for r in arrived)
        self.shard.arrive(arrived, now)

    def _end_turn(self, now: int) -> None:
        shard = self.shard
        if self._arrived:
            self._queue_arrivals(now)
        self._offers(shard.advance(now))
        if self._forward:
            fw, self._forward = self._forward, []
            self.counters["forwarded"] += len(fw)
            self._send_up(
                Requeue(
                    tuple(r.request_id for r in fw),
                    tuple(r.model for r in fw),
                    tuple(r.deadline_ns for r in fw),
                    tuple(r.arrival_ns for r in fw),
                    tuple(r.size for r in fw),
                )
            )
        drops = shard.take_drops()
        if drops:
            self._send_drops(drops)
        if self._pending_offers or self._pending_withdrawals:
            offers, self._pending_offers = self._pending_offers, []
            withdrawn, self._pending_withdrawals = self._pending_withdrawals, []
            self._send_up(Offers(tuple(offers), tuple(withdrawn)))
        assert self._timer is not None
        self._timer.arm(shard.next_wakeup_ns())
        for r in self._readers:
            r.poke()

    def _offers(self, out: list[Offer | Withdraw]) -> None:
        for msg in out:
            if type(msg) is Offer:
                self._pending_offers.append(
                    (msg.model, msg.version, msg.latest_ns, msg.expected_ns, msg.margin_ns)
                )
            else:
                self._pending_withdrawals.append(msg.model)

    def _send_drops(self, drops: dict[DropReason, list[int]]) -> None:
        model_of = self._model_of
        for reason, ids in drops.items():
            n = len(ids)
            self.counters["dropped"] += n
            self.drops_by_reason[reason.name] += n
            for rid in ids:
                key = (model_of.pop(rid, ""), reason.name)
                self.model_drops[key] = self.model_drops.get(key, 0) + 1
            for fe, drop in drop_to_messages(Drop(tuple(sorted(ids)), reason)).items():
                identity = self._frontends.get(fe)
                if identity is not None:
                    self._send_front(identity, drop)
                else:
                    log.error(
                        "%d requests of frontend %d dropped, but it never attached", len(drop.request_ids), fe
                    )

    # ---------------------------------------------------------------- plumbing

    def _unauthorized(self, identity: bytes, text: str) -> None:
        self.counters["unauthorized"] += 1
        self._send_front(identity, Error(int(Status.UNAUTHORIZED), text))

    def _send_front(self, identity: bytes, msg: Any) -> None:
        assert self._front_out is not None
        try:
            self._front_out([identity, *encode(msg)], _NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("send %s to %r failed: %s", type(msg).__name__, identity, exc)

    def _send_up(self, msg: Any) -> None:
        assert self._up_out is not None
        try:
            self._up_out(encode(msg), _NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("send %s to the matcher failed: %s", type(msg).__name__, exc)

    def stats(self) -> dict[str, Any]:
        """A JSON-able snapshot: counters, drops, per model queue and arrival rate."""
        now = self._clock()
        shard = self.shard
        return {
            "index": self.config.index,
            "address": self.address,
            "counters": dict(self.counters),
            "drops_by_reason": dict(self.drops_by_reason),
            "model_requests": dict(self.model_requests),
            "model_drops": [[m, r, n] for (m, r), n in self.model_drops.items()],
            "models": {
                name: {
                    "queue": len(m.queue),
                    "ready": m.ready,
                    "batch": m.batch,
                    "rate_rps": m.load.rate_per_ns(now) * 1e9,
                }
                for name, m in shard.models.items()
            },
            "pools": [
                [list(v.models), v.free_at_ns - now, v.busy, v.size] for v in shard._views.values()
            ],  # free_at relative to now
            "inflight_batches": len(self._inflight),
            "frontends": len(self._frontends),
            "timer_lateness_us": {
                "p50": self.lateness.percentile(0.5) / 1e3,
                "p99": self.lateness.percentile(0.99) / 1e3,
            },
        }
