"""The matcher process of the multicore scheduler, and the shards it starts (DESIGN §5).

Theory of operation: ``baton scheduler --shards K`` (K >= 2) runs this process and K
model-shard processes (``central.runtime.shard``). The matcher binds the scheduler's
address, so workers and frontends see nothing new there: workers register, heartbeat and
report ``Done`` here, frontends register here and get ``Route`` from here. What changes is
where request metadata goes: the matcher tells frontends (and shards) which shard owns
each model (``ShardDirectory``), and frontends send ``Requests`` straight to that shard.

``SplitScheduler`` is built from the single-process scheduler's parts (``Shell``,
``Control``, ``Registry``, ``Dispatcher``, ``Accounting``: the worker bookkeeping,
liveness, directories, stats, metrics and the ``Execute``/``Route`` path are the same
code) with a ``Matcher`` (``central.policy.matcher``) that reaches its shards through
messages as its policy, and a dispatch table that adds the shard messages
(``RegisterShard``, ``Offers``, ``Dispatched``, ``ModelState``, ``Requeue``,
``ShardStats``) to the shared one. Per loop turn:

* events about workers (join, ``Done``, loss) go to the matcher, whose answers become
  per-shard buffers: ``ShardModels`` (a model to own), ``PoolStates`` (for every shard),
  ``ShardNotes`` (wake-ups, finished batches, orphaned models, lost batches, for the
  owner);
* ``Offers`` from shards go to the matcher, which then decides: each ``Grant`` becomes a
  ``GrantBatch`` to the owner and is booked at once with the offer's expected duration
  (so that the worker is not granted twice while the answer is on the wire); the shard's
  ``Dispatched`` corrects the booking (``Matcher.rebook``) and is carried out as the
  single-process scheduler carries out a ``Dispatch``; a declined grant unbooks it;
* at the turn's end the buffers go out, in the order models, pools, notes, grants.

Moving models: every ``rebalance_interval_ns`` the matcher compares the shards' arrival
rates (from their ``ShardStats``) and, when the busiest carries more than
``rebalance_ratio`` times the mean, moves models greedily (the same rule as
``ShardedPolicy.rebalance``): the owner changes here first (its offer is forgotten, a
grant already on the wire is declined), the old shard gets ``MoveModel`` and sends the
model with its queue (``ModelState``) through here to the new one, frontends get the new
directory, and requests that still reach the old shard are passed on (``Requeue``). No
request is lost on the way.

The shard processes are children of the matcher (``ShardProcesses``): started before it
serves, restarted if one dies (its queued requests are then answered by the frontends'
sweep at their deadline), and killed with it (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import zmq

from central.plumbing.clock import ClockLike, LatenessLog, as_clock
from central.plumbing.metrics import Family, render
from central.policy.exchange import Booked, Grant, Offer, PoolState, Wake, Withdraw
from central.policy.matcher import Matcher
from central.policy.placement import Placement
from central.policy.types import (
    Action,
    BatchDone,
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
    Dispatched,
    GrantBatch,
    Heartbeat,
    HeartbeatAck,
    ModelState,
    MoveModel,
    Offers,
    PoolStates,
    RegisterFrontend,
    RegisterShard,
    Requeue,
    ShardDirectory,
    ShardModels,
    ShardNotes,
    ShardStats,
)

from .accounting import percentiles_us
from .config import SchedulerConfig
from .host import SchedulerHost
from .registry import WorkerProc
from .scheduler import scheduler_stats
from .shell import Handler

__all__ = ["MatcherPolicy", "ShardProcesses", "SplitScheduler"]

log = logging.getLogger("baton.matcher")

_SHARD_KINDS = (RegisterShard, Offers, Dispatched, ModelState, Requeue, ShardStats)


class _Shard:
    """The matcher's view of one shard process, and what it will be sent this turn."""

    __slots__ = (
        "index",
        "identity",
        "address",
        "name",
        "stats",
        "models",
        "pools",
        "notes",
        "grants",
        "seen_ns",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.identity: bytes | None = None
        self.address = ""
        self.name = ""  # names the incarnation (a restarted shard has another pid)
        self.stats: dict[str, Any] = {}
        self.seen_ns = 0
        self.clear()

    def clear(self) -> None:
        self.models: list[tuple[str, int, int, int]] = []
        self.pools: list[tuple[tuple[str, ...], int, int, int]] = []
        self.notes: tuple[list[str], list[Any], list[str], list[int]] = ([], [], [], [])
        self.grants: list[GrantBatch] = []


class MatcherPolicy:
    """A ``Matcher`` whose shards live in other processes; the scheduler's ``policy``.

    A thin shell over policy code: the worker timeline and matching are ``Matcher``'s
    (``central.policy.timeline``, the default policy's own), ownership and the
    rebalancing rule ``Placement``'s. What it adds is delivery: per-shard buffers of
    the matcher's messages, grants booked with the offer's figures until the shard
    answers, and which shard holds a dispatched batch. ``handle`` applies worker events
    and makes decisions; its decisions are grants to shards, not actions, so it returns
    none: the ``Dispatch`` is carried out when the owning shard answers
    (``SplitScheduler``). The overdue bump uses the margin a batch was booked with (the
    model's current one lives in its shard's process)."""

    def __init__(self, config: SchedulerConfig, shards: int) -> None:
        pconf = config.policy_config
        self.matcher = Matcher(pconf.dispatch_cost_ns, pconf.first_batch_id)
        self.shards = [_Shard(i) for i in range(shards)]
        self.placement = Placement(shards, config.placement)
        self.profiles: dict[str, tuple[int, int, int]] = {}
        self.offers: dict[str, tuple[int, int, int]] = {}  # model -> (version, exp, margin)
        self.pending: dict[int, Grant] = {}  # granted, the shard's answer not in yet
        self.granted_at: dict[int, int] = {}  # batch -> when it was granted
        # grant -> the shard's answer: the split's extra round trip, which the dispatch
        # budget (--dispatch-cost-us) must cover on top of Execute and payload transfer
        self.round_trips = LatenessLog(4096)
        self.dispatched_by: dict[int, int] = {}  # batch in flight -> the shard holding it
        self.directory_version = 0
        self.directory_changed = False
        self.moves = 0

    # --------------------------------------------------------- policy interface

    def handle(self, event: Event, now: int) -> list[Action]:
        m = self.matcher
        if isinstance(event, BatchDone):
            finished, states = m.done(event, now)
            if finished is not None:
                # to the shard that dispatched it (it holds the requests) and, if the
                # model has moved since, to its owner too (it refits the profile)
                note = (
                    event.batch_id,
                    finished.model,
                    int(finished.ok),
                    finished.batch_size,
                    finished.duration_ns,
                    finished.late_ns,
                )
                owner = self.owner(finished.model)
                by = self.dispatched_by.pop(event.batch_id, owner)
                self.shards[by].notes[1].append(note)
                if by != owner:
                    self.shards[owner].notes[1].append(note)
            self._pools(states)
        elif isinstance(event, WorkerJoined):
            offered = dict(event.profiles)
            for name in event.models:
                if name not in self.profiles:
                    p = offered.get(name)
                    self.profiles[name] = (p.k_ns, p.c_ns, p.max_batch) if p else (0, 0, 0)
                    self.shard_of(name).models.append((name, *self.profiles[name]))
                    self.directory_changed = True
            states, orphans = m.joined(event, now)
            self._pools(states)
            self._orphan(orphans)
        elif isinstance(event, WorkerLost):
            states, orphans = m.lost(event.worker_id)
            self._pools(states)
            self._orphan(orphans)
        elif isinstance(event, RequestsArrived):
            raise ValueError("request metadata goes to the shards, not to the matcher")
        elif not isinstance(event, Tick):
            raise TypeError(f"not a policy event: {event!r}")
        self.decide(now)
        return []

    def next_wakeup_ns(self) -> int | None:
        return self.matcher.next_wakeup_ns()

    def snapshot(self) -> dict[str, Any]:
        m = self.matcher
        return {
            "shards": [
                {
                    "index": s.index,
                    "address": s.address,
                    "models": sorted(n for n in self.profiles if self.owner(n) == s.index),
                    "queued": sum(v.get("queue", 0) for v in s.stats.get("models", {}).values()),
                }
                for s in self.shards
            ],
            "workers": {
                wid: {
                    "alive": w.alive,
                    "models": list(w.models),
                    "free_at_ns": w.free_at,
                    "inflight": len(w.timeline),
                }
                for wid, w in m.workers.items()
            },
            "inflight_batches": m.inflight,
            "pending_grants": len(self.pending),
            "moves": self.moves,
            "next_wakeup_ns": self.next_wakeup_ns(),
        }

    # ---------------------------------------------------------------- decisions

    @property
    def owners(self) -> dict[str, int]:
        """Model -> owning shard, for every model seen (the directory's content)."""
        return self.placement.owners

    def owner(self, model: str) -> int:
        return self.placement.owner(model)

    def shard_of(self, model: str) -> _Shard:
        return self.shards[self.owner(model)]

    def offers_in(self, msg: Offers, shard: int) -> None:
        """A shard's ready candidates and withdrawals (stale ones, from before a move,
        are ignored)."""
        out: list[Offer | Withdraw] = []
        for model, version, latest, expected, margin in msg.offers:
            if self.owner(model) == shard:
                self.offers[model] = (version, expected, margin)
                out.append(Offer(model, version, latest, expected, margin))
        for model in msg.withdrawn:
            if self.owner(model) == shard:
                self.offers.pop(model, None)
                out.append(Withdraw(model))
        self.matcher.receive(out)

    def decide(self, now: int) -> None:
        """Let the matcher decide until it idles; grants are booked at once."""
        m = self.matcher
        for wake in m.begin(now):
            self.shard_of(wake.model).notes[0].append(wake.model)
        while True:
            step = m.step(now)
            if step is None:
                return
            if isinstance(step, Grant):
                _, expected, margin = self.offers.pop(step.model, (0, 1, 0))
                self.pending[step.batch_id] = step
                self.granted_at[step.batch_id] = now
                self.shard_of(step.model).grants.append(
                    GrantBatch(step.model, step.batch_id, step.worker_id, step.earliest_ns)
                )
                self._pools(m.booked(step, Booked(step.batch_id, max(1, expected), margin), now))
                continue
            for msg in step:
                if isinstance(msg, Wake):
                    self.shard_of(msg.model).notes[0].append(msg.model)
                else:
                    self._pools([msg])

    def answered(self, msg: Dispatched, now: int, by: int | None = None) -> Grant | None:
        """Shard ``by``'s answer to a grant: the grant if it was accepted, else None."""
        grant = self.pending.pop(msg.batch_id, None)
        if grant is None:
            return None
        at = self.granted_at.pop(msg.batch_id, None)
        if at is not None and msg.request_ids:  # (a decline may be the matcher's own)
            self.round_trips.add(now - at)
        if not msg.request_ids:
            self._pools(self.matcher.rebook(msg.batch_id, 0, 0, now))
            return None
        self._pools(self.matcher.rebook(msg.batch_id, msg.expected_ns, msg.margin_ns, now))
        self.dispatched_by[msg.batch_id] = by if by is not None else self.owner(grant.model)
        return grant

    def give_back(self, batch_id: int, model: str) -> None:
        """A batch will not run (its worker is gone): its requests go back to the shard
        that holds them, which queues them again or passes them to the model's owner."""
        by = self.dispatched_by.pop(batch_id, None)
        self.shards[by if by is not None else self.owner(model)].notes[3].append(batch_id)

    def move(self, model: str, to: int) -> int:
        """Make shard ``to`` the owner of ``model``; returns the old owner."""
        src = self.placement.move(model, to)
        if self.offers.pop(model, None) is not None:
            self.matcher.receive([Withdraw(model)])
        self.directory_changed = True
        self.moves += 1
        # the new owner gets the views of the model's pools, which it had no need of
        self.shards[to].pools.extend(
            (st.models, st.free_at_ns, int(st.busy), st.size)
            for st in self.matcher.pool_states()
            if model in st.models
        )
        return src

    def rebalance_plan(self, ratio: float) -> list[tuple[str, int]]:
        """Greedy moves (largest rate first, to the least loaded shard) when the busiest
        shard carries more than ``ratio`` times the mean arrival rate; else none."""
        rates: list[tuple[float, str]] = []
        for s in self.shards:
            for name, m in s.stats.get("models", {}).items():
                if self.owner(name) == s.index:
                    rates.append((float(m.get("rate_rps", 0.0)), name))
        return [(name, dst) for name, _, dst in self.placement.plan(rates, ratio)]

    # ---------------------------------------------------------------- helpers

    def _pools(self, states: list[PoolState]) -> None:
        """Each pool's new view goes to the shards that own one of its models (not to
        every shard: the traffic per batch must not grow with K)."""
        shards, owner = self.shards, self.owner
        for st in states:
            view = (st.models, st.free_at_ns, int(st.busy), st.size)
            targets = {owner(m) for m in st.models}
            for index in targets:
                shards[index].pools.append(view)

    def _orphan(self, models: list[str]) -> None:
        for name in models:
            self.offers.pop(name, None)
            self.shard_of(name).notes[2].append(name)


class SplitScheduler(SchedulerHost):
    """The matcher process: the scheduler's parts with a ``MatcherPolicy`` and a table
    that adds the shard messages; see the module doc."""

    policy: MatcherPolicy

    def __init__(
        self,
        config: SchedulerConfig,
        *,
        clock: ClockLike = time.monotonic_ns,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        if config.shard_processes < 2:
            raise ValueError("a split scheduler needs shard_processes >= 2")
        super().__init__(config, MatcherPolicy(config, config.shard_processes), clock=clock, context=context)
        self.shell.table = self.table()
        self.shell.is_internal = self._internal
        self._shard_ids: dict[bytes, int] = {}
        self.children: ShardProcesses | None = None  # the shard processes, when it started them

    def table(self) -> dict[type, Handler]:
        """The single-process scheduler's table, with the shard messages added, a
        shard's heartbeats told apart and the shard directory sent to frontends."""
        table = self.control.table()
        heartbeat, register_frontend = table[Heartbeat], table[RegisterFrontend]

        def on_heartbeat(identity: bytes, msg: Heartbeat, nbytes: int, now: int) -> None:
            index = self._shard_ids.get(identity)
            if index is None:
                heartbeat(identity, msg, nbytes, now)
                return
            self.policy.shards[index].seen_ns = now
            self.shell.send(identity, HeartbeatAck(msg.sent_ns, self._clock(), 1))

        def on_register_frontend(identity: bytes, msg: RegisterFrontend, nbytes: int, now: int) -> None:
            register_frontend(identity, msg, nbytes, now)
            self.shell.send(identity, self.shard_directory())

        table.update(
            {
                Heartbeat: on_heartbeat,
                RegisterFrontend: on_register_frontend,
                RegisterShard: self._on_register_shard,
                Offers: self._shard_handler(self._on_offers),
                Dispatched: self._shard_handler(self._on_dispatched),
                ModelState: self._shard_handler(self._on_model_state),
                Requeue: self._shard_handler(self._on_requeue),
                ShardStats: self._shard_handler(self._on_shard_stats),
            }
        )
        return table

    def _internal(self, identity: bytes, msg: Any) -> bool:
        return type(msg) in _SHARD_KINDS or identity in self._shard_ids

    # ------------------------------------------------------------ serving

    async def serve(self, stop: asyncio.Event) -> None:
        """Bind, serve until ``stop`` is set, then close every socket."""
        await self.shell.serve(
            stop,
            tasks=[self.liveness_loop, self._rebalance_loop],
            stats=self.stats,
            render=self.render_metrics,
        )

    def orphaned(
        self, proc: WorkerProc, batches: list[tuple[int, Dispatch, list[Request]]], now: int
    ) -> None:
        """A lost worker's batches in flight go back to the shards holding their
        requests."""
        for bid, action, _ in batches:
            self.policy.give_back(bid, action.model)
        if batches:
            self.accounting.bump("redispatched_batches", len(batches))
            log.warning(
                "worker %s lost: %d in-flight batches given back to their shards", proc.name, len(batches)
            )

    # ------------------------------------------------------------ shard messages

    def _shard_handler(self, handle: Callable[[bytes, Any, int, int], None]) -> Handler:
        """A handler for a message only a registered shard may send: ``handle(identity,
        msg, shard index, now)``."""

        def on_message(identity: bytes, msg: Any, nbytes: int, now: int) -> None:
            index = self._shard_ids.get(identity)
            if index is None:
                self.shell.refuse(identity, f"{type(msg).__name__} from an unregistered shard")
                return
            self.policy.shards[index].seen_ns = now
            handle(identity, msg, index, now)

        return on_message

    def _on_offers(self, identity: bytes, msg: Offers, index: int, now: int) -> None:
        self.policy.offers_in(msg, index)
        self.policy.decide(now)

    def _on_dispatched(self, identity: bytes, msg: Dispatched, index: int, now: int) -> None:
        grant = self.policy.answered(msg, now, index)
        if grant is not None:
            self._dispatched_batch(grant, msg, now)
        self.policy.decide(now)

    def _on_model_state(self, identity: bytes, msg: ModelState, index: int, now: int) -> None:
        shards = self.policy.shards
        target = shards[msg.to] if 0 <= msg.to < len(shards) else None
        if target is None or target.identity is None:
            raise ValueError(f"ModelState for shard {msg.to}: no such shard")
        self.shell.send(target.identity, msg)

    def _on_requeue(self, identity: bytes, msg: Requeue, index: int, now: int) -> None:
        self._requeue(msg, now)

    def _on_shard_stats(self, identity: bytes, msg: ShardStats, index: int, now: int) -> None:
        self.policy.shards[index].stats = json.loads(msg.json)

    def _on_register_shard(self, identity: bytes, msg: RegisterShard, nbytes: int, now: int) -> None:
        policy, send = self.policy, self.shell.send
        if not 0 <= msg.index < len(policy.shards):
            self.shell.refuse(identity, f"shard index {msg.index} out of range (0-{len(policy.shards) - 1})")
            return
        shard = policy.shards[msg.index]
        if shard.identity is not None and shard.identity != identity:
            self._shard_ids.pop(shard.identity, None)
        again = shard.name == msg.name and shard.address == msg.address
        shard.identity, shard.address, shard.seen_ns = identity, msg.address, now
        shard.name = msg.name
        self._shard_ids[identity] = msg.index
        if not again:  # a new incarnation: what the old one was granted, it never answers
            for g in [g for g in policy.pending.values() if policy.owner(g.model) == msg.index]:
                policy.answered(Dispatched(g.batch_id, g.model, g.worker_id, (), 0, 0, 0, 0), now)
        owned = tuple(
            (name, *p) for name, p in sorted(policy.profiles.items()) if policy.owner(name) == msg.index
        )
        send(identity, self.shard_directory())  # first: it acknowledges
        if owned:
            send(identity, ShardModels(owned))
        mine = {name for name, *_ in owned}
        views = [v for v in policy.matcher.pool_states() if mine.intersection(v.models)]
        if views:
            send(identity, PoolStates(tuple((s.models, s.free_at_ns, int(s.busy), s.size) for s in views)))
        policy.directory_changed = True
        log.info("shard %d registered at %s", msg.index, msg.address)

    def _dispatched_batch(self, grant: Grant, msg: Dispatched, now: int) -> None:
        w = self.policy.matcher.workers.get(grant.worker_id)
        if w is None or not w.alive or grant.worker_id not in self.registry.gpu:
            # lost (or draining) while the grant was on the wire: the requests go back
            self.policy.give_back(msg.batch_id, msg.model)
            return
        self.dispatcher.execute(
            Dispatch(
                msg.batch_id,
                msg.model,
                msg.worker_id,
                msg.request_ids,
                msg.earliest_ns,
                msg.latest_ns,
                msg.expected_ns,
            ),
            now,
        )

    def _requeue(self, msg: Requeue, now: int) -> None:
        """Requests that reached a shard after their model moved (or this process,
        from a frontend without the directory): to the owner; none registered: drop."""
        policy = self.policy
        groups: dict[int, list[int]] = {}
        for i, model in enumerate(msg.models):
            groups.setdefault(policy.owner(model), []).append(i)
        for index, rows in groups.items():
            target = policy.shards[index].identity
            ids = tuple(msg.request_ids[i] for i in rows)
            if target is None:
                self.dispatcher.drop(Drop(ids, DropReason.NO_WORKER))
                continue
            self.shell.send(
                target,
                Requeue(
                    ids,
                    tuple(msg.models[i] for i in rows),
                    tuple(msg.deadlines_ns[i] for i in rows),
                    tuple(msg.arrivals_ns[i] for i in rows),
                    tuple(msg.sizes[i] for i in rows),
                ),
            )

    def _forward(self, requests: list[Request], now: int) -> None:
        """Request metadata from a frontend that has no directory yet: to the owners."""
        pop = self.dispatcher.arrivals.pop
        for r in requests:
            pop(r.request_id, None)
        self.accounting.bump("forwarded", len(requests))
        self._requeue(
            Requeue(
                tuple(r.request_id for r in requests),
                tuple(r.model for r in requests),
                tuple(r.deadline_ns for r in requests),
                tuple(r.arrival_ns for r in requests),
                tuple(r.size for r in requests),
            ),
            now,
        )

    # ------------------------------------------------------------ turn's end

    def _end_turn(self, now: int) -> None:
        turn = self.control.take_turn()
        if turn:
            self._forward(turn, now)
        self.after_turn()

    def after_turn(self) -> None:
        """The turn's buffers to the shards (a new directory first, then per shard its
        models, pools, notes, grants), then the timer at the matcher's next wake-up."""
        policy, send = self.policy, self.shell.send
        if policy.directory_changed:
            policy.directory_changed = False
            policy.directory_version += 1
            directory = self.shard_directory()
            for frontend in list(self.registry.frontends.values()):
                send(frontend, directory)
            for shard in policy.shards:
                if shard.identity is not None:
                    send(shard.identity, directory)
        for shard in policy.shards:
            identity = shard.identity
            if identity is not None:
                if shard.models:
                    send(identity, ShardModels(tuple(shard.models)))
                if shard.pools:
                    send(identity, PoolStates(tuple(shard.pools)))
                wakes, finished, orphaned, lost = shard.notes
                if wakes or finished or orphaned or lost:
                    send(identity, ShardNotes(tuple(wakes), tuple(finished), tuple(orphaned), tuple(lost)))
                for grant in shard.grants:
                    send(identity, grant)
            elif shard.grants:  # not registered (yet): decline for it
                for g in shard.grants:
                    policy.answered(
                        Dispatched(g.batch_id, g.model, g.worker_id, (), 0, 0, 0, 0), self._clock()
                    )
            shard.clear()
        self.shell.arm(policy.next_wakeup_ns())

    def shard_directory(self) -> ShardDirectory:
        policy = self.policy
        return ShardDirectory(
            policy.directory_version,
            tuple((s.index, s.address) for s in policy.shards),
            tuple(sorted((name, policy.owner(name)) for name in policy.profiles)),
        )

    _shard_directory = shard_directory  # bench/capacity/hot_path.py reads it by this name

    # ------------------------------------------------------------ rebalancing

    async def _rebalance_loop(self) -> None:
        interval = self.config.rebalance_interval_ns
        if interval <= 0:
            return
        while True:
            await self._time.sleep(interval / 1e9)
            self.rebalance()

    def rebalance(self) -> None:
        """One rebalancing check (every ``rebalance_interval_ns``): move models off a
        shard carrying more than ``rebalance_ratio`` times the mean, once all are up."""
        policy = self.policy
        if any(s.identity is None for s in policy.shards):
            return
        moves = policy.rebalance_plan(self.config.rebalance_ratio)
        for model, dst in moves:
            src = policy.move(model, dst)
            identity = policy.shards[src].identity
            if identity is not None:
                self.shell.send(identity, MoveModel(model, dst))
            log.info("model %s: shard %d -> %d", model, src, dst)
        if moves:
            self.accounting.bump("model_moves", len(moves))
            for s in policy.shards:  # rates are stale until the next ShardStats
                s.stats = {}
            self.after_turn()

    # ------------------------------------------------------------ stats

    def stats(self, with_batches: bool = False) -> dict[str, Any]:
        """``Scheduler.stats`` with the shards' counters added in, and theirs apart."""
        out = scheduler_stats(
            self.accounting, self.registry, self.shell, self.policy.snapshot(), with_batches
        )
        counters = out["counters"]
        shards = [s.stats for s in self.policy.shards]
        # counters of work done anywhere in the scheduler: the matcher's plus its shards'
        # (as of their last ShardStats, at most stats_interval old)
        for key in (
            "messages_in",
            "bytes_in",
            "requests_in",
            "request_messages",
            "request_bytes_in",
            "dropped",
            "protocol_errors",
        ):
            counters[key] = counters.get(key, 0) + sum(s.get("counters", {}).get(key, 0) for s in shards)
        for s in shards:
            for reason, n in s.get("drops_by_reason", {}).items():
                out["drops_by_reason"][reason] = out["drops_by_reason"].get(reason, 0) + n
        out["shards"] = shards
        out["grant_round_trip_us"] = percentiles_us(self.policy.round_trips)
        if self.children is not None:
            out["shard_pids"] = [p.pid if p is not None else None for p in self.children.procs]
            out["shard_restarts"] = self.children.restarts
        return out

    def recent_batches(self, count: int) -> list[list[Any]]:
        return self.accounting.recent_batches(count)

    def metric_families(self) -> list[Family]:
        """The scheduler's Prometheus families (docs/metrics.md lists each)."""
        return self.accounting.metric_families(
            self._clock(), self.registry, self.policy.snapshot(), self.lateness, self.config.busy_window_ns
        )

    def render_metrics(self) -> str:
        return render(self.metric_families())


class ShardProcesses:
    """Start, watch and stop the K shard processes of a split scheduler (children)."""

    def __init__(
        self,
        count: int,
        scheduler: str,
        args: list[str],
        log_dir: str | None = None,
        host: str = "127.0.0.1",
        clock: ClockLike | None = None,
    ) -> None:
        self._time = as_clock(clock)  # the watch loop's pace
        self.count = count
        self.scheduler = scheduler
        self.args = args  # policy flags, the same as the matcher's
        self.host = host
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count
        self.restarts = 0

    def start(self) -> None:
        for i in range(self.count):
            self._spawn(i)

    def _spawn(self, index: int) -> None:
        cmd = [
            sys.executable,
            "-m",
            "central.cli",
            "shard",
            "--index",
            str(index),
            "--scheduler",
            self.scheduler,
            "--address",
            f"tcp://{self.host}:0",
            *self.args,
        ]
        out: Any = None
        if self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
            out = open(os.path.join(self.log_dir, f"shard{index}.log"), "ab")
        self.procs[index] = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )

    async def watch(self, stop: asyncio.Event) -> None:
        """Restart a shard that exits while ``stop`` is not set."""
        while not stop.is_set():
            await self._time.sleep(0.2)
            for i, p in enumerate(self.procs):
                if p is not None and p.poll() is not None and not stop.is_set():
                    log.error("shard %d exited with %s: restarting it", i, p.returncode)
                    self.restarts += 1
                    self._spawn(i)

    def stop(self, timeout_s: float = 5.0) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for p in self.procs:
            if p is None:
                continue
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the matcher exits, however it exits."""
    # OSError: not Linux, and the matcher's stop() is the only way they end
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
