"""The baseline policies on virtual time: scenarios, invariants, and the side-by-side numbers.

A tiny discrete-event loop (``Sim``) drives any policy the way the runtime and the
simulator do: it feeds events at their times, follows ``next_wakeup_ns`` with ``Tick``s,
runs every Dispatch on an emulated GPU (``workers.gpu_model.EmulatedGpu``, the one rule
the simulator and the emulated executor obey too: in order, each starting at
``max(earliest, previous end)`` and taking exactly its profiled time, refused ``TOO_LATE``
after ``latest``) and checks on every action that nothing runs outside its window or
above ``max_batch`` and that every request ends exactly once. State is set up through
public events only.
"""

from __future__ import annotations

import ast
import heapq
import itertools
import json
import pathlib
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import central.policy.baselines as baselines_pkg
from central.policy import (
    Action,
    BatchDone,
    BatchStatus,
    Dispatch,
    Drop,
    DropReason,
    Event,
    ModelStats,
    PolicyConfig,
    PolicySnapshot,
    Profile,
    Request,
    RequestsArrived,
    Tick,
    WorkerJoined,
    WorkerLost,
    WorkerStats,
    analytic_bound,
    make_policy,
    policy_names,
)
from central.policy.base import Policy
from central.policy.baselines import (
    EagerPolicy,
    NexusConfig,
    NexusPolicy,
    UncoordinatedConfig,
    UncoordinatedPolicy,
)
from central.policy.baselines.packing import (
    Demand,
    batch_for_duty,
    count_bins,
    gpus_needed,
    saturated_batch,
    split_demand,
)
from workers.gpu_model import EmulatedGpu, linear_latency_ns

MS = 1_000_000
PROF = Profile(k_ns=1_082_000, c_ns=5_204_000, max_batch=64)
SLO = 25 * MS
D, R, T = 500_000, 300_000, 200_000  # PolicyConfig's default costs
BASELINES = ("uncoordinated", "eager", "nexus")


@dataclass
class Sim:
    """Drives one policy on virtual time and records what happened to every request."""

    policy: Policy
    truth: dict[str, Profile]  # how long batches really take, by model
    reply_ns: int = R
    on_step: Callable[[Sim], None] | None = None  # an extra check after every handle
    slowdown: Callable[[int], float] = lambda batch_id: 1.0  # noise on true durations
    now: int = 0
    _queue: list[tuple[int, int, Event]] = field(default_factory=list)
    _seq: int = 0
    requests: dict[int, Request] = field(default_factory=dict)
    outcome: dict[int, str] = field(default_factory=dict)  # id -> "ok" | "late" | reason
    dispatches: list[tuple[int, Dispatch]] = field(default_factory=list)  # (decided at, d)
    starts: list[tuple[int, int, int, str]] = field(default_factory=list)  # start, w, size, m
    drops: list[tuple[int, Drop]] = field(default_factory=list)
    refused: int = 0
    serves: dict[int, tuple[str, ...]] = field(default_factory=dict)  # live workers
    gpus: dict[int, EmulatedGpu] = field(default_factory=dict)  # workers.gpu_model's rule
    _epoch: dict[int, int] = field(default_factory=dict)  # bumps when a worker is lost
    _pending: dict[int, int] = field(default_factory=dict)  # batch id -> epoch

    def at(self, t: int, event: Event) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (t, self._seq, event))

    def arrive(self, t: int, rid: int, model: str = "m", budget: int = SLO) -> None:
        request = Request(rid, model, t + budget, t)
        self.requests[rid] = request
        self.at(t, RequestsArrived((request,)))

    def burst(self, t: int, rids: range, model: str = "m", budget: int = SLO) -> None:
        requests = tuple(Request(rid, model, t + budget, t) for rid in rids)
        for r in requests:
            self.requests[r.request_id] = r
        self.at(t, RequestsArrived(requests))

    def run(self, until: int | None = None, max_steps: int = 5_000_000) -> None:
        for _ in range(max_steps):
            wake = self.policy.next_wakeup_ns()
            assert wake is None or wake > self.now, "asked to wake up in the past"
            t_event = self._queue[0][0] if self._queue else None
            if t_event is not None and (wake is None or t_event <= wake):
                t = t_event
            elif wake is not None:
                t = wake
            else:
                return
            if until is not None and t > until:
                return
            if t_event == t:
                _, _, event = heapq.heappop(self._queue)
            else:
                event = Tick()
            self.step(t, event)
        raise AssertionError("the policy did not settle")

    def step(self, t: int, event: Event) -> list[Action]:
        if isinstance(event, BatchDone) and self._pending.pop(event.batch_id) != self._epoch.get(
            event.worker_id, 0
        ):
            return []  # the worker was lost meanwhile: its reports never come
        self.now = t
        if isinstance(event, WorkerJoined):
            self.serves[event.worker_id] = event.models
            self.gpus.setdefault(event.worker_id, EmulatedGpu(free_ns=t))
        elif isinstance(event, WorkerLost):
            self.serves.pop(event.worker_id, None)
            self._epoch[event.worker_id] = self._epoch.get(event.worker_id, 0) + 1
            self.gpus[event.worker_id] = EmulatedGpu(free_ns=t)
        actions = self.policy.handle(event, t)
        for action in actions:
            if isinstance(action, Dispatch):
                self._run_batch(action)
            else:
                self._record_drop(action)
        if self.on_step is not None:
            self.on_step(self)
        return actions

    def _end(self, rid: int, outcome: str) -> None:
        assert rid in self.requests, f"unknown request {rid}"
        assert rid not in self.outcome, f"request {rid} ended twice"
        self.outcome[rid] = outcome

    def _record_drop(self, drop: Drop) -> None:
        assert drop.request_ids
        self.drops.append((self.now, drop))
        for rid in drop.request_ids:
            self._end(rid, drop.reason.name)

    def _run_batch(self, d: Dispatch) -> None:
        truth = self.truth[d.model]
        assert self.now <= d.earliest_ns <= d.latest_ns, d  # never outside its window
        assert 1 <= len(d.request_ids) <= truth.max_batch, d
        assert d.model in self.serves.get(d.worker_id, ()), "worker does not serve it"
        deadlines = [self.requests[rid].deadline_ns for rid in d.request_ids]
        assert deadlines == sorted(deadlines), "head first, in deadline order"
        assert all(self.requests[rid].model == d.model for rid in d.request_ids)
        assert d.expected_ns >= 1
        self.dispatches.append((self.now, d))
        gpu = self.gpus[d.worker_id]  # the Execute is there at once: ready = now
        status, start = gpu.admit(d.earliest_ns, d.latest_ns, self.now)
        if status != BatchStatus.OK:
            self.refused += 1
            end = start
        else:
            size = len(d.request_ids)
            took = round(linear_latency_ns(truth.k_ns, truth.c_ns, size) * self.slowdown(d.batch_id))
            end = gpu.occupy(start, took)
            self.starts.append((start, d.worker_id, len(d.request_ids), d.model))
        for rid in d.request_ids:
            met = status == BatchStatus.OK and end + self.reply_ns <= self.requests[rid].deadline_ns
            self._end(rid, "ok" if met else "late")
        self._pending[d.batch_id] = self._epoch.get(d.worker_id, 0)
        self.at(end, BatchDone(d.batch_id, d.worker_id, status, start, end, len(d.request_ids)))

    def dispatched(self) -> list[Dispatch]:
        return [d for _, d in self.dispatches]

    def attainment(self) -> float:
        return sum(1 for v in self.outcome.values() if v == "ok") / len(self.requests)


def build(name: str, profiles: dict[str, Profile], options: Any = None, **config: Any) -> Policy:
    return make_policy(name, PolicyConfig(profiles=profiles, **config), options=options)


def make_sim(
    name: str,
    n_workers: int = 1,
    models: tuple[str, ...] = ("m",),
    profile: Profile = PROF,
    options: Any = None,
    **config: Any,
) -> Sim:
    profiles = dict.fromkeys(models, profile)
    sim = Sim(build(name, profiles, options, **config), dict(profiles))
    for w in range(n_workers):
        sim.step(0, WorkerJoined(w, models))
    return sim


def finish(sim: Sim) -> None:
    """Run to the end and check that everything ended exactly once and the policy is idle."""
    sim.run()
    assert set(sim.outcome) == set(sim.requests)
    assert sim.policy.next_wakeup_ns() is None
    json.dumps(sim.policy.snapshot().as_dict())


# ------------------------------------------------------------------ registry


def test_registry_names_and_default() -> None:
    assert set(policy_names()) == {"symphony", *BASELINES}
    assert type(make_policy()).__name__ == "SymphonyPolicy"
    assert isinstance(make_policy("uncoordinated"), UncoordinatedPolicy)
    assert isinstance(make_policy("eager"), EagerPolicy)
    assert isinstance(make_policy("nexus", options=NexusConfig(fill_spare=False)), NexusPolicy)
    with pytest.raises(ValueError, match="NexusConfig"):
        make_policy("nexus", options=UncoordinatedConfig())
    with pytest.raises(ValueError, match="no options"):
        make_policy("eager", options=NexusConfig())


@pytest.mark.parametrize(
    ("kind", "field_name", "value"),
    [
        (UncoordinatedConfig, "routing", "random"),
        (UncoordinatedConfig, "max_batch", 0),
        (UncoordinatedConfig, "max_queue_delay_ns", -1),
        (UncoordinatedConfig, "drop_expired", 1),
        (UncoordinatedConfig, "latest_horizon_ns", -1),
        (NexusConfig, "replan_interval_ns", 0),
        (NexusConfig, "fill_spare", "yes"),
        (NexusConfig, "max_headroom", 0.5),
        (NexusConfig, "min_rate_rps", -1.0),
    ],
)
def test_baseline_knobs_are_validated(kind: type, field_name: str, value: object) -> None:
    with pytest.raises(ValueError, match=field_name):
        kind(**{field_name: value})


@pytest.mark.parametrize("name", BASELINES)
def test_idle_and_time_rules(name: str) -> None:
    policy = make_policy(name)
    assert policy.handle(Tick(), 10) == []
    assert policy.handle(RequestsArrived(()), 10) == []
    assert policy.next_wakeup_ns() is None
    with pytest.raises(ValueError, match="backwards"):
        policy.handle(Tick(), 9)
    with pytest.raises(TypeError):
        policy.handle("tick", 11)  # type: ignore[arg-type]


COMMON_MODEL = ["queue", "workers", "k_ns", "c_ns", "max_batch", "margin_ns", "rate_rps", "budget_ns"]
COMMON_WORKER = ["alive", "models", "free_at_ns", "busy", "inflight"]
OWN_KEYS = {  # (top level, per model, per worker): what each adds to the JSON
    "uncoordinated": (["routing"], ["max_batch_used", "max_queue_delay_ns"], ["queued"]),
    "eager": (["pools"], [], []),
    "nexus": (["plan"], ["planned", "gpus"], ["duty_ns", "slots", "queued"]),
}


@pytest.mark.parametrize("name", BASELINES)
def test_the_snapshot_is_typed_and_its_json_keeps_each_baselines_keys(name: str) -> None:
    sim = make_sim(name, n_workers=2)
    for rid in range(20):
        sim.arrive(rid * MS, rid)
    sim.run(until=10 * MS)
    snap = sim.policy.snapshot()
    assert isinstance(snap, PolicySnapshot) and snap.now_ns == sim.now
    assert isinstance(snap.models["m"], ModelStats) and snap.models["m"].k_ns == PROF.k_ns
    assert isinstance(snap.workers[0], WorkerStats) and snap.workers[0].models == ("m",)
    top, model, worker = OWN_KEYS[name]
    plain = snap.as_dict()
    assert list(plain) == ["now_ns", "models", "workers", "inflight_batches", "next_wakeup_ns", *top]
    assert list(plain["models"]["m"]) == COMMON_MODEL + model
    assert list(plain["workers"][1]) == COMMON_WORKER + worker
    assert plain["workers"][0]["models"] == ["m"]
    assert json.loads(json.dumps(plain))["models"] == plain["models"]


@pytest.mark.parametrize("name", BASELINES)
def test_unknown_model_and_no_worker(name: str) -> None:
    sim = make_sim(name, n_workers=2)
    sim.arrive(MS, 1, "nope")
    sim.burst(MS, range(100, 300), budget=500 * MS)  # more than both workers take at once
    sim.run(until=MS)
    sim.step(2 * MS, WorkerLost(0))
    assert "NO_WORKER" not in sim.outcome.values()  # one worker is left: nothing lost
    sim.step(3 * MS, WorkerLost(1))
    sim.arrive(4 * MS, 3)
    finish(sim)
    assert sim.outcome[1] == "UNKNOWN_MODEL" and sim.outcome[3] == "NO_WORKER"
    burst = [sim.outcome[rid] for rid in range(100, 300)]
    assert set(burst) == {"ok", "NO_WORKER"}


@pytest.mark.parametrize("name", BASELINES)
def test_worker_profile_is_used_when_none_is_configured(name: str) -> None:
    mine = Profile(k_ns=2 * MS, c_ns=MS, max_batch=8)
    sim = Sim(make_policy(name), {"m": mine})
    sim.step(0, WorkerJoined(0, ("m",), profiles=(("m", mine),)))
    sim.arrive(0, 1)
    finish(sim)
    [d] = sim.dispatched()
    assert d.expected_ns == mine.latency_ns(1)
    assert sim.outcome == {1: "ok"}


# ------------------------------------------------------------- uncoordinated


def uncoordinated(max_batch: int | None = 4, delay: int | None = 5 * MS, **kw: Any) -> Any:
    return UncoordinatedConfig(max_batch=max_batch, max_queue_delay_ns=delay, **kw)


def test_uncoordinated_sends_a_full_batch_at_once() -> None:
    sim = make_sim("uncoordinated", options=uncoordinated())
    sim.burst(MS, range(6))
    sim.run(until=MS)
    [(decided, d)] = sim.dispatches
    assert decided == MS and d.request_ids == (0, 1, 2, 3)  # max size, FIFO
    assert d.earliest_ns == MS + D
    assert d.latest_ns == MS + D + 1_000_000_000  # the worker runs it whenever it can
    # The other two wait for the worker, which counts as free D before its batch ends.
    # Their 5 ms timeout has passed by then, so they go as soon as it is free.
    finish(sim)
    (decided, second) = sim.dispatches[1]
    assert decided == MS + PROF.latency_ns(4)
    assert second.request_ids == (4, 5) and second.earliest_ns == MS + D + PROF.latency_ns(4)
    finish(sim)


def test_uncoordinated_times_out_at_the_max_queue_delay() -> None:
    sim = make_sim("uncoordinated", options=uncoordinated())
    sim.arrive(MS, 1)
    sim.arrive(3 * MS, 2)
    sim.run(until=3 * MS)
    assert sim.policy.next_wakeup_ns() == MS + 5 * MS  # the oldest request's timeout
    finish(sim)
    [(decided, d)] = sim.dispatches
    assert decided == 6 * MS and d.request_ids == (1, 2)


def test_uncoordinated_defaults_follow_the_uncoordinated_bound() -> None:
    sim = make_sim("uncoordinated")
    sim.burst(0, range(20))
    sim.run(until=0)
    b = analytic_bound(1, PROF.k_ns, PROF.c_ns, SLO, coordinated=False, overhead_ns=D + R + T)
    assert b.batch == 6
    model = sim.policy.snapshot().models["m"]
    assert model.max_batch_used == 6 and model.max_queue_delay_ns == PROF.latency_ns(6)
    assert [len(d.request_ids) for d in sim.dispatched()] == [6]
    sim.arrive(MS, 99)
    finish(sim)
    assert [len(d.request_ids) for d in sim.dispatched()][:3] == [6, 6, 6]


def test_uncoordinated_round_robin_and_least_loaded_routing() -> None:
    placed: dict[str, list[int]] = {}
    for routing in ("round_robin", "least_loaded"):
        sim = make_sim("uncoordinated", options=uncoordinated(8, MS, routing=routing))
        sim.burst(0, range(8))  # worker 0 alone: one full batch of 8, busy ~14 ms
        sim.run(until=0)
        sim.step(MS, WorkerJoined(1, ("m",)))
        sim.burst(2 * MS, range(100, 104))
        finish(sim)
        placed[routing] = [(d.worker_id, len(d.request_ids)) for d in sim.dispatched()[1:]]
    assert sorted(placed["round_robin"]) == [(0, 2), (1, 2)]  # alternates, busy or not
    assert placed["least_loaded"] == [(1, 4)]  # all four avoid the busy worker


@pytest.mark.parametrize("drop_expired", [True, False])
def test_uncoordinated_expired_requests_are_dropped_when_formed(drop_expired: bool) -> None:
    sim = make_sim("uncoordinated", options=uncoordinated(64, 0, drop_expired=drop_expired))
    sim.burst(0, range(64))  # busy for ~74 ms
    sim.arrive(MS, 100, budget=20 * MS)  # waits behind it: its deadline passes in the queue
    sim.arrive(MS, 101, budget=200 * MS)
    finish(sim)
    if drop_expired:
        assert sim.outcome[100] == "DEADLINE" and sim.outcome[101] == "ok"
        [(t, drop)] = sim.drops
        assert t == sim.dispatches[1][0] and drop.request_ids == (100,)
    else:
        assert sim.outcome[100] == "late" and not sim.drops


def test_uncoordinated_lost_worker_reroutes_its_queue() -> None:
    sim = make_sim("uncoordinated", n_workers=2, options=uncoordinated(8, 10 * MS))
    sim.burst(0, range(4))  # two queue on each worker, waiting for the 10 ms timeout
    sim.run(until=0)
    sim.step(MS, WorkerLost(0))
    finish(sim)
    assert set(sim.outcome.values()) == {"ok"}
    assert {d.worker_id for d in sim.dispatched()} == {1}


# --------------------------------------------------------------------- eager


def test_eager_dispatches_at_once_to_a_free_worker() -> None:
    sim = make_sim("eager")
    sim.arrive(MS, 1)
    sim.run(until=MS)
    [(decided, d)] = sim.dispatches  # no deferral: a batch of one, right away
    assert decided == MS and d.request_ids == (1,) and d.earliest_ns == MS + D
    assert d.latest_ns == MS + SLO - R - PROF.latency_ns(1)
    for i in range(10):
        sim.arrive(2 * MS + i * 100_000, 10 + i)
    finish(sim)
    (decided, second) = sim.dispatches[1]
    free_at = MS + D + PROF.latency_ns(1)
    assert decided == free_at - D  # the moment the worker is about to be free
    assert second.request_ids == tuple(range(10, 20)) and second.earliest_ns == free_at
    assert set(sim.outcome.values()) == {"ok"}


def test_eager_largest_batch_that_meets_the_head_deadline() -> None:
    sim = make_sim("eager", n_workers=2)
    sim.burst(MS, range(40), budget=12 * MS)
    finish(sim)
    fits = max(b for b in range(1, 65) if D + PROF.latency_ns(b) + R <= 12 * MS)
    assert [len(d.request_ids) for d in sim.dispatched()] == [fits, fits]
    assert all(decided == MS for decided, _ in sim.dispatches)
    # Nobody else can finish in time behind those: dropped at once, proactively.
    assert [(t, d.reason, len(d.request_ids)) for t, d in sim.drops] == [
        (MS, DropReason.DEADLINE, 40 - 2 * fits)
    ]


def test_eager_most_urgent_model_first() -> None:
    sim = make_sim("eager", models=("a", "b"))
    sim.burst(0, range(10), model="a")  # the worker is busy until ~16.5 ms
    sim.burst(MS, range(100, 105), model="a", budget=40 * MS)
    sim.burst(MS, range(200, 205), model="b", budget=35 * MS)
    finish(sim)
    assert [d.model for d in sim.dispatched()] == ["a", "b", "a"]


def test_eager_drops_a_head_its_busy_workers_doom() -> None:
    sim = make_sim("eager")
    sim.burst(0, range(30), budget=60 * MS)  # busy until ~38 ms
    sim.arrive(MS, 100, budget=30 * MS)
    sim.run(until=MS)
    assert sim.outcome[100] == "DEADLINE"  # dropped on arrival, not when the worker frees
    finish(sim)


def test_eager_is_work_conserving_under_load() -> None:
    def conserving(sim: Sim) -> None:
        snap = sim.policy.snapshot()
        if any(model.queue for model in snap.models.values()):
            assert all(w.free_at_ns > sim.now + D for w in snap.workers.values())

    sim = poisson_run("eager", 0.6, seed=11, seconds=0.3, on_step=conserving)
    assert sim.attainment() >= 0.995  # 1.0 for seeds 1-5 and 11: 60% of the bound
    sim = make_sim("eager", n_workers=4)
    sim.on_step = conserving
    rng = random.Random(3)
    for rid in range(400):
        sim.arrive(rng.randrange(0, 100 * MS), rid)
    finish(sim)


# --------------------------------------------------------------------- nexus


def test_packing_split_and_squish() -> None:
    budget = SLO - D - R - T
    assert saturated_batch(PROF, budget) == 6
    per_gpu = 6 / PROF.latency_ns(6)
    split = split_demand(Demand("m", PROF, 2.5 * per_gpu, budget))
    assert split.n_saturated == 2 and split.saturated is not None
    assert split.saturated.batch == 6 and split.saturated.duty_ns == PROF.latency_ns(6)
    residual = split.residual
    assert residual is not None and not residual.saturated
    rate = 0.5 * per_gpu
    assert residual.rate_per_ns == pytest.approx(rate)
    b = residual.batch
    assert PROF.latency_ns(b) + b / rate <= budget < PROF.latency_ns(b + 1) + (b + 1) / rate
    assert residual.duty_ns == int(b / rate)
    # Two residual shares fit one GPU: its cycle is the shorter one (15 ms), and the
    # other share's batch shrinks to what arrives in it ("squishy").
    cheap = Profile(k_ns=500_000, c_ns=MS, max_batch=64)
    a = split_demand(Demand("a", cheap, 400 / 1e9, budget)).residual  # b 7, d 17.5 ms
    z = split_demand(Demand("z", cheap, 1000 / 1e9, budget)).residual  # b 15, d 15 ms
    assert a is not None and z is not None
    assert (a.batch, a.duty_ns, z.batch, z.duty_ns) == (7, 17_500_000, 15, 15_000_000)
    assert batch_for_duty(a, z.duty_ns) == 6
    assert count_bins([a, z]) == 1
    assert count_bins([a, z, a]) == 2
    light = Demand("a", PROF, 60 / 1e9, budget)  # b 1, d 16.7 ms: does not fit beside m's
    assert gpus_needed([light, Demand("m", PROF, 2.5 * per_gpu, budget)]) == 4
    assert split_demand(Demand("x", PROF, 1e-6, PROF.latency_ns(1) - 1)).residual is None


def test_nexus_batches_at_its_planned_size_and_duty_cycle() -> None:
    sim = make_sim("nexus", options=NexusConfig(fill_spare=False))
    for i in range(600):  # 200 req/s, evenly spaced, for 3 s
        sim.arrive(i * 5 * MS, i)
    sim.run(until=2100 * MS)  # plans were made at 0 (and while the rate was learnt), 2 s
    snap = sim.policy.snapshot()
    [[model, batch]] = snap.workers[0].slots
    duty = snap.workers[0].duty_ns
    rate = 200 / 1e9
    budget = SLO - D - R - T
    assert (model, batch) == ("m", 3)  # l(3) + 3/r = 8.5 + 15 ms <= 24 ms; 4 does not fit
    assert PROF.latency_ns(3) + 3 / rate <= budget < PROF.latency_ns(4) + 4 / rate
    assert duty == pytest.approx(3 / rate, rel=0.02)
    finish(sim)
    # Until the next plan (at 3 s) one batch of 3 runs every duty cycle, exactly.
    steady = [(s, size) for s, _, size, _ in sim.starts if 2100 * MS < s < 2990 * MS]
    assert len(steady) > 50
    assert sum(1 for _, size in steady if size == batch) >= 0.9 * len(steady)
    assert {b[0] - a[0] for a, b in itertools.pairwise(steady)} == {duty}
    assert sim.attainment() > 0.99


def test_nexus_gives_heavy_models_saturated_gpus() -> None:
    sim = make_sim("nexus", n_workers=6, options=NexusConfig(fill_spare=False))
    rng = random.Random(1)
    t = 0
    for rid in range(4000):  # ~1,300 req/s: two saturated GPUs and a residual share
        t += round(rng.expovariate(1300 / 1e9))
        sim.arrive(t, rid)
    sim.run(until=2 * 1_000_000_000)
    workers = sim.policy.snapshot().workers.values()
    plans = sorted((w.duty_ns, tuple(map(tuple, w.slots))) for w in workers)
    saturated = [p for p in plans if p == (PROF.latency_ns(6), (("m", 6),))]
    assert len(saturated) == 2
    assert sum(1 for p in plans if p[0] == 0) == 3  # the plan does not need them: idle
    finish(sim)
    # saturated batches of 6 on a fixed duty cycle cannot absorb Poisson bursts: seeds
    # 1-5 give 0.920-0.943 (seed 1: 0.943)
    assert 0.90 <= sim.attainment() <= 0.96


def test_nexus_fill_spare_spreads_load_and_replans_on_worker_loss() -> None:
    sim = make_sim("nexus", n_workers=4)
    rng = random.Random(2)
    t = 0
    for rid in range(3000):
        t += round(rng.expovariate(1000 / 1e9))
        sim.arrive(t, rid)
    sim.run(until=1_500_000_000)
    snap = sim.policy.snapshot()
    assert snap.plan.headroom > 1.0
    assert all(w.duty_ns > 0 for w in snap.workers.values())  # every GPU has a share
    sim.step(sim.now + 1, WorkerLost(2))
    assert sim.policy.snapshot().workers[2].queued == 0
    finish(sim)
    # spare capacity everywhere, even after the loss: seeds 1-5 give 0.9987-1.0
    assert sim.attainment() >= 0.995
    assert {d.worker_id for t, d in sim.dispatches if t > 1_600_000_000} <= {0, 1, 3}


# ------------------------------------------------------------- steady load


def poisson_run(
    name: str,
    frac: float,
    seed: int,
    seconds: float = 2.0,
    n_workers: int = 8,
    options: Any = None,
    on_step: Callable[[Sim], None] | None = None,
) -> Sim:
    sim = make_sim(name, n_workers, options=options)
    sim.on_step = on_step
    rate = frac * analytic_bound(n_workers, PROF.k_ns, PROF.c_ns, SLO).goodput_rps
    rng = random.Random(seed)
    t, rid = 0, 0
    while True:
        t += round(rng.expovariate(rate) * 1e9)
        if t > seconds * 1e9:
            break
        sim.arrive(t, rid)
        rid += 1
    finish(sim)
    assert sim.refused == 0  # exact durations: every window holds
    return sim


@pytest.mark.parametrize("name", BASELINES)
def test_seeded_runs_repeat_exactly(name: str) -> None:
    one, two = poisson_run(name, 0.7, 9, 0.4), poisson_run(name, 0.7, 9, 0.4)
    assert one.dispatches == two.dispatches and one.drops == two.drops


def test_attainment_side_by_side() -> None:
    # 8 workers, l(b) = 1.082 ms b + 5.204 ms, SLO 25 ms. The coordinated bound is 700
    # req/s per GPU (b* = 15); the uncoordinated one 513 (b = 6, 2 l(b) <= SLO), i.e. 73%
    # of the coordinated bound, whatever the overheads here (b = 6 still fits 24 ms).
    # At 60% of the coordinated bound both are feasible on paper: every policy should do
    # well and symphony at least as well. Between the two bounds (here 85%: 116% of what
    # batches of 6 can carry), uncoordinated workers cannot keep up with batches they
    # are allowed to form (max_batch 6), so at least 1 - 1/1.16 = 14% of requests must
    # miss, while the coordinated policy still has headroom: a clear gap. At 95% the
    # work-conserving eager policy has fallen into the backlog trap (docs/policy.md §4.4).
    coord = analytic_bound(8, PROF.k_ns, PROF.c_ns, SLO)
    uncoord = analytic_bound(8, PROF.k_ns, PROF.c_ns, SLO, coordinated=False)
    assert (coord.batch, uncoord.batch) == (15, 6)
    assert 0.6 < uncoord.goodput_rps / coord.goodput_rps < 0.85
    table: dict[float, dict[str, float]] = {}
    for frac in (0.6, 0.85, 0.95):
        table[frac] = {
            name: poisson_run(name, frac, seed=1).attainment() for name in ("symphony", *BASELINES)
        }
    print()
    for frac, row in table.items():
        print(f"load {frac:.0%} of the coordinated bound: "
              + ", ".join(f"{name} {value:.3f}" for name, value in row.items()))  # fmt: skip
    for row in table.values():
        for name in BASELINES:
            assert row["symphony"] >= row[name], (name, row)
    assert table[0.6]["symphony"] >= 0.99
    assert table[0.85]["uncoordinated"] <= 1 / (0.85 / (uncoord.goodput_rps / coord.goodput_rps))
    assert table[0.85]["symphony"] - table[0.85]["uncoordinated"] >= 0.1
    # Measured over seeds 1-5 (seed 1 runs here), each band that range plus a margin:
    # at 60% every policy keeps up (0.997-1.0); at 85% uncoordinated's queues grow
    # without end, far below the 86% the arithmetic above allows (0.036-0.066), and
    # nexus's fixed duty cycles lose the bursts (0.852-0.863); at 95% symphony still
    # holds (0.979-0.985), nexus 0.764-0.780, eager is in the backlog trap (0.277-0.332)
    assert all(v >= 0.995 for v in table[0.6].values()), table[0.6]
    assert table[0.85]["symphony"] >= 0.999 and table[0.85]["uncoordinated"] < 0.1
    assert 0.82 <= table[0.85]["nexus"] <= 0.90
    assert table[0.95]["symphony"] >= 0.97 and table[0.95]["uncoordinated"] < 0.05
    assert 0.73 <= table[0.95]["nexus"] <= 0.81 and table[0.95]["eager"] < 0.45


# ---------------------------------------------------------------- properties


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    n_models = draw(st.integers(1, 3))
    models = [f"m{i}" for i in range(n_models)]
    profiles = {
        m: Profile(
            k_ns=draw(st.integers(50_000, 3 * MS)),
            c_ns=draw(st.integers(0, 10 * MS)),
            max_batch=draw(st.integers(1, 32)),
        )
        for m in models
    }
    n_workers = draw(st.integers(1, 5))
    serves = [
        tuple(draw(st.lists(st.sampled_from(models), min_size=1, max_size=3, unique=True)))
        for _ in range(n_workers)
    ]
    arrivals = draw(
        st.lists(
            st.tuples(
                st.one_of(st.just(0), st.integers(0, MS // 5), st.integers(0, 4 * MS)),
                st.integers(0, n_models),  # n_models: a model nobody serves
                st.integers(0, 60 * MS),
            ),
            max_size=100,
        )
    )
    churn = draw(st.lists(st.tuples(st.integers(0, 100 * MS), st.integers(0, n_workers - 1)), max_size=3))
    moves = draw(  # a live worker re-joins serving another set of models
        st.lists(
            st.tuples(
                st.integers(0, 100 * MS),
                st.integers(0, n_workers - 1),
                st.lists(st.sampled_from(models), min_size=1, max_size=3, unique=True),
            ),
            max_size=2,
        )
    )
    exact = draw(st.booleans())
    noise = [1.0] if exact else draw(st.lists(st.floats(0.5, 1.6), min_size=1, max_size=8))
    config = {
        "dispatch_cost_ns": draw(st.integers(0, 2 * MS)),
        "reply_cost_ns": draw(st.integers(0, MS)),
        "timer_slack_ns": draw(st.integers(0, MS)),
        "defer_headroom": draw(st.sampled_from([0.0, 2.0])),
        "refit": draw(st.booleans()),
    }
    name = draw(st.sampled_from(BASELINES))
    options: Any = None
    if name == "uncoordinated":
        options = UncoordinatedConfig(
            routing=draw(st.sampled_from(["round_robin", "least_loaded"])),
            max_batch=draw(st.one_of(st.none(), st.integers(1, 40))),
            max_queue_delay_ns=draw(st.one_of(st.none(), st.integers(0, 20 * MS))),
            drop_expired=draw(st.booleans()),
        )
    elif name == "nexus":
        options = NexusConfig(
            replan_interval_ns=draw(st.sampled_from([5 * MS, 50 * MS, 1_000_000_000])),
            fill_spare=draw(st.booleans()),
        )
    return {
        "name": name, "options": options, "profiles": profiles, "serves": serves,
        "arrivals": arrivals, "churn": churn, "moves": moves, "noise": noise, "config": config,
    }  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_random_scenarios_keep_the_invariants(sc: dict[str, Any]) -> None:
    profiles: dict[str, Profile] = sc["profiles"]
    config = PolicyConfig(profiles=profiles, **sc["config"])
    sim = Sim(
        make_policy(sc["name"], config, options=sc["options"]),
        dict(profiles),
        reply_ns=config.reply_cost_ns,
    )
    for wid, models in enumerate(sc["serves"]):
        sim.at(0, WorkerJoined(wid, models))
    for t, wid in sc["churn"]:
        sim.at(t, WorkerLost(wid))
        sim.at(t + 5 * MS, WorkerJoined(wid, sc["serves"][wid]))
    for t, wid, models in sc["moves"]:
        sim.at(t, WorkerJoined(wid, tuple(models)))
    noise: list[float] = sc["noise"]
    sim.slowdown = lambda batch_id: noise[batch_id % len(noise)]
    names = sorted(profiles)
    t = 0
    for rid, (gap, model, budget) in enumerate(sc["arrivals"]):
        t += gap
        sim.arrive(t, rid, names[model] if model < len(names) else "unknown", budget=budget)
    finish(sim)
    if noise == [1.0]:
        assert sim.refused == 0  # exact durations: no batch is refused


# ------------------------------------------------------------- package rules

BASELINE_DIR = pathlib.Path(baselines_pkg.__file__).parent
FORBIDDEN = {
    "time", "random", "asyncio", "socket", "threading", "logging.handlers", "selectors",
    "subprocess", "multiprocessing", "secrets", "datetime", "os",
}  # fmt: skip


@pytest.mark.parametrize("path", sorted(BASELINE_DIR.glob("*.py")), ids=lambda p: p.name)
def test_baselines_import_only_the_allowed_standard_library(path: pathlib.Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top == "central":
                assert name.startswith("central.policy"), f"{path.name} imports {name}"
                continue
            assert top in sys.stdlib_module_names or top == "__future__", f"{path.name}: {name}"
            assert top not in FORBIDDEN and name not in FORBIDDEN, f"{path.name}: {name}"
    doc = ast.get_docstring(tree)
    assert doc and len(doc) > 100, f"{path.name} needs a theory-of-operation docstring"
    assert "__all__" in path.read_text() and len(path.read_text().splitlines()) <= 600


@pytest.mark.parametrize(("fill_spare", "floor"), [(True, 0.99), (False, 0.98)])
def test_nexus_serves_trivial_poisson_load(fill_spare: bool, floor: float) -> None:
    # 20 req/s on 4 GPUs (bound ~2,700): the plan is b = 1 on a long duty cycle, so two
    # arrivals in one cycle used to drop the second (95% Poisson). A slot now grows into
    # its cycle's idle time, and fill_spare spreads the load over the spare GPUs (without
    # it one GPU carries everything and a burst beyond the cycle's idle time still drops).
    sim = make_sim("nexus", n_workers=4, options=NexusConfig(fill_spare=fill_spare))
    rng = random.Random(3)
    t = 0
    for rid in range(1500):
        t += round(rng.expovariate(20 / 1e9))
        sim.arrive(t, rid)
    finish(sim)
    assert sim.attainment() >= floor
