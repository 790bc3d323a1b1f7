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
from typing import Any

from central.policy.bound import shed_floor, target_batch
from central.policy.config import PolicyConfig
from central.policy.profile import LoadEstimator, ProfileEstimator
from central.policy.queues import DeadlineQueue, WorkerPool, WorkerState
from central.policy.types import (
    Action,
    BatchDone,
    BatchStatus,
    Dispatch,
    Drop,
    DropReason,
    Event,
    Profile,
    Request,
    RequestsArrived,
    Tick,
    WorkerJoined,
    WorkerLost,
)

__all__ = ["SymphonyPolicy"]

_MIN_OVERDUE_NS = 200_000  # an overdue worker is counted busy at least this much longer
_FLOOR_REFRESHES = 128  # shed floors are recomputed this often per rate window


class _Model:
    """Everything the policy knows about one model."""

    __slots__ = (
        "name", "queue", "est", "pools", "load", "version", "ready", "waiting", "batch",
        "latest_ns", "timer_at", "floor", "floor_at", "floor_prof", "last_dispatch_ns",
        "share", "share_epoch",
    )  # fmt: skip

    def __init__(self, name: str, rate_window_ns: int) -> None:
        self.name = name
        self.queue = DeadlineQueue()
        self.est: ProfileEstimator | None = None  # None: no profile yet, unschedulable
        self.pools: list[WorkerPool] = []  # non-empty pools serving it
        self.load = LoadEstimator(rate_window_ns)
        self.version = 0  # bumped on every recompute: stale heap entries are skipped
        self.ready = False
        self.waiting = False  # ready, but none of its workers is about to be free
        self.batch = 0  # the candidate's batch size
        self.latest_ns = 0  # the candidate's latest start
        self.timer_at: int | None = None  # the pending t_ready timer, if any
        self.floor = 1  # cached shed floor
        self.floor_at = 0  # when it was computed
        self.floor_prof: Profile | None = None  # from which profile
        self.last_dispatch_ns = 0  # when it last got a batch (0: never)
        self.share, self.share_epoch = 0.0, -1  # its fair share of workers, and when


class _Batch:
    __slots__ = ("model", "worker", "earliest", "expected")

    def __init__(self, model: str, worker: int, earliest: int, expected: int) -> None:
        self.model = model
        self.worker, self.earliest, self.expected = worker, earliest, expected


def _fit(profile: Profile, avail_ns: int) -> int:
    """The largest ``b >= 0`` with ``profile.latency_ns(b) <= avail_ns`` (no max_batch cap)."""
    if avail_ns < profile.latency_ns(1):
        return 0
    return max(1, (avail_ns - profile.c_ns) // profile.k_ns)


class SymphonyPolicy:
    """The default deferred, coordinated policy; see the module docstring."""

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self._cfg = config if config is not None else PolicyConfig()
        self._models: dict[str, _Model] = {}
        self._workers: dict[int, WorkerState] = {}
        self._pools: dict[tuple[str, ...], WorkerPool] = {}  # by sorted model names
        self._inflight: dict[int, _Batch] = {}
        self._next_batch_id = self._cfg.first_batch_id
        self._now: int | None = None
        self._dirty: dict[str, None] = {}  # insertion-ordered sets: runs repeat exactly
        self._offering: dict[WorkerPool, None] = {}  # pools that may grant to waiters
        self._timers: list[tuple[int, str]] = []  # (t_ready, model)
        self._grants: list[tuple[int, int, int]] = []  # (free_at - D, worker, free_at)
        self._n_waiting = 0
        self._seq = 0  # heap tie-break
        self._drops: dict[DropReason, list[int]] = {}
        self._floor_refresh_ns = max(1, self._cfg.rate_window_ns // _FLOOR_REFRESHES)
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
        actions: list[Action] = [
            Drop(tuple(ids), reason) for reason, ids in self._drops.items() if ids
        ]
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
            grants = self._grants
            while grants:
                _, wid, free_at = grants[0]
                w = self._workers[wid]
                if w.alive and w.free_at == free_at:
                    break
                heapq.heappop(grants)
            if grants and (wake is None or grants[0][0] < wake):
                wake = grants[0][0]
        return wake

    def snapshot(self) -> dict[str, Any]:
        """Plain data for stats: per model queue/profile/rate/target, per worker timeline."""
        now = self._now if self._now is not None else 0
        models: dict[str, Any] = {}
        for name, m in self._models.items():
            prof = m.est.current() if m.est is not None else None
            margin = self._margin(m) if m.est is not None else 0
            models[name] = {
                "queue": len(m.queue),
                "workers": sum(len(pool) for pool in m.pools),
                "k_ns": prof.k_ns if prof else None,
                "c_ns": prof.c_ns if prof else None,
                "max_batch": prof.max_batch if prof else None,
                "margin_ns": margin,
                "rate_rps": m.load.rate_per_ns(now) * 1e9,
                "budget_ns": round(budget) if (budget := m.load.budget_ns) is not None else None,
                "target_batch": self._target(m, now, prof) if prof else 0,
                "candidate_batch": m.batch,
                "ready": m.ready,
                "waiting": m.waiting,
            }
        workers: dict[int, Any] = {
            wid: {"alive": w.alive, "models": list(w.models), "free_at_ns": w.free_at,
                  "busy": w.alive and w.free_at > now, "inflight": len(w.timeline)}
            for wid, w in self._workers.items()
        }
        return {
            "now_ns": self._now,
            "models": models,
            "workers": workers,
            "inflight_batches": len(self._inflight),
            "next_wakeup_ns": self.next_wakeup_ns(),
        }

    # ---------------------------------------------------------------- events

    def _drop(self, reason: DropReason, requests: list[Request]) -> None:
        if requests:
            self._drops.setdefault(reason, []).extend(r.request_id for r in requests)

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
        batch = self._inflight.pop(ev.batch_id, None)
        if batch is None:
            return  # unknown, or its worker was declared lost: nothing to update
        m = self._models[batch.model]
        ok = ev.status == BatchStatus.OK and ev.batch_size >= 1 and ev.end_ns >= ev.start_ns
        w = self._workers[batch.worker]
        if ok and m.est is not None:  # late: started after plan and worker allowed (a stall)
            late = ev.start_ns - max(batch.earliest, w.last_end)
            m.est.observe(ev.batch_size, ev.end_ns - ev.start_ns, late)
            if m.queue:
                self._dirty[m.name] = None
        w.last_end, timeline = ev.end_ns, w.timeline
        while timeline:  # the worker runs batches in order: those before it are over
            bid = timeline.popleft()
            if bid == ev.batch_id:
                break
            self._inflight.pop(bid, None)
        free_at = ev.end_ns
        for bid in timeline:
            later = self._inflight[bid]
            free_at = max(free_at, later.earliest) + later.expected
        self._set_free_at(w, free_at, now)

    def _on_joined(self, ev: WorkerJoined, now: int) -> None:
        w = self._workers.get(ev.worker_id)
        if w is None or not w.alive:
            w = self._workers[ev.worker_id] = WorkerState(ev.worker_id, now)
        offered = dict(ev.profiles)
        cfg = self._cfg
        for name in ev.models:
            m = self._models.get(name)
            if m is None:
                m = self._models[name] = _Model(name, cfg.rate_window_ns)
            profile = cfg.profiles.get(name) or offered.get(name)
            if m.est is None and profile is not None:
                # A worker's own measurement may be degenerate (k <= 0 on CPU CNNs).
                profile = Profile(max(1, profile.k_ns), profile.c_ns, max(1, profile.max_batch))
                m.est = ProfileEstimator(
                    profile, window=cfg.refit_window, percentile=cfg.margin_percentile,
                    refit=cfg.refit, late_window=cfg.stall_window,
                )
        key = tuple(sorted(set(ev.models)))
        old = w.pool
        if old is not None and old.models == key:
            return
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = WorkerPool(key)
        if not pool.members:
            for name in key:
                self._models[name].pools.append(pool)
        pool.add(w)  # join the new pool before leaving the old: no model is orphaned
        self._epoch += 1
        w.pool, w.models = pool, key
        for name in key:
            if self._models[name].queue:
                self._dirty[name] = None
        self._offering[pool] = None
        if old is not None:
            self._leave(w, old)

    def _on_lost(self, wid: int) -> None:
        w = self._workers.get(wid)
        if w is None or not w.alive:
            return
        w.alive = False
        for bid in w.timeline:
            self._inflight.pop(bid, None)
        w.timeline.clear()
        if w.pool is not None:
            self._leave(w, w.pool)
        w.pool, w.models = None, ()

    def _leave(self, w: WorkerState, pool: WorkerPool) -> None:
        pool.discard(w)
        self._epoch += 1
        for name in pool.models:
            m = self._models[name]
            if not pool.members:
                m.pools.remove(pool)
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
        models, timers, grants = self._models, self._timers, self._grants
        while timers and timers[0][0] <= now:
            t, name = heapq.heappop(timers)
            m = models[name]
            if m.timer_at == t:
                m.timer_at = None
                self._dirty[name] = None
        while grants and grants[0][0] <= now:
            _, wid, free_at = heapq.heappop(grants)
            w = self._workers[wid]
            if self._n_waiting and w.alive and w.free_at == free_at and w.pool is not None:
                self._offering[w.pool] = None
        grant_by = now + self._cfg.dispatch_cost_ns
        contenders: list[tuple[int, int, str, int]] = []
        # The best waiter of each pool that can grant competes with the newly ready.
        self._wake_waiters(grant_by)
        while True:
            while self._dirty:
                batch, self._dirty = self._dirty, {}
                for name in batch:
                    m = models[name]
                    if self._recompute(m, now):
                        self._seq += 1
                        heapq.heappush(contenders, (m.latest_ns, self._seq, name, m.version))
            if not contenders:
                if self._wake_waiters(grant_by):
                    continue
                return
            _, _, name, version = heapq.heappop(contenders)
            m = models[name]
            if m.version != version or not m.ready:
                continue
            worker = self._earliest_worker(m)
            if worker is not None and worker.free_at <= grant_by:
                if worker.timeline and self._planned_end(worker) <= now:
                    # Overdue: its last batch should be over but no BatchDone came. It
                    # may start the next one too late (TOO_LATE): count it busy a while.
                    self._overdue(worker, now)
                    self._dirty[name] = None
                    continue
                self._dispatch(m, worker, now, dispatches)
                continue
            m.waiting = True
            self._n_waiting += 1
            for pool in m.pools:
                self._seq += 1
                heapq.heappush(pool.waiting, (m.latest_ns, self._seq, name, m.version))
                if len(pool.waiting) > 4 * len(pool.models) + 64:
                    pool.waiting[:] = [e for e in pool.waiting if self._is_waiting(e)]
                    heapq.heapify(pool.waiting)

    def _is_waiting(self, entry: tuple[int, int, str, int]) -> bool:
        m = self._models[entry[2]]
        return m.waiting and m.version == entry[3]

    def _wake_waiters(self, grant_by: int) -> bool:
        """Dirty the best waiter of each pool with a worker to grant; True if any."""
        woke = False
        for pool in list(self._offering):
            top = pool.top()
            if top is not None and top.free_at <= grant_by:
                waiting = pool.waiting
                while waiting and not self._is_waiting(waiting[0]):
                    heapq.heappop(waiting)
                if waiting:
                    self._dirty[heapq.heappop(waiting)[2]] = None
                    woke = True
                    continue
            del self._offering[pool]
        return woke

    def _reset_candidate(self, m: _Model) -> None:
        m.version += 1
        if m.waiting:
            m.waiting = False
            self._n_waiting -= 1
        m.ready, m.batch, m.timer_at = False, 0, None

    def _recompute(self, m: _Model, now: int) -> bool:
        """Refresh ``m``'s candidate, dropping doomed heads; True when it is ready."""
        self._reset_candidate(m)
        queue = m.queue
        if not queue or m.est is None:
            return False
        w = self._earliest_worker(m)
        if w is None:  # unreachable: a model that loses its last worker is emptied
            self._drop(DropReason.NO_WORKER, queue.clear())
            return False
        cfg = self._cfg
        prof = m.est.current()
        k, c = prof.k_ns, prof.c_ns  # l(b) = max(k b + c, k) (k >= 1): latency_ns, inlined
        margin = self._margin(m)
        after = cfg.reply_cost_ns + margin  # what must follow the batch's end
        # A busy worker's last batch may overrun as much as ours: plan its end late too.
        start = max(now + cfg.dispatch_cost_ns, w.free_at + (margin if w.timeline else 0))
        # Doomed: it cannot make it even with no margin. The margin sizes batches and
        # places the deferral point; a request only it rules out still has a chance.
        start0 = max(now + cfg.dispatch_cost_ns, w.free_at)
        n = len(queue)
        doomed = queue.count_before(start0 + max(k + c, k) + cfg.reply_cost_ns)
        if doomed == n and now - m.last_dispatch_ns > cfg.stale_after_ns and m.est.samples:
            # Everything is doomed and nothing has run for a long while: what was learnt
            # (under overload, say) is stale. Start again from the initial profile.
            m.est.reset()
            prof = m.est.current()
            k, c = prof.k_ns, prof.c_ns
            margin = self._margin(m)
            after = cfg.reply_cost_ns + margin
            start = max(now + cfg.dispatch_cost_ns, w.free_at + (margin if w.timeline else 0))
            doomed = queue.count_before(start0 + max(k + c, k) + cfg.reply_cost_ns)
        if cfg.shed_fraction > 0.0 and n - doomed > 2:
            # Shed the heads that would hold the batch below the floor, when enough
            # requests stand behind them to make a batch of at least the floor.
            floor = self._floor(m, now, prof)
            if 1 < floor < n - doomed:
                short = queue.count_before(start + max(k * floor + c, k) + after)
                if short > doomed and n - short >= floor:
                    self._drop(DropReason.DEADLINE, queue.pop_front(doomed))
                    self._drop(DropReason.SHED, queue.pop_front(short - doomed))
                    n -= short
                    doomed = 0
        if doomed:
            self._drop(DropReason.DEADLINE, queue.pop_front(doomed))
            n -= doomed
            if not n:
                return False
        deadline = queue.deadline_at(0)
        by_deadline = _fit(prof, deadline - start - after)
        if by_deadline == 0:
            # Only the margin rules the head out: send it alone, now (seen live: a lone
            # request deferred to its last moment, then the margin grew before the tick).
            m.batch = 1
            m.latest_ns = deadline - cfg.reply_cost_ns - max(k + c, k)
            m.ready = True
            self._watch(m, m.latest_ns)
            return True
        batch = m.batch = min(by_deadline, n, prof.max_batch)
        m.latest_ns = deadline - after - max(k * batch + c, k)
        if batch == n and batch < by_deadline and batch < prof.max_batch:
            grown = max(k * (batch + 1) + c, k)
            t_ready = deadline - after - grown - cfg.dispatch_cost_ns - cfg.timer_slack_ns
            if now < t_ready and self._worth_waiting(m, now, prof, batch):
                m.timer_at = t_ready
                heapq.heappush(self._timers, (t_ready, m.name))
                # Once no worker can start before this, the batch cannot grow: ready.
                self._watch(m, deadline - after - margin - grown)
                return False
        m.ready = True
        # past this, the head is doomed
        self._watch(m, deadline - after - margin - max(k + c, k))
        return True

    def _worth_waiting(self, m: _Model, now: int, prof: Profile, batch: int) -> bool:
        """Deferral bets the head on the timer; it pays only when the load needs batches
        above ``batch``: not if ``batch`` carries ``defer_headroom`` x the arrival rate on
        ``m``'s fair share of workers (a pool serving j models counts 1/j per worker)."""
        headroom = self._cfg.defer_headroom
        if m.share_epoch != self._epoch:  # the share moves only when pools do: cached
            m.share, m.share_epoch = sum(len(p) / len(p.models) for p in m.pools), self._epoch
        return headroom <= 0.0 or headroom * m.load.rate_per_ns(now) * prof.latency_ns(
            batch) > m.share * batch

    def _watch(self, m: _Model, threshold: int) -> None:
        """Recompute ``m`` once its pools' earliest free_at rises past ``threshold``."""
        for pool in m.pools:
            watch = pool.watch
            self._seq += 1
            heapq.heappush(watch, (threshold, self._seq, m.name, m.version))
            if len(watch) > 4 * len(pool.models) + 64:
                models = self._models
                watch[:] = [e for e in watch if models[e[2]].version == e[3]]
                heapq.heapify(watch)

    def _dispatch(self, m: _Model, w: WorkerState, now: int, out: list[Action]) -> None:
        assert m.est is not None  # a ready candidate has a profile
        requests = m.queue.pop_front(m.batch)
        m.last_dispatch_ns = now
        earliest = max(now + self._cfg.dispatch_cost_ns, w.free_at)
        expected = m.est.current().latency_ns(len(requests))
        batch_id = self._next_batch_id
        self._next_batch_id += 1
        self._inflight[batch_id] = _Batch(m.name, w.wid, earliest, expected)
        w.timeline.append(batch_id)
        out.append(
            Dispatch(
                batch_id=batch_id,
                model=m.name,
                worker_id=w.wid,
                request_ids=tuple(r.request_id for r in requests),
                earliest_ns=earliest,
                latest_ns=m.latest_ns,
                expected_ns=expected,
            )
        )
        self._reset_candidate(m)
        self._dirty[m.name] = None
        self._set_free_at(w, earliest + expected, now)

    # ---------------------------------------------------------------- helpers

    def _set_free_at(self, w: WorkerState, free_at: int, now: int) -> None:
        """Move ``w``'s predicted free time; dirty the models whose start it moves."""
        pool = w.pool
        if pool is None or free_at == w.free_at:
            w.free_at = free_at
            return
        before = pool.top()
        before_at = before.free_at if before is not None else free_at
        w.free_at = free_at
        pool.moved(w)
        after = pool.top()
        after_at = after.free_at if after is not None else free_at
        grant_by = now + self._cfg.dispatch_cost_ns
        if after_at > before_at:  # later starts: wake the candidates this makes stale
            watch = pool.watch
            while watch and watch[0][0] < after_at:
                _, _, name, version = heapq.heappop(watch)
                if self._models[name].version == version:
                    self._dirty[name] = None
        if after_at <= grant_by and pool.waiting:
            self._offering[pool] = None
        if free_at - self._cfg.dispatch_cost_ns > now:
            heapq.heappush(self._grants, (free_at - self._cfg.dispatch_cost_ns, w.wid, free_at))

    def _planned_end(self, w: WorkerState) -> int:
        """When busy ``w``'s last dispatched batch was planned to end (no margin, no bump)."""
        last = self._inflight.get(w.timeline[-1])
        return last.earliest + last.expected if last is not None else w.free_at

    def _overdue(self, w: WorkerState, now: int) -> None:
        """Count overdue ``w`` busy for one more margin (of its last batch's model) past now + D."""
        last = self._inflight.get(w.timeline[-1])
        est = self._models[last.model].est if last is not None else None
        bump = self._margin(self._models[last.model]) if est is not None and last else 0
        self._set_free_at(w, now + self._cfg.dispatch_cost_ns + max(bump, _MIN_OVERDUE_NS), now)

    def _earliest_worker(self, m: _Model) -> WorkerState | None:
        """The live worker serving ``m`` that frees up first."""
        best: WorkerState | None = None
        for pool in m.pools:
            top = pool.top()
            if top is not None and (best is None or top.free_at < best.free_at):
                best = top
        return best

    def _margin(self, m: _Model) -> int:
        """The measured margin, capped at a fraction of the budget: uncapped, one overloaded
        stretch can push it past what any request affords, and then no batch runs, no new
        timing arrives and it never comes down (the cap keeps batches flowing)."""
        assert m.est is not None
        margin = m.est.margin_ns
        budget = m.load.budget_ns
        if budget is not None:
            margin = min(margin, int(self._cfg.max_margin_fraction * budget))
        return margin

    def _target(self, m: _Model, now: int, prof: Profile) -> int:
        """Target batch from the measured rate and typical budget (``bound.target_batch``)."""
        budget = m.load.budget_ns
        if budget is None or m.est is None:
            return 0
        cfg = self._cfg
        overheads = cfg.dispatch_cost_ns + cfg.reply_cost_ns + cfg.timer_slack_ns
        return target_batch(prof, rate_per_ns=m.load.rate_per_ns(now),
                            n_workers=sum(len(pool) for pool in m.pools),
                            budget_ns=budget - overheads - self._margin(m))

    def _floor(self, m: _Model, now: int, prof: Profile) -> int:
        """``m``'s shed floor, cached: the rate and budget it rests on move slowly."""
        if prof is not m.floor_prof or now - m.floor_at >= self._floor_refresh_ns:
            m.floor = shed_floor(prof, self._target(m, now, prof), self._cfg.shed_fraction)
            m.floor_prof, m.floor_at = prof, now
        return m.floor
