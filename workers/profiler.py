"""Offline profiling: measure a model's batch latency and fit ``l(b) = k*b + c``.

Theory of operation: run each batch size a few times after a warm-up, take the median
(robust to the noisy neighbours these machines have), and fit k and c by least squares.
On CPUs a CNN gains little from batching, so ``c`` can come out <= 0; the policy's
profile clamps ``l(b)`` to at least ``k`` and copes with that (DESIGN §6).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

__all__ = ["fit_linear", "profile_batches"]


def fit_linear(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares ``(k, c)`` for ``y = k*b + c``; one point gives ``(y/b, 0)``.

    Raises ``ValueError`` on no points.
    """
    if not points:
        raise ValueError("no points to fit")
    xs = [float(b) for b, _ in points]
    ys = [float(y) for _, y in points]
    if len(set(xs)) < 2:
        return ys[0] / xs[0], 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    k = sxy / sxx
    return k, my - k * mx


def profile_batches(
    run: Callable[[int], object],
    batch_sizes: Sequence[int] = (1, 2, 4, 8),
    *,
    repeats: int = 5,
    warmup: int = 2,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> list[tuple[int, int]]:
    """Median wall time in ns of ``run(b)`` for each batch size, as ``(b, ns)`` pairs."""
    out: list[tuple[int, int]] = []
    for b in batch_sizes:
        for _ in range(warmup):
            run(b)
        samples = []
        for _ in range(repeats):
            t0 = clock()
            run(b)
            samples.append(clock() - t0)
        out.append((b, int(statistics.median(samples))))
    return out
