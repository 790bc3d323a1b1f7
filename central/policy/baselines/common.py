"""What every baseline policy shares: the event loop skeleton, profiles, worker timelines.

Theory of operation. The baselines differ in *how* they batch and route, not in how they
learn profiles, track workers or answer the driver, so that part lives here, once, and
behaves exactly like the default policy's (``scheduler.py``):

* ``handle(event, now_ns)`` refuses time going backwards, routes the event to a hook
  (``_arrivals``, ``_freed``, ``_joined``, ``_lost``), lets the subclass decide in
  ``_advance`` and returns the drops first, then the dispatches, in decision order.
* A model's profile comes from ``PolicyConfig.profiles`` or the first ``WorkerJoined`` that
  offers one (``k <= 0`` clamped to 1 ns) and is refit online from ``OK`` batches by a
  ``ProfileEstimator``; its margin ``M`` is the measured one capped at
  ``max_margin_fraction`` of the typical budget. A request for a model nobody serves, or
  with no profile, is dropped ``UNKNOWN_MODEL``; one whose workers are all gone,
  ``NO_WORKER``.
* A worker runs its batches in order, each starting at ``max(earliest, previous end)``;
  ``free_at`` is the predicted end of its last batch. ``BatchDone`` (any status) retires
  that batch and those before it and recomputes ``free_at`` from the reported end, so an
  early or late finish moves every later prediction. ``WorkerLost`` forgets its batches.

Nothing here reads a clock or does I/O; every time is an integer nanosecond handed in.
"""

from __future__ import annotations

import abc
import collections

from central.policy.config import PolicyConfig
from central.policy.profile import LoadEstimator, ProfileEstimator
from central.policy.stats import ModelStats, PolicySnapshot, WorkerStats
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

__all__ = ["BaselineModel", "BaselinePolicy", "BaselineWorker", "check", "fit_batch", "is_int"]


def is_int(value: object, lowest: int) -> bool:
    """True for a real int (not a bool) that is at least ``lowest``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= lowest


def check(ok: bool, name: str, want: str, value: object) -> None:
    """Raise ``ValueError`` naming the config field ``name`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{name} must be {want}, got {value!r}")


def fit_batch(profile: Profile, avail_ns: int) -> int:
    """The largest ``b >= 0`` with ``profile.latency_ns(b) <= avail_ns`` (no max_batch cap)."""
    if avail_ns < profile.latency_ns(1):
        return 0
    return max(1, (avail_ns - profile.c_ns) // profile.k_ns)


class BaselineModel:
    """What a baseline knows about one model (subclasses add their queues)."""

    __slots__ = ("name", "est", "load", "n_workers")

    def __init__(self, name: str, rate_window_ns: int) -> None:
        self.name = name
        self.est: ProfileEstimator | None = None  # None: no profile yet, unschedulable
        self.load = LoadEstimator(rate_window_ns)
        self.n_workers = 0  # live workers serving it

    def queued(self) -> int:
        """Requests of this model the policy holds (subclasses override)."""
        return 0


class BaselineWorker:
    """What a baseline tracks about one worker (subclasses add their own fields)."""

    __slots__ = ("wid", "models", "alive", "free_at", "timeline")

    def __init__(self, wid: int, free_at: int) -> None:
        self.wid = wid
        self.models: tuple[str, ...] = ()  # sorted
        self.alive = True
        self.free_at = free_at  # predicted end of its last dispatched batch
        self.timeline: collections.deque[int] = collections.deque()  # batch ids, in order


class _Batch:
    __slots__ = ("model", "worker", "earliest", "expected")

    def __init__(self, model: str, worker: int, earliest: int, expected: int) -> None:
        self.model = model
        self.worker = worker
        self.earliest = earliest
        self.expected = expected


class BaselinePolicy(abc.ABC):
    """Skeleton of a sans-I/O baseline; subclasses fill in the hooks."""

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self._cfg = config if config is not None else PolicyConfig()
        self._models: dict[str, BaselineModel] = {}
        self._workers: dict[int, BaselineWorker] = {}
        self._inflight: dict[int, _Batch] = {}
        self._next_batch_id = self._cfg.first_batch_id
        self._now: int | None = None
        self._drops: dict[DropReason, list[int]] = {}
        self._out: list[Action] = []

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
            self._on_lost(event.worker_id, now_ns)
        elif not isinstance(event, Tick):
            raise TypeError(f"not a policy event: {event!r}")
        self._advance(now_ns)
        actions: list[Action] = [Drop(tuple(ids), reason) for reason, ids in self._drops.items() if ids]
        self._drops.clear()
        actions.extend(self._out)
        self._out = []
        return actions

    @abc.abstractmethod
    def next_wakeup_ns(self) -> int | None:
        """When the policy next needs a ``Tick``; ``None`` when nothing is pending."""

    def snapshot(self) -> PolicySnapshot:
        """Stats (``stats.py``): per model queue/profile/rate, per worker its timeline;
        subclasses add their own optional fields."""
        now = self._now if self._now is not None else 0
        models: dict[str, ModelStats] = {}
        for name, m in self._models.items():
            prof = m.est.current() if m.est is not None else None
            budget = m.load.budget_ns
            models[name] = ModelStats(
                queue=m.queued(),
                workers=m.n_workers,
                k_ns=prof.k_ns if prof else None,
                c_ns=prof.c_ns if prof else None,
                max_batch=prof.max_batch if prof else None,
                margin_ns=self._margin(m) if m.est is not None else 0,
                rate_rps=m.load.rate_per_ns(now) * 1e9,
                budget_ns=round(budget) if budget is not None else None,
            )
        workers = {
            wid: WorkerStats(
                alive=w.alive,
                models=w.models,
                free_at_ns=w.free_at,
                busy=w.alive and w.free_at > now,
                inflight=len(w.timeline),
            )
            for wid, w in self._workers.items()
        }
        return PolicySnapshot(
            now_ns=self._now,
            models=models,
            workers=workers,
            inflight_batches=len(self._inflight),
            next_wakeup_ns=self.next_wakeup_ns(),
        )

    # ----------------------------------------------------------------- hooks

    def _new_model(self, name: str) -> BaselineModel:
        return BaselineModel(name, self._cfg.rate_window_ns)

    def _new_worker(self, wid: int, now: int) -> BaselineWorker:
        return BaselineWorker(wid, now)

    @abc.abstractmethod
    def _arrivals(self, admitted: list[tuple[BaselineModel, Request]], now: int) -> None:
        """Subclass hook."""

    @abc.abstractmethod
    def _freed(self, w: BaselineWorker, model: BaselineModel, now: int) -> None:
        """``w``'s ``free_at`` was recomputed after a ``BatchDone`` of ``model``."""

    @abc.abstractmethod
    def _joined(self, w: BaselineWorker, old: tuple[str, ...], now: int) -> None:
        """``w`` now serves ``w.models`` (it served ``old`` before; () when new)."""

    @abc.abstractmethod
    def _lost(self, w: BaselineWorker, old: tuple[str, ...], now: int) -> None:
        """``w`` (which served ``old``) is gone; its batches are already forgotten."""

    @abc.abstractmethod
    def _advance(self, now: int) -> None:
        """Decide: fire due timers, form and dispatch batches (into ``self._out``)."""

    # ---------------------------------------------------------------- events

    def _drop(self, reason: DropReason, requests: list[Request]) -> None:
        if requests:
            self._drops.setdefault(reason, []).extend(r.request_id for r in requests)

    def _on_arrivals(self, requests: tuple[Request, ...], now: int) -> None:
        admitted: list[tuple[BaselineModel, Request]] = []
        models = self._models
        for r in requests:
            m = models.get(r.model)
            if m is None or m.est is None:
                self._drop(DropReason.UNKNOWN_MODEL, [r])
            elif not m.n_workers:
                self._drop(DropReason.NO_WORKER, [r])
            else:
                m.load.arrived(now, r.deadline_ns - r.arrival_ns)
                admitted.append((m, r))
        if admitted:
            self._arrivals(admitted, now)

    def _on_done(self, ev: BatchDone, now: int) -> None:
        batch = self._inflight.pop(ev.batch_id, None)
        if batch is None:
            return  # unknown, or its worker was declared lost: nothing to update
        m = self._models[batch.model]
        ok = ev.status == BatchStatus.OK and ev.batch_size >= 1 and ev.end_ns >= ev.start_ns
        if ok and m.est is not None:
            m.est.observe(ev.batch_size, ev.end_ns - ev.start_ns)
        w = self._workers[batch.worker]
        timeline = w.timeline
        while timeline:  # the worker runs batches in order: those before it are over
            bid = timeline.popleft()
            if bid == ev.batch_id:
                break
            self._inflight.pop(bid, None)
        free_at = ev.end_ns
        for bid in timeline:
            later = self._inflight[bid]
            free_at = max(free_at, later.earliest) + later.expected
        w.free_at = free_at
        self._freed(w, m, now)

    def _on_joined(self, ev: WorkerJoined, now: int) -> None:
        w = self._workers.get(ev.worker_id)
        if w is None or not w.alive:
            w = self._workers[ev.worker_id] = self._new_worker(ev.worker_id, now)
        offered = dict(ev.profiles)
        cfg = self._cfg
        for name in ev.models:
            m = self._models.get(name)
            if m is None:
                m = self._models[name] = self._new_model(name)
            profile = cfg.profiles.get(name) or offered.get(name)
            if m.est is None and profile is not None:
                # A worker's own measurement may be degenerate (k <= 0 on CPU CNNs).
                profile = Profile(max(1, profile.k_ns), profile.c_ns, max(1, profile.max_batch))
                m.est = ProfileEstimator(
                    profile,
                    window=cfg.refit_window,
                    percentile=cfg.margin_percentile,
                    refit=cfg.refit,
                    late_window=cfg.stall_window,
                )
        key = tuple(sorted(set(ev.models)))
        old = w.models
        if old == key and old:
            return
        for name in key:
            self._models[name].n_workers += 1
        for name in old:
            self._models[name].n_workers -= 1
        w.models = key
        self._joined(w, old, now)

    def _on_lost(self, wid: int, now: int) -> None:
        w = self._workers.get(wid)
        if w is None or not w.alive:
            return
        w.alive = False
        for bid in w.timeline:
            self._inflight.pop(bid, None)
        w.timeline.clear()
        old, w.models = w.models, ()
        for name in old:
            self._models[name].n_workers -= 1
        self._lost(w, old, now)

    # ---------------------------------------------------------------- helpers

    def _margin(self, m: BaselineModel) -> int:
        """The measured margin, capped at a fraction of the typical budget (as symphony)."""
        assert m.est is not None
        margin = m.est.margin_ns
        budget = m.load.budget_ns
        if budget is not None:
            margin = min(margin, int(self._cfg.max_margin_fraction * budget))
        return margin

    def _after(self, m: BaselineModel) -> int:
        """What must follow a batch's end for its requests to be on time: ``R + M``."""
        return self._cfg.reply_cost_ns + self._margin(m)

    def _dispatch(
        self,
        m: BaselineModel,
        w: BaselineWorker,
        requests: list[Request],
        now: int,
        latest_ns: int,
    ) -> int:
        """Emit one Dispatch of ``requests`` (deadline order) on ``w``; return its batch id.

        ``earliest = max(now + D, free_at(w))``; ``w.free_at`` moves to
        ``earliest + l(b)``. The caller guarantees ``earliest <= latest_ns``.
        """
        assert m.est is not None and requests
        earliest = max(now + self._cfg.dispatch_cost_ns, w.free_at)
        assert earliest <= latest_ns, (earliest, latest_ns)
        expected = m.est.current().latency_ns(len(requests))
        batch_id = self._next_batch_id
        self._next_batch_id += 1
        self._inflight[batch_id] = _Batch(m.name, w.wid, earliest, expected)
        w.timeline.append(batch_id)
        self._out.append(
            Dispatch(
                batch_id=batch_id,
                model=m.name,
                worker_id=w.wid,
                request_ids=tuple(r.request_id for r in requests),
                earliest_ns=earliest,
                latest_ns=latest_ns,
                expected_ns=expected,
            )
        )
        w.free_at = earliest + expected
        return batch_id
