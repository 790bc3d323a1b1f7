"""The default policy: deferred, coordinated batch scheduling (Symphony-style, DESIGN §3).

Theory of operation. Each model keeps its requests in deadline order and a refit latency
profile ``l(b)`` with a safety margin ``M``. Workers that serve the same models form a
pool, a heap by predicted ``free_at`` (the end of the last batch dispatched to them). With
``D`` the dispatch cost, ``R`` the reply cost and ``T`` the timer slack, a model's
*candidate* is recomputed only when something it depends on changed (it is then *dirty*):

* start ``s = max(now + D, earliest free_at among its workers)``;
* heads with ``s + l(1) + M + R > deadline`` are doomed and dropped (``DEADLINE``); heads
  that would hold the batch below the shed floor while enough requests stand behind them
  to reach it are shed (``SHED``, see ``bound.shed_floor``);
* batch ``b`` = the largest ``b <= min(queue, max_batch)`` with ``s + l(b) + M + R <=
  deadline(head)``; its latest start is ``deadline(head) - R - M - l(b)``;
* it is *ready* at once when waiting cannot grow it (``b`` is capped by a longer queue, by
  ``max_batch`` or by the head's deadline), otherwise at ``t_ready = deadline(head) - R -
  M - l(b+1) - D - T``, the last moment a batch one larger would still fit (a timer).

A ready candidate takes the worker of its pools that frees up first if that one is about
to be free (``free_at <= now + D``); candidates that compete in one call go in order of
latest start. One without such a worker *waits* in its pools' waiting heaps; when a
worker's ``free_at - D`` passes, its pool wakes the waiting candidate with the earliest
latest start. Dispatching pushes the worker's ``free_at`` out by ``l(b)``, so consecutive
batches land on different workers, which stay staggered without being told to.

Cost: an arrival touches one model: a queue append, an O(1) candidate, at most one timer
push: O(log n). A dispatch pushes one pool entry and dirties the pool's models only when
their earliest possible start moves. All heaps use lazy invalidation; nothing scans all
models or workers.

It never reads a clock, sleeps or does I/O; ``now_ns`` is an argument and must not go
backwards. Invariants the tests check: every Dispatch has ``now < earliest <= latest``,
``batch <= max_batch``, and every request leaves exactly once (Dispatch or Drop).
"""

from __future__ import annotations

import heapq

from central.policy.candidate import CandidateRules, ModelState, pool_share
from central.policy.config import PolicyConfig
from central.policy.queues import WorkerPool, WorkerState
from central.policy.stats import PolicySnapshot, WorkerStats
from central.policy.timeline import OVERDUE, Timeline, earliest
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

__all__ = ["SymphonyPolicy"]


class SymphonyPolicy(CandidateRules):
    """The default deferred, coordinated policy; see the module docstring."""

    def __init__(self, config: PolicyConfig | None = None) -> None:
        super().__init__(config if config is not None else PolicyConfig())
        self._models: dict[str, ModelState] = {}
        self._tl = Timeline(self._cfg.dispatch_cost_ns, self._cfg.first_batch_id, on_rise=self._on_rise)
        self._now: int | None = None
        self._dirty: dict[str, None] = {}  # insertion-ordered sets: runs repeat exactly
        self._n_waiting = 0
        self._seq = 0  # watch-heap tie-break
        self._epoch = 0  # bumped whenever a pool's membership changes (shares go stale)

    # ------------------------------------------------------------- interface

    def handle(self, event: Event, now_ns: int) -> list[Action]:
        """Apply ``event`` at ``now_ns`` and return the drops and dispatches it causes.

        Raises ``ValueError`` when ``now_ns`` goes backwards, ``TypeError`` on a
        non-event.
        """
        if self._now is not None and now_ns < self._now:
            raise ValueError(f"now_ns went backwards: {now_ns} < {self._now}")
        self._now = now_ns
        if isinstance(event, RequestsArrived):
            self._on_arrivals(event.requests, now_ns)
        elif isinstance(event, BatchDone):
            self._on_done(event, now_ns)
        elif isinstance(event, WorkerJoined):
            self._on_joined(event, now_ns)
        elif isinstance(event, WorkerLost):
            self._on_lost(event.worker_id)
        elif not isinstance(event, Tick):
            raise TypeError(f"not a policy event: {event!r}")
        dispatches: list[Action] = []
        self._advance(now_ns, dispatches)
        actions: list[Action] = [Drop(tuple(ids), reason) for reason, ids in self._drops.items() if ids]
        self._drops.clear()
        actions.extend(dispatches)
        return actions

    def next_wakeup_ns(self) -> int | None:
        """When the policy next needs a ``Tick``; ``None`` when nothing is pending."""
        timers = self._timers
        while timers and self._models[timers[0][1]].timer_at != timers[0][0]:
            heapq.heappop(timers)
        wake = timers[0][0] if timers else None
        if self._n_waiting:
            grant = self._tl.next_grant_ns()
            if grant is not None and (wake is None or grant < wake):
                wake = grant
        return wake

    def snapshot(self) -> PolicySnapshot:
        """Stats (``stats.py``): per model queue/profile/rate/target/candidate, per worker
        its timeline."""
        now = self._now if self._now is not None else 0
        models = {name: self._model_stats(m, now, full=True) for name, m in self._models.items()}
        workers = {
            wid: WorkerStats(
                alive=w.alive,
                models=w.models,
                free_at_ns=w.free_at,
                busy=w.alive and w.free_at > now,
                inflight=len(w.timeline),
            )
            for wid, w in self._tl.workers.items()
        }
        return PolicySnapshot(
            now_ns=self._now,
            models=models,
            workers=workers,
            inflight_batches=len(self._tl.bookings),
            next_wakeup_ns=self.next_wakeup_ns(),
        )

    # ---------------------------------------------------------------- events

    def _on_arrivals(self, requests: tuple[Request, ...], now: int) -> None:
        models, dirty = self._models, self._dirty
        for r in requests:
            m = models.get(r.model)
            if m is None or m.est is None:
                self._drop(DropReason.UNKNOWN_MODEL, [r])
                continue
            if not m.pools:
                self._drop(DropReason.NO_WORKER, [r])
                continue
            m.queue.push(r)
            m.load.arrived(now, r.deadline_ns - r.arrival_ns)
            dirty[m.name] = None

    def _on_done(self, ev: BatchDone, now: int) -> None:
        ended = self._tl.end(ev)
        if ended is None:
            return  # unknown, or its worker was declared lost: nothing to update
        batch, ok, late = ended
        m = self._models[batch.model]
        if ok and m.est is not None:  # late: started after plan and worker allowed (a stall)
            m.est.observe(ev.batch_size, ev.end_ns - ev.start_ns, late)
            if m.queue:
                self._dirty[m.name] = None
        self._tl.retire(batch, ev, now)

    def _on_joined(self, ev: WorkerJoined, now: int) -> None:
        offered = dict(ev.profiles)
        for name in ev.models:
            m = self._models.get(name)
            if m is None:
                m = self._models[name] = ModelState(name, self._cfg.rate_window_ns, self._tl.pools_of(name))
            if m.est is None:
                m.est = self._estimator(name, offered.get(name))
        pool, old = self._tl.join(ev.worker_id, ev.models, now)
        if pool is None:
            return
        self._epoch += 1
        for name in pool.models:
            if self._models[name].queue:
                self._dirty[name] = None
        if old is not None:
            self._leave(self._tl.workers[ev.worker_id], old)

    def _on_lost(self, wid: int) -> None:
        w = self._tl.lose(wid)
        if w is None:
            return
        if w.pool is not None:
            self._leave(w, w.pool)
        w.pool, w.models = None, ()

    def _leave(self, w: WorkerState, pool: WorkerPool) -> None:
        self._tl.leave(w, pool)
        self._epoch += 1
        for name in pool.models:
            m = self._models[name]
            if m.pools:
                if m.queue:
                    self._dirty[name] = None
                continue
            self._drop(DropReason.NO_WORKER, m.queue.clear())
            self._reset_candidate(m)
            self._dirty.pop(name, None)

    # ------------------------------------------------------------- decisions

    def _advance(self, now: int, dispatches: list[Action]) -> None:
        """Fire due timers and grants, recompute dirty models, match, dispatch."""
        models, timers, tl, dirty = self._models, self._timers, self._tl, self._dirty
        while timers and timers[0][0] <= now:
            t, name = heapq.heappop(timers)
            m = models[name]
            if m.timer_at == t:
                m.timer_at = None
                dirty[name] = None
        tl.fire_grants(now, self._n_waiting > 0)
        # The best waiter of each pool that can grant competes with the newly ready.
        for name in tl.wake_waiters(now, self._is_waiting):
            dirty[name] = None
        while True:
            while self._dirty:
                batch, self._dirty = self._dirty, {}
                for name in batch:
                    m = models[name]
                    if self._recompute(m, now):
                        tl.push_contender(m.latest_ns, name, m.version)
            step = tl.match(now, self._is_ready, self._is_waiting, self._wait, self._margin_by_name)
            if step is None:
                woke = tl.wake_waiters(now, self._is_waiting)
                if not woke:
                    return
                for name in woke:
                    self._dirty[name] = None
                continue
            kind, name, worker = step
            if kind is OVERDUE:
                self._dirty[name] = None
                continue
            self._dispatch(models[name], worker, now, dispatches)

    def _is_ready(self, name: str, version: int) -> bool:
        m = self._models[name]
        return m.version == version and m.ready

    def _is_waiting(self, name: str, version: int) -> bool:
        m = self._models[name]
        return m.waiting and m.version == version

    def _wait(self, name: str) -> None:
        self._models[name].waiting = True
        self._n_waiting += 1

    def _margin_by_name(self, name: str) -> int:
        return self.margin_of(name, self._models)

    def _dispatch(self, m: ModelState, w: WorkerState, now: int, out: list[Action]) -> None:
        assert m.est is not None  # a ready candidate has a profile
        requests = m.queue.pop_front(m.batch)
        m.last_dispatch_ns = now
        earliest_ns = max(now + self._cfg.dispatch_cost_ns, w.free_at)
        expected = m.est.current().latency_ns(len(requests))
        batch_id = self._tl.new_batch_id()
        out.append(
            Dispatch(
                batch_id=batch_id,
                model=m.name,
                worker_id=w.wid,
                request_ids=tuple(r.request_id for r in requests),
                earliest_ns=earliest_ns,
                latest_ns=m.latest_ns,
                expected_ns=expected,
            )
        )
        self._reset_candidate(m)
        self._dirty[m.name] = None
        self._tl.book(batch_id, m.name, w, earliest_ns, expected, 0, now)

    # ------------------------------------------------------ the rules' hooks

    def _reset_candidate(self, m: ModelState) -> None:
        m.version += 1
        if m.waiting:
            m.waiting = False
            self._n_waiting -= 1
        m.ready, m.batch, m.timer_at = False, 0, None

    def _earliest_view(self, m: ModelState) -> tuple[int, bool] | None:
        w = earliest(m.pools)
        return None if w is None else (w.free_at, bool(w.timeline))

    def _n_workers(self, m: ModelState) -> int:
        return sum(len(pool) for pool in m.pools)

    def _share(self, m: ModelState) -> float:
        if m.share_epoch != self._epoch:  # the share moves only when pools do: cached
            m.share, m.share_epoch = pool_share(m.pools), self._epoch
        return m.share

    def _watch(self, m: ModelState, threshold: int) -> None:
        """Recompute ``m`` once its pools' earliest free_at rises past ``threshold``."""
        for pool in m.pools:
            watch = pool.watch
            self._seq += 1
            heapq.heappush(watch, (threshold, self._seq, m.name, m.version))
            if len(watch) > 4 * len(pool.models) + 64:
                models = self._models
                watch[:] = [e for e in watch if models[e[2]].version == e[3]]
                heapq.heapify(watch)

    def _on_rise(self, pool: WorkerPool, after_at: int) -> None:
        """``pool``'s earliest free_at rose to ``after_at``: wake the candidates this makes
        stale."""
        watch, models = pool.watch, self._models
        while watch and watch[0][0] < after_at:
            _, _, name, version = heapq.heappop(watch)
            if models[name].version == version:
                self._dirty[name] = None
