"""The matcher: worker timelines, and which ready candidate gets which worker (DESIGN §5).

Theory of operation. The matcher is the worker side of the default policy
(``timeline.Timeline``, the very code ``SymphonyPolicy`` runs: timelines, pools, the
overdue bump, grants and waiters, docs/policy.md §4.3 and §4.5) with the candidates kept
elsewhere, in model shards. It knows models only by name and candidates only by their
``Offer``: the latest start and a version.

``begin(now)`` starts a decision round as the default policy does: due grant timers (a
worker's ``free_at - D`` passed) make their pools *offering*, and each offering pool wakes
its best waiter (``Wake``) so that it competes with the newly ready. ``step(now)`` then
makes one decision:

* the offer with the earliest latest start (ties: the order offers were received) takes
  the worker of its pools that frees up first, if that one is grantable (``free_at <= now
  + D``): a ``Grant``; a worker whose last batch is overdue is counted busy a while longer
  instead (``PoolState`` updates and a ``Wake`` so the candidate is recomputed); the bump
  is the margin of that batch's model, which ``step`` asks ``margin_of`` for (without it,
  the margin the batch was booked with);
* an offer without a grantable worker waits in its pools' waiting heaps;
* with no offer left, each offering pool wakes its best waiter (``Wake``).

Every change of a pool's earliest ``free_at``, of whether that worker is busy, or of its
size (a grant, a ``BatchDone``, a join, a loss) becomes one ``PoolState`` for the shards.
A shard re-offers every ready recompute, so the offers the matcher holds are exactly the
default policy's contenders. Nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from central.policy.exchange import Booked, Finished, Grant, Offer, PoolState, Wake, Withdraw
from central.policy.queues import WorkerPool, WorkerState
from central.policy.timeline import OVERDUE, Timeline
from central.policy.types import BatchDone, WorkerJoined

__all__ = ["Matcher"]


def _nothing(_: str) -> None:
    pass


class Matcher(Timeline):
    """Workers, pools and grants; see the module docstring."""

    def __init__(self, dispatch_cost_ns: int, first_batch_id: int = 1) -> None:
        super().__init__(dispatch_cost_ns, first_batch_id)
        self._offers: dict[str, Offer] = {}
        self._sent: dict[tuple[str, ...], tuple[int, bool, int]] = {}  # last PoolState

    # ------------------------------------------------------------- workers

    def joined(self, ev: WorkerJoined, now: int) -> tuple[list[PoolState], list[str]]:
        """A worker joined (or re-joined with other models): the pool updates, and the
        models its old pool leaves with no worker."""
        pool, old = self.join(ev.worker_id, ev.models, now)
        if pool is None:
            return [], []
        changed, orphans = [pool], []
        if old is not None:
            orphans = self._leave(self.workers[ev.worker_id], old)
            changed.append(old)
        return self._states(changed, force=True), orphans

    def lost(self, wid: int) -> tuple[list[PoolState], list[str]]:
        """A worker is gone: the pool updates, and the models left with no worker."""
        w = self.lose(wid)
        if w is None:
            return [], []
        pool = w.pool
        orphans: list[str] = []
        if pool is not None:
            orphans = self._leave(w, pool)
        w.pool, w.models = None, ()
        return (self._states([pool], force=True) if pool is not None else []), orphans

    def _leave(self, w: WorkerState, pool: WorkerPool) -> list[str]:
        orphans = self.leave(w, pool)
        for name in orphans:
            self._offers.pop(name, None)
        return orphans

    def done(self, ev: BatchDone, now: int) -> tuple[Finished | None, list[PoolState]]:
        """A batch ended: retire it (and those before it) and re-predict its worker."""
        ended = self.end(ev)
        if ended is None:
            return None, []
        batch, ok, late = ended
        finished = Finished(batch.model, ok, ev.batch_size, ev.end_ns - ev.start_ns, late if ok else 0)
        w = self.retire(batch, ev, now)
        return finished, self._pool_changed(w)

    # ------------------------------------------------------------- candidates

    def receive(self, messages: Iterable[Offer | Withdraw]) -> None:
        """Offers and withdrawals from the shards, in the order they were made."""
        for msg in messages:
            if type(msg) is Offer:
                if self.model_pools.get(msg.model):
                    self._offers[msg.model] = msg
                    self.push_contender(msg.latest_ns, msg.model, msg.version)
            else:
                self._offers.pop(msg.model, None)

    def begin(self, now: int) -> list[Wake]:
        """Start a decision round: grant timers that passed, and the waiters they wake."""
        self.fire_grants(now, bool(self._offers))
        return [Wake(name) for name in self.wake_waiters(now, self._is_waiting)]

    def step(
        self, now: int, margin_of: Callable[[str], int] | None = None
    ) -> Grant | list[PoolState | Wake] | None:
        """One decision: a ``Grant``, updates and wake-ups to deliver, or ``None`` (idle)."""
        got = self.match(now, self._is_waiting, self._is_waiting, _nothing, margin_of)
        if got is None:
            wakes: list[PoolState | Wake] = [Wake(name) for name in self.wake_waiters(now, self._is_waiting)]
            return wakes or None
        kind, model, worker = got
        if kind is OVERDUE:
            states: list[PoolState | Wake] = []
            states.extend(self._pool_changed(worker))
            states.append(Wake(model))
            return states
        del self._offers[model]
        return Grant(model, self.new_batch_id(), worker.wid, max(now + self._d, worker.free_at))

    def booked(self, grant: Grant, booked: Booked, now: int) -> list[PoolState]:
        """The shard carried out ``grant``: the worker is busy for the batch."""
        w = self.workers[grant.worker_id]
        self.book(
            grant.batch_id, grant.model, w, grant.earliest_ns, booked.expected_ns, booked.margin_ns, now
        )
        return self._pool_changed(w)

    def rebook(self, batch_id: int, expected_ns: int, margin_ns: int, now: int) -> list[PoolState]:
        """Correct a booked batch's duration (a matcher in its own process books a grant
        with the offer's figures before the shard answers); ``expected_ns <= 0``: the
        shard declined the grant, the batch is unbooked and the worker's plan restored."""
        batch = self.bookings.get(batch_id)
        w = self.workers.get(batch.worker) if batch is not None else None
        if batch is None or w is None or batch_id not in w.timeline:
            self.bookings.pop(batch_id, None)
            return []
        timeline = list(w.timeline)
        i = timeline.index(batch_id)
        if expected_ns <= 0:
            del self.bookings[batch_id]
            del w.timeline[i]
            del timeline[i]
        else:
            batch.expected, batch.margin = expected_ns, margin_ns
        free_at = batch.before
        for bid in timeline[i:]:
            later = self.bookings[bid]
            later.before = free_at
            free_at = max(free_at, later.earliest) + later.expected
        if not w.alive:
            return []
        self.set_free_at(w, free_at, now)
        return self._pool_changed(w)

    def next_wakeup_ns(self) -> int | None:
        """When a waiting offer may next get a worker; ``None`` when nothing waits."""
        if not self._offers:
            return None
        return self.next_grant_ns()

    def pool_states(self) -> list[PoolState]:
        """The current state of every live pool (for a shard that joins late)."""
        return self._states([p for p in self.pools.values() if p.members], force=True)

    @property
    def inflight(self) -> int:
        """How many batches are booked and not yet reported."""
        return len(self.bookings)

    # ---------------------------------------------------------------- helpers

    def _is_waiting(self, model: str, version: int) -> bool:
        offer = self._offers.get(model)
        return offer is not None and offer.version == version

    def _pool_changed(self, w: WorkerState) -> list[PoolState]:
        return self._states([w.pool], force=False) if w.pool is not None else []

    def _states(self, pools: list[WorkerPool], *, force: bool) -> list[PoolState]:
        out = []
        for pool in pools:
            top = pool.top()
            state = (top.free_at, bool(top.timeline), len(pool)) if top else (0, False, 0)
            if force or self._sent.get(pool.models) != state:
                self._sent[pool.models] = state
                out.append(PoolState(pool.models, *state))
        return out
