"""Baseline ``eager``: work-conserving, earliest-latest-start-first batching (Clockwork-like).

Theory of operation. Clockwork (Gujarati et al., OSDI'20) keeps one central queue per
model and keeps every GPU busy: whenever a GPU is about to run out of work it picks the
most urgent request and runs the largest batch that still meets that request's deadline.
It never holds a batch back to let it grow. Here, with ``D`` the dispatch cost, ``R`` the
reply cost and ``M`` the model's margin:

* Requests of a model wait in deadline order (``queues.DeadlineQueue``). A model's
  urgency is its head's *latest start* alone, ``deadline(head) - R - M - l(1)``.
* Workers that serve the same models form a pool: a heap of workers by predicted
  ``free_at`` and a heap of the pool's models with queued work by urgency.
* A worker is *grantable* once ``free_at <= now + D``. Then, at once, it takes the most
  urgent model of its pool; with ``s = max(now + D, free_at)`` it drops the heads that
  cannot finish even alone (``s + l(1) + M + R > deadline``, ``DEADLINE``) and sends the
  largest ``b <= min(queue, max_batch)`` with ``s + l(b) + M + R <= deadline(head)``,
  window ``[s, deadline(head) - R - M - l(b)]``. It repeats while a worker is grantable.
* Proactive drops: when a model gets a new head, heads already doomed from the earliest
  start any of its workers offers are dropped at once, and a timer drops the head the
  moment it could no longer make it even from ``now + D``. A head doomed later by its
  workers filling up is dropped at its pool's next grant, which goes to it first (it is
  the most urgent).

The driver is woken only when a busy worker of a pool with queued work becomes
grantable (``free_at - D``) or a head's doom timer is due. Cost: an arrival that does not
change its model's head is an append; a new head is O(log n) per pool of the model; a
grant is O(log n). Nothing scans all models or workers. It never reads a clock or does I/O.
"""

from __future__ import annotations

import heapq
from dataclasses import replace

from central.policy.baselines.common import (
    BaselineModel,
    BaselinePolicy,
    BaselineWorker,
    fit_batch,
)
from central.policy.config import PolicyConfig
from central.policy.queues import DeadlineQueue
from central.policy.stats import PolicySnapshot
from central.policy.types import DropReason, Request

__all__ = ["EagerPolicy"]


class _Model(BaselineModel):
    __slots__ = ("queue", "pools", "version")

    def __init__(self, name: str, rate_window_ns: int) -> None:
        super().__init__(name, rate_window_ns)
        self.queue = DeadlineQueue()
        self.pools: list[_Pool] = []  # non-empty pools serving it
        self.version = 0  # bumped whenever its head changes: older heap entries are stale

    def queued(self) -> int:
        return len(self.queue)


class _Worker(BaselineWorker):
    __slots__ = ("pool",)

    def __init__(self, wid: int, free_at: int) -> None:
        super().__init__(wid, free_at)
        self.pool: _Pool | None = None


class _Pool:
    """Live workers serving exactly ``models``, and those of its models with work."""

    __slots__ = ("models", "members", "heap", "work", "granted")

    def __init__(self, models: tuple[str, ...]) -> None:
        self.models = models
        self.members: dict[int, _Worker] = {}
        self.heap: list[tuple[int, int]] = []  # (free_at, worker id), lazily invalidated
        self.work: list[tuple[int, int, str, int]] = []  # (urgency, seq, model, version)
        self.granted: tuple[int, int] | None = None  # (worker, free_at) with a grant timer

    def moved(self, w: _Worker) -> None:
        heapq.heappush(self.heap, (w.free_at, w.wid))
        if len(self.heap) > 4 * len(self.members) + 32:
            self.heap = [(x.free_at, wid) for wid, x in self.members.items()]
            heapq.heapify(self.heap)

    def top(self) -> _Worker | None:
        heap = self.heap
        while heap:
            free_at, wid = heap[0]
            w = self.members.get(wid)
            if w is not None and w.free_at == free_at:
                return w
            heapq.heappop(heap)
        return None


class EagerPolicy(BaselinePolicy):
    """Clockwork-like work-conserving policy; see the module docstring."""

    def __init__(self, config: PolicyConfig | None = None) -> None:
        super().__init__(config)
        self._m: dict[str, _Model] = {}  # the same objects as _models, typed
        self._w: dict[int, _Worker] = {}  # the same objects as _workers, typed
        self._pools: dict[tuple[str, ...], _Pool] = {}
        self._offer: dict[_Pool, None] = {}  # pools that may have a grantable worker
        self._rekey: dict[str, None] = {}  # models whose head changed
        self._dooms: list[tuple[int, int, str, int]] = []  # (time, seq, model, version)
        self._grants: list[tuple[int, int, int]] = []  # (free_at - D, worker, free_at)
        self._seq = 0

    # ------------------------------------------------------------- interface

    def next_wakeup_ns(self) -> int | None:
        """The next head that dooms, or busy worker that frees up for queued work."""
        dooms = self._dooms
        while dooms and self._m[dooms[0][2]].version != dooms[0][3]:
            heapq.heappop(dooms)
        wake = dooms[0][0] if dooms else None
        grants = self._grants
        while grants:
            _, wid, free_at = grants[0]
            w = self._w[wid]
            if w.alive and w.free_at == free_at and w.pool is not None:
                if self._best(w.pool) is not None:
                    break
                if w.pool.granted == (wid, free_at):
                    w.pool.granted = None
            heapq.heappop(grants)
        if grants and (wake is None or grants[0][0] < wake):
            wake = grants[0][0]
        return wake

    def snapshot(self) -> PolicySnapshot:
        """The common snapshot plus the number of pools."""
        pools = sum(1 for pool in self._pools.values() if pool.members)
        return replace(super().snapshot(), pools=pools)

    # ----------------------------------------------------------------- hooks

    def _new_model(self, name: str) -> BaselineModel:
        m = self._m[name] = _Model(name, self._cfg.rate_window_ns)
        return m

    def _new_worker(self, wid: int, now: int) -> BaselineWorker:
        w = self._w[wid] = _Worker(wid, now)
        return w

    def _arrivals(self, admitted: list[tuple[BaselineModel, Request]], now: int) -> None:
        for model, r in admitted:
            m = self._m[model.name]
            queue = m.queue
            head = queue.deadline_at(0) if queue else None
            queue.push(r)
            if head is None or r.deadline_ns < head:
                self._rekey[m.name] = None

    def _freed(self, worker: BaselineWorker, model: BaselineModel, now: int) -> None:
        w = self._w[worker.wid]
        if w.pool is not None:
            w.pool.moved(w)
            self._offer[w.pool] = None

    def _joined(self, worker: BaselineWorker, old: tuple[str, ...], now: int) -> None:
        w = self._w[worker.wid]
        previous = w.pool
        w.pool = None
        if w.models:
            pool = self._pools.get(w.models)
            if pool is None:
                pool = self._pools[w.models] = _Pool(w.models)
            if not pool.members:
                for name in w.models:
                    m = self._m[name]
                    m.pools.append(pool)
                    if m.queue:
                        self._rekey[name] = None  # enter the new pool's work heap
            pool.members[w.wid] = w  # join before leaving: no model is orphaned between
            pool.moved(w)
            w.pool = pool
            self._offer[pool] = None
        if previous is not None:
            self._leave(w, previous)

    def _lost(self, worker: BaselineWorker, old: tuple[str, ...], now: int) -> None:
        w = self._w[worker.wid]
        if w.pool is not None:
            self._leave(w, w.pool)
            w.pool = None

    def _advance(self, now: int) -> None:
        dooms, grants = self._dooms, self._grants
        while dooms and dooms[0][0] <= now:
            _, _, name, version = heapq.heappop(dooms)
            if self._m[name].version == version:
                self._rekey[name] = None
        while grants and grants[0][0] <= now:
            _, wid, free_at = heapq.heappop(grants)
            w = self._w[wid]
            if w.pool is not None:
                if w.pool.granted == (wid, free_at):
                    w.pool.granted = None
                if w.alive and w.free_at == free_at:
                    self._offer[w.pool] = None
        while self._rekey:
            name = next(iter(self._rekey))
            del self._rekey[name]
            self._key(self._m[name], now)
        while self._offer:
            pool = next(iter(self._offer))
            del self._offer[pool]
            self._serve(pool, now)

    # ------------------------------------------------------------- decisions

    def _leave(self, w: _Worker, pool: _Pool) -> None:
        del pool.members[w.wid]
        if pool.members:
            self._offer[pool] = None  # its earliest worker may have changed
        for name in pool.models:
            m = self._m[name]
            if not pool.members:
                m.pools.remove(pool)
            if not m.n_workers:
                self._drop(DropReason.NO_WORKER, m.queue.clear())
                m.version += 1
                self._rekey.pop(name, None)

    def _key(self, m: _Model, now: int) -> None:
        """``m``'s head changed: drop doomed heads, file it by urgency, arm its doom timer."""
        m.version += 1
        queue = m.queue
        if not queue or m.est is None or not m.pools:
            return
        cost = self._cfg.dispatch_cost_ns
        start = now + cost
        tops = [top.free_at for pool in m.pools if (top := pool.top()) is not None]
        if tops:
            start = max(start, min(tops))
        prof = m.est.current()
        after = self._after(m)
        doomed = queue.count_before(start + prof.latency_ns(1) + after)
        if doomed:
            self._drop(DropReason.DEADLINE, queue.pop_front(doomed))
            if not queue:
                return
        urgency = queue.deadline_at(0) - after - prof.latency_ns(1)
        for pool in m.pools:
            self._seq += 1
            heapq.heappush(pool.work, (urgency, self._seq, m.name, m.version))
            if len(pool.work) > 4 * len(pool.models) + 64:
                pool.work = [e for e in pool.work if self._m[e[2]].version == e[3]]
                heapq.heapify(pool.work)
            self._offer[pool] = None
        self._seq += 1
        heapq.heappush(self._dooms, (urgency - cost + 1, self._seq, m.name, m.version))

    def _best(self, pool: _Pool) -> str | None:
        """The most urgent model of ``pool`` with queued work (stale entries dropped)."""
        work = pool.work
        while work:
            _, _, name, version = work[0]
            if self._m[name].version == version:
                return name
            heapq.heappop(work)
        return None

    def _serve(self, pool: _Pool, now: int) -> None:
        """Give every grantable worker of ``pool`` the most urgent model's largest batch."""
        cost = self._cfg.dispatch_cost_ns
        grant_by = now + cost
        while True:
            w = pool.top()
            name = self._best(pool) if w is not None else None
            if w is None or name is None:
                return
            if w.free_at > grant_by:
                if pool.granted != (w.wid, w.free_at):
                    pool.granted = (w.wid, w.free_at)
                    heapq.heappush(self._grants, (w.free_at - cost, w.wid, w.free_at))
                return
            m = self._m[name]
            assert m.est is not None
            queue = m.queue
            start = max(grant_by, w.free_at)
            prof = m.est.current()
            after = self._after(m)
            doomed = queue.count_before(start + prof.latency_ns(1) + after)
            if doomed:  # doomed by this start: drop, then look again at who is most urgent
                self._drop(DropReason.DEADLINE, queue.pop_front(doomed))
                self._key(m, now)
                continue
            deadline = queue.deadline_at(0)
            batch = min(fit_batch(prof, deadline - start - after), len(queue), prof.max_batch)
            latest = deadline - after - prof.latency_ns(batch)
            self._dispatch(m, w, queue.pop_front(batch), now, latest)
            pool.moved(w)
            self._key(m, now)
