"""The goodput search: a bracket from the analytic bound, bisection, repeatable probes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.search import bound_rps, search_goodput, trace_maker
from bench.sim import Cluster
from central.policy import Profile, analytic_bound

MS = 1_000_000
PROF = Profile(k_ns=1_082_000, c_ns=5_204_000, max_batch=64)


def test_poisson_goodput_sits_just_below_the_bound() -> None:
    cluster = Cluster.shared({"m": PROF}, 25 * MS, 4)
    res = search_goodput("symphony", cluster, requests=6_000, rel_tol=0.03)
    bound = analytic_bound(4, PROF.k_ns, PROF.c_ns, 25 * MS)
    assert res.bound_rps == pytest.approx(bound.goodput_rps)
    # the simulator's 0.8 ms of overheads do not move b* = 13 here (l(13) = 19.27 ms fits
    # 4/5 of 24.2 ms as of 25 ms), so the bound with overheads is the same figure
    assert analytic_bound(4, PROF.k_ns, PROF.c_ns, 25 * MS, overhead_ns=800_000) == bound
    # the first probe is the bound itself, and Poisson arrivals cannot sustain it
    assert res.probes[0].rate_rps == pytest.approx(bound.goodput_rps)
    assert not res.probes[0].passed
    # "Just below": seeds 1-24 put the answer at 0.828-0.906 of the bound (seed 1, this
    # run: 0.875). The bisection from the bound moves in steps of 1/64 (0.016), so the
    # band is that range plus one step each side. Theory: under Poisson a batch is however
    # many requests arrived, and 99% on time must allow for the unlucky ones: a few %
    # below at N = 8 (0.917 in docs/benchmarks.md), more at N = 2 (0.777); N = 4 between.
    assert 0.81 * bound.goodput_rps <= res.rate_rps <= 0.925 * bound.goodput_rps
    # goodput is the passing rate less its misses (<= 1%), counted over the trace's window;
    # a 6,000-request Poisson count is +-1.3% (1 sd) off rate x window, and seeds 1-24
    # put goodput/rate at 0.972-1.031
    assert res.attainment >= 0.99 and res.goodput_rps == pytest.approx(res.rate_rps, rel=0.05)
    passed = [p.rate_rps for p in res.probes if p.passed]
    failed = [p.rate_rps for p in res.probes if not p.passed]
    assert res.rate_rps == max(passed) and min(failed) > res.rate_rps
    assert min(failed) - res.rate_rps <= 0.03 * min(failed)
    again = search_goodput("symphony", cluster, requests=6_000, rel_tol=0.03)
    assert again.probes == res.probes  # a fixed seed: the same probes


def test_bursty_arrivals_cost_goodput() -> None:
    cluster = Cluster.shared({"m": PROF}, 25 * MS, 4)
    poisson = search_goodput("symphony", cluster, requests=6_000, rel_tol=0.05)
    bursty = search_goodput("symphony", cluster, trace="gamma", cv=3.0, requests=6_000, rel_tol=0.05)
    bound = analytic_bound(4, PROF.k_ns, PROF.c_ns, 25 * MS).goodput_rps
    # rel_tol 0.05: steps of 1/32 of the bound (0.031). Seeds 1-6: Poisson 0.813-0.875 of
    # the bound (seed 1: 0.875), Gamma CV 3 0.469-0.594 (seed 1: 0.484), bursty over
    # Poisson 0.55-0.70. Bands: those ranges plus about one step. docs/benchmarks.md puts
    # Gamma CV 3 at 0.30 (N = 2) and 0.67 (N = 8) of the bound: N = 4 lies between.
    assert 0.78 * bound <= poisson.rate_rps <= 0.91 * bound
    assert 0.43 * bound <= bursty.rate_rps <= 0.63 * bound
    assert bursty.rate_rps < 0.75 * poisson.rate_rps


def test_multi_model_bracket_and_kinds(azure_trace: Path) -> None:
    a, b = Profile(2 * MS, 3 * MS, 32), Profile(MS, 6 * MS, 32)
    cluster = Cluster({"a": a, "b": b}, {"a": 30 * MS, "b": 40 * MS}, (("a",), ("a", "b"), ("b",)))
    expected = (
        analytic_bound(2, a.k_ns, a.c_ns, 30 * MS, max_batch=32).goodput_rps
        + analytic_bound(2, b.k_ns, b.c_ns, 40 * MS, max_batch=32).goodput_rps
    )
    assert bound_rps(cluster) == pytest.approx(expected)
    make = trace_maker("piecewise", ("a", "b"), bursts=2)
    tr = make(1_000.0, 4.0, 1)
    assert tr.models == ("a", "b") and tr.mean_rate_rps == pytest.approx(1_000, rel=0.1)
    replay = trace_maker("replay", ("m",), csv_path=azure_trace)(2_000.0, 1.0, 1)
    assert replay.mean_rate_rps == pytest.approx(2_000, rel=0.2)
    with pytest.raises(ValueError, match="unknown trace kind"):
        trace_maker("zipf", ("m",))
    with pytest.raises(ValueError, match="csv_path"):
        trace_maker("replay", ("m",))
    res = search_goodput("symphony", cluster, requests=2_000, rel_tol=0.1, max_probes=4)
    assert len(res.probes) == 4  # the bracket is still 0.125 of the bound wide
    # the bound counts the worker shared by a and b for each model: the first probe, at
    # that bound, fails. Four probes from it land on multiples of 1/8 of it; seeds 1-5
    # give 0.375 (seed 6: 0.5), above the two dedicated workers' own bound at N = 1
    # (1,100 req/s = 0.46) times the ~0.65 Poisson reaches at N = 1 (0.30)
    assert res.probes[0].rate_rps == pytest.approx(expected) and not res.probes[0].passed
    assert 0.25 * expected <= res.rate_rps <= 0.5 * expected
    assert res.attainment >= 0.99
