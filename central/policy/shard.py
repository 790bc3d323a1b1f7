"""A model shard: queues, estimators and candidates of a disjoint set of models (DESIGN §5).

Theory of operation. A shard applies the default policy's per-model rules
(``candidate.CandidateRules``, the very code ``SymphonyPolicy`` runs; docs/policy.md
§4.1-4.4) to the models it owns, against a *view* of the worker pools that the matcher
keeps up to date (``PoolState``: each pool's earliest ``free_at``, whether that worker is
busy, how many workers it has). A model is recomputed when something it depends on
changed (it is *dirty*), exactly when ``SymphonyPolicy`` would recompute it:

* an arrival, a finished batch that refits its profile, its deferral timer, a ``Wake``
  (a worker is about to be free for it, or its worker was overdue);
* a pool of it changed size (a worker joined or left);
* a pool's earliest ``free_at`` *rose* past the model's watch threshold (its candidate was
  planned on an earlier start). Models whose watches pass at once are recomputed in
  threshold order, then in the order the watches were set.

Every recompute that leaves a ready candidate is *offered* to the matcher (``Offer``: its
latest start, and the version that tells it from an older offer), one that does not
withdraws a standing offer (``Withdraw``). The matcher answers with a ``Grant`` naming the
worker and the earliest start; the shard turns its candidate into the ``Dispatch`` (it
alone holds the request ids). The pool view changes a few times per batch, so a shard
hears from the matcher a few times per batch and never per request. Everything per model
lives in one ``ModelState``, so moving a model to another shard (``export``/``adopt``)
moves its queued requests with it: none is lost. Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

from central.policy.candidate import NEVER, CandidateRules, ModelState
from central.policy.config import PolicyConfig
from central.policy.exchange import Booked, Finished, Grant, Offer, PoolState, Withdraw
from central.policy.stats import ModelStats
from central.policy.types import Dispatch, DropReason, Profile, Request

__all__ = ["ModelShard", "ShardModel"]

ShardModel = ModelState  # what a shard knows about one model (the name it had here)


class ModelShard(CandidateRules):
    """The models of one shard; see the module docstring."""

    def __init__(self, config: PolicyConfig, stamp: Callable[[], int] | None = None) -> None:
        super().__init__(config)
        self.models: dict[str, ModelState] = {}
        self._views: dict[tuple[str, ...], PoolState] = {}
        # dirty models, in the order they became dirty: name -> stamp. Shards of one
        # process share ``stamp`` so that their offers can be merged in that order.
        self._dirty: dict[str, int] = {}
        self._stamp = stamp if stamp is not None else itertools.count(1).__next__
        self._recomputing = 0  # the stamp of the recompute under way
        self.granted: list[Request] = []  # the requests of the last grant's batch

    # ------------------------------------------------------------ from outside

    def add_model(self, name: str, offered: Profile | None) -> None:
        """Own ``name``; its profile is the configured one, else ``offered`` (clamped)."""
        m = self.models.get(name)
        if m is None:
            m = self.models[name] = ModelState(name, self._cfg.rate_window_ns)
            m.pools.extend(key for key, view in self._views.items() if name in key and view.size)
        if m.est is None:
            m.est = self._estimator(name, offered)

    def arrive(self, requests: list[Request], now: int) -> None:
        """Queue newly arrived requests of this shard's models."""
        models, dirty = self.models, self._dirty
        for r in requests:
            m = models.get(r.model)
            if m is None or m.est is None:
                self._drop(DropReason.UNKNOWN_MODEL, [r])
            elif not m.pools:
                self._drop(DropReason.NO_WORKER, [r])
            else:
                m.queue.push(r)
                m.load.arrived(now, r.deadline_ns - r.arrival_ns)
                if m.name not in dirty:
                    dirty[m.name] = self._stamp()

    def pool_state(self, state: PoolState) -> None:
        """A matcher update: refresh the view; dirty the models whose candidate it moves
        (all of the pool's on a resize; on a rise of its earliest ``free_at``, those
        whose watch it passes, in threshold order, then in the order they were set)."""
        for _, name in self.view(state):
            self.touch(name)

    def view(self, state: PoolState) -> list[tuple[tuple[int, int], str]]:
        """``pool_state`` without the dirtying: the models to dirty, each with the key
        that orders them (shards of one process merge their lists by it)."""
        key = state.models
        old = self._views.get(key)
        if state.size:
            self._views[key] = state
        else:
            self._views.pop(key, None)
        resized = old is None or old.size != state.size
        rose = not resized and old is not None and state.free_at_ns > old.free_at_ns
        out: list[tuple[tuple[int, int], str]] = []
        for i, name in enumerate(key):
            m = self.models.get(name)
            if m is None:
                continue
            if resized:
                if state.size and key not in m.pools:
                    m.pools.append(key)
                elif not state.size and key in m.pools:
                    m.pools.remove(key)
                if m.queue:
                    out.append(((0, i), name))
            elif rose and m.watch_ns < state.free_at_ns:
                out.append(((m.watch_ns, m.watch_seq), name))
                m.watch_ns = NEVER
        out.sort()
        return out

    def touch(self, model: str) -> None:
        """Dirty ``model`` (it keeps its place if it already is)."""
        if model not in self._dirty:
            self._dirty[model] = self._stamp()

    def wake(self, model: str) -> None:
        """A worker is about to be free for waiting ``model``: recompute and re-offer it."""
        if model in self.models:
            self.touch(model)

    def finished(self, msg: Finished) -> None:
        """A batch of one of this shard's models ended: refit from an ``ok`` one."""
        m = self.models.get(msg.model)
        if m is None or m.est is None or not msg.ok:
            return
        m.est.observe(msg.batch_size, msg.duration_ns, msg.late_ns)
        if m.queue:
            self.touch(m.name)

    def orphaned(self, model: str) -> list[Offer | Withdraw]:
        """``model`` lost its last worker: drop its queue ``NO_WORKER``."""
        m = self.models.get(model)
        if m is None:
            return []
        self._drop(DropReason.NO_WORKER, m.queue.clear())
        self._dirty.pop(model, None)
        return self._reset(m)

    def grant(self, msg: Grant, now: int) -> tuple[Dispatch, Booked]:
        """Turn the granted candidate into its ``Dispatch``; raises on a stale grant."""
        m = self.models[msg.model]
        if not m.ready or m.est is None:  # the matcher granted a withdrawn offer
            raise ValueError(f"grant for {msg.model!r}, which has no ready candidate")
        requests = self.granted = m.queue.pop_front(m.batch)
        m.last_dispatch_ns = now
        expected = m.est.current().latency_ns(len(requests))
        dispatch = Dispatch(
            msg.batch_id,
            m.name,
            msg.worker_id,
            tuple(r.request_id for r in requests),
            msg.earliest_ns,
            m.latest_ns,
            expected,
        )
        margin = self._margin(m)
        m.offered = None  # the matcher forgets the offer it granted
        self._reset(m)
        self.touch(m.name)
        return dispatch, Booked(msg.batch_id, expected, margin)

    def margin(self, model: str) -> int:
        """``model``'s margin now (0 without a profile): an overdue worker's bump."""
        return self.margin_of(model, self.models)

    def export(self, model: str, *, keep: bool = False) -> tuple[ModelState, list[Offer | Withdraw]]:
        """Give ``model`` up (to ``adopt`` elsewhere), queued requests included. Its
        candidate is withdrawn, unless ``keep``: then it moves whole (offer, timer,
        watch), as between shards of one process, and no decision changes."""
        m = self.models.pop(model)
        self._dirty.pop(model, None)
        return m, [] if keep else self._reset(m)

    def is_dirty(self, model: str) -> bool:
        """Whether ``model`` waits to be recomputed."""
        return model in self._dirty

    def adopt(self, m: ModelState, *, dirty: bool = True) -> None:
        """Take over a model ``export`` gave up; its candidate is recomputed if ``dirty``
        (else it is kept as it came: ``export(keep=True)``)."""
        self.models[m.name] = m
        m.pools[:] = [k for k in m.pools if k in self._views]
        if m.timer_at is not None:
            heapq.heappush(self._timers, (m.timer_at, m.name))
        if dirty and m.queue:
            self.touch(m.name)

    # ---------------------------------------------------------------- outputs

    def due(self, now: int) -> list[tuple[int, str]]:
        """The deferral timers that passed, ``(t_ready, model)`` in order, cleared; the
        caller dirties their models (``advance`` does it all)."""
        timers, models = self._timers, self.models
        out = []
        while timers and timers[0][0] <= now:
            t, name = heapq.heappop(timers)
            m = models.get(name)
            if m is not None and m.timer_at == t:
                m.timer_at = None
                out.append((t, name))
        return out

    def advance(self, now: int) -> list[Offer | Withdraw]:
        """Fire due timers and recompute dirty models; the offers/withdrawals it causes."""
        for _, name in self.due(now):
            self.touch(name)
        models = self.models
        out: list[Offer | Withdraw] = []
        while self._dirty:
            batch, self._dirty = self._dirty, {}
            for name, stamp in batch.items():
                m = models.get(name)
                if m is None:
                    continue
                self._recomputing = stamp
                if self._recompute(m, now):
                    m.offered = m.latest_ns
                    assert m.est is not None
                    out.append(
                        Offer(
                            name,
                            m.version,
                            m.latest_ns,
                            m.est.current().latency_ns(m.batch),
                            self._margin(m),
                            stamp,
                        )
                    )
                elif m.offered is not None:
                    m.offered = None
                    out.append(Withdraw(name))
        return out

    def model_snapshot(self, now: int) -> dict[str, ModelStats]:
        """Per model of this shard, its stats: the fields of ``SymphonyPolicy``'s
        ``ModelStats`` that a shard knows (not ``target_batch`` nor ``waiting``)."""
        return {name: self._model_stats(m, now, full=False) for name, m in self.models.items()}

    def take_drops(self) -> dict[DropReason, list[int]]:
        """The request ids dropped since the last call, by reason."""
        drops, self._drops = self._drops, {}
        return drops

    def next_wakeup_ns(self) -> int | None:
        """The earliest pending deferral timer; ``None`` when none."""
        timers = self._timers
        while timers:
            m = self.models.get(timers[0][1])
            if m is not None and m.timer_at == timers[0][0]:
                return timers[0][0]
            heapq.heappop(timers)
        return None

    # ------------------------------------------------------ the rules' hooks

    def _reset_candidate(self, m: ModelState) -> None:
        m.version += 1
        m.ready = False
        m.batch = 0
        m.timer_at = None
        m.watch_ns = NEVER

    def _reset(self, m: ModelState) -> list[Offer | Withdraw]:
        self._reset_candidate(m)
        if m.offered is not None:
            m.offered = None
            return [Withdraw(m.name)]
        return []

    def _earliest_view(self, m: ModelState) -> tuple[int, bool] | None:
        best: PoolState | None = None
        views = self._views
        for key in m.pools:
            view = views[key]
            if best is None or view.free_at_ns < best.free_at_ns:
                best = view
        return None if best is None else (best.free_at_ns, best.busy)

    def _n_workers(self, m: ModelState) -> int:
        views = self._views
        return sum(views[k].size for k in m.pools if k in views)

    def _share(self, m: ModelState) -> float:
        views = self._views
        return sum(views[k].size / len(k) for k in m.pools)

    def _watch(self, m: ModelState, threshold: int) -> None:
        m.watch_ns, m.watch_seq = threshold, self._recomputing
