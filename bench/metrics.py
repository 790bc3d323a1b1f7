"""Serving metrics over plain arrays, shared by the simulator and the live replay harness.

Theory of operation: every function takes numpy arrays (or anything ``np.asarray``
accepts) with one entry per request or per batch and returns plain Python numbers,
dicts or arrays: nothing here knows about the simulator, the runtime or the policy
object. A driver that records, per request, its arrival, deadline, finish time and
outcome code, and per batch its worker, size, start, end and status, gets the same
figures whether the run was simulated or live.

Outcome codes (``Outcome``): ``OK`` (served, finished in time), ``LATE`` (served after
its deadline), ``REFUSED`` (its batch was refused or failed on the worker), ``DROPPED``
(the scheduler dropped it; the reason is a separate ``DropReason`` column) and
``UNFINISHED`` (-1: no terminal answer, a bug in whatever produced the run).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

import numpy as np

from central.policy.types import BatchStatus, DropReason

__all__ = [
    "Outcome",
    "batch_size_histogram",
    "busy_fraction",
    "drops_by_reason",
    "goodput_rps",
    "latency_percentiles",
    "mean_batch_size",
    "met_slo",
    "outcome_counts",
    "slo_attainment",
    "summarize",
]

NS_PER_S = 1_000_000_000


class Outcome(enum.IntEnum):
    """How one request ended (stored as int8)."""

    UNFINISHED = -1  # no terminal answer at all: a bug
    OK = 0  # served, result back by its deadline
    LATE = 1  # served, result back after its deadline
    REFUSED = 2  # its batch was refused (too late/early) or failed on the worker
    DROPPED = 3  # dropped by the scheduler; see the drop-reason column


def met_slo(finish_ns: Any, deadline_ns: Any) -> np.ndarray:
    """Boolean per request: it finished (``finish_ns >= 0``) no later than its deadline."""
    finish = np.asarray(finish_ns, dtype=np.int64)
    return (finish >= 0) & (finish <= np.asarray(deadline_ns, dtype=np.int64))


def slo_attainment(met: Any) -> float:
    """Fraction of requests that met their SLO (1.0 for no requests)."""
    met = np.asarray(met, dtype=bool)
    return float(met.mean()) if met.size else 1.0


def goodput_rps(met: Any, span_ns: int) -> float:
    """Requests per second that met their SLO over a window of ``span_ns``.

    Raises ``ValueError`` when ``span_ns <= 0``.
    """
    if span_ns <= 0:
        raise ValueError(f"span_ns must be > 0, got {span_ns}")
    return float(np.count_nonzero(np.asarray(met, dtype=bool))) * NS_PER_S / span_ns


def outcome_counts(outcome: Any) -> dict[str, int]:
    """Requests per ``Outcome`` name (every name listed, zeros included)."""
    codes = np.asarray(outcome, dtype=np.int64)
    return {o.name: int(np.count_nonzero(codes == o.value)) for o in Outcome}


def drops_by_reason(drop_reason: Any) -> dict[str, int]:
    """Dropped requests per ``DropReason`` name, from a column of reason codes (-1: none).

    Only reasons that occurred are listed; an unknown code is counted as ``REASON_<n>``.
    """
    codes = np.asarray(drop_reason, dtype=np.int64)
    codes = codes[codes >= 0]
    out: dict[str, int] = {}
    if codes.size:
        values, counts = np.unique(codes, return_counts=True)
        known = {r.value: r.name for r in DropReason}
        for v, c in zip(values.tolist(), counts.tolist()):
            out[known.get(v, f"REASON_{v}")] = c
    return out


def mean_batch_size(sizes: Any) -> float:
    """Mean size of the given batches (0.0 when there are none)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    return float(sizes.mean()) if sizes.size else 0.0


def batch_size_histogram(sizes: Any, max_batch: int | None = None) -> np.ndarray:
    """Counts indexed by batch size: ``hist[b]`` batches of size ``b`` (``hist[0]`` is 0).

    The result has length ``max(max_batch, largest size) + 1``.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    length = max(int(sizes.max()) if sizes.size else 0, max_batch or 0) + 1
    return np.bincount(sizes, minlength=length)


def busy_fraction(worker: Any, start_ns: Any, end_ns: Any, n_workers: int, span_ns: int) -> np.ndarray:
    """Per worker (index = worker id), the fraction of ``span_ns`` spent running batches.

    Pass only the batches that ran (status OK). Raises ``ValueError`` when ``span_ns <= 0``.
    """
    if span_ns <= 0:
        raise ValueError(f"span_ns must be > 0, got {span_ns}")
    busy = np.asarray(end_ns, dtype=np.int64) - np.asarray(start_ns, dtype=np.int64)
    per = np.bincount(
        np.asarray(worker, dtype=np.int64), weights=busy.astype(np.float64), minlength=n_workers
    )
    return per / span_ns


def latency_percentiles(
    arrival_ns: Any, finish_ns: Any, percentiles: Sequence[float] = (50.0, 99.0, 99.9)
) -> dict[str, float]:
    """Latency (finish - arrival) percentiles in ms over requests that finished.

    Keys are ``p50``-style names; values are ``nan`` when nothing finished.
    """
    finish = np.asarray(finish_ns, dtype=np.int64)
    done = finish >= 0
    lat = (finish[done] - np.asarray(arrival_ns, dtype=np.int64)[done]) / 1e6
    return {f"p{p:g}": float(np.percentile(lat, p)) if lat.size else float("nan") for p in percentiles}


def summarize(
    *,
    arrival_ns: Any,
    deadline_ns: Any,
    finish_ns: Any,
    outcome: Any,
    drop_reason: Any,
    batch_size: Any,
    batch_worker: Any,
    batch_start_ns: Any,
    batch_end_ns: Any,
    batch_status: Any,
    n_workers: int,
    span_ns: int,
) -> dict[str, Any]:
    """The standard report of one run as plain data (JSON-able).

    ``met`` counts served requests that finished by their deadline; a request's
    ``outcome`` only decides whether it is counted as served (``OK``/``LATE``).
    """
    outcome = np.asarray(outcome, dtype=np.int64)
    served = (outcome == Outcome.OK) | (outcome == Outcome.LATE)
    met = served & met_slo(finish_ns, deadline_ns)
    status = np.asarray(batch_status, dtype=np.int64)
    ran = status == BatchStatus.OK
    sizes = np.asarray(batch_size, dtype=np.int64)[ran]
    busy = busy_fraction(
        np.asarray(batch_worker)[ran],
        np.asarray(batch_start_ns)[ran],
        np.asarray(batch_end_ns)[ran],
        n_workers,
        max(1, span_ns),
    )
    return {
        "requests": int(outcome.size),
        "slo_attainment": slo_attainment(met),
        "goodput_rps": goodput_rps(met, max(1, span_ns)),
        "offered_rps": outcome.size * NS_PER_S / max(1, span_ns),
        "outcomes": outcome_counts(outcome),
        "drops_by_reason": drops_by_reason(drop_reason),
        "batches": int(status.size),
        "batches_refused": int(status.size - np.count_nonzero(ran)),
        "mean_batch_size": mean_batch_size(sizes),
        "batch_size_histogram": batch_size_histogram(sizes).tolist(),
        "busy_fraction_mean": float(busy.mean()) if busy.size else 0.0,
        "busy_fraction_max": float(busy.max()) if busy.size else 0.0,
        "latency_ms": latency_percentiles(arrival_ns, finish_ns),
    }
