"""ProfileEstimator (online refit of l(b) = k*b + c and its margin) and LoadEstimator."""

from __future__ import annotations

import math
import random

import pytest

from central.policy.profile import LoadEstimator, ProfileEstimator
from central.policy.types import Profile

MS = 1_000_000
TRUE = Profile(k_ns=1_082_000, c_ns=5_204_000, max_batch=32)


def feed(est: ProfileEstimator, rng: random.Random, n: int, sigma_ns: float, truth: Profile = TRUE) -> None:
    for _ in range(n):
        b = rng.randint(1, truth.max_batch)
        est.observe(b, max(0, round(truth.latency_ns(b) + rng.gauss(0.0, sigma_ns))))


def test_refit_recovers_k_and_c_from_noisy_samples() -> None:
    est = ProfileEstimator(Profile(k_ns=2 * MS, c_ns=MS, max_batch=32))
    feed(est, random.Random(7), 256, sigma_ns=0.2 * MS)
    fit = est.current()
    assert fit.k_ns == pytest.approx(TRUE.k_ns, rel=0.03)
    assert fit.c_ns == pytest.approx(TRUE.c_ns, rel=0.05)
    assert fit.max_batch == 32  # the executor's limit is not learnt


def test_exact_samples_give_the_exact_profile_and_no_margin() -> None:
    est = ProfileEstimator(Profile(k_ns=3 * MS, c_ns=0, max_batch=32))
    for i in range(10_000):  # integer sums: no drift however long it runs
        b = 1 + i % 32
        est.observe(b, TRUE.latency_ns(b))
    assert (est.current().k_ns, est.current().c_ns) == (TRUE.k_ns, TRUE.c_ns)
    assert est.margin_ns == 0


def test_a_few_odd_batches_do_not_swing_the_profile() -> None:
    est = ProfileEstimator(TRUE, min_samples=8)
    for _ in range(7):
        est.observe(16, TRUE.latency_ns(16) // 2)
    assert est.current() == TRUE
    assert est.margin_ns == 0  # faster than planned is no risk
    est.observe(16, TRUE.latency_ns(16) // 2)
    assert est.current().latency_ns(16) == TRUE.latency_ns(16) // 2


def test_one_batch_size_shifts_c_only() -> None:
    est = ProfileEstimator(TRUE)
    for _ in range(10):
        est.observe(8, 20 * MS)
    assert est.current().k_ns == TRUE.k_ns
    assert est.current().c_ns == 20 * MS - 8 * TRUE.k_ns


def test_margin_grows_with_noise() -> None:
    margins = []
    for sigma in (0.05 * MS, 0.2 * MS, 1.0 * MS):
        est = ProfileEstimator(TRUE)
        feed(est, random.Random(3), 256, sigma_ns=sigma)
        margins.append(est.margin_ns)
    assert 0 < margins[0] < margins[1] < margins[2]
    # About the 99th percentile of a normal residual: ~2.3 sigma, well below 4 sigma.
    assert 1.5 * MS < margins[2] < 4 * MS


def test_margin_is_the_percentile_of_positive_residuals() -> None:
    est = ProfileEstimator(TRUE, percentile=0.9, refit=False)
    for excess in range(96):  # residuals 0..95 us over the profile
        est.observe(4, TRUE.latency_ns(4) + excess * 1000)
    # Recomputed on every 16th sample: the 87th (ceil(0.9 * 96)) of 96 sorted residuals.
    assert est.margin_ns == 86_000
    assert est.current() == TRUE  # refit=False: the profile stays as given


def test_a_stall_counts_in_the_margin_only_for_the_latest_batches() -> None:
    # 64 on-time batches, then 4 that started 15 ms late at once (a stall of the machine),
    # then on-time batches again: the stall makes the margin while it is among the last
    # `late_window` samples, and is forgotten after, although its batches are still in
    # the window of 256 that the fit and the duration overruns use.
    est = ProfileEstimator(TRUE, refit=False, late_window=64, margin_every=1)
    for _ in range(64):
        est.observe(8, TRUE.latency_ns(8))
    for _ in range(4):
        est.observe(8, TRUE.latency_ns(8), late_ns=15 * MS)
    assert est.margin_ns == 15 * MS
    for _ in range(60):  # the stalled batches are samples 65-68 of the last 64 still
        est.observe(8, TRUE.latency_ns(8))
    assert est.margin_ns == 15 * MS
    for _ in range(4):
        est.observe(8, TRUE.latency_ns(8))
    assert est.samples == 132 and est.margin_ns == 0
    # an overrun of the duration itself is a property of the model: it counts all window long
    est2 = ProfileEstimator(TRUE, refit=False, late_window=64, margin_every=1)
    for _ in range(4):
        est2.observe(8, TRUE.latency_ns(8) + 15 * MS)
    for _ in range(200):
        est2.observe(8, TRUE.latency_ns(8))
    assert est2.margin_ns == 15 * MS


def test_without_a_late_window_lateness_counts_all_window_long() -> None:
    est = ProfileEstimator(TRUE, refit=False, margin_every=1)
    for _ in range(4):
        est.observe(8, TRUE.latency_ns(8), late_ns=15 * MS)
    for _ in range(200):
        est.observe(8, TRUE.latency_ns(8))
    assert est.margin_ns == 15 * MS
    with pytest.raises(ValueError, match="late_window"):
        ProfileEstimator(TRUE, late_window=0)


def test_slope_is_clamped_positive() -> None:
    est = ProfileEstimator(TRUE)
    for b in range(1, 33):  # latency that *falls* with batch size
        est.observe(b, 40 * MS - b * MS)
    assert est.current().k_ns == 1
    assert est.current().latency_ns(1) >= 1


def test_window_forgets_old_behaviour() -> None:
    est = ProfileEstimator(TRUE, window=64)
    rng = random.Random(11)
    feed(est, rng, 200, sigma_ns=0.0)
    slower = Profile(k_ns=2 * MS, c_ns=3 * MS, max_batch=32)
    feed(est, rng, 64, sigma_ns=0.0, truth=slower)
    assert (est.current().k_ns, est.current().c_ns) == (slower.k_ns, slower.c_ns)
    assert est.samples == 64


def test_rejects_impossible_input() -> None:
    with pytest.raises(ValueError):
        ProfileEstimator(Profile(k_ns=0, c_ns=0))
    with pytest.raises(ValueError):
        ProfileEstimator(TRUE, window=1)
    with pytest.raises(ValueError):
        ProfileEstimator(TRUE, percentile=0.0)
    est = ProfileEstimator(TRUE)
    with pytest.raises(ValueError):
        est.observe(0, MS)
    with pytest.raises(ValueError):
        est.observe(1, -1)


# ------------------------------------------------------------------ load


def test_rate_estimate_follows_poisson_arrivals() -> None:
    load = LoadEstimator(window_ns=1_000_000_000)
    rng = random.Random(2)
    t = 0
    for _ in range(20_000):
        t += round(rng.expovariate(4000 / 1e9))
        load.arrived(t, 25 * MS)
    assert load.rate_per_ns(t) * 1e9 == pytest.approx(4000, rel=0.1)
    assert load.budget_ns == 25 * MS
    # Quiet for two windows: the estimate decays by e^-2.
    later = load.rate_per_ns(t + 2_000_000_000)
    assert later == pytest.approx(load.rate_per_ns(t) * math.exp(-2), rel=0.01)


def test_rate_estimate_has_no_warm_up_bias() -> None:
    load = LoadEstimator(window_ns=1_000_000_000)
    for i in range(200):  # 100 ms of 2000 requests/s: a tenth of a window
        load.arrived(i * 500_000, 25 * MS)
    assert load.rate_per_ns(100 * MS) * 1e9 == pytest.approx(2000, rel=0.05)
    assert LoadEstimator(1000).rate_per_ns(0) == 0.0
    assert LoadEstimator(1000).budget_ns is None


def test_budget_follows_recent_requests() -> None:
    load = LoadEstimator(window_ns=1_000_000_000)
    for i in range(400):
        load.arrived(i, 25 * MS if i < 200 else 50 * MS)
    assert load.budget_ns == pytest.approx(50 * MS, rel=0.01)
