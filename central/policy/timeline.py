"""Worker timelines and matching: which ready candidate gets which worker (docs/policy.md §4.3, §4.5).

Theory of operation. ``Timeline`` owns every worker (``queues.WorkerState``): its
predicted ``free_at`` (the end of the last batch booked on it), its booked batches in
order, and the pools (workers serving the same model set, a heap by ``free_at``,
``queues.WorkerPool``). It knows models only by name and candidates only by their latest
start. Written once, it is the worker side of both the one-process ``SymphonyPolicy``
and the split's ``Matcher``:

* ``book`` a batch: the worker's ``free_at`` moves to ``earliest + expected``;
* ``end``/``retire`` a reported batch: every batch booked before it on that worker is
  over too, and ``free_at`` is re-predicted from the report and what is still booked;
* ``set_free_at``: on a rise of a pool's earliest ``free_at`` the ``on_rise`` hook runs
  (candidates planned on the old value are stale); a pool whose earliest worker is about
  to be free (``free_at <= now + D``) and has waiters is *offering*; a grant timer is set
  at ``free_at - D``;
* ``match``: contenders (``push_contender``) in order of latest start (ties: the order
  they were pushed); the first takes the worker of its pools that frees up first if that
  one is grantable (``free_at <= now + D``), else it *waits* in its pools' waiting heaps.
  A grantable worker whose last batch is overdue (planned end passed, no report) is
  counted busy one margin more (the margin of its last batch's model; at least
  ``_MIN_OVERDUE_NS``) instead;
* ``fire_grants``/``wake_waiters``: when a grant timer passes, its pool offers; each
  offering pool wakes its waiter with the earliest latest start.

Membership: ``join`` (a worker joins or re-joins with other models: it joins the new
pool before leaving the old one, so no model is orphaned on the way), ``leave`` (the
models left with no pool), ``lose``. All heaps use lazy invalidation; nothing scans all
workers or models. Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

from central.policy.queues import WorkerPool, WorkerState
from central.policy.types import BatchDone, BatchStatus

__all__ = ["GRANT", "OVERDUE", "Booking", "Timeline", "earliest"]

_MIN_OVERDUE_NS = 200_000  # an overdue worker is counted busy at least this much longer
GRANT, OVERDUE = "grant", "overdue"

Valid = Callable[[str, int], bool]  # (model, candidate version) -> still what was pushed


class Booking:
    """A batch booked on a worker, until it is reported or its worker is lost."""

    __slots__ = ("model", "worker", "earliest", "expected", "margin", "before")

    def __init__(
        self, model: str, worker: int, earliest: int, expected: int, margin: int, before: int
    ) -> None:
        self.model = model
        self.worker = worker
        self.earliest = earliest
        self.expected = expected
        self.margin = margin  # its model's margin when it was booked
        self.before = before  # the worker's free_at before this batch was booked


def earliest(pools: Iterable[WorkerPool]) -> WorkerState | None:
    """The live worker of ``pools`` that frees up first (the first pool's on ties)."""
    best: WorkerState | None = None
    for pool in pools:
        top = pool.top()
        if top is not None and (best is None or top.free_at < best.free_at):
            best = top
    return best


class Timeline:
    """Workers, pools, bookings, contenders and grants; see the module docstring."""

    def __init__(
        self,
        dispatch_cost_ns: int,
        first_batch_id: int = 1,
        on_rise: Callable[[WorkerPool, int], None] | None = None,
    ) -> None:
        self._d = dispatch_cost_ns
        self.workers: dict[int, WorkerState] = {}
        self.pools: dict[tuple[str, ...], WorkerPool] = {}  # by sorted model names
        self.model_pools: dict[str, list[WorkerPool]] = {}  # non-empty pools, join order
        self.bookings: dict[int, Booking] = {}  # batch id -> booking, until reported
        self.contenders: list[tuple[int, int, str, int]] = []  # (latest, seq, model, version)
        self.offering: dict[WorkerPool, None] = {}  # pools that may grant to waiters
        self._grants: list[tuple[int, int, int]] = []  # (free_at - D, worker, free_at)
        self._seq = 0  # heap tie-break: push order
        self.next_batch_id = first_batch_id
        self.on_rise = on_rise

    # ------------------------------------------------------------- membership

    def pools_of(self, model: str) -> list[WorkerPool]:
        """The live pools serving ``model`` (the list itself, kept up to date)."""
        pools = self.model_pools.get(model)
        if pools is None:
            pools = self.model_pools[model] = []
        return pools

    def join(self, wid: int, models: Iterable[str], now: int) -> tuple[WorkerPool | None, WorkerPool | None]:
        """Worker ``wid`` serves ``models`` from now: its new pool (``None``: unchanged)
        and the pool it must still ``leave`` (``None``: none)."""
        w = self.workers.get(wid)
        if w is None or not w.alive:
            w = self.workers[wid] = WorkerState(wid, now)
        key = tuple(sorted(set(models)))
        old = w.pool
        if old is not None and old.models == key:
            return None, None
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = WorkerPool(key)
        if not pool.members:
            for name in key:
                self.pools_of(name).append(pool)
        pool.add(w)  # join the new pool before leaving the old: no model is orphaned
        w.pool, w.models = pool, key
        self.offering[pool] = None
        return pool, old

    def leave(self, w: WorkerState, pool: WorkerPool) -> list[str]:
        """``w`` leaves ``pool``; returns the models left with no pool at all."""
        pool.discard(w)
        orphans: list[str] = []
        if not pool.members:
            for name in pool.models:
                pools = self.model_pools[name]
                pools.remove(pool)
                if not pools:
                    orphans.append(name)
        return orphans

    def lose(self, wid: int) -> WorkerState | None:
        """Worker ``wid`` is gone: its bookings are forgotten; the caller then makes it
        ``leave`` its pool. ``None`` when it was not alive."""
        w = self.workers.get(wid)
        if w is None or not w.alive:
            return None
        w.alive = False
        for bid in w.timeline:
            self.bookings.pop(bid, None)
        w.timeline.clear()
        return w

    # ------------------------------------------------------------- batches

    def new_batch_id(self) -> int:
        batch_id = self.next_batch_id
        self.next_batch_id += 1
        return batch_id

    def book(
        self,
        batch_id: int,
        model: str,
        w: WorkerState,
        earliest_ns: int,
        expected_ns: int,
        margin_ns: int,
        now: int,
    ) -> None:
        """Batch ``batch_id`` runs on ``w`` from ``earliest_ns`` for ``expected_ns``."""
        self.bookings[batch_id] = Booking(model, w.wid, earliest_ns, expected_ns, margin_ns, w.free_at)
        w.timeline.append(batch_id)
        self.set_free_at(w, earliest_ns + expected_ns, now)

    def end(self, ev: BatchDone) -> tuple[Booking, bool, int] | None:
        """A reported batch: its booking (forgotten), whether it ran (``ok``) and how much
        later than it could it started (after its window opened and its worker was free:
        a stall). ``None`` for an unknown batch (or one of a lost worker). ``retire`` it
        next."""
        batch = self.bookings.pop(ev.batch_id, None)
        if batch is None:
            return None
        ok = ev.status == BatchStatus.OK and ev.batch_size >= 1 and ev.end_ns >= ev.start_ns
        late = ev.start_ns - max(batch.earliest, self.workers[batch.worker].last_end)
        return batch, ok, late

    def retire(self, batch: Booking, ev: BatchDone, now: int) -> WorkerState:
        """The worker runs batches in order: those before ``ev``'s are over too; its
        ``free_at`` is re-predicted from the report and what is still booked."""
        w = self.workers[batch.worker]
        w.last_end, timeline = ev.end_ns, w.timeline
        while timeline:
            bid = timeline.popleft()
            if bid == ev.batch_id:
                break
            self.bookings.pop(bid, None)
        free_at = ev.end_ns
        for bid in timeline:
            later = self.bookings[bid]
            free_at = max(free_at, later.earliest) + later.expected
        self.set_free_at(w, free_at, now)
        return w

    def set_free_at(self, w: WorkerState, free_at: int, now: int) -> None:
        """Move ``w``'s predicted free time (see the module docstring)."""
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
        d = self._d
        if after_at > before_at and self.on_rise is not None:
            self.on_rise(pool, after_at)  # later starts: the candidates this makes stale
        if after_at <= now + d and pool.waiting:
            self.offering[pool] = None
        if free_at - d > now:
            heapq.heappush(self._grants, (free_at - d, w.wid, free_at))

    def planned_end(self, w: WorkerState) -> int:
        """When busy ``w``'s last booked batch was planned to end (no margin, no bump)."""
        last = self.bookings.get(w.timeline[-1])
        return last.earliest + last.expected if last is not None else w.free_at

    # ------------------------------------------------------------- matching

    def push_contender(self, latest_ns: int, model: str, version: int) -> None:
        self._seq += 1
        heapq.heappush(self.contenders, (latest_ns, self._seq, model, version))

    def match(
        self,
        now: int,
        current: Valid,
        waiting: Valid,
        on_wait: Callable[[str], None],
        margin_of: Callable[[str], int] | None,
    ) -> tuple[str, str, WorkerState] | None:
        """The next decision: ``(GRANT, model, worker)``; ``(OVERDUE, model, worker)``
        after counting overdue ``worker`` busy longer (``model`` must be recomputed); or
        ``None`` when no contender is left. Contenders no longer ``current`` are skipped;
        those without a grantable worker wait (``on_wait`` is told first). The overdue
        bump is ``margin_of(model of the worker's last batch)``, or the margin that batch
        was booked with when ``margin_of`` is ``None``."""
        grant_by = now + self._d
        contenders = self.contenders
        while contenders:
            latest, _, name, version = heapq.heappop(contenders)
            if not current(name, version):
                continue
            pools = self.model_pools.get(name, ())
            worker = earliest(pools)
            if worker is not None and worker.free_at <= grant_by:
                if worker.timeline and self.planned_end(worker) <= now:
                    # Overdue: its last batch should be over but no report came. It may
                    # start the next one too late (TOO_LATE): count it busy a while.
                    last = self.bookings.get(worker.timeline[-1])
                    bump = 0
                    if last is not None:
                        bump = last.margin if margin_of is None else margin_of(last.model)
                    self.set_free_at(worker, grant_by + max(bump, _MIN_OVERDUE_NS), now)
                    return OVERDUE, name, worker
                return GRANT, name, worker
            on_wait(name)
            for pool in pools:
                self._seq += 1
                heap = pool.waiting
                heapq.heappush(heap, (latest, self._seq, name, version))
                if len(heap) > 4 * len(pool.models) + 64:
                    heap[:] = [e for e in heap if waiting(e[2], e[3])]
                    heapq.heapify(heap)
        return None

    def fire_grants(self, now: int, waiting: bool) -> None:
        """Grant timers that passed make their pools offer (when anything ``waiting``)."""
        grants, workers = self._grants, self.workers
        while grants and grants[0][0] <= now:
            _, wid, free_at = heapq.heappop(grants)
            w = workers[wid]
            if waiting and w.alive and w.free_at == free_at and w.pool is not None:
                self.offering[w.pool] = None

    def wake_waiters(self, now: int, waiting: Valid) -> list[str]:
        """The best waiter of each offering pool with a grantable worker, in pool order
        (a pool with none stops offering)."""
        grant_by = now + self._d
        woke: list[str] = []
        for pool in list(self.offering):
            top = pool.top()
            if top is not None and top.free_at <= grant_by:
                heap = pool.waiting
                while heap and not waiting(heap[0][2], heap[0][3]):
                    heapq.heappop(heap)
                if heap:
                    woke.append(heapq.heappop(heap)[2])
                    continue
            del self.offering[pool]
        return woke

    def next_grant_ns(self) -> int | None:
        """When the next live grant timer passes; ``None`` when none is pending."""
        grants, workers = self._grants, self.workers
        while grants:
            _, wid, free_at = grants[0]
            w = workers[wid]
            if w.alive and w.free_at == free_at:
                return grants[0][0]
            heapq.heappop(grants)
        return None
