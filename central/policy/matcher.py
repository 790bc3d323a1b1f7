"""The matcher: worker timelines, and which ready candidate gets which worker (DESIGN §5).

Theory of operation. The matcher owns every worker: its predicted ``free_at`` (the end of
the last batch dispatched to it), its in-flight batches in order, and the pools (workers
serving the same model set, a heap by ``free_at``, ``queues.WorkerPool``). It knows the
models only by name, and candidates only by their ``Offer``: the latest start.

``step(now)`` makes one decision, as docs/policy.md §4.3 describes for the default policy:

* due grant timers (a worker's ``free_at - D`` passed) mark their pools as *offering*;
* the contender with the earliest latest start (ties: model name) takes the worker of its
  pools that frees up first, if that one is grantable (``free_at <= now + D``): a
  ``Grant``; a worker whose last batch is overdue is counted busy a while longer instead
  (``PoolState`` updates and a ``Wake`` so the candidate is recomputed);
* a contender without a grantable worker waits in its pools' waiting heaps;
* with no contender left, each offering pool wakes its best waiter (``Wake``).

Every change of a pool's earliest ``free_at`` (a grant, a ``BatchDone``, a join, a loss)
becomes one ``PoolState`` for the shards. The order of decisions depends only on the
offers' latest starts and model names, never on which shard sent them: the same events
give the same decisions whatever the number of shards. Nothing here reads a clock.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from central.policy.queues import WorkerPool, WorkerState
from central.policy.exchange import Booked, Finished, Grant, Offer, PoolState, Wake, Withdraw
from central.policy.types import BatchDone, BatchStatus, WorkerJoined

__all__ = ["Matcher"]

_MIN_OVERDUE_NS = 200_000  # an overdue worker is counted busy at least this much longer


class _Inflight:
    __slots__ = ("model", "worker", "earliest", "expected", "margin", "before")

    def __init__(self, model: str, worker: int, earliest: int, expected: int,
                 margin: int, before: int) -> None:
        self.model = model
        self.worker = worker
        self.earliest = earliest
        self.expected = expected
        self.margin = margin
        self.before = before  # the worker's free_at before this batch was booked


class Matcher:
    """Workers, pools and grants; see the module docstring."""

    def __init__(self, dispatch_cost_ns: int, first_batch_id: int = 1) -> None:
        self._d = dispatch_cost_ns
        self.workers: dict[int, WorkerState] = {}
        self._pools: dict[tuple[str, ...], WorkerPool] = {}
        self._model_pools: dict[str, list[WorkerPool]] = {}  # non-empty pools, key order
        self._inflight: dict[int, _Inflight] = {}
        self._offers: dict[str, Offer] = {}
        self._contenders: list[tuple[int, str, int]] = []  # (latest, model, version)
        self._grants: list[tuple[int, int, int]] = []  # (free_at - D, worker, free_at)
        self._offering: dict[tuple[str, ...], None] = {}
        self._sent: dict[tuple[str, ...], tuple[int, bool, int]] = {}  # last PoolState
        self._seq = 0
        self._next_batch_id = first_batch_id

    # ------------------------------------------------------------- workers

    def joined(self, ev: WorkerJoined, now: int) -> tuple[list[PoolState], list[str]]:
        """A worker joined (or re-joined with other models): the pool updates, and the
        models its old pool leaves with no worker."""
        w = self.workers.get(ev.worker_id)
        if w is None or not w.alive:
            w = self.workers[ev.worker_id] = WorkerState(ev.worker_id, now)
        key = tuple(sorted(set(ev.models)))
        old = w.pool
        if old is not None and old.models == key:
            return [], []
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = WorkerPool(key)
        if not pool.members:
            for name in key:
                pools = self._model_pools.setdefault(name, [])
                pools.append(pool)
                pools.sort(key=lambda p: p.models)
        pool.add(w)
        w.pool, w.models = pool, key
        self._offering[key] = None
        changed, orphans = [pool], []
        if old is not None:
            orphans = self._leave(w, old)
            changed.append(old)
        return self._states(changed, force=True), orphans

    def lost(self, wid: int) -> tuple[list[PoolState], list[str]]:
        """A worker is gone: the pool updates, and the models left with no worker."""
        w = self.workers.get(wid)
        if w is None or not w.alive:
            return [], []
        w.alive = False
        for bid in w.timeline:
            self._inflight.pop(bid, None)
        w.timeline.clear()
        pool = w.pool
        orphans: list[str] = []
        if pool is not None:
            orphans = self._leave(w, pool)
        w.pool, w.models = None, ()
        return (self._states([pool], force=True) if pool is not None else []), orphans

    def _leave(self, w: WorkerState, pool: WorkerPool) -> list[str]:
        pool.discard(w)
        orphans = []
        if not pool.members:
            for name in pool.models:
                pools = self._model_pools[name]
                pools.remove(pool)
                if not pools:
                    orphans.append(name)
                    self._offers.pop(name, None)
        return orphans

    def done(self, ev: BatchDone, now: int) -> tuple[Finished | None, list[PoolState]]:
        """A batch ended: retire it (and those before it) and re-predict its worker."""
        batch = self._inflight.pop(ev.batch_id, None)
        if batch is None:
            return None, []
        ok = ev.status == BatchStatus.OK and ev.batch_size >= 1 and ev.end_ns >= ev.start_ns
        w = self.workers[batch.worker]
        # late: started after its window opened and its worker was free (a stall)
        late = ev.start_ns - max(batch.earliest, w.last_end) if ok else 0
        finished = Finished(batch.model, ok, ev.batch_size, ev.end_ns - ev.start_ns, late)
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
        return finished, self._set_free_at(w, free_at, now)

    # ------------------------------------------------------------- candidates

    def receive(self, messages: Iterable[Offer | Withdraw]) -> None:
        """Offers and withdrawals from the shards."""
        for msg in messages:
            if type(msg) is Offer:
                if msg.model in self._model_pools and self._model_pools[msg.model]:
                    self._offers[msg.model] = msg
                    heapq.heappush(self._contenders, (msg.latest_ns, msg.model, msg.version))
            else:
                self._offers.pop(msg.model, None)

    def step(self, now: int) -> Grant | list[PoolState | Wake] | None:
        """One decision: a ``Grant``, updates and wake-ups to deliver, or ``None`` (idle)."""
        grants, workers = self._grants, self.workers
        while grants and grants[0][0] <= now:
            _, wid, free_at = heapq.heappop(grants)
            w = workers[wid]
            if w.alive and w.free_at == free_at and w.pool is not None:
                self._offering[w.pool.models] = None
        grant_by = now + self._d
        contenders, offers = self._contenders, self._offers
        while contenders:
            latest, model, version = heapq.heappop(contenders)
            offer = offers.get(model)
            if offer is None or offer.version != version:
                continue
            worker = self._earliest_worker(model)
            if worker is not None and worker.free_at <= grant_by:
                if worker.timeline and self._planned_end(worker) <= now:
                    # Overdue: its last batch should be over but no BatchDone came.
                    last = self._inflight[worker.timeline[-1]]
                    bump = max(last.margin, _MIN_OVERDUE_NS)
                    states: list[PoolState | Wake] = []
                    states.extend(self._set_free_at(worker, grant_by + bump, now))
                    states.append(Wake(model))
                    return states
                del offers[model]
                batch_id = self._next_batch_id
                self._next_batch_id += 1
                return Grant(model, batch_id, worker.wid, max(grant_by, worker.free_at))
            for pool in self._model_pools[model]:
                self._seq += 1
                heapq.heappush(pool.waiting, (latest, self._seq, model, version))
                if len(pool.waiting) > 4 * len(pool.models) + 64:
                    pool.waiting[:] = [e for e in pool.waiting if self._is_waiting(e)]
                    heapq.heapify(pool.waiting)
        wakes: list[PoolState | Wake] = []
        for key in list(self._offering):
            pool = self._pools[key]
            top = pool.top()
            if top is not None and top.free_at <= grant_by:
                waiting = pool.waiting
                while waiting and not self._is_waiting(waiting[0]):
                    heapq.heappop(waiting)
                if waiting:
                    wakes.append(Wake(heapq.heappop(waiting)[2]))
                    continue
            del self._offering[key]
        return wakes or None

    def booked(self, grant: Grant, booked: Booked, now: int) -> list[PoolState]:
        """The shard carried out ``grant``: the worker is busy for the batch."""
        w = self.workers[grant.worker_id]
        self._inflight[grant.batch_id] = _Inflight(grant.model, w.wid, grant.earliest_ns,
                                                   booked.expected_ns, booked.margin_ns,
                                                   w.free_at)
        w.timeline.append(grant.batch_id)
        return self._set_free_at(w, grant.earliest_ns + booked.expected_ns, now)

    def rebook(self, batch_id: int, expected_ns: int, margin_ns: int,
               now: int) -> list[PoolState]:
        """Correct a booked batch's duration (a matcher in its own process books a grant
        with the offer's figures before the shard answers); ``expected_ns <= 0``: the
        shard declined the grant, the batch is unbooked and the worker's plan restored."""
        batch = self._inflight.get(batch_id)
        w = self.workers.get(batch.worker) if batch is not None else None
        if batch is None or w is None or batch_id not in w.timeline:
            self._inflight.pop(batch_id, None)
            return []
        timeline = list(w.timeline)
        i = timeline.index(batch_id)
        if expected_ns <= 0:
            del self._inflight[batch_id]
            del w.timeline[i]
            del timeline[i]
        else:
            batch.expected, batch.margin = expected_ns, margin_ns
        free_at = batch.before
        for bid in timeline[i:]:
            later = self._inflight[bid]
            later.before = free_at
            free_at = max(free_at, later.earliest) + later.expected
        if not w.alive:
            return []
        return self._set_free_at(w, free_at, now)

    def next_wakeup_ns(self) -> int | None:
        """When a waiting offer may next get a worker; ``None`` when nothing waits."""
        if not self._offers:
            return None
        grants = self._grants
        while grants:
            _, wid, free_at = grants[0]
            w = self.workers[wid]
            if w.alive and w.free_at == free_at:
                return grants[0][0]
            heapq.heappop(grants)
        return None

    def pool_states(self) -> list[PoolState]:
        """The current state of every live pool (for a shard that joins late)."""
        return self._states([p for p in self._pools.values() if p.members], force=True)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    # ---------------------------------------------------------------- helpers

    def _is_waiting(self, entry: tuple[int, int, str, int]) -> bool:
        offer = self._offers.get(entry[2])
        return offer is not None and offer.version == entry[3]

    def _earliest_worker(self, model: str) -> WorkerState | None:
        best: WorkerState | None = None
        for pool in self._model_pools.get(model, ()):
            top = pool.top()
            if top is not None and (best is None or top.free_at < best.free_at):
                best = top
        return best

    def _planned_end(self, w: WorkerState) -> int:
        last = self._inflight.get(w.timeline[-1])
        return last.earliest + last.expected if last is not None else w.free_at

    def _set_free_at(self, w: WorkerState, free_at: int, now: int) -> list[PoolState]:
        pool = w.pool
        w.free_at = free_at
        if pool is None:
            return []
        pool.moved(w)
        if free_at - self._d > now:
            heapq.heappush(self._grants, (free_at - self._d, w.wid, free_at))
        top = pool.top()
        if top is not None and top.free_at <= now + self._d and pool.waiting:
            self._offering[pool.models] = None
        return self._states([pool], force=False)

    def _states(self, pools: list[WorkerPool], *, force: bool) -> list[PoolState]:
        out = []
        for pool in pools:
            top = pool.top()
            state = (top.free_at, bool(top.timeline), len(pool)) if top else (0, False, 0)
            if force or self._sent.get(pool.models) != state:
                self._sent[pool.models] = state
                out.append(PoolState(pool.models, *state))
        return out
