"""One model's candidate batch: the per-model rules of the default policy (docs/policy.md §4.1-4.4).

Theory of operation. Everything the default policy knows about one model lives in one
``ModelState``: its deadline queue, refit profile (``ProfileEstimator``), arrival-rate
and budget estimator, and its current *candidate* (batch size, latest start, deferral
timer). ``CandidateRules`` holds the rules that turn that state into a candidate, written
once and used by both the one-process ``SymphonyPolicy`` (``scheduler.py``) and a model
shard of the split (``ModelShard``, ``shard.py``). With ``D`` the dispatch cost, ``R``
the reply cost, ``T`` the timer slack and ``M`` the margin (``_margin``: the estimator's,
which learns from overruns and from stalls, capped at a fraction of the typical budget),
``_recompute`` does:

* start ``s = max(now + D, earliest free_at among the model's workers)``, one margin
  later when that worker is still busy (its last batch may overrun as much as ours);
* heads with ``s + l(1) + R > deadline`` (no margin) are doomed: dropped ``DEADLINE``;
  when every head is doomed and nothing ran for ``stale_after_ns``, the learnt profile is
  reset first; heads that would hold the batch below the shed floor (``_floor``, from
  ``_target``: ``bound.target_batch`` on the measured rate and budget) while enough
  requests stand behind them are shed (``SHED``);
* batch ``b`` = the largest ``b <= min(queue, max_batch)`` with ``s + l(b) + M + R <=
  deadline(head)`` (``fit``); latest start ``deadline - R - M - l(b)``; when only the
  margin rules the head out, it goes alone, now;
* ready at once unless waiting can grow it and the load needs it (``_worth_waiting``:
  ``defer_headroom`` x rate on the model's fair share of workers); then a timer at
  ``t_ready = deadline - R - M - l(b+1) - D - T``.

What the rules need of the workers comes through four small hooks that each user writes
against its own view: ``_earliest_view`` (earliest free_at and whether that worker is
busy), ``_n_workers``, ``_share`` and ``_watch`` (recompute the model once its workers'
earliest free_at passes a threshold); ``_reset_candidate`` clears the candidate. A
worker's own profile is made usable (``k >= 1``, ``max_batch >= 1``) by
``_estimator``, unless the configuration names one. Nothing here reads a clock or does
I/O.
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from typing import Any

from central.policy.bound import shed_floor, target_batch
from central.policy.config import PolicyConfig
from central.policy.profile import LoadEstimator, ProfileEstimator
from central.policy.queues import DeadlineQueue, WorkerPool
from central.policy.stats import ModelStats
from central.policy.types import DropReason, Profile, Request

__all__ = ["NEVER", "CandidateRules", "ModelState", "fit"]

NEVER = 1 << 62  # a watch threshold that is never passed
_FLOOR_REFRESHES = 128  # shed floors are recomputed this often per rate window


class ModelState:
    """Everything the policy knows about one model; moves whole between shards."""

    __slots__ = (
        "name", "queue", "est", "pools", "load", "version", "ready", "waiting", "offered",
        "batch", "latest_ns", "timer_at", "watch_ns", "watch_seq", "floor", "floor_at",
        "floor_prof", "last_dispatch_ns", "share", "share_epoch",
    )  # fmt: skip

    def __init__(self, name: str, rate_window_ns: int, pools: list[Any] | None = None) -> None:
        self.name = name
        self.queue = DeadlineQueue()
        self.est: ProfileEstimator | None = None  # None: no profile yet, unschedulable
        # The live pools serving it, in the order they came to serve it: the pools
        # themselves (SymphonyPolicy) or their keys (a shard's view).
        self.pools: list[Any] = pools if pools is not None else []
        self.load = LoadEstimator(rate_window_ns)
        self.version = 0  # bumped on every recompute: stale heap entries are skipped
        self.ready = False
        self.waiting = False  # ready, but none of its workers is about to be free
        self.offered: int | None = None  # a shard: latest start last offered to the matcher
        self.batch = 0  # the candidate's batch size
        self.latest_ns = 0  # the candidate's latest start
        self.timer_at: int | None = None  # the pending t_ready timer, if any
        self.watch_ns = NEVER  # a shard: recompute once a pool's earliest free_at passes this
        self.watch_seq = 0  # a shard: when the watch was set (orders watches that fire together)
        self.floor = 1  # cached shed floor
        self.floor_at = 0  # when it was computed
        self.floor_prof: Profile | None = None  # from which profile
        self.last_dispatch_ns = 0  # when it last got a batch (0: never)
        self.share, self.share_epoch = 0.0, -1  # its fair share of workers, and when


def fit(profile: Profile, avail_ns: int) -> int:
    """The largest ``b >= 0`` with ``profile.latency_ns(b) <= avail_ns`` (no max_batch cap)."""
    if avail_ns < profile.latency_ns(1):
        return 0
    return max(1, (avail_ns - profile.c_ns) // profile.k_ns)


def pool_share(pools: list[WorkerPool]) -> float:
    """A model's fair share of the workers of ``pools``: a pool serving j models counts
    1/j per worker (summed in the pools' order: the same float everywhere)."""
    return sum(len(p) / len(p.models) for p in pools)


class CandidateRules(ABC):
    """The per-model rules; a policy or a shard subclasses it and supplies the hooks."""

    def __init__(self, config: PolicyConfig) -> None:
        self._cfg = config
        self._timers: list[tuple[int, str]] = []  # (t_ready, model)
        self._drops: dict[DropReason, list[int]] = {}
        self._floor_refresh_ns = max(1, config.rate_window_ns // _FLOOR_REFRESHES)

    # ------------------------------------------------------------- the hooks

    @abstractmethod
    def _earliest_view(self, m: ModelState) -> tuple[int, bool] | None:
        """The earliest free_at among ``m``'s workers and whether that worker is busy."""
        ...

    @abstractmethod
    def _n_workers(self, m: ModelState) -> int: ...

    @abstractmethod
    def _share(self, m: ModelState) -> float: ...

    @abstractmethod
    def _watch(self, m: ModelState, threshold: int) -> None: ...

    @abstractmethod
    def _reset_candidate(self, m: ModelState) -> None: ...

    # ------------------------------------------------------------- the rules

    def _drop(self, reason: DropReason, requests: list[Request]) -> None:
        if requests:
            self._drops.setdefault(reason, []).extend(r.request_id for r in requests)

    def _estimator(self, name: str, offered: Profile | None) -> ProfileEstimator | None:
        """The estimator for ``name``: the configured profile, else the worker's own made
        usable (a worker's measurement may be degenerate: k <= 0 on CPU CNNs)."""
        cfg = self._cfg
        profile = cfg.profiles.get(name) or offered
        if profile is None:
            return None
        profile = Profile(max(1, profile.k_ns), profile.c_ns, max(1, profile.max_batch))
        return ProfileEstimator(
            profile,
            window=cfg.refit_window,
            percentile=cfg.margin_percentile,
            refit=cfg.refit,
            late_window=cfg.stall_window,
        )

    def _recompute(self, m: ModelState, now: int) -> bool:
        """Refresh ``m``'s candidate, dropping doomed heads; True when it is ready."""
        self._reset_candidate(m)
        queue = m.queue
        if not queue or m.est is None:
            return False
        view = self._earliest_view(m)
        if view is None:  # unreachable: a model that loses its last worker is emptied
            self._drop(DropReason.NO_WORKER, queue.clear())
            return False
        free_at, busy = view
        cfg = self._cfg
        prof = m.est.current()
        k, c = prof.k_ns, prof.c_ns  # l(b) = max(k b + c, k) (k >= 1): latency_ns, inlined
        margin = self._margin(m)
        after = cfg.reply_cost_ns + margin  # what must follow the batch's end
        # A busy worker's last batch may overrun as much as ours: plan its end late too.
        start = max(now + cfg.dispatch_cost_ns, free_at + (margin if busy else 0))
        # Doomed: it cannot make it even with no margin. The margin sizes batches and
        # places the deferral point; a request only it rules out still has a chance.
        start0 = max(now + cfg.dispatch_cost_ns, free_at)
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
            start = max(now + cfg.dispatch_cost_ns, free_at + (margin if busy else 0))
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
        by_deadline = fit(prof, deadline - start - after)
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

    def _worth_waiting(self, m: ModelState, now: int, prof: Profile, batch: int) -> bool:
        """Deferral bets the head on the timer; it pays only when the load needs batches
        above ``batch``: not if ``batch`` carries ``defer_headroom`` x the arrival rate on
        ``m``'s fair share of workers (a pool serving j models counts 1/j per worker)."""
        headroom = self._cfg.defer_headroom
        if headroom <= 0.0:
            return True
        return headroom * m.load.rate_per_ns(now) * prof.latency_ns(batch) > self._share(m) * batch

    def _margin(self, m: ModelState) -> int:
        """The measured margin, capped at a fraction of the budget: uncapped, one overloaded
        stretch can push it past what any request affords, and then no batch runs, no new
        timing arrives and it never comes down (the cap keeps batches flowing)."""
        assert m.est is not None
        margin = m.est.margin_ns
        budget = m.load.budget_ns
        if budget is not None:
            margin = min(margin, int(self._cfg.max_margin_fraction * budget))
        return margin

    def _model_stats(self, m: ModelState, now: int, *, full: bool) -> ModelStats:
        """``m``'s stats: queue, workers, profile, margin, rate, budget, candidate; with
        ``full``, also its target batch and whether it waits for a worker (what the
        one-process policy knows beyond a shard)."""
        prof = m.est.current() if m.est is not None else None
        budget = m.load.budget_ns
        return ModelStats(
            queue=len(m.queue),
            workers=self._n_workers(m),
            k_ns=prof.k_ns if prof else None,
            c_ns=prof.c_ns if prof else None,
            max_batch=prof.max_batch if prof else None,
            margin_ns=self._margin(m) if m.est is not None else 0,
            rate_rps=m.load.rate_per_ns(now) * 1e9,
            budget_ns=round(budget) if budget is not None else None,
            target_batch=(self._target(m, now, prof) if prof else 0) if full else None,
            candidate_batch=m.batch,
            ready=m.ready,
            waiting=m.waiting if full else None,
        )

    def margin_of(self, name: str, models: dict[str, ModelState]) -> int:
        """``name``'s margin now, 0 when it has no profile (the overdue bump's)."""
        m = models.get(name)
        return self._margin(m) if m is not None and m.est is not None else 0

    def _target(self, m: ModelState, now: int, prof: Profile) -> int:
        """Target batch from the measured rate and typical budget (``bound.target_batch``)."""
        budget = m.load.budget_ns
        if budget is None or m.est is None:
            return 0
        cfg = self._cfg
        overheads = cfg.dispatch_cost_ns + cfg.reply_cost_ns + cfg.timer_slack_ns
        return target_batch(
            prof,
            rate_per_ns=m.load.rate_per_ns(now),
            n_workers=self._n_workers(m),
            budget_ns=budget - overheads - self._margin(m),
        )

    def _floor(self, m: ModelState, now: int, prof: Profile) -> int:
        """``m``'s shed floor, cached: the rate and budget it rests on move slowly."""
        if prof is not m.floor_prof or now - m.floor_at >= self._floor_refresh_ns:
            m.floor = shed_floor(prof, self._target(m, now, prof), self._cfg.shed_fraction)
            m.floor_prof, m.floor_at = prof, now
        return m.floor
