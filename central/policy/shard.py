"""A model shard: queues, estimators and candidates of a disjoint set of models (DESIGN §5).

Theory of operation. A shard applies the default policy's per-model rules (docs/policy.md
§4.1-4.2, the same as ``SymphonyPolicy._recompute``) to the models it owns, against a
*view* of the worker pools that the matcher keeps it up to date with (``PoolState``: each
pool's earliest ``free_at``, whether that worker is busy, how many workers it has). For a
model whose inputs changed (it is *dirty*: an arrival, a pool update past its watch
threshold, a finished batch, a timer, a ``Wake``) it recomputes the candidate:

* start ``s = max(now + D, earliest free_at of its pools)`` (+ margin on a busy worker);
* doomed heads are dropped ``DEADLINE``, heads that would hold the batch below the shed
  floor are dropped ``SHED``; batch ``b`` is the largest that meets the head's deadline;
* ready at once when waiting cannot grow it, else at ``t_ready`` (a timer), unless light
  load makes waiting pointless (``defer_headroom``).

A ready candidate is *offered* to the matcher (``Offer``, its latest start only); the
matcher answers with a ``Grant`` naming the worker and the earliest start, and the shard
turns its candidate into the ``Dispatch`` (it alone holds the request ids). The pool view
changes once per batch, so a shard hears from the matcher a few times per batch and
never per request. Everything per model lives in one ``ShardModel``, so moving a model to
another shard (``export``/``adopt``) moves its queued requests with it: none is lost.
Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import heapq
from typing import Any

from central.policy.bound import shed_floor, target_batch
from central.policy.config import PolicyConfig
from central.policy.profile import LoadEstimator, ProfileEstimator
from central.policy.queues import DeadlineQueue
from central.policy.exchange import Booked, Finished, Grant, Offer, PoolState, Withdraw
from central.policy.types import Dispatch, DropReason, Profile, Request

__all__ = ["ModelShard", "ShardModel"]

_NEVER = 1 << 62
_FLOOR_REFRESHES = 128  # shed floors are recomputed this often per rate window


class ShardModel:
    """Everything a shard knows about one model; moves whole between shards."""

    __slots__ = (
        "name", "queue", "est", "load", "pools", "version", "ready", "offered", "batch",
        "latest_ns", "timer_at", "watch_ns", "floor", "floor_at", "floor_prof",
        "last_dispatch_ns",
    )  # fmt: skip

    def __init__(self, name: str, rate_window_ns: int) -> None:
        self.name = name
        self.queue = DeadlineQueue()
        self.est: ProfileEstimator | None = None  # None: no profile yet, unschedulable
        self.load = LoadEstimator(rate_window_ns)
        self.pools: list[tuple[str, ...]] = []  # keys of the live pools serving it, sorted
        self.version = 0
        self.ready = False
        self.offered: int | None = None  # latest start last offered to the matcher
        self.batch = 0
        self.latest_ns = 0
        self.timer_at: int | None = None
        self.watch_ns = _NEVER  # recompute once a pool's earliest free_at passes this
        self.floor = 1
        self.floor_at = 0
        self.floor_prof: Profile | None = None
        self.last_dispatch_ns = 0


def _fit(profile: Profile, avail_ns: int) -> int:
    """The largest ``b >= 0`` with ``profile.latency_ns(b) <= avail_ns`` (no max_batch cap)."""
    if avail_ns < profile.latency_ns(1):
        return 0
    return max(1, (avail_ns - profile.c_ns) // profile.k_ns)


class ModelShard:
    """The models of one shard; see the module docstring."""

    def __init__(self, config: PolicyConfig) -> None:
        self._cfg = config
        self.models: dict[str, ShardModel] = {}
        self._views: dict[tuple[str, ...], PoolState] = {}
        self._dirty: dict[str, None] = {}
        self._forced: set[str] = set()  # woken models: re-offer even if unchanged
        self._timers: list[tuple[int, str]] = []
        self._drops: dict[DropReason, list[int]] = {}
        self.granted: list[Request] = []  # the requests of the last grant's batch
        self._floor_refresh_ns = max(1, config.rate_window_ns // _FLOOR_REFRESHES)

    # ------------------------------------------------------------ from outside

    def add_model(self, name: str, offered: Profile | None) -> None:
        """Own ``name``; its profile is the configured one, else ``offered`` (clamped)."""
        m = self.models.get(name)
        if m is None:
            m = self.models[name] = ShardModel(name, self._cfg.rate_window_ns)
            for key, view in self._views.items():
                if name in key and view.size:
                    m.pools.append(key)
            m.pools.sort()
        profile = self._cfg.profiles.get(name) or offered
        if m.est is None and profile is not None:
            profile = Profile(max(1, profile.k_ns), profile.c_ns, max(1, profile.max_batch))
            cfg = self._cfg
            m.est = ProfileEstimator(profile, window=cfg.refit_window,
                                     percentile=cfg.margin_percentile, refit=cfg.refit,
                                     late_window=cfg.stall_window)

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
                dirty[m.name] = None

    def pool_state(self, state: PoolState) -> None:
        """A matcher update: refresh the view; dirty the models whose candidate it moves."""
        key = state.models
        old = self._views.get(key)
        if state.size:
            self._views[key] = state
        else:
            self._views.pop(key, None)
        resized = old is None or old.size != state.size
        for name in key:
            m = self.models.get(name)
            if m is None:
                continue
            if resized:
                if state.size and key not in m.pools:
                    m.pools.append(key)
                    m.pools.sort()
                elif not state.size and key in m.pools:
                    m.pools.remove(key)
            if m.queue and (resized or state.free_at_ns > m.watch_ns):
                m.watch_ns = _NEVER
                self._dirty[name] = None

    def wake(self, model: str) -> None:
        """A worker is about to be free for waiting ``model``: recompute and re-offer it."""
        if model in self.models:
            self._dirty[model] = None
            self._forced.add(model)

    def finished(self, msg: Finished) -> None:
        """A batch of one of this shard's models ended: refit from an ``ok`` one."""
        m = self.models.get(msg.model)
        if m is None or m.est is None or not msg.ok:
            return
        m.est.observe(msg.batch_size, msg.duration_ns, msg.late_ns)
        if m.queue:
            self._dirty[m.name] = None

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
        dispatch = Dispatch(msg.batch_id, m.name, msg.worker_id,
                            tuple(r.request_id for r in requests), msg.earliest_ns,
                            m.latest_ns, expected)
        margin = self._margin(m)
        m.offered = None  # the matcher forgets the offer it granted
        self._reset(m)
        self._dirty[m.name] = None
        return dispatch, Booked(msg.batch_id, expected, margin)

    def export(self, model: str) -> tuple[ShardModel, list[Offer | Withdraw]]:
        """Give ``model`` up (to ``adopt`` elsewhere), queued requests included."""
        m = self.models.pop(model)
        self._dirty.pop(model, None)
        self._forced.discard(model)
        out = self._reset(m)
        return m, out

    def adopt(self, m: ShardModel) -> None:
        """Take over a model ``export`` gave up; its candidate is recomputed."""
        self.models[m.name] = m
        m.pools = sorted(k for k in m.pools if k in self._views)
        if m.queue:
            self._dirty[m.name] = None

    # ---------------------------------------------------------------- outputs

    def advance(self, now: int) -> list[Offer | Withdraw]:
        """Fire due timers and recompute dirty models; the offers/withdrawals it causes."""
        timers, models = self._timers, self.models
        while timers and timers[0][0] <= now:
            t, name = heapq.heappop(timers)
            m = models.get(name)
            if m is not None and m.timer_at == t:
                m.timer_at = None
                self._dirty[name] = None
        out: list[Offer | Withdraw] = []
        while self._dirty:
            batch, self._dirty = self._dirty, {}
            for name in batch:
                m = models.get(name)
                if m is None:
                    continue
                was = m.offered
                ready = self._recompute(m, now)
                if ready and (was != m.latest_ns or name in self._forced):
                    m.offered = m.latest_ns
                    assert m.est is not None
                    out.append(Offer(name, m.version, m.latest_ns,
                                     m.est.current().latency_ns(m.batch), self._margin(m)))
                elif not ready and was is not None:
                    m.offered = None
                    out.append(Withdraw(name))
            self._forced.clear()
        return out

    def model_snapshot(self, now: int) -> dict[str, dict[str, Any]]:
        """Per model of this shard, plain data for stats: the same keys as
        ``SymphonyPolicy.snapshot()["models"]`` has, where a shard knows them."""
        out: dict[str, dict[str, Any]] = {}
        for name, m in self.models.items():
            prof = m.est.current() if m.est is not None else None
            budget = m.load.budget_ns
            out[name] = {
                "queue": len(m.queue),
                "workers": sum(self._views[k].size for k in m.pools if k in self._views),
                "k_ns": prof.k_ns if prof else None,
                "c_ns": prof.c_ns if prof else None,
                "max_batch": prof.max_batch if prof else None,
                "margin_ns": self._margin(m) if m.est is not None else 0,
                "rate_rps": m.load.rate_per_ns(now) * 1e9,
                "budget_ns": round(budget) if budget is not None else None,
                "candidate_batch": m.batch,
                "ready": m.ready,
            }
        return out

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

    # ---------------------------------------------------------------- the rules

    def _drop(self, reason: DropReason, requests: list[Request]) -> None:
        if requests:
            self._drops.setdefault(reason, []).extend(r.request_id for r in requests)

    def _reset(self, m: ShardModel) -> list[Offer | Withdraw]:
        m.version += 1
        m.ready = False
        m.batch = 0
        m.timer_at = None
        m.watch_ns = _NEVER
        if m.offered is not None:
            m.offered = None
            return [Withdraw(m.name)]
        return []

    def _earliest(self, m: ShardModel) -> PoolState | None:
        best: PoolState | None = None
        views = self._views
        for key in m.pools:
            view = views[key]
            if best is None or view.free_at_ns < best.free_at_ns:
                best = view
        return best

    def _recompute(self, m: ShardModel, now: int) -> bool:
        """Refresh ``m``'s candidate, dropping doomed heads; True when it is ready."""
        m.version += 1
        m.ready = False
        m.batch = 0
        m.timer_at = None
        m.watch_ns = _NEVER
        queue = m.queue
        if not queue or m.est is None:
            return False
        view = self._earliest(m)
        if view is None:  # unreachable: an orphaned model's queue is emptied
            self._drop(DropReason.NO_WORKER, queue.clear())
            return False
        cfg = self._cfg
        prof = m.est.current()
        k, c = prof.k_ns, prof.c_ns  # l(b) = max(k b + c, k) (k >= 1): latency_ns, inlined
        margin = self._margin(m)
        after = cfg.reply_cost_ns + margin
        free_at = view.free_at_ns
        start = max(now + cfg.dispatch_cost_ns, free_at + (margin if view.busy else 0))
        start0 = max(now + cfg.dispatch_cost_ns, free_at)
        n = len(queue)
        doomed = queue.count_before(start0 + max(k + c, k) + cfg.reply_cost_ns)
        if doomed == n and now - m.last_dispatch_ns > cfg.stale_after_ns and m.est.samples:
            m.est.reset()  # stale (see SymphonyPolicy): back to the initial profile
            prof = m.est.current()
            k, c = prof.k_ns, prof.c_ns
            margin = self._margin(m)
            after = cfg.reply_cost_ns + margin
            start = max(now + cfg.dispatch_cost_ns, free_at + (margin if view.busy else 0))
            doomed = queue.count_before(start0 + max(k + c, k) + cfg.reply_cost_ns)
        if cfg.shed_fraction > 0.0 and n - doomed > 2:
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
        if by_deadline == 0:  # only the margin rules the head out: alone, now
            m.batch = 1
            m.latest_ns = deadline - cfg.reply_cost_ns - max(k + c, k)
            m.ready = True
            m.watch_ns = m.latest_ns
            return True
        batch = m.batch = min(by_deadline, n, prof.max_batch)
        m.latest_ns = deadline - after - max(k * batch + c, k)
        if batch == n and batch < by_deadline and batch < prof.max_batch:
            grown = max(k * (batch + 1) + c, k)
            t_ready = deadline - after - grown - cfg.dispatch_cost_ns - cfg.timer_slack_ns
            if now < t_ready and self._worth_waiting(m, now, prof, batch):
                m.timer_at = t_ready
                heapq.heappush(self._timers, (t_ready, m.name))
                m.watch_ns = deadline - after - margin - grown
                return False
        m.ready = True
        m.watch_ns = deadline - after - margin - max(k + c, k)
        return True

    def _share(self, m: ShardModel) -> float:
        views = self._views
        return sum(views[k].size / len(k) for k in m.pools)

    def _worth_waiting(self, m: ShardModel, now: int, prof: Profile, batch: int) -> bool:
        headroom = self._cfg.defer_headroom
        if headroom <= 0.0:
            return True
        rate = m.load.rate_per_ns(now)
        return headroom * rate * prof.latency_ns(batch) > self._share(m) * batch

    def _margin(self, m: ShardModel) -> int:
        assert m.est is not None
        margin = m.est.margin_ns
        budget = m.load.budget_ns
        if budget is not None:
            margin = min(margin, int(self._cfg.max_margin_fraction * budget))
        return margin

    def _floor(self, m: ShardModel, now: int, prof: Profile) -> int:
        if prof is not m.floor_prof or now - m.floor_at >= self._floor_refresh_ns:
            budget = m.load.budget_ns
            target = 0
            if budget is not None:
                cfg = self._cfg
                overheads = cfg.dispatch_cost_ns + cfg.reply_cost_ns + cfg.timer_slack_ns
                workers = sum(self._views[k].size for k in m.pools)
                target = target_batch(prof, rate_per_ns=m.load.rate_per_ns(now),
                                      n_workers=workers,
                                      budget_ns=budget - overheads - self._margin(m))
            m.floor = shed_floor(prof, target, self._cfg.shed_fraction)
            m.floor_prof, m.floor_at = prof, now
        return m.floor
