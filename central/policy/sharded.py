"""The split policy: K model shards and one matcher, composed in one object (DESIGN §5).

Theory of operation. ``ShardedPolicy`` is the default policy's rules cut along Symphony's
line: ``ModelShard`` objects own disjoint sets of models (``shard.py``, the per-model
rules of ``candidate.py``), one ``Matcher`` owns the workers (``matcher.py``, the worker
timeline of ``timeline.py``: the very code ``SymphonyPolicy`` runs), and they talk only
through the messages of ``exchange.py``, a few per batch. Here both roles live in one
object and the messages are method calls, delivered synchronously in the order in which
``SymphonyPolicy`` takes the same steps, on every ``handle``:

1. the event goes to whoever owns it: arrivals to their models' shards (split by owner,
   order kept), ``BatchDone``/``WorkerJoined``/``WorkerLost`` to the matcher, which
   answers with ``PoolState`` updates for every shard and ``Finished``/``Orphaned`` for
   the owning shard (a joining worker's models are first registered with their owners);
2. every shard fires its deferral timers; the matcher ``begin``s the round (grant timers,
   and a ``Wake`` for each offering pool's best waiter);
3. then, until nothing moves: every shard recomputes its dirty models (each model's
   candidate depends only on its own state and the pool view) and sends its offers; the
   matcher takes one step (a ``Grant``, which the owning shard turns into the
   ``Dispatch``, or updates and wake-ups to deliver). An overdue worker's bump is the
   current margin of its last batch's model, asked of the owning shard.

So the decisions are ``SymphonyPolicy``'s, decision for decision
(``tests/unit/test_split_identity.py``), whatever the number of shards and whichever shard
owns which model, with one exception: two models on *different* shards whose candidates
have exactly the same latest start are ordered by the order their offers reach the
matcher (shard by shard) rather than by the order they were recomputed in one process.
Drops are returned first, merged by reason (ids sorted), then dispatches in decision
order.

Which shard owns a model: ``placement.Placement`` (``ShardOptions.placement`` if it names
it, else a stable hash of the name). ``move`` hands a model, with its queued requests,
estimators and candidate, to another shard (nothing is lost, no decision changes);
``rebalance`` moves models so that shards carry similar arrival rates
(``Placement.plan``, the rule the split scheduler's matcher process uses too). With one shard this is the single-process scheduler: the same code, both roles in
one process. A multi-process runtime puts each shard and the matcher in its own process
and carries the same messages on sockets. Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from central.policy.config import PolicyConfig
from central.policy.exchange import Grant, Offer, PoolState, Wake, Withdraw
from central.policy.matcher import Matcher
from central.policy.placement import Placement
from central.policy.shard import ModelShard
from central.policy.stats import (
    ModelStats,
    PolicySnapshot,
    ShardModelStats,
    ShardStats,
    WorkerStats,
)
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

    def __init__(self, config: PolicyConfig | None = None, options: ShardOptions | None = None) -> None:
        self._cfg = config if config is not None else PolicyConfig()
        self._opts = options if options is not None else ShardOptions()
        # one dirty-order stamp for all shards: their offers merge in one process's order
        stamp = itertools.count(1).__next__
        self.shards = [ModelShard(self._cfg, stamp) for _ in range(self._opts.shards)]
        self.matcher = Matcher(self._cfg.dispatch_cost_ns, self._cfg.first_batch_id)
        self.placement = Placement(self._opts.shards, self._opts.placement)
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

    def snapshot(self) -> PolicySnapshot:
        """Stats (``stats.py``): per model its queue, profile, margin and rate (the fields
        of ``SymphonyPolicy``'s a shard knows), per shard its models, per worker its
        timeline, and the moves made."""
        now = self._now if self._now is not None else 0
        models: dict[str, ModelStats] = {}
        for shard in self.shards:
            models.update(shard.model_snapshot(now))
        return PolicySnapshot(
            now_ns=self._now,
            models=models,
            shards=tuple(
                ShardStats(
                    models={
                        name: ShardModelStats(queue=len(m.queue), ready=m.ready, batch=m.batch)
                        for name, m in shard.models.items()
                    }
                )
                for shard in self.shards
            ),
            workers={
                wid: WorkerStats(
                    alive=w.alive, models=w.models, free_at_ns=w.free_at, inflight=len(w.timeline)
                )
                for wid, w in self.matcher.workers.items()
            },
            inflight_batches=self.matcher.inflight,
            moves=self.moves,
            next_wakeup_ns=self.next_wakeup_ns(),
        )

    # ------------------------------------------------------------- placement

    def owner(self, model: str) -> int:
        """The index of the shard that owns ``model`` (fixed on first sight)."""
        return self.placement.owner(model)

    def move(self, model: str, to: int) -> None:
        """Hand ``model`` (queue, estimators) to shard ``to``; no request is lost.

        Raises ``ValueError`` for a shard index out of range.
        """
        src = self.placement.move(model, to)
        if src == to:
            return
        if model in self.shards[src].models:  # the candidate moves whole
            dirty = self.shards[src].is_dirty(model)
            state, _ = self.shards[src].export(model, keep=True)
            self.shards[to].adopt(state, dirty=dirty)
        self.moves += 1

    def rebalance(self, now_ns: int) -> list[tuple[str, int, int]]:
        """Even out the shards' arrival rates (``Placement.plan``). Returns the moves
        made as ``(model, from, to)``; candidates move whole, so no decision changes."""
        moves = self.placement.plan(
            (m.load.rate_per_ns(now_ns), name) for shard in self.shards for name, m in shard.models.items()
        )
        for name, _, dst in moves:
            self.move(name, dst)
        return moves

    # ---------------------------------------------------------------- helpers

    def _arrive(self, requests: tuple[Request, ...], now: int) -> None:
        if len(self.shards) == 1:
            self.shards[0].arrive(list(requests), now)
            return
        # in runs of one owner, in arrival order: models are dirtied in the same order
        # as in one process
        owner, shards = self.owner, self.shards
        run: list[Request] = []
        at = -1
        for r in requests:
            index = owner(r.model)
            if index != at and run:
                shards[at].arrive(run, now)
                run = []
            at = index
            run.append(r)
        if run:
            shards[at].arrive(run, now)

    def _count(self, name: str, n: int = 1) -> None:
        self.messages[name] = self.messages.get(name, 0) + n

    def _broadcast(self, states: list[PoolState]) -> None:
        if states:
            self._count("PoolState", len(states))
        shards = self.shards
        if len(shards) == 1:
            for state in states:
                shards[0].pool_state(state)
            return
        for state in states:  # dirty the models in the order one shard would have
            touched = sorted(t for shard in shards for t in shard.view(state))
            for _, name in touched:
                shards[self.owner(name)].touch(name)

    def _orphan(self, models: list[str]) -> None:
        for name in models:
            self.matcher.receive(self.shards[self.owner(name)].orphaned(name))

    def _margin_of(self, model: str) -> int:
        return self.shards[self.owner(model)].margin(model)

    def _wake(self, model: str) -> None:
        self._count("Wake")
        self.shards[self.owner(model)].wake(model)

    def _advance(self, now: int, dispatches: list[Action]) -> None:
        matcher, shards = self.matcher, self.shards
        due = sorted(t for shard in shards for t in shard.due(now))
        for _, name in due:
            shards[self.owner(name)].touch(name)
        for wake in matcher.begin(now):
            self._wake(wake.model)
        while True:
            messages: list[Offer | Withdraw] = []
            for shard in shards:
                messages.extend(shard.advance(now))
            if len(shards) > 1:  # in the order the models became dirty
                messages.sort(key=lambda m: m.stamp if type(m) is Offer else 0)
            if messages:
                self._count("Offer/Withdraw", len(messages))
                matcher.receive(messages)
            step = matcher.step(now, self._margin_of)
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
                    self._wake(msg.model)
                else:
                    assert isinstance(msg, PoolState)
                    self._broadcast([msg])
