"""Baseline ``nexus``: squishy bin packing with duty cycles (Nexus, Shen et al., SOSP'19).

Theory of operation. Nexus splits scheduling between a global planner, frontends and
backends; this policy plays all three on metadata.

* **Plan** (every ``replan_interval_ns`` of scheduler time while requests are queued,
  at the first arrival after a quiet spell, at the first arrival of a model the plan
  does not know, when a model's measured rate exceeds the planned one by
  ``surge_factor``, and at once after a worker joins or is lost). Each model with a profile,
  live workers and some load becomes a demand: its measured rate ``r`` and its typical
  budget ``B`` (SLO less ``D + R + T`` and its margin). ``packing.py`` turns demands into
  saturated GPUs (``2 l(b) <= B``, back to back) and residual shares (``l(b) + b/r <=
  B``, duty cycle ``d = b/r``), packed best-fit-decreasing onto as few GPUs as fit.
  Bins are bound to workers that serve the model, a model's previous workers first, so
  a steady plan keeps its queues where they are.
* **Route** (Nexus's frontends): an arrival goes to one of its model's GPUs by weighted
  round-robin (stride scheduling, weight = the share's planned rate) and waits in that
  GPU's own queue for the model, in deadline order.
* **Run** (Nexus's backends): each GPU repeats its cycle: once per ``d`` it runs one batch
  of at most ``b_i`` for each of its models, in plan order, back to back (the decision
  for a slot is made ``D`` before the slot can start). A slot whose queue is empty is
  skipped; the next cycle starts ``d`` after this one started (later when batches overran).
  A GPU with nothing queued sleeps and, when work comes, starts at its next cycle
  boundary: a request waits for its model's slot, as in Nexus.
* **Slot growth** (our addition, §11 of ``docs/policy.md``): a slot whose queue holds more
  than its planned batch may run up to what the cycle's idle time (duty less every
  slot's planned busy time) allows, so the cycle still ends on time.
* **Early drop** (Nexus §6.3): at a slot, heads that would miss their deadline in a batch
  of ``min(queue, b_i)`` started now are dropped (``DEADLINE``) until the head fits.

Simplifications, all documented in ``docs/policy.md`` §10: the plan uses the whole
cluster as one pool of GPUs with model-set constraints, not Nexus's per-application
sessions and query analysis; without ``fill_spare`` the GPUs the plan does not need
idle (Nexus would release them), with it (the default) every demand is scaled by the
largest factor (up to ``max_headroom``) whose plan still fits the live workers, so the
spare GPUs become headroom; a plan that needs more GPUs than there are keeps every model
on at least one GPU and lets early drop shed the excess; a re-plan moves queued requests
of a model a GPU no longer runs to the model's new GPUs.

Cost: an arrival is a stride-heap step and a queue append, O(log n); a slot is O(batch +
drops); a re-plan is O(models^2 + workers) and runs about once a second.
Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import bisect
import heapq
from dataclasses import dataclass, replace

from central.policy.baselines.common import (
    BaselineModel,
    BaselinePolicy,
    BaselineWorker,
    check,
    is_int,
)
from central.policy.baselines.packing import Bin, Demand, Share, gpus_needed, split_demand
from central.policy.config import PolicyConfig
from central.policy.queues import DeadlineQueue
from central.policy.stats import NexusPlan, PolicySnapshot
from central.policy.types import DropReason, Request

__all__ = ["NexusConfig", "NexusPolicy"]

_SEARCH_STEPS = 12  # bisection steps for the headroom factor


@dataclass(frozen=True, slots=True)
class NexusConfig:
    """Knobs of the ``nexus`` baseline; ``ValueError`` on construction when out of range."""

    # How often the plan is redone from the measured rates, in scheduler time.
    replan_interval_ns: int = 1_000_000_000
    # Scale every demand up until the plan fills the live workers (spare GPUs as headroom).
    fill_spare: bool = True
    # The largest scale factor ``fill_spare`` may use.
    max_headroom: float = 64.0
    # A model with nothing queued and a lower rate than this is left out of the plan.
    min_rate_rps: float = 0.1
    # Re-plan early when a model's measured rate exceeds the rate its plan assumed by this
    # factor (a load surge, or the first second of a model's life); 0 turns it off.
    surge_factor: float = 1.25
    # ... but never sooner than this after the previous plan.
    min_replan_gap_ns: int = 10_000_000

    def __post_init__(self) -> None:
        number = (int, float)
        check(is_int(self.replan_interval_ns, 1), "replan_interval_ns", "an int >= 1",
              self.replan_interval_ns)  # fmt: skip
        check(isinstance(self.fill_spare, bool), "fill_spare", "a bool", self.fill_spare)
        ok = isinstance(self.max_headroom, number) and self.max_headroom >= 1.0
        check(ok, "max_headroom", ">= 1", self.max_headroom)
        ok = isinstance(self.min_rate_rps, number) and self.min_rate_rps >= 0.0
        check(ok, "min_rate_rps", ">= 0", self.min_rate_rps)
        ok = isinstance(self.surge_factor, number) and (self.surge_factor == 0 or self.surge_factor >= 1.0)
        check(ok, "surge_factor", "0 or >= 1", self.surge_factor)
        check(is_int(self.min_replan_gap_ns, 0), "min_replan_gap_ns", "an int >= 0",
              self.min_replan_gap_ns)  # fmt: skip


class _Model(BaselineModel):
    __slots__ = ("routes", "strides", "n_queued", "planned", "gpus", "plan_rate")

    def __init__(self, name: str, rate_window_ns: int) -> None:
        super().__init__(name, rate_window_ns)
        self.routes: list[tuple[float, int, int]] = []  # stride heap: (pass, order, wid)
        self.strides: dict[int, float] = {}  # wid -> 1 / planned rate of its share
        self.n_queued = 0
        self.planned = False  # considered by the last plan
        self.plan_rate = 0.0  # the measured rate (per ns) the last plan assumed
        self.gpus: list[int] = []  # workers that held it in the last plan, preferred next

    def queued(self) -> int:
        return self.n_queued


class _Worker(BaselineWorker):
    __slots__ = (
        "model_set", "duty", "slots", "queues", "queued", "cycle_at", "slot", "timer_at",
        "dormant",
    )  # fmt: skip

    def __init__(self, wid: int, free_at: int) -> None:
        super().__init__(wid, free_at)
        self.model_set: frozenset[str] = frozenset()
        self.duty = 0  # cycle length; 0: no plan for it
        self.slots: list[tuple[str, int]] = []  # (model, batch) per cycle, in order
        self.queues: dict[str, DeadlineQueue] = {}
        self.queued = 0
        self.cycle_at = free_at  # start of the current cycle (the next, when slot == 0)
        self.slot = 0  # next slot of the current cycle; len(slots): the cycle is over
        self.timer_at: int | None = None  # when the next slot decision is due
        self.dormant = True  # nothing queued: no timer until work comes


class NexusPolicy(BaselinePolicy):
    """Nexus-style duty cycles; see the module docstring."""

    def __init__(self, config: PolicyConfig | None = None, options: NexusConfig | None = None):
        super().__init__(config)
        self._opt = options if options is not None else NexusConfig()
        self._m: dict[str, _Model] = {}  # the same objects as _models, typed
        self._w: dict[int, _Worker] = {}  # the same objects as _workers, typed
        self._serving: dict[str, list[int]] = {}  # model -> sorted live worker ids
        self._timers: list[tuple[int, int]] = []  # (decision time, worker id), lazy
        self._touched: dict[int, None] = {}  # workers whose next slot must be looked at
        self._replan_at: int | None = None  # None: never planned
        self._planned_at = 0  # when the last plan was made
        self._has_plan = False  # the last plan routes some model somewhere
        self._stale = False  # membership changed: re-plan now
        self._orphans: list[Request] = []  # queued on a lost worker: route again
        self._queued_total = 0
        self._headroom = 1.0
        self._replans = 0

    # ------------------------------------------------------------- interface

    def next_wakeup_ns(self) -> int | None:
        """The next slot decision of a GPU with work, or the re-plan while work is queued."""
        timers, workers = self._timers, self._w
        while timers:
            t, wid = timers[0]
            w = workers[wid]
            if w.alive and w.timer_at == t:
                break
            heapq.heappop(timers)
        wake = timers[0][0] if timers else None
        if self._queued_total and self._replan_at is not None and (wake is None or self._replan_at < wake):
            wake = self._replan_at
        return wake

    def snapshot(self) -> PolicySnapshot:
        """The common snapshot plus the plan: per worker cycle and slots, per model GPUs."""
        snap = super().snapshot()
        models, workers = self._m, self._w
        return replace(
            snap,
            models={
                name: replace(info, planned=models[name].planned, gpus=len(models[name].strides))
                for name, info in snap.models.items()
            },
            workers={
                wid: replace(
                    info,
                    duty_ns=workers[wid].duty,
                    slots=tuple(workers[wid].slots),
                    queued=workers[wid].queued,
                )
                for wid, info in snap.workers.items()
            },
            plan=NexusPlan(replans=self._replans, headroom=self._headroom, replan_at_ns=self._replan_at),
        )

    # ----------------------------------------------------------------- hooks

    def _new_model(self, name: str) -> BaselineModel:
        m = self._m[name] = _Model(name, self._cfg.rate_window_ns)
        return m

    def _new_worker(self, wid: int, now: int) -> BaselineWorker:
        w = self._w[wid] = _Worker(wid, now)
        return w

    def _arrivals(self, admitted: list[tuple[BaselineModel, Request]], now: int) -> None:
        if (
            self._stale
            or self._replan_at is None
            or now >= self._replan_at
            or any(not self._m[m.name].planned for m, _ in admitted)
            or self._surging({m.name for m, _ in admitted}, now)
        ):
            self._replan(now, {m.name for m, _ in admitted})
        for m, r in admitted:
            self._route(self._m[m.name], r, now)

    def _freed(self, w: BaselineWorker, model: BaselineModel, now: int) -> None:
        if w.alive and not self._w[w.wid].dormant:
            self._touched[w.wid] = None  # its next slot moves with free_at

    def _joined(self, worker: BaselineWorker, old: tuple[str, ...], now: int) -> None:
        w = self._w[worker.wid]
        for name in old:
            self._serving[name].remove(w.wid)
        for name in w.models:
            bisect.insort(self._serving.setdefault(name, []), w.wid)
        w.model_set = frozenset(w.models)
        self._stale = True

    def _lost(self, worker: BaselineWorker, old: tuple[str, ...], now: int) -> None:
        w = self._w[worker.wid]
        for name in old:
            self._serving[name].remove(w.wid)
        for name in list(w.queues):
            self._orphans.extend(self._take_queue(w, name))
        w.timer_at = None
        self._stale = True

    def _advance(self, now: int) -> None:
        timers, workers = self._timers, self._w
        while timers and timers[0][0] <= now:
            t, wid = heapq.heappop(timers)
            w = workers[wid]
            if w.alive and w.timer_at == t:
                w.timer_at = None
                self._touched[wid] = None
        # A membership change re-plans at once when there is a plan or work to move (not
        # while a cluster is still joining, idle: that would cost O(workers) per join).
        if (self._stale and (self._queued_total or self._orphans or self._has_plan)) or (
            self._queued_total and self._replan_at is not None and now >= self._replan_at
        ):
            self._replan(now, set())
        while self._touched:
            wid = next(iter(self._touched))
            del self._touched[wid]
            self._run(workers[wid], now)

    # ------------------------------------------------------------------- run

    def _route(self, m: _Model, r: Request, now: int) -> None:
        """Send ``r`` to one of its model's GPUs (weighted round-robin) or drop it."""
        if not m.routes:
            reason = DropReason.DEADLINE if m.n_workers else DropReason.NO_WORKER
            self._drop(reason, [r])  # no worker, or a budget not even l(1) fits
            return
        passed, order, wid = heapq.heappop(m.routes)
        heapq.heappush(m.routes, (passed + m.strides[wid], order, wid))
        w = self._w[wid]
        queue = w.queues.get(m.name)
        if queue is None:
            queue = w.queues[m.name] = DeadlineQueue()
        queue.push(r)
        w.queued += 1
        m.n_queued += 1
        self._queued_total += 1
        if w.dormant:
            w.dormant = False
            if w.duty:  # start at the next cycle boundary the dispatch can still make
                ahead = now + self._cfg.dispatch_cost_ns - w.cycle_at
                w.cycle_at += max(1, -(-ahead // w.duty)) * w.duty
                w.slot = 0
            self._touched[wid] = None

    def _arm(self, w: _Worker, at: int) -> None:
        if w.timer_at != at:
            w.timer_at = at
            heapq.heappush(self._timers, (at, w.wid))
            if len(self._timers) > 4 * len(self._w) + 64:
                self._timers = [
                    (x.timer_at, x.wid) for x in self._w.values() if x.alive and x.timer_at is not None
                ]
                heapq.heapify(self._timers)

    def _run(self, w: _Worker, now: int) -> None:
        """Decide every slot of ``w`` that is due by ``now``; arm a timer for the next."""
        cost = self._cfg.dispatch_cost_ns
        while w.alive:
            if not w.queued or not w.slots:
                w.timer_at, w.dormant, w.slot = None, True, len(w.slots)
                return
            if w.slot >= len(w.slots):
                w.cycle_at += w.duty
                w.slot = 0
            start = max(w.cycle_at, w.free_at) if w.slot == 0 else w.free_at
            if start - cost > now:
                self._arm(w, start - cost)
                return
            if w.slot == 0:
                w.cycle_at = max(start, now + cost)  # a late cycle slides the grid
            name, cap = w.slots[w.slot]
            w.slot += 1
            queue = w.queues.get(name)
            if queue:
                self._fire(w, name, cap, queue, now)

    def _fire(self, w: _Worker, name: str, cap: int, queue: DeadlineQueue, now: int) -> None:
        """One slot: early-drop the heads a batch of ``min(queue, cap)`` would fail, run it."""
        m = self._m[name]
        assert m.est is not None
        prof = m.est.current()
        after = self._after(m)
        earliest = max(now + self._cfg.dispatch_cost_ns, w.free_at)
        # A slot may grow into its cycle's idle time (duty less every slot's planned
        # batch): the cycle still ends on time, so no other slot is delayed. Without it a
        # low-rate share (b = 1, long cycle) drops every second Poisson arrival of a cycle.
        idle = w.duty - sum(
            est.current().latency_ns(b) for n, b in w.slots if (est := self._m[n].est) is not None
        )
        if idle > 0 and len(queue) > cap:
            cap = min(prof.max_batch, max(cap, (prof.latency_ns(cap) + idle - prof.c_ns) // prof.k_ns))
        taken = 0
        while queue:
            n = min(len(queue), cap)
            if earliest + prof.latency_ns(n) + after <= queue.deadline_at(0):
                break
            self._drop(DropReason.DEADLINE, queue.pop_front(1))
            taken += 1
        if queue:
            n = min(len(queue), cap)
            latest = queue.deadline_at(0) - after - prof.latency_ns(n)
            batch = queue.pop_front(n)
            taken += n
            self._dispatch(m, w, batch, now, latest)
        w.queued -= taken
        m.n_queued -= taken
        self._queued_total -= taken

    def _take_queue(self, w: _Worker, name: str) -> list[Request]:
        requests = w.queues.pop(name).clear()
        m = self._m[name]
        w.queued -= len(requests)
        m.n_queued -= len(requests)
        self._queued_total -= len(requests)
        return requests

    # ------------------------------------------------------------------ plan

    def _demands(self, now: int, include: set[str]) -> list[Demand]:
        cfg = self._cfg
        overheads = cfg.dispatch_cost_ns + cfg.reply_cost_ns + cfg.timer_slack_ns
        demands: list[Demand] = []
        for m in self._m.values():
            m.planned = False
            if m.est is None or not m.n_workers or m.load.budget_ns is None:
                continue
            rate = m.load.rate_per_ns(now)
            if not (m.n_queued or m.name in include or rate * 1e9 >= self._opt.min_rate_rps):
                continue
            m.planned = True
            m.plan_rate = rate
            budget = int(m.load.budget_ns) - overheads - self._margin(m)
            demands.append(Demand(m.name, m.est.current(), max(rate, 1e-12), budget))
        return demands

    def _surging(self, names: set[str], now: int) -> bool:
        """True when one of ``names`` now arrives ``surge_factor`` faster than planned."""
        surge = self._opt.surge_factor
        if not surge or now - self._planned_at < self._opt.min_replan_gap_ns:
            return False
        models = self._m
        return any(models[n].load.rate_per_ns(now) > surge * models[n].plan_rate for n in names)

    def _replan(self, now: int, include: set[str]) -> None:
        self._stale = False
        self._replan_at = now + self._opt.replan_interval_ns
        self._planned_at = now
        self._replans += 1
        demands = self._demands(now, include | {r.model for r in self._orphans})
        scale = 1.0
        live = sum(1 for w in self._workers.values() if w.alive and w.models)
        if self._opt.fill_spare and demands and gpus_needed(demands) <= live:

            def fits(s: float) -> bool:
                return gpus_needed([_scaled(d, s) for d in demands]) <= live

            lo, hi = 1.0, float(self._opt.max_headroom)
            if fits(hi):
                lo = hi
            else:
                for _ in range(_SEARCH_STEPS):
                    mid = (lo + hi) / 2
                    lo, hi = (mid, hi) if fits(mid) else (lo, mid)
            scale = lo
        self._headroom = scale
        bins = self._assign([_scaled(d, scale) for d in demands])
        self._has_plan = bool(bins)
        self._install(bins, now)

    def _assign(self, demands: list[Demand]) -> dict[int, Bin]:
        """Bind the plan's bins to workers that serve their models (see module doc)."""
        bins: dict[int, Bin] = {}
        taken: set[int] = set()
        held: dict[str, int] = {d.model: 0 for d in demands}
        cursors: dict[str, list[int]] = {d.model: [0, 0] for d in demands}
        residuals: list[Share] = []
        splits = [split_demand(d) for d in demands]
        for d, split in zip(demands, splits):
            sats = [split.saturated] * split.n_saturated if split.saturated else []
            if split.residual is not None:
                (sats if split.residual.saturated else residuals).append(split.residual)
            for share in sats:
                wid = self._take(d.model, taken, cursors[d.model])
                if wid is None:
                    break  # out of GPUs: the model's other shares carry its load
                bins[wid] = Bin(share)
                held[d.model] += 1
        open_bins: list[int] = []
        for share in sorted(residuals, key=lambda s: (-s.occupancy, s.model)):
            best: tuple[float, int, int, int] | None = None
            for wid in open_bins:
                b = bins[wid]
                if b.full or share.model not in self._w[wid].model_set:
                    continue
                duty, busy = b.merged(share)
                if busy <= duty and (best is None or busy / duty > best[0]):
                    best = (busy / duty, duty, busy, wid)
            if best is not None:
                bins[best[3]].add(share, best[1], best[2])
                held[share.model] += 1
                continue
            wid = self._take(share.model, taken, cursors[share.model])
            if wid is not None:
                bins[wid] = Bin(share)
                open_bins.append(wid)
                held[share.model] += 1
        for d, split in zip(demands, splits):
            maybe = split.saturated or split.residual
            if held[d.model] or maybe is None:
                continue
            share = maybe
            # No free worker is left for it: overcommit the least busy GPU that serves it.
            target = min(
                (
                    (b.busy_ns / b.duty_ns, wid)
                    for wid, b in bins.items()
                    if d.model in self._w[wid].model_set
                ),
                default=None,
            )
            if target is not None:
                b = bins[target[1]]
                b.add(share, *b.merged(share))
        return bins

    def _take(self, model: str, taken: set[int], cursor: list[int]) -> int | None:
        """A free worker for ``model``: one that held it last time first, else the lowest id."""
        m = self._m[model]
        for which, ids in ((0, m.gpus), (1, self._serving.get(model, []))):
            i = cursor[which]
            while i < len(ids):
                wid = ids[i]
                i += 1
                w = self._w[wid]
                if wid not in taken and w.alive and model in w.model_set:
                    cursor[which] = i
                    taken.add(wid)
                    return wid
            cursor[which] = i
        return None

    def _install(self, bins: dict[int, Bin], now: int) -> None:
        """Make ``bins`` the running plan: routes, cycles, and queues that must move."""
        weights: dict[str, dict[int, float]] = {}
        for wid, b in bins.items():
            for share in b.shares:
                per = weights.setdefault(share.model, {})
                per[wid] = per.get(wid, 0.0) + share.rate_per_ns
        for m in self._m.values():
            per = weights.get(m.name, {})
            m.strides = {wid: 1.0 / rate for wid, rate in per.items()}
            m.routes = [(0.0, order, wid) for order, wid in enumerate(per)]
            m.gpus = list(per)
        cost = self._cfg.dispatch_cost_ns
        moved: list[Request] = self._orphans
        self._orphans = []
        for wid, w in self._w.items():
            if not w.alive:
                continue
            got = bins.get(wid)
            duty, slots = (got.duty_ns, got.slots()) if got is not None else (0, [])
            if duty == w.duty and slots == w.slots:
                continue
            # The new cycle begins where the current one would have ended.
            if not w.duty:
                boundary = now + cost
            elif w.slot == 0 and not w.dormant:
                boundary = w.cycle_at
            else:
                boundary = w.cycle_at + w.duty
            w.duty, w.slots = duty, slots
            w.cycle_at, w.slot = boundary - duty, len(slots)
            keep = {name for name, _ in slots}
            for name in [name for name in w.queues if name not in keep]:
                moved.extend(self._take_queue(w, name))
            self._touched[wid] = None
        moved.sort(key=lambda r: (r.deadline_ns, r.request_id))
        for r in moved:
            self._route(self._m[r.model], r, now)


def _scaled(demand: Demand, scale: float) -> Demand:
    if scale == 1.0:
        return demand
    return Demand(demand.model, demand.profile, demand.rate_per_ns * scale, demand.budget_ns)
