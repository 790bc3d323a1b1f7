"""The analytic bound (DESIGN §1) and the live target/shed-floor rules built on it."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from central.policy.bound import Bound, analytic_bound, shed_floor, target_batch
from central.policy.types import Profile

MS = 1_000_000
K, C = 1_082_000, 5_204_000  # Symphony's benchmark profile
SLO = 25 * MS


def test_design_example_coordinated() -> None:
    bound = analytic_bound(8, K, C, SLO)
    assert bound.batch == 15
    assert bound.latency_ns == 15 * K + C
    assert bound.per_worker_rps == pytest.approx(700, abs=1)
    assert bound.goodput_rps == pytest.approx(8 * bound.per_worker_rps)


def test_design_example_uncoordinated() -> None:
    bound = analytic_bound(8, K, C, SLO, coordinated=False)
    assert bound.batch == 6
    assert bound.per_worker_rps == pytest.approx(513, abs=1)


def test_single_worker_coordination_changes_nothing() -> None:
    assert analytic_bound(1, K, C, SLO) == analytic_bound(1, K, C, SLO, coordinated=False)


def test_overheads_reduce_the_bound() -> None:
    plain = analytic_bound(8, K, C, SLO)
    loaded = analytic_bound(8, K, C, SLO, overhead_ns=MS)
    assert loaded.batch == 14 < plain.batch
    assert loaded.goodput_rps < plain.goodput_rps


@pytest.mark.parametrize("coordinated", [True, False])
def test_monotone_in_workers(coordinated: bool) -> None:
    bounds = [analytic_bound(n, K, C, SLO, coordinated=coordinated) for n in range(1, 65)]
    for smaller, larger in itertools.pairwise(bounds):
        assert larger.batch >= smaller.batch
        assert larger.per_worker_rps >= smaller.per_worker_rps
        assert larger.goodput_rps > smaller.goodput_rps


@pytest.mark.parametrize("coordinated", [True, False])
def test_monotone_in_slo(coordinated: bool) -> None:
    bounds = [analytic_bound(8, K, C, slo * MS, coordinated=coordinated) for slo in range(1, 120)]
    for tighter, looser in itertools.pairwise(bounds):
        assert looser.batch >= tighter.batch
        assert looser.goodput_rps >= tighter.goodput_rps


def test_zero_when_the_fixed_cost_alone_exceeds_the_slo() -> None:
    assert analytic_bound(8, K, 30 * MS, SLO) == Bound(0, 0, 0.0, 0.0)
    # l(1) fits the SLO but not with the (1/N + 1) wait in front of it.
    assert analytic_bound(8, K, 22 * MS, SLO).batch == 0
    assert analytic_bound(8, K, C, SLO, overhead_ns=SLO).batch == 0


def test_max_batch_caps() -> None:
    bound = analytic_bound(8, K, C, SLO, max_batch=4)
    assert bound.batch == 4
    assert bound.latency_ns == 4 * K + C


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_workers": 0},
        {"k_ns": 0},
        {"overhead_ns": -1},
        {"max_batch": 0},
    ],
)
def test_rejects_nonsense(kwargs: dict[str, int]) -> None:
    args: dict[str, int] = {"n_workers": 8, "k_ns": K, "c_ns": C, "slo_ns": SLO} | kwargs
    with pytest.raises(ValueError):
        analytic_bound(**args)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 256),
    k=st.integers(1, 5 * MS),
    c=st.integers(-2 * MS, 50 * MS),
    slo=st.integers(0, 500 * MS),
    overhead=st.integers(0, 5 * MS),
    coordinated=st.booleans(),
)
def test_batch_is_exactly_the_largest_safe_one(
    n: int, k: int, c: int, slo: int, overhead: int, coordinated: bool
) -> None:
    bound = analytic_bound(n, k, c, slo, coordinated=coordinated, overhead_ns=overhead)
    profile = Profile(k, c)
    num, den = (n + 1, n) if coordinated else (2, 1)

    def safe(b: int) -> bool:
        return num * profile.latency_ns(b) <= den * (slo - overhead)

    if bound.batch == 0:
        assert not safe(1)
        assert bound.goodput_rps == 0.0
    else:
        assert safe(bound.batch) and not safe(bound.batch + 1)
        assert bound.latency_ns == profile.latency_ns(bound.batch)
        assert bound.goodput_rps == pytest.approx(n * bound.batch * 1e9 / bound.latency_ns)


# ------------------------------------------------------------- live target rules

PROFILE = Profile(K, C, max_batch=64)


def test_target_at_high_rate_is_the_coordinated_bound() -> None:
    # Arrivals far faster than the workers: the stagger gap l(b)/N dominates.
    target = target_batch(PROFILE, rate_per_ns=1.0, n_workers=8, budget_ns=SLO)
    assert target == analytic_bound(8, K, C, SLO).batch


def test_target_at_low_rate_follows_nexus() -> None:
    rate = 500 / 1e9  # 500 requests/s: a batch of b takes b * 2 ms to fill
    target = target_batch(PROFILE, rate_per_ns=rate, n_workers=8, budget_ns=SLO)
    assert target == max(b for b in range(1, 65) if PROFILE.latency_ns(b) + b / rate <= SLO)
    assert 1 < target < analytic_bound(8, K, C, SLO).batch


def test_target_edges() -> None:
    assert target_batch(PROFILE, rate_per_ns=0.0, n_workers=8, budget_ns=SLO) == 1
    assert target_batch(PROFILE, rate_per_ns=1.0, n_workers=0, budget_ns=SLO) == 0
    assert target_batch(PROFILE, rate_per_ns=1.0, n_workers=8, budget_ns=C) == 0


def test_shed_floor() -> None:
    assert shed_floor(PROFILE, 14, 1.0) == 14
    floors = [shed_floor(PROFILE, 14, f / 20) for f in range(21)]
    assert floors == sorted(floors) and floors[0] == 1
    floor = shed_floor(PROFILE, 14, 0.9)
    target_rate = 14 / PROFILE.latency_ns(14)
    assert floor / PROFILE.latency_ns(floor) >= 0.9 * target_rate
    assert (floor - 1) / PROFILE.latency_ns(floor - 1) < 0.9 * target_rate
    # No fixed cost: a small batch is as efficient as a large one; nothing to shed for.
    assert shed_floor(Profile(K, 0), 14, 1.0) == 1
    assert shed_floor(Profile(K, -MS), 14, 1.0) == 1
    assert shed_floor(PROFILE, 1, 1.0) == 1


def test_carrying_batch_is_the_smallest_batch_that_carries_the_rate_with_headroom() -> None:
    from central.policy.bound import carrying_batch

    prof = Profile(1_082_000, 5_204_000, 64)
    rate = 3361 / 1e9  # 0.6 of the 8-GPU bound at SLO 25 ms
    b = carrying_batch(prof, rate_per_ns=rate, share=8, headroom=1.25)
    assert b == 7
    assert 1.25 * rate * prof.latency_ns(7) <= 8 * 7  # it carries
    assert 1.25 * rate * prof.latency_ns(6) > 8 * 6  # one less does not
    assert carrying_batch(prof, rate_per_ns=0.0, share=8, headroom=1.25) == 1  # no load
    # near capacity no batch carries 1.25x the rate: the policy defers
    assert carrying_batch(prof, rate_per_ns=6000 / 1e9, share=8, headroom=1.25) is None
    assert carrying_batch(prof, rate_per_ns=rate, share=8, headroom=0.0) is None  # always defer
