"""The split policy: K model shards and one matcher, composed in one object (DESIGN §5).

Theory of operation. ``ShardedPolicy`` is the default policy's rules cut along Symphony's
line: ``ModelShard`` objects own disjoint sets of models (``shard.py``), one ``Matcher``
owns the workers (``matcher.py``), and they talk only through the messages of
``split.py``, a few per batch. Here both roles live in one object and the messages are
method calls, delivered synchronously in a fixed order on every ``handle``:

1. the event goes to whoever owns it: arrivals to their models' shards (split by owner,
   order kept), ``BatchDone``/``WorkerJoined``/``WorkerLost`` to the matcher, which
   answers with ``PoolState`` updates for every shard and ``Finished``/``Orphaned`` for
   the owning shard (a joining worker's models are first registered with their owners);
2. then, until nothing moves: every shard fires its timers and recomputes its dirty
   models (each model's candidate depends only on its own state and the pool view, so
   the order across shards cannot matter) and sends its offers; the matcher takes one
   step (a ``Grant``, which the owning shard turns into the ``Dispatch``, or updates and
   wake-ups to deliver).

So the decisions do not depend on the number of shards nor on which shard owns which
model: ``tests/sim/test_shards.py`` runs the same trace with 1 and K shards and compares
every dispatch and drop. Drops are returned first, merged by reason (ids sorted), then
dispatches in decision order.

Which shard owns a model: ``ShardOptions.placement`` if it names it, else a stable hash of
the name (CRC-32, the same in every process). ``move`` hands a model, with its queued
requests and estimators, to another shard (nothing is lost; its candidate is recomputed);
``rebalance`` moves models so that shards carry similar arrival rates (greedy, largest
first). With one shard this is the single-process scheduler: the same code, both roles in
one process. A multi-process runtime puts each shard and the matcher in its own process
and carries the same messages on sockets. Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from central.policy.config import PolicyConfig
from central.policy.matcher import Matcher
from central.policy.shard import ModelShard
from central.protocol.conventions import default_shard
from central.policy.exchange import Grant, Offer, PoolState, Wake, Withdraw
from central.policy.types import (
    Action,
    BatchDone,
    Drop,
    DropReason,
    Event,
    Request,
    RequestsArrived,
    Tick,
    WorkerJoined,
    WorkerLost,
)

__all__ = ["ShardOptions", "ShardedPolicy"]



@dataclass(frozen=True, slots=True)
class ShardOptions:
    """How many model shards, and which models go where (the rest by ``default_shard``).

    Raises ``ValueError`` on construction for fewer than one shard or a placement out
    of range.
    """

    shards: int = 1
    placement: tuple[tuple[str, int], ...] = ()  # (model, shard index)

    def __post_init__(self) -> None:
        if not isinstance(self.shards, int) or self.shards < 1:
            raise ValueError(f"shards must be an int >= 1, got {self.shards!r}")
        for model, index in self.placement:
            if not 0 <= index < self.shards:
                raise ValueError(f"placement of {model!r} on shard {index}: out of range")


class ShardedPolicy:
    """The default policy as K model shards and a matcher; see the module docstring."""

    def __init__(self, config: PolicyConfig | None = None,
                 options: ShardOptions | None = None) -> None:
        self._cfg = config if config is not None else PolicyConfig()
        self._opts = options if options is not None else ShardOptions()
        self.shards = [ModelShard(self._cfg) for _ in range(self._opts.shards)]
        self.matcher = Matcher(self._cfg.dispatch_cost_ns, self._cfg.first_batch_id)
        self._owner: dict[str, int] = dict(self._opts.placement)
        self._now: int | None = None
        self.moves = 0
        # messages between the roles, by type name: what a multi-process split would send
        self.messages: dict[str, int] = {}

    # ------------------------------------------------------------- interface

    def handle(self, event: Event, now_ns: int) -> list[Action]:
        """Apply ``event`` at ``now_ns``; return drops, then dispatches.

        Raises ``ValueError`` when ``now_ns`` goes backwards, ``TypeError`` on a
        non-event.
        """
        if self._now is not None and now_ns < self._now:
            raise ValueError(f"now_ns went backwards: {now_ns} < {self._now}")
        self._now = now_ns
        matcher = self.matcher
        if isinstance(event, RequestsArrived):
            self._arrive(event.requests, now_ns)
        elif isinstance(event, BatchDone):
            finished, states = matcher.done(event, now_ns)
            if finished is not None:
                self._count("Finished")
                self.shards[self.owner(finished.model)].finished(finished)
            self._broadcast(states)
        elif isinstance(event, WorkerJoined):
            offered = dict(event.profiles)
            for name in event.models:
                self.shards[self.owner(name)].add_model(name, offered.get(name))
            states, orphans = matcher.joined(event, now_ns)
            self._broadcast(states)
            self._orphan(orphans)
        elif isinstance(event, WorkerLost):
            states, orphans = matcher.lost(event.worker_id)
            self._broadcast(states)
            self._orphan(orphans)
        elif not isinstance(event, Tick):
            raise TypeError(f"not a policy event: {event!r}")
        dispatches: list[Action] = []
        self._advance(now_ns, dispatches)
        drops: dict[DropReason, list[int]] = {}
        for shard in self.shards:
            for reason, ids in shard.take_drops().items():
                drops.setdefault(reason, []).extend(ids)
        actions: list[Action] = [Drop(tuple(sorted(drops[r])), r) for r in sorted(drops)]
        actions.extend(dispatches)
        return actions

    def next_wakeup_ns(self) -> int | None:
        """When the policy next needs a ``Tick``; ``None`` when nothing is pending."""
        wakes = [w for w in (s.next_wakeup_ns() for s in self.shards) if w is not None]
        grant = self.matcher.next_wakeup_ns()
        if grant is not None:
            wakes.append(grant)
        return min(wakes) if wakes else None

    def snapshot(self) -> dict[str, Any]:
        """Plain data: per model its queue, profile, margin and rate (the keys of
        ``SymphonyPolicy.snapshot()["models"]`` a shard knows), per shard its models, per
        worker its timeline."""
        now = self._now if self._now is not None else 0
        models: dict[str, Any] = {}
        for shard in self.shards:
            models.update(shard.model_snapshot(now))
        return {
            "now_ns": self._now,
            "models": models,
            "shards": [
                {"models": {name: {"queue": len(m.queue), "ready": m.ready, "batch": m.batch}
                            for name, m in shard.models.items()}}
                for shard in self.shards
            ],
            "workers": {wid: {"alive": w.alive, "models": list(w.models),
                              "free_at_ns": w.free_at, "inflight": len(w.timeline)}
                        for wid, w in self.matcher.workers.items()},
            "inflight_batches": self.matcher.inflight,
            "moves": self.moves,
            "next_wakeup_ns": self.next_wakeup_ns(),
        }

    # ------------------------------------------------------------- placement

    def owner(self, model: str) -> int:
        """The index of the shard that owns ``model`` (fixed on first sight)."""
        index = self._owner.get(model)
        if index is None:
            index = self._owner[model] = default_shard(model, len(self.shards))
        return index

    def move(self, model: str, to: int) -> None:
        """Hand ``model`` (queue, estimators) to shard ``to``; no request is lost.

        Raises ``ValueError`` for a shard index out of range.
        """
        if not 0 <= to < len(self.shards):
            raise ValueError(f"no shard {to}: there are {len(self.shards)}")
        src = self.owner(model)
        if src == to:
            return
        self._owner[model] = to
        if model in self.shards[src].models:
            state, messages = self.shards[src].export(model)
            self.matcher.receive(messages)
            self.shards[to].adopt(state)
        self.moves += 1

    def rebalance(self, now_ns: int) -> list[tuple[str, int, int]]:
        """Even out the shards' arrival rates: greedy, the busiest model first, each to
        the least-loaded shard (ties: the one that owns it now, then the lowest index).
        Returns the moves made as ``(model, from, to)``; call ``handle(Tick(), now)``
        next so that moved candidates are recomputed."""
        rates = sorted(((m.load.rate_per_ns(now_ns), name)
                        for shard in self.shards for name, m in shard.models.items()),
                       key=lambda x: (-x[0], x[1]))
        load = [0.0] * len(self.shards)
        moves = []
        for rate, name in rates:
            src = self.owner(name)
            dst = min(range(len(load)), key=lambda i: (load[i], i != src, i))
            load[dst] += rate
            if dst != src:
                self.move(name, dst)
                moves.append((name, src, dst))
        return moves

    # ---------------------------------------------------------------- helpers

    def _arrive(self, requests: tuple[Request, ...], now: int) -> None:
        if len(self.shards) == 1:
            self.shards[0].arrive(list(requests), now)
            return
        buckets: list[list[Request]] = [[] for _ in self.shards]
        owner = self.owner
        for r in requests:
            buckets[owner(r.model)].append(r)
        for shard, bucket in zip(self.shards, buckets):
            if bucket:
                shard.arrive(bucket, now)

    def _count(self, name: str, n: int = 1) -> None:
        self.messages[name] = self.messages.get(name, 0) + n

    def _broadcast(self, states: list[PoolState]) -> None:
        if states:
            self._count("PoolState", len(states))
        for state in states:
            for shard in self.shards:
                shard.pool_state(state)

    def _orphan(self, models: list[str]) -> None:
        for name in models:
            self.matcher.receive(self.shards[self.owner(name)].orphaned(name))

    def _advance(self, now: int, dispatches: list[Action]) -> None:
        matcher, shards = self.matcher, self.shards
        while True:
            messages: list[Offer | Withdraw] = []
            for shard in shards:
                messages.extend(shard.advance(now))
            if messages:
                self._count("Offer/Withdraw", len(messages))
                matcher.receive(messages)
            step = matcher.step(now)
            if step is None:
                return
            if type(step) is Grant:
                self._count("Grant/Booked")
                dispatch, booked = shards[self.owner(step.model)].grant(step, now)
                dispatches.append(dispatch)
                self._broadcast(matcher.booked(step, booked, now))
                continue
            assert isinstance(step, list)
            for msg in step:
                if type(msg) is Wake:
                    self._count("Wake")
                    shards[self.owner(msg.model)].wake(msg.model)
                else:
                    assert isinstance(msg, PoolState)
                    self._broadcast([msg])
