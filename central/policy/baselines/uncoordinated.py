"""Baseline ``uncoordinated``: per-worker max-batch-or-timeout batching (Triton, Ray Serve).

Theory of operation. This is what a load balancer in front of independent servers does,
each running Triton's dynamic batcher or Ray Serve's ``@serve.batch``:

* **Route on arrival.** Each request goes to one worker that serves its model, chosen
  round-robin over those workers (per model, by worker id) or, with ``routing =
  "least_loaded"``, the one with the fewest requests queued or running (lowest id on
  ties). It then waits in that worker's own FIFO queue for the model, never moving again
  (unless the worker leaves or stops serving the model: then it is routed afresh).
* **Batch on the worker.** A worker runs one batch at a time. It counts as free ``D``
  before its predicted end (so the next batch can start the moment the current one ends,
  as on a server that already holds the payloads). When free, it sends the queue whose
  oldest request has waited ``max_queue_delay`` (the oldest such first), else a queue that
  holds a full ``max_batch``; otherwise it waits for the first of those to happen.
  A batch takes the queue's first ``max_batch`` requests, in arrival order.
* **Defaults** follow the uncoordinated analytic rule (DESIGN §1): with the model's typical
  budget ``B`` less ``D + R + T``, ``max_batch`` is the largest ``b`` with ``2 l(b) <= B``
  (a request may wait for a whole running batch and then its own) and ``max_queue_delay``
  is ``l(max_batch)``, so a lone request waits at most as long as behind a running batch.
  Both can be fixed instead (``UncoordinatedConfig``). The defaults are a handicap, not
  what a tuned deployment runs: the benchmarks tune both on a grid around them
  (``bench.search.tune_uncoordinated``; docs/benchmarks.md gives the knobs chosen).
* **Deadlines.** Nothing is planned against deadlines. With ``drop_expired`` (on, like
  Triton's queue timeout) a request whose deadline has passed while it was queued, i.e.
  whose result could not be back in time even if its batch took no time (``deadline <=
  earliest + R``), is dropped with ``DEADLINE`` when its batch is formed. The dispatch
  window is ``[max(now + D, free_at), earliest + latest_horizon]``: the worker runs it
  whenever it can (the horizon only bounds how long a real worker waits for a payload).

Cost: an arrival is O(1) with round-robin, O(log n) with least-loaded (one heap per set of
workers serving the same models); forming a batch is O(batch + log n). Nothing scans all
workers. It never reads a clock or does I/O.
"""

from __future__ import annotations

import bisect
import collections
import heapq
from dataclasses import dataclass, replace

from central.policy.baselines.common import (
    BaselineModel,
    BaselinePolicy,
    BaselineWorker,
    check,
    is_int,
)
from central.policy.bound import analytic_bound
from central.policy.config import PolicyConfig
from central.policy.stats import PolicySnapshot
from central.policy.types import DropReason, Profile, Request

__all__ = ["ROUTINGS", "UncoordinatedConfig", "UncoordinatedPolicy", "default_limits"]

ROUTINGS = ("round_robin", "least_loaded")


@dataclass(frozen=True, slots=True)
class UncoordinatedConfig:
    """Knobs of the ``uncoordinated`` baseline; ``ValueError`` on construction when bad."""

    # How a request picks its worker: "round_robin" or "least_loaded".
    routing: str = "round_robin"
    # The largest batch a worker forms (capped by the profile's). None: the largest b
    # with 2 l(b) <= typical budget - D - R - T, per model (the uncoordinated bound).
    max_batch: int | None = None
    # How long the oldest queued request waits for company. None: l(max_batch).
    max_queue_delay_ns: int | None = None
    # Drop a queued request once its deadline has passed (Triton's queue timeout).
    drop_expired: bool = True
    # latest = earliest + this: a window the worker is practically never refused by.
    latest_horizon_ns: int = 1_000_000_000

    def __post_init__(self) -> None:
        check(self.routing in ROUTINGS, "routing", f"one of {ROUTINGS}", self.routing)
        ok = self.max_batch is None or is_int(self.max_batch, 1)
        check(ok, "max_batch", "None or an int >= 1", self.max_batch)
        ok = self.max_queue_delay_ns is None or is_int(self.max_queue_delay_ns, 0)
        check(ok, "max_queue_delay_ns", "None or an int >= 0", self.max_queue_delay_ns)
        check(isinstance(self.drop_expired, bool), "drop_expired", "a bool", self.drop_expired)
        check(is_int(self.latest_horizon_ns, 0), "latest_horizon_ns", "an int >= 0",
              self.latest_horizon_ns)  # fmt: skip


def default_limits(prof: Profile, budget_ns: int, config: PolicyConfig) -> tuple[int, int]:
    """The analytic ``(max_batch, max_queue_delay_ns)`` for a model (the module docstring).

    ``max_batch`` is the largest ``b`` (at least 1, at most the profile's) with ``2 l(b) <=
    budget_ns - D - R - T``; the delay is ``l(max_batch)``. The benchmarks' tuning grid
    (``bench.search.uncoordinated_grid``) starts from these.
    """
    overheads = config.dispatch_cost_ns + config.reply_cost_ns + config.timer_slack_ns
    bound = analytic_bound(
        1, prof.k_ns, prof.c_ns, budget_ns,
        coordinated=False, overhead_ns=overheads, max_batch=prof.max_batch,
    )  # fmt: skip
    cap = max(1, bound.batch)
    return cap, prof.latency_ns(cap)


class _Model(BaselineModel):
    __slots__ = ("workers", "rr", "pools", "n_queued", "lim_prof", "lim_budget", "cap", "delay")

    def __init__(self, name: str, rate_window_ns: int) -> None:
        super().__init__(name, rate_window_ns)
        self.workers: list[int] = []  # live workers serving it, sorted (round-robin order)
        self.rr = 0  # next round-robin position
        self.pools: list[_Pool] = []  # least-loaded: the pools that serve it
        self.n_queued = 0
        self.lim_prof: Profile | None = None  # what (cap, delay) were computed from
        self.lim_budget: float | None = None
        self.cap = 1
        self.delay = 0

    def queued(self) -> int:
        return self.n_queued


class _Worker(BaselineWorker):
    __slots__ = ("queues", "due", "full", "queued", "running", "sizes", "timer_at", "pool")

    def __init__(self, wid: int, free_at: int) -> None:
        super().__init__(wid, free_at)
        self.queues: dict[str, collections.deque[Request]] = {}  # FIFO per model
        # (time the queue's oldest request times out, tie-break, model, its request id)
        self.due: list[tuple[int, int, str, int]] = []
        self.full: dict[str, None] = {}  # queues that held a full batch when last touched
        self.queued = 0
        self.running = 0  # requests in its dispatched, unfinished batches
        self.sizes: dict[int, int] = {}  # batch id -> requests, for ``running``
        self.timer_at: int | None = None
        self.pool: _Pool | None = None

    @property
    def load(self) -> int:
        return self.queued + self.running


class _Pool:
    """Least-loaded routing: live workers serving the same models, a heap by load."""

    __slots__ = ("members", "heap")

    def __init__(self) -> None:
        self.members: dict[int, _Worker] = {}
        self.heap: list[tuple[int, int]] = []  # (load, worker id), lazily invalidated

    def push(self, w: _Worker) -> None:
        heapq.heappush(self.heap, (w.load, w.wid))
        if len(self.heap) > 4 * len(self.members) + 32:
            self.heap = [(x.load, wid) for wid, x in self.members.items()]
            heapq.heapify(self.heap)

    def top(self) -> _Worker | None:
        heap = self.heap
        while heap:
            load, wid = heap[0]
            w = self.members.get(wid)
            if w is not None and w.load == load:
                return w
            heapq.heappop(heap)
        return None


class UncoordinatedPolicy(BaselinePolicy):
    """Independent per-worker batching; see the module docstring."""

    def __init__(
        self, config: PolicyConfig | None = None, options: UncoordinatedConfig | None = None
    ) -> None:
        super().__init__(config)
        self._opt = options if options is not None else UncoordinatedConfig()
        self._m: dict[str, _Model] = {}  # the same objects as _models, typed
        self._w: dict[int, _Worker] = {}  # the same objects as _workers, typed
        self._pools: dict[tuple[str, ...], _Pool] = {}
        self._timers: list[tuple[int, int]] = []  # (time, worker id), lazily invalidated
        self._touched: dict[int, None] = {}  # workers that may be able to form a batch
        self._seq = 0

    # ------------------------------------------------------------- interface

    def next_wakeup_ns(self) -> int | None:
        """The earliest time a worker with queued requests frees up or a queue times out."""
        timers = self._timers
        while timers:
            t, wid = timers[0]
            w = self._w[wid]
            if w.alive and w.timer_at == t:
                return t
            heapq.heappop(timers)
        return None

    def snapshot(self) -> PolicySnapshot:
        """The common snapshot plus per-model batch limits and per-worker queue lengths."""
        snap = super().snapshot()
        models, workers = self._m, self._w
        return replace(
            snap,
            models={
                name: replace(info, max_batch_used=models[name].cap, max_queue_delay_ns=models[name].delay)
                for name, info in snap.models.items()
            },
            workers={wid: replace(info, queued=workers[wid].queued) for wid, info in snap.workers.items()},
            routing=self._opt.routing,
        )

    # ----------------------------------------------------------------- hooks

    def _new_model(self, name: str) -> BaselineModel:
        m = self._m[name] = _Model(name, self._cfg.rate_window_ns)
        return m

    def _new_worker(self, wid: int, now: int) -> BaselineWorker:
        w = self._w[wid] = _Worker(wid, now)
        return w

    def _arrivals(self, admitted: list[tuple[BaselineModel, Request]], now: int) -> None:
        for m, r in admitted:
            self._route(self._m[m.name], r)

    def _freed(self, worker: BaselineWorker, model: BaselineModel, now: int) -> None:
        w = self._w[worker.wid]
        live = set(w.timeline)
        for bid in [bid for bid in w.sizes if bid not in live]:
            w.running -= w.sizes.pop(bid)
        if w.pool is not None:
            w.pool.push(w)
        self._touched[w.wid] = None

    def _joined(self, worker: BaselineWorker, old: tuple[str, ...], now: int) -> None:
        w = self._w[worker.wid]
        self._leave(w, old)
        for name in w.models:
            bisect.insort(self._m[name].workers, w.wid)
        if self._opt.routing == "least_loaded" and w.models:
            pool = self._pools.get(w.models)
            if pool is None:
                pool = self._pools[w.models] = _Pool()
            if not pool.members:
                for name in w.models:
                    self._m[name].pools.append(pool)
            pool.members[w.wid] = w
            pool.push(w)
            w.pool = pool
        for name in [name for name in w.queues if name not in w.models]:
            self._reroute(w, name)
        self._touched[w.wid] = None

    def _lost(self, worker: BaselineWorker, old: tuple[str, ...], now: int) -> None:
        w = self._w[worker.wid]
        self._leave(w, old)
        w.timer_at = None
        w.sizes.clear()
        w.running = 0
        for name in list(w.queues):
            self._reroute(w, name)

    def _advance(self, now: int) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            t, wid = heapq.heappop(timers)
            w = self._w[wid]
            if w.alive and w.timer_at == t:
                w.timer_at = None
                self._touched[wid] = None
        touched, self._touched = self._touched, {}
        for wid in touched:
            w = self._w[wid]
            if w.alive:
                self._serve(w, now)

    # --------------------------------------------------------------- routing

    def _leave(self, w: _Worker, old: tuple[str, ...]) -> None:
        for name in old:
            self._m[name].workers.remove(w.wid)
        pool = w.pool
        if pool is not None:
            del pool.members[w.wid]
            if not pool.members:
                for name in old:
                    self._m[name].pools.remove(pool)
            w.pool = None

    def _route(self, m: _Model, r: Request) -> None:
        """Queue ``r`` on one worker serving ``m`` (or drop it when none is left)."""
        if not m.workers:
            self._drop(DropReason.NO_WORKER, [r])
            return
        if self._opt.routing == "round_robin":
            if m.rr >= len(m.workers):
                m.rr = 0
            w = self._w[m.workers[m.rr]]
            m.rr += 1
        else:
            best: _Worker | None = None
            for pool in m.pools:
                top = pool.top()
                if top is not None and (best is None or (top.load, top.wid) < (best.load, best.wid)):
                    best = top
            assert best is not None  # a model with workers has a non-empty pool
            w = best
        queue = w.queues.get(m.name)
        if queue is None:
            queue = w.queues[m.name] = collections.deque()
        queue.append(r)
        w.queued += 1
        m.n_queued += 1
        cap, delay = self._limits(m)
        if len(queue) == 1:
            self._seq += 1
            heapq.heappush(w.due, (r.arrival_ns + delay, self._seq, m.name, r.request_id))
        if len(queue) >= cap:
            w.full[m.name] = None
        if w.pool is not None:
            w.pool.push(w)
        self._touched[w.wid] = None

    def _reroute(self, w: _Worker, name: str) -> None:
        """Take ``w``'s queue for ``name`` away and route its requests afresh."""
        queue = w.queues.pop(name)
        w.full.pop(name, None)
        m = self._m[name]
        w.queued -= len(queue)
        m.n_queued -= len(queue)
        if w.pool is not None:
            w.pool.push(w)
        for r in queue:
            self._route(m, r)

    def _limits(self, m: _Model) -> tuple[int, int]:
        """``(max_batch, max_queue_delay_ns)`` for ``m`` now (see the module docstring)."""
        assert m.est is not None
        prof = m.est.current()
        budget = m.load.budget_ns
        if prof is m.lim_prof and budget == m.lim_budget:
            return m.cap, m.delay
        opt = self._opt
        if opt.max_batch is not None:
            cap = min(opt.max_batch, prof.max_batch)
        else:
            cap = default_limits(prof, int(budget or 0), self._cfg)[0]
        delay = opt.max_queue_delay_ns
        m.cap = cap
        m.delay = prof.latency_ns(cap) if delay is None else delay
        m.lim_prof, m.lim_budget = prof, budget
        return m.cap, m.delay

    # -------------------------------------------------------------- batching

    def _serve(self, w: _Worker, now: int) -> None:
        """Form batches on ``w`` while it is free and some queue is ready; else arm a timer."""
        cost = self._cfg.dispatch_cost_ns
        while w.queued:
            if w.free_at - cost > now:
                self._arm(w, w.free_at - cost)
                return
            due = w.due
            while True:  # the oldest live queue head (entries die when their head leaves)
                at, _, name, rid = due[0]
                queue = w.queues.get(name)
                if queue and queue[0].request_id == rid:
                    break
                heapq.heappop(due)
            if at <= now:
                self._form(w, name, now)
                continue
            ready = None
            for full in list(w.full):
                queue = w.queues.get(full)
                if queue and len(queue) >= self._limits(self._m[full])[0]:
                    ready = full
                    break
                del w.full[full]
            if ready is None:
                self._arm(w, at)
                return
            self._form(w, ready, now)
        w.timer_at = None

    def _form(self, w: _Worker, name: str, now: int) -> None:
        """Send ``w``'s next batch of ``name``: up to max_batch live requests, FIFO."""
        m = self._m[name]
        queue = w.queues[name]
        cap, delay = self._limits(m)
        earliest = max(now + self._cfg.dispatch_cost_ns, w.free_at)
        expire_by = earliest + self._cfg.reply_cost_ns if self._opt.drop_expired else None
        batch: list[Request] = []
        expired: list[Request] = []
        while queue and len(batch) < cap:
            r = queue.popleft()
            if expire_by is not None and r.deadline_ns <= expire_by:
                expired.append(r)
            else:
                batch.append(r)
        taken = len(batch) + len(expired)
        w.queued -= taken
        m.n_queued -= taken
        self._drop(DropReason.DEADLINE, expired)
        if queue:
            self._seq += 1
            head = queue[0]
            heapq.heappush(w.due, (head.arrival_ns + delay, self._seq, name, head.request_id))
            if len(queue) < cap:
                w.full.pop(name, None)
        else:
            del w.queues[name]
            w.full.pop(name, None)
        if batch:
            batch.sort(key=lambda r: r.deadline_ns)  # Dispatch lists the head first
            bid = self._dispatch(m, w, batch, now, earliest + self._opt.latest_horizon_ns)
            w.sizes[bid] = len(batch)
            w.running += len(batch)
        if w.pool is not None:
            w.pool.push(w)

    def _arm(self, w: _Worker, at: int) -> None:
        if w.timer_at != at:
            w.timer_at = at
            heapq.heappush(self._timers, (at, w.wid))
            if len(self._timers) > 4 * len(self._w) + 64:
                self._timers = [
                    (x.timer_at, x.wid) for x in self._w.values() if x.alive and x.timer_at is not None
                ]
                heapq.heapify(self._timers)
