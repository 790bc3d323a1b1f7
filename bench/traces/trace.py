"""The ``Trace``: request arrivals as plain, read-only numpy arrays.

Theory of operation: a trace is what a load generator, a replayed log or a merge of
several of those hands the simulator (and, later, the live replay harness). It is four
columns: arrival offsets in integer nanoseconds from 0 (sorted), the index of each
arrival's model in ``models``, and optionally a per-request size. ``duration_ns`` is the
length of the observation window (a generator's ``duration_s``; by default the last
arrival), so that ``mean_rate_rps = len / duration`` is the rate the trace was made for.
The arrays are made read-only on construction: a ``Trace`` is a value, and
``rescaled``/``mix`` build new ones. Nothing here draws randomness or reads files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Trace", "mix"]

NS_PER_S = 1_000_000_000


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Trace:
    """Arrivals of one or more models; see the module docstring.

    Raises ``ValueError`` on construction when the columns disagree in length, the times
    are negative or unsorted, a model index is out of range, a model name is repeated or
    empty, or a size is below 1.
    """

    times_ns: np.ndarray  # int64, sorted, >= 0: arrival offsets from the trace's start
    model_ids: np.ndarray  # int32 index into ``models``, one per arrival
    models: tuple[str, ...]  # model names; an index into this is a model id
    sizes: np.ndarray | None = None  # int64 per-request size (bytes, tokens...) or None
    duration_ns: int | None = None  # observation window; None: the last arrival time

    def __post_init__(self) -> None:
        times = np.asarray(self.times_ns)
        if times.ndim != 1:
            raise ValueError(f"times_ns must be one-dimensional, got shape {times.shape}")
        if times.size and not np.issubdtype(times.dtype, np.integer):
            raise ValueError(f"times_ns must be integers (ns), got dtype {times.dtype}")
        times = times.astype(np.int64, copy=False)
        ids = np.asarray(self.model_ids)
        if ids.shape != times.shape:
            raise ValueError(f"model_ids has shape {ids.shape}, times_ns {times.shape}")
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"model_ids must be integers, got dtype {ids.dtype}")
        ids = ids.astype(np.int32, copy=False)
        models = tuple(self.models)
        if not models or any(not isinstance(m, str) or not m for m in models):
            raise ValueError(f"models must be non-empty names, got {models!r}")
        if len(set(models)) != len(models):
            raise ValueError(f"model names repeat: {models!r}")
        if times.size:
            if times[0] < 0:
                raise ValueError(f"times_ns must be >= 0, got {int(times[0])}")
            if np.any(times[1:] < times[:-1]):
                raise ValueError("times_ns must be sorted (non-decreasing)")
            if ids.min() < 0 or ids.max() >= len(models):
                raise ValueError(f"model_ids must lie in [0, {len(models)})")
        sizes = self.sizes
        if sizes is not None:
            sizes = np.asarray(sizes)
            if sizes.shape != times.shape:
                raise ValueError(f"sizes has shape {sizes.shape}, times_ns {times.shape}")
            if sizes.size and not np.issubdtype(sizes.dtype, np.integer):
                raise ValueError(f"sizes must be integers, got dtype {sizes.dtype}")
            sizes = sizes.astype(np.int64, copy=False)
            if sizes.size and sizes.min() < 1:
                raise ValueError("sizes must be >= 1")
            sizes = _frozen(sizes)
        duration = self.duration_ns
        if duration is not None:
            duration = int(duration)
            last = int(times[-1]) if times.size else 0
            if duration < last:
                raise ValueError(f"duration_ns {duration} is before the last arrival {last}")
        object.__setattr__(self, "times_ns", _frozen(times))
        object.__setattr__(self, "model_ids", _frozen(ids))
        object.__setattr__(self, "models", models)
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "duration_ns", duration)

    def __len__(self) -> int:
        return int(self.times_ns.size)

    @property
    def span_ns(self) -> int:
        """The observation window: ``duration_ns`` if set, else the last arrival (0 if none)."""
        if self.duration_ns is not None:
            return self.duration_ns
        return int(self.times_ns[-1]) if self.times_ns.size else 0

    @property
    def mean_rate_rps(self) -> float:
        """Arrivals per second over the observation window (0.0 for an empty window)."""
        span = self.span_ns
        return len(self) * NS_PER_S / span if span > 0 else 0.0

    def counts(self) -> dict[str, int]:
        """Arrivals per model name (every model listed, zeros included)."""
        counts = np.bincount(self.model_ids, minlength=len(self.models))
        return {m: int(c) for m, c in zip(self.models, counts)}

    def interarrival_cv(self) -> float:
        """Coefficient of variation of the gaps between consecutive arrivals (nan if < 3)."""
        if len(self) < 3:
            return float("nan")
        gaps = np.diff(self.times_ns).astype(np.float64)
        mean = gaps.mean()
        return float(gaps.std() / mean) if mean > 0 else float("nan")

    def rescaled(self, rate_rps: float) -> Trace:
        """The same arrivals with time compressed (or stretched) to mean rate ``rate_rps``.

        Every offset is multiplied by one factor, so the shape (the inter-arrival CV,
        bursts, the order of models) is kept. Raises ``ValueError`` for a non-positive
        rate or a trace whose window is empty.
        """
        if not rate_rps > 0:
            raise ValueError(f"rate_rps must be > 0, got {rate_rps}")
        if self.span_ns <= 0 or not len(self):
            raise ValueError("cannot rescale a trace with an empty window")
        factor = self.mean_rate_rps / rate_rps
        times = np.rint(self.times_ns.astype(np.float64) * factor).astype(np.int64)
        duration = max(round(self.span_ns * factor), int(times[-1]))
        return Trace(times, self.model_ids, self.models, self.sizes, duration)

    def until(self, end_ns: int) -> Trace:
        """The arrivals strictly before ``end_ns``, with the window cut to ``end_ns``."""
        cut = int(np.searchsorted(self.times_ns, end_ns, side="left"))
        sizes = None if self.sizes is None else self.sizes[:cut]
        return Trace(self.times_ns[:cut], self.model_ids[:cut], self.models, sizes, max(0, end_ns))

    def same_as(self, other: Trace) -> bool:
        """True when both traces hold exactly the same arrivals, models, sizes and window."""
        if self.models != other.models or self.span_ns != other.span_ns:
            return False
        if (self.sizes is None) != (other.sizes is None):
            return False
        if self.sizes is not None and not np.array_equal(self.sizes, other.sizes):
            return False
        return bool(
            np.array_equal(self.times_ns, other.times_ns) and np.array_equal(self.model_ids, other.model_ids)
        )


def mix(traces: Sequence[Trace]) -> Trace:
    """Merge traces into one multi-model trace, in time order.

    Model names are united in order of first appearance (the same name in two traces is
    one model); arrivals at the same instant keep the order of ``traces``. Sizes are kept
    when any trace has them (1 for the others). The window is the longest one. Raises
    ``ValueError`` when ``traces`` is empty.
    """
    if not traces:
        raise ValueError("mix needs at least one trace")
    models: list[str] = []
    index: dict[str, int] = {}
    for tr in traces:
        for m in tr.models:
            if m not in index:
                index[m] = len(models)
                models.append(m)
    times = np.concatenate([tr.times_ns for tr in traces])
    ids = np.concatenate(
        [np.asarray([index[m] for m in tr.models], dtype=np.int32)[tr.model_ids] for tr in traces]
    )
    sizes = None
    if any(tr.sizes is not None for tr in traces):
        sizes = np.concatenate(
            [tr.sizes if tr.sizes is not None else np.ones(len(tr), dtype=np.int64) for tr in traces]
        )
    order = np.argsort(times, kind="stable")
    return Trace(
        times[order],
        ids[order],
        tuple(models),
        None if sizes is None else sizes[order],
        max(tr.span_ns for tr in traces),
    )
