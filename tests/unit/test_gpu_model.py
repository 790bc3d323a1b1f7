"""workers.gpu_model: the one emulated-GPU timing rule (start, refusal, busy time, noise).

The simulator (bench/sim/engine.py), the capacity rig (bench/capacity/emulated.py), the
policy tests' virtual-time loop (tests/unit/test_policy.py) and the emulated executor
(workers/emulated.py) all use it; here it is checked on its own and against the live
worker's window check (workers/window.py).
"""

from __future__ import annotations

import random
import statistics

from hypothesis import given
from hypothesis import strategies as st

from central.protocol.conventions import BatchStatus
from workers.gpu_model import EmulatedGpu, GaussNoise, LognormalNoise, linear_latency_ns
from workers.window import WindowVerdict, check_window

MS = 1_000_000


def test_linear_latency_is_k_b_plus_c_floored_at_k_and_one() -> None:
    assert linear_latency_ns(1_082_000, 5_204_000, 4) == 4 * 1_082_000 + 5_204_000
    assert linear_latency_ns(MS, -5 * MS, 1) == MS  # c < 0: floored at k
    assert linear_latency_ns(0, -5, 3) == 1


def test_start_is_the_latest_of_earliest_ready_and_free() -> None:
    gpu = EmulatedGpu()
    assert gpu.admit(10, 20, 5) == (BatchStatus.OK, 10)  # waits for the window
    assert gpu.admit(10, 20, 15) == (BatchStatus.OK, 15)  # the payloads came late
    assert gpu.occupy(15, 7) == 22 and gpu.free_ns == 22
    assert gpu.admit(10, 30, 5) == (BatchStatus.OK, 22)  # busy until its previous end


def test_past_latest_is_refused_at_that_moment_and_the_gpu_stays_free() -> None:
    gpu = EmulatedGpu(free_ns=50)
    assert gpu.admit(10, 40, 5) == (BatchStatus.TOO_LATE, 50)
    assert gpu.free_ns == 50  # a refusal does not occupy the GPU
    assert gpu.admit(10, 40, 41) == (BatchStatus.TOO_LATE, 50)
    assert EmulatedGpu().admit(10, 40, 41) == (BatchStatus.TOO_LATE, 41)
    assert EmulatedGpu().admit(30, 20, 0) == (BatchStatus.TOO_LATE, 30)  # empty window
    tolerant = EmulatedGpu(late_tolerance_ns=5)
    assert tolerant.admit(10, 40, 45) == (BatchStatus.OK, 45)
    assert tolerant.admit(10, 40, 46) == (BatchStatus.TOO_LATE, 46)


def test_a_window_far_ahead_is_refused_too_early_only_with_a_lead_limit() -> None:
    assert EmulatedGpu().admit(10 * MS, 11 * MS, 0) == (BatchStatus.OK, 10 * MS)
    gpu = EmulatedGpu(max_lead_ns=5 * MS)
    assert gpu.admit(10 * MS, 11 * MS, 0) == (BatchStatus.TOO_EARLY, 0)
    assert gpu.admit(10 * MS, 11 * MS, 5 * MS) == (BatchStatus.OK, 10 * MS)
    gpu.free_ns = 6 * MS  # the lead counts from when the GPU could take the batch
    assert gpu.admit(10 * MS, 11 * MS, 0) == (BatchStatus.OK, 10 * MS)


def test_hold_moves_a_start_or_an_end_inside_a_stall_to_its_end() -> None:
    def after(t: int) -> int:
        return 100 if 50 <= t < 100 else t

    gpu = EmulatedGpu(hold=after)
    assert gpu.admit(60, 200, 0) == (BatchStatus.OK, 100)
    assert gpu.admit(60, 90, 0) == (BatchStatus.TOO_LATE, 100)  # the stall ate the window
    assert gpu.occupy(30, 30) == 100 and gpu.free_ns == 100
    assert gpu.occupy(100, 5) == 105


@given(
    st.integers(0, 100),
    st.integers(0, 100),
    st.integers(0, 100),
    st.integers(0, 100),
    st.integers(0, 20),
    st.one_of(st.none(), st.integers(0, 50)),
)
def test_the_verdict_agrees_with_the_live_workers_window_check(
    earliest: int, width: int, ready: int, free: int, tolerance: int, lead: int | None
) -> None:
    latest = earliest + width
    gpu = EmulatedGpu(free, max_lead_ns=lead, late_tolerance_ns=tolerance)
    status, at = gpu.admit(earliest, latest, ready)
    t = max(ready, free)
    first = check_window(
        t, earliest, latest, max_lead_ns=lead if lead is not None else 1 << 62, late_tolerance_ns=tolerance
    )
    if status is BatchStatus.TOO_EARLY:
        assert first is WindowVerdict.TOO_EARLY and at == t
        return
    assert first is not WindowVerdict.TOO_EARLY
    assert at == max(earliest, t)
    # the live worker checks again once it would start (after waiting for the window)
    again = check_window(at, earliest, latest, late_tolerance_ns=tolerance)
    assert (status is BatchStatus.OK) == (again is WindowVerdict.START)
    assert gpu.free_ns == free


def test_gauss_noise_is_the_emulated_executors_seeded_factor() -> None:
    assert GaussNoise(0.0, 1).duration(12_345) == 12_345
    noise, rng = GaussNoise(0.2, 7), random.Random(7)
    for _ in range(100):
        assert noise.duration(MS) == int(MS * max(0.2, rng.gauss(1.0, 0.2)))


def test_lognormal_noise_is_seeded_with_mean_one_and_outliers() -> None:
    def draws(seed: int, **kw: float) -> list[int]:
        n = LognormalNoise(
            kw.get("cv", 0.0), int(kw.get("jitter", 0)), kw.get("p", 0.0), 3.0, [seed, 0], chunk=64
        )
        return [n.duration(MS) for _ in range(1000)]

    assert draws(1) == [MS] * 1000
    a = draws(1, cv=0.1)
    assert a == draws(1, cv=0.1) and a != draws(2, cv=0.1)
    assert abs(statistics.mean(a) / MS - 1) < 0.02
    assert 0.08 < statistics.stdev(a) / MS < 0.12
    assert all(MS <= d <= MS + 1000 for d in draws(3, jitter=1000))
    outliers = sum(d == 3 * MS for d in draws(4, p=0.1))
    assert 60 < outliers < 140
