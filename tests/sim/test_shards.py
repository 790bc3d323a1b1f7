"""The multicore split in the simulator: K model shards and a matcher (DESIGN §5).

The same trace must give the same decisions with 1 and K shards, whatever the placement,
with worker churn and with models moved between shards while requests wait (none lost);
the split must decide as the default policy does and exchange messages per batch, not per
request.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from bench.sim import Cluster, Noise, SimConfig, policy_config_for, simulate
from bench.sim.result import SimResult
from bench.traces.generators import gamma, poisson
from central.policy import (
    BatchDone,
    BatchStatus,
    Dispatch,
    Drop,
    PolicyConfig,
    PolicySnapshot,
    Profile,
    Request,
    RequestsArrived,
    Tick,
    WorkerJoined,
    WorkerLost,
    make_policy,
)
from central.policy.sharded import ShardedPolicy, ShardOptions

PROFILE = Profile(1_082_000, 5_204_000, 64)
MODELS = tuple(f"m{i}" for i in range(8))
COLUMNS = (
    "outcome",
    "drop_reason",
    "finish_ns",
    "batch_of",
    "batch_worker",
    "batch_model",
    "batch_size",
    "batch_decided_ns",
    "batch_earliest_ns",
    "batch_latest_ns",
)


def _pools_cluster() -> Cluster:
    """8 models in 4 pools of 2 models on 4 workers each."""
    workers = tuple((MODELS[2 * p], MODELS[2 * p + 1]) for p in range(4) for _ in range(4))
    return Cluster(dict.fromkeys(MODELS, PROFILE), dict.fromkeys(MODELS, 25000000), workers)


def _shared_cluster() -> Cluster:
    """8 models, each worker serving all of them; SLOs differ per model."""
    slo = {m: 25_000_000 + 5_000_000 * i for i, m in enumerate(MODELS)}
    return Cluster(dict.fromkeys(MODELS, PROFILE), slo, tuple(MODELS for _ in range(8)))


SCENARIOS: dict[str, Any] = {
    "pools, Poisson, noisy durations": (
        _pools_cluster,
        lambda: poisson(16 * 560, 1.5, 1, model=MODELS),
        SimConfig(noise=Noise(cv=0.1), seed=1),
    ),
    "shared workers, bursty, late timers": (
        _shared_cluster,
        lambda: gamma(8 * 500, 3.0, 1.5, 2, model=MODELS),
        SimConfig(noise=Noise(cv=0.05, outlier_prob=0.01), tick_lateness_ns=300_000, seed=2),
    ),
    "overload": (_pools_cluster, lambda: poisson(16 * 900, 1.0, 3, model=MODELS), SimConfig(seed=3)),
}


def _run(cluster: Cluster, trace: Any, config: SimConfig, policy: Any) -> SimResult:
    return simulate(policy, trace, cluster, config)


def _sharded(cluster: Cluster, config: SimConfig, **options: Any) -> ShardedPolicy:
    return ShardedPolicy(policy_config_for(cluster, config), ShardOptions(**options))


def _same(a: SimResult, b: SimResult) -> None:
    assert len(a.batch_id) > 100
    for column in COLUMNS:
        assert np.array_equal(getattr(a, column), getattr(b, column)), column


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_same_trace_gives_the_same_decisions_with_1_and_k_shards(scenario: str) -> None:
    make_cluster, make_trace, config = SCENARIOS[scenario]
    cluster, trace = make_cluster(), make_trace()
    one = _run(cluster, trace, config, _sharded(cluster, config, shards=1))
    for k in (2, 3, 8):
        policy = _sharded(cluster, config, shards=k)
        _same(one, _run(cluster, trace, config, policy))
        assert len({policy.owner(m) for m in MODELS}) > 1  # the models really are split


def test_placement_does_not_change_decisions() -> None:
    cluster, config = _pools_cluster(), SimConfig(noise=Noise(cv=0.1), seed=4)
    trace = poisson(16 * 600, 1.0, 4, model=MODELS)
    one = _run(cluster, trace, config, _sharded(cluster, config))
    # pool-mates on different shards, and everything on the last of four shards
    split = tuple((m, i % 2) for i, m in enumerate(MODELS))
    _same(one, _run(cluster, trace, config, _sharded(cluster, config, shards=2, placement=split)))
    last = tuple((m, 3) for m in MODELS)
    _same(one, _run(cluster, trace, config, _sharded(cluster, config, shards=4, placement=last)))


def _normal(actions: list[Any]) -> list[Any]:
    """Actions as comparable values; a drop's ids in a canonical order."""
    out: list[Any] = []
    for a in actions:
        if isinstance(a, Dispatch):
            out.append(("Dispatch", a))
        else:
            assert isinstance(a, Drop), a
            out.append(("Drop", a.reason, tuple(sorted(a.request_ids))))
    return out


def test_churn_gives_the_same_decisions_with_1_and_k_shards() -> None:
    """Workers lost and re-joining with other models, driven in lockstep."""
    cfg = PolicyConfig(profiles=dict.fromkeys(MODELS, PROFILE))
    policies = [ShardedPolicy(cfg, ShardOptions(k)) for k in (1, 3, 5)]
    rng = random.Random(7)
    now, rid = 0, 0
    done: list[tuple[int, int, BatchDone]] = []
    seen = dispatched = dropped = 0

    def feed(event: Any) -> None:
        nonlocal dispatched, dropped
        outs = [_normal(p.handle(event, now)) for p in policies]
        assert outs[1:] == outs[:-1], f"shards disagree at {now} on {event!r}"
        for kind, *rest in outs[0]:
            if kind == "Dispatch":
                d = rest[0]
                dispatched += len(d.request_ids)
                ok = BatchStatus.OK if rng.random() > 0.05 else BatchStatus.TOO_LATE
                end = d.earliest_ns + (d.expected_ns if ok == BatchStatus.OK else 0)
                end += rng.randrange(0, 400_000)
                done.append(
                    (
                        end,
                        d.batch_id,
                        BatchDone(d.batch_id, d.worker_id, ok, d.earliest_ns, end, len(d.request_ids)),
                    )
                )
            else:
                dropped += len(rest[1])

    for w in range(12):
        feed(WorkerJoined(w, tuple(rng.sample(MODELS, 3))))
    for _ in range(4000):
        wake = policies[0].next_wakeup_ns()
        assert [p.next_wakeup_ns() for p in policies] == [wake] * len(policies)
        done.sort()
        nxt = now + rng.randrange(50_000, 400_000)
        if done and done[0][0] <= nxt and (wake is None or done[0][0] <= wake):
            now = max(now, done[0][0])
            feed(done.pop(0)[2])
        elif wake is not None and wake <= nxt:
            now = max(now, wake)
            feed(Tick())
        else:
            now = nxt
            roll = rng.random()
            if roll < 0.02:
                feed(WorkerLost(rng.randrange(12)))
            elif roll < 0.04:
                feed(WorkerJoined(rng.randrange(12), tuple(rng.sample(MODELS, 2))))
            else:
                batch = []
                for _ in range(rng.randrange(1, 12)):
                    m = rng.choice(MODELS)
                    batch.append(Request(rid, m, now + rng.randrange(15, 60) * 1_000_000, now))
                    rid += 1
                seen += len(batch)
                feed(RequestsArrived(tuple(batch)))
    assert dispatched > 1000 and dropped > 10  # both paths exercised
    assert dispatched + dropped <= seen


class _Mover:
    """A ShardedPolicy whose models are moved between shards as the run goes on."""

    def __init__(self, policy: ShardedPolicy, every: int) -> None:
        self.policy = policy
        self._every = every
        self._calls = 0
        self._rng = random.Random(5)

    def handle(self, event: Any, now_ns: int) -> list[Any]:
        self._calls += 1
        if self._calls % self._every == 0:
            if self._calls % (3 * self._every) == 0:
                self.policy.rebalance(now_ns)
            else:
                model = self._rng.choice(MODELS)
                self.policy.move(model, self._rng.randrange(len(self.policy.shards)))
        return self.policy.handle(event, now_ns)

    def next_wakeup_ns(self) -> int | None:
        return self.policy.next_wakeup_ns()

    def snapshot(self) -> PolicySnapshot:
        return self.policy.snapshot()


def test_models_move_between_shards_without_losing_a_request() -> None:
    cluster, config = _pools_cluster(), SimConfig(noise=Noise(cv=0.1), seed=6)  # strict
    trace = poisson(16 * 600, 1.5, 6, model=MODELS)
    moving = _Mover(_sharded(cluster, config, shards=3), every=25)
    result = _run(cluster, trace, config, moving)
    fixed = _run(cluster, trace, config, _sharded(cluster, config, shards=3))
    assert moving.policy.moves > 50
    assert result.violations == {}  # strict: every request ended exactly once
    assert (result.outcome != 255).all()
    # a candidate moves whole with its model: not one decision changes
    for column in COLUMNS:
        assert np.array_equal(getattr(result, column), getattr(fixed, column)), column


def test_rebalance_evens_out_the_shards_arrival_rates() -> None:
    cfg = PolicyConfig(profiles=dict.fromkeys(MODELS, PROFILE))
    placement = tuple((m, 0) for m in MODELS)  # everything on shard 0 of 2
    policy = ShardedPolicy(cfg, ShardOptions(2, placement))
    policy.handle(WorkerJoined(0, MODELS), 0)
    rid, now = 0, 0
    for step in range(200):  # m0..m3 four times as busy as m4..m7
        now = step * 1_000_000
        reqs = [
            Request(rid + i, MODELS[i % 8] if i < 8 else MODELS[i % 4], now + 10**9, now) for i in range(24)
        ]
        rid += len(reqs)
        policy.handle(RequestsArrived(tuple(reqs)), now)
    moves = policy.rebalance(now)
    assert moves and all(src == 0 and dst == 1 for _, src, dst in moves)
    load = [sum(m.load.rate_per_ns(now) for m in s.models.values()) for s in policy.shards]
    assert max(load) / min(load) < 1.5
    queued = sum(len(m.queue) for s in policy.shards for m in s.models.values())
    policy.handle(Tick(), now)
    assert sum(len(m.queue) for s in policy.shards for m in s.models.values()) <= queued
    # the matcher process's rule is the same one, with a threshold
    assert policy.placement.plan([(1.0, m) for m in MODELS], ratio=1.5) == []


@pytest.mark.parametrize("make_cluster", [_pools_cluster, _shared_cluster])
def test_the_split_decides_as_the_default_policy(make_cluster: Any) -> None:
    """Not "within 2% of its attainment": the same decisions, column for column (the
    rules are one copy, candidate.py and timeline.py; test_split_identity.py compares
    them action by action)."""
    cluster, config = make_cluster(), SimConfig(noise=Noise(cv=0.1), seed=8)
    trace = poisson(cluster.n_workers * 600, 1.5, 8, model=MODELS)
    pcfg = policy_config_for(cluster, config)
    default = _run(cluster, trace, config, make_policy("symphony", pcfg))
    split = _run(cluster, trace, config, ShardedPolicy(pcfg, ShardOptions(4)))
    on_time = (default.outcome == 0).mean()
    # the default policy's own figure here (seed 8 runs; seeds 1-3 measured besides):
    # pools 0.808 (0.795-0.814), loaded near their two models' bound with noisy
    # durations; shared 0.928 (0.920-0.931), every worker free for every model
    low, high = (0.80, 0.83) if make_cluster is _pools_cluster else (0.90, 0.95)
    assert low < on_time < high
    _same(default, split)
    assert np.array_equal(default.batch_id, split.batch_id)


def test_the_roles_exchange_messages_per_batch_not_per_request() -> None:
    cluster, config = _pools_cluster(), SimConfig(seed=9)
    trace = poisson(16 * 650, 1.5, 9, model=MODELS)
    policy = _sharded(cluster, config, shards=4)
    result = _run(cluster, trace, config, policy)
    batches, requests = len(result.batch_id), len(trace)
    assert requests / batches > 8  # large batches: the regime the split is for
    total = sum(policy.messages.values())
    assert policy.messages["Grant/Booked"] == batches
    # measured: about 8.8 (Offer/Withdraw 4.9, PoolState 1.2, Grant 1, Finished 1, Wake
    # 0.7): a shard re-offers every ready recompute, exactly the single policy's
    # contenders, so that the matcher decides as it does (test_split_identity.py)
    assert total < 10 * batches
    assert total < requests
