"""Seeded arrival generators: Poisson, Gamma (bursty) and piecewise-stationary traces.

Theory of operation: every generator takes an explicit ``seed`` and builds its own
``numpy.random.Generator`` from it, so the same arguments give the same trace on every
run and machine, and nothing touches global randomness. Work is vectorised: a renewal
process (Poisson, Gamma) draws its inter-arrival gaps in large chunks and takes a
cumulative sum, stopping at ``duration_s``; a piecewise-stationary trace draws the count of
each segment and burst, places the arrivals uniformly inside it and sorts once. A million
arrivals take well under a second.

Arrivals are assigned to models independently with ``weights`` (uniform by default).
For a Poisson process this thinning gives each model an independent Poisson stream of its
share of the rate; for Gamma arrivals it keeps the aggregate's CV but each model's own
stream is smoother (merge per-model traces with ``mix`` to make each model bursty).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from bench.traces.trace import NS_PER_S, Trace

__all__ = ["gamma", "piecewise", "poisson"]

ModelSpec = str | Sequence[str]


def _models(model: ModelSpec) -> tuple[str, ...]:
    names = (model,) if isinstance(model, str) else tuple(model)
    if not names:
        raise ValueError("at least one model name is needed")
    return names


def _assign(
    rng: np.random.Generator, n: int, names: tuple[str, ...], weights: Sequence[float] | None
) -> np.ndarray:
    """Model index per arrival: all zeros for one model, else drawn with ``weights``."""
    if len(names) == 1:
        return np.zeros(n, dtype=np.int32)
    if weights is None:
        return rng.integers(0, len(names), size=n, dtype=np.int32)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(names),) or np.any(w < 0) or not w.sum() > 0:
        raise ValueError(f"weights must be {len(names)} non-negative numbers, not all 0")
    return rng.choice(len(names), size=n, p=w / w.sum()).astype(np.int32)


def _check(rate_rps: float, duration_s: float) -> int:
    if not rate_rps > 0:
        raise ValueError(f"rate_rps must be > 0, got {rate_rps}")
    if not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    return round(duration_s * NS_PER_S)


def _renewal(
    rng: np.random.Generator,
    draw: Callable[[np.random.Generator, int], np.ndarray],
    rate_rps: float,
    duration_ns: int,
) -> np.ndarray:
    """Arrival times (ns) of a renewal process whose gaps (in ns) ``draw`` returns."""
    expected = rate_rps * duration_ns / NS_PER_S
    chunks: list[np.ndarray] = []
    t = 0.0
    while True:
        n = int(expected * 1.05 + 6.0 * expected**0.5 + 64)
        times = t + np.cumsum(draw(rng, n))
        chunks.append(times)
        t = float(times[-1])
        if t >= duration_ns:
            break
    times = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    times = times[: int(np.searchsorted(times, duration_ns, side="left"))]
    return np.floor(times).astype(np.int64)


def poisson(
    rate_rps: float,
    duration_s: float,
    seed: int,
    *,
    model: ModelSpec = "m",
    weights: Sequence[float] | None = None,
) -> Trace:
    """Poisson arrivals at ``rate_rps`` for ``duration_s`` seconds.

    ``model`` is one name or several (each arrival picks one with ``weights``, uniform
    by default). Raises ``ValueError`` for a non-positive rate or duration.
    """
    duration_ns = _check(rate_rps, duration_s)
    rng = np.random.default_rng(seed)
    mean_ns = NS_PER_S / rate_rps
    times = _renewal(rng, lambda g, n: g.exponential(mean_ns, n), rate_rps, duration_ns)
    names = _models(model)
    return Trace(times, _assign(rng, times.size, names, weights), names, None, duration_ns)


def gamma(
    rate_rps: float,
    cv: float,
    duration_s: float,
    seed: int,
    *,
    model: ModelSpec = "m",
    weights: Sequence[float] | None = None,
) -> Trace:
    """Arrivals whose gaps are Gamma-distributed with mean ``1/rate_rps`` and CV ``cv``.

    CV 1 is Poisson; CV 3 is the usual "bursty" benchmark (shape ``1/cv**2``, so most
    gaps are tiny and a few are long). Raises ``ValueError`` for a non-positive rate,
    CV or duration.
    """
    duration_ns = _check(rate_rps, duration_s)
    if not cv > 0:
        raise ValueError(f"cv must be > 0, got {cv}")
    rng = np.random.default_rng(seed)
    shape = 1.0 / (cv * cv)
    scale_ns = NS_PER_S / rate_rps / shape  # mean = shape * scale
    times = _renewal(rng, lambda g, n: g.gamma(shape, scale_ns, n), rate_rps, duration_ns)
    names = _models(model)
    return Trace(times, _assign(rng, times.size, names, weights), names, None, duration_ns)


def _uniform_arrivals(rng: np.random.Generator, start_ns: int, length_ns: int, rate_rps: float) -> np.ndarray:
    """A Poisson count of arrivals placed uniformly in ``[start, start + length)``."""
    if rate_rps <= 0 or length_ns <= 0:
        return np.empty(0, dtype=np.int64)
    n = int(rng.poisson(rate_rps * length_ns / NS_PER_S))
    return start_ns + np.floor(rng.random(n) * length_ns).astype(np.int64)


def piecewise(
    segments: Sequence[tuple[float, float]],
    seed: int,
    *,
    bursts: Sequence[tuple[float, float, float]] | int = (),
    burst_s: float = 0.05,
    burst_factor: float = 4.0,
    model: ModelSpec = "m",
    weights: Sequence[float] | None = None,
) -> Trace:
    """Piecewise-stationary Poisson arrivals with short bursts on top.

    ``segments`` is ``[(duration_s, rate_rps), ...]`` played back to back (a rate may be
    0). ``bursts`` is either explicit ``[(start_s, length_s, extra_rate_rps), ...]``
    (Poisson arrivals added on top) or a count: that many bursts at seeded random start
    times, each ``burst_s`` long and raising the local rate ``burst_factor`` times. Raises
    ``ValueError`` on an empty or negative segment, or a burst outside the trace.
    """
    if not segments:
        raise ValueError("piecewise needs at least one segment")
    rng = np.random.default_rng(seed)
    edges = [0]
    rates = []
    for duration_s, rate_rps in segments:
        if not duration_s > 0 or not rate_rps >= 0:
            raise ValueError(f"segment ({duration_s}, {rate_rps}): need duration > 0, rate >= 0")
        edges.append(edges[-1] + round(duration_s * NS_PER_S))
        rates.append(float(rate_rps))
    total_ns = edges[-1]
    parts = [_uniform_arrivals(rng, edges[i], edges[i + 1] - edges[i], rates[i]) for i in range(len(rates))]
    if isinstance(bursts, int):
        if bursts < 0 or not burst_s > 0 or not burst_factor >= 1:
            raise ValueError("need bursts >= 0, burst_s > 0 and burst_factor >= 1")
        length = round(burst_s * NS_PER_S)
        starts = np.sort(rng.integers(0, max(1, total_ns - length), size=bursts))
        spec = []
        for start in starts.tolist():
            local = rates[int(np.searchsorted(edges, start, side="right")) - 1]
            spec.append((start, length, (burst_factor - 1.0) * local))
    else:
        spec = []
        for start_s, length_s, extra_rps in bursts:
            start, length = round(start_s * NS_PER_S), round(length_s * NS_PER_S)
            if start < 0 or length <= 0 or start + length > total_ns or extra_rps < 0:
                raise ValueError(f"burst ({start_s}, {length_s}, {extra_rps}) is outside the trace")
            spec.append((start, length, float(extra_rps)))
    parts.extend(_uniform_arrivals(rng, s, n, r) for s, n, r in spec)
    times = np.sort(np.concatenate(parts), kind="stable")
    names = _models(model)
    return Trace(times, _assign(rng, times.size, names, weights), names, None, total_ns)
