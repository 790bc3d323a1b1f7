"""The ``uncoordinated`` baseline tuned (``bench.search.tune_uncoordinated``): never below its
analytic defaults on the same arrivals, the best setting of its own tuning run, repeatable."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest

from bench import sim_table
from bench.search import (
    TunedSearch,
    knobs_text,
    search_goodput,
    trace_maker,
    tune_uncoordinated,
    uncoordinated_grid,
)
from bench.sim import Cluster, SimConfig, simulate
from bench.sim.engine import policy_config_for
from central.policy import Profile, make_policy
from central.policy.baselines import UncoordinatedConfig

MS = 1_000_000
PROF = Profile(k_ns=1_082_000, c_ns=5_204_000, max_batch=64)  # Symphony's profile
REQUESTS = 4_000
CLUSTER = Cluster.shared({"m": PROF}, 25 * MS, 4)
CONFIG = SimConfig(seed=1)


def _attainment(knobs: UncoordinatedConfig | None, rate: float) -> float:
    """The baseline's attainment on the search's probe trace at ``rate`` (the same arrivals
    the search and the tuning use: same maker, length and seed)."""
    trace = trace_maker("poisson", ["m"])(rate, max(REQUESTS / rate, 50 * 25 / 1e3), 1)
    policy = make_policy("uncoordinated", policy_config_for(CLUSTER, CONFIG), options=knobs)
    return simulate(policy, trace, CLUSTER, CONFIG).attainment


@pytest.fixture(scope="module")
def tuned() -> TunedSearch:
    return tune_uncoordinated(CLUSTER, requests=REQUESTS, rel_tol=0.02, config=CONFIG)


def test_grid_starts_at_the_defaults_and_reaches_above_them() -> None:
    grid = uncoordinated_grid(CLUSTER, policy_config_for(CLUSTER, CONFIG))
    # 2 l(b) <= 25 ms - D - R - T (0.5 + 0.3 + 0.2 ms): b = 6, the analytic default
    assert grid[0] == UncoordinatedConfig(max_batch=6, max_queue_delay_ns=PROF.latency_ns(6))
    assert len(set(grid)) == len(grid) == 20
    assert sorted({k.max_batch for k in grid}) == [6, 8, 10, 12]
    for b in (6, 8, 10, 12):
        delays = sorted(k.max_queue_delay_ns for k in grid if k.max_batch == b)
        assert delays[0] == 0 and delays[-1] == PROF.latency_ns(b) and len(delays) == 5
    with pytest.raises(ValueError, match="one served model"):
        two = Cluster.shared({"a": PROF, "b": PROF}, 25 * MS, 2)
        uncoordinated_grid(two, policy_config_for(two, CONFIG))


def test_pinned_is_the_search_with_the_defaults(tuned: TunedSearch) -> None:
    plain = search_goodput("uncoordinated", CLUSTER, requests=REQUESTS, rel_tol=0.02, config=CONFIG)
    assert tuned.pinned == plain
    assert tuned.searched[0] == (tuned.pinned_knobs, plain.goodput_rps)
    fixed = search_goodput(
        "uncoordinated", CLUSTER, requests=REQUESTS, rel_tol=0.02, config=CONFIG, options=tuned.pinned_knobs
    )
    assert fixed.probes == plain.probes  # the defaults as fixed knobs change nothing


def test_tuned_goodput_is_at_least_the_pinned_on_the_same_arrivals(tuned: TunedSearch) -> None:
    assert tuned.result.goodput_rps >= tuned.pinned.goodput_rps
    # here the defaults (b = 6, delay l(6)) are a real handicap: tuning must find more
    assert tuned.result.rate_rps >= 1.03 * tuned.pinned.rate_rps
    assert tuned.knobs != tuned.pinned_knobs
    # at the tuned answer's rate, on the very same arrivals: tuned passes, pinned does not
    rate = tuned.result.rate_rps
    assert _attainment(tuned.knobs, rate) == tuned.result.attainment >= 0.99
    assert _attainment(None, rate) < 0.99


def test_each_round_picks_the_best_setting_of_its_run(tuned: TunedSearch) -> None:
    grid = uncoordinated_grid(CLUSTER, policy_config_for(CLUSTER, CONFIG))
    rates = list(dict.fromkeys(t.rate_rps for t in tuned.trials))
    assert 1 <= len(rates) <= 2 and len(tuned.trials) == len(rates) * len(grid)
    # the first round runs just above the defaults' capacity: their lowest failing probe
    assert rates[0] == min(
        p.rate_rps for p in tuned.pinned.probes if not p.passed and p.rate_rps > tuned.pinned.rate_rps
    )
    for i, rate in enumerate(rates):
        trials = [t for t in tuned.trials if t.rate_rps == rate]
        assert [(t.max_batch, t.max_queue_delay_ns) for t in trials] == [
            (k.max_batch, k.max_queue_delay_ns) for k in grid
        ]
        # recompute every setting's attainment independently of the tuner
        scores = {k: _attainment(k, rate) for k in grid}
        assert [scores[k] for k in grid] == [t.attainment for t in trials]
        assert max(scores.values()) > min(scores.values())  # the run discriminates
        best = max(scores.values())
        picked = [k for k in grid if scores[k] == best]
        chosen = min(picked, key=lambda k: (-_goodput(trials, k), k.max_batch, k.max_queue_delay_ns))
        # the round's choice is searched next (or, already searched, ends the tuning)
        searched = [k for k, _ in tuned.searched]
        if i + 1 < len(tuned.searched):
            assert tuned.searched[i + 1][0] == chosen
        else:
            assert chosen in searched[: i + 1]
    # the answer is the best search
    assert tuned.result.goodput_rps == max(g for _, g in tuned.searched)
    assert (tuned.knobs, tuned.result.goodput_rps) in tuned.searched


def _goodput(trials: list[Any], k: UncoordinatedConfig) -> float:
    return next(
        t.goodput_rps
        for t in trials
        if (t.max_batch, t.max_queue_delay_ns) == (k.max_batch, k.max_queue_delay_ns)
    )


def test_tuning_repeats_exactly() -> None:
    small = Cluster.shared({"m": PROF}, 25 * MS, 2)
    a = tune_uncoordinated(small, requests=1_000, rel_tol=0.05, config=CONFIG, rounds=1)
    b = tune_uncoordinated(small, requests=1_000, rel_tol=0.05, config=CONFIG, rounds=1)
    assert a == b


def test_sim_table_task_reports_the_knobs() -> None:
    task = {
        "policy": sim_table.BASELINE,
        "trace": "poisson",
        "n": 2,
        "slo_ms": 25.0,
        "k_ms": 1.082,
        "c_ms": 5.204,
        "max_batch": 64,
        "requests": 1_000,
        "seed": 1,
        "noise_cv": 0.0,
        "cv": 3.0,
        "csv": None,
        "target": 0.99,
        "rel_tol": 0.05,
        "tune": True,
    }
    row = sim_table.run_search(task)
    knobs = UncoordinatedConfig(**row["knobs"])
    assert knobs_text(knobs).startswith(f"b {knobs.max_batch}, ")
    assert row["goodput_rps"] >= row["pinned_goodput_rps"] > 0
    assert row["searched"][0]["knobs"] == asdict(
        uncoordinated_grid(
            Cluster.shared({"m": PROF}, 25 * MS, 2),
            policy_config_for(Cluster.shared({"m": PROF}, 25 * MS, 2), SimConfig()),
        )[0]
    )
    pinned = sim_table.run_search({**task, "tune": False})
    assert pinned["knobs"] is None and pinned["goodput_rps"] == row["pinned_goodput_rps"]
    assert "b " in sim_table.format_table(
        [
            {
                **row,
                "ratio_coord": 0.5,
                "ratio_coord_overhead": 0.5,
                "ratio_uncoord_sim": 1.0,
                "ratio_uncoord_bound": 0.6,
            }
        ]
    )
