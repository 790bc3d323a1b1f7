"""Replay a real request log (a CSV of timestamps) at a chosen mean rate.

Theory of operation: the timestamps of one column are parsed (``2023-11-16
18:15:46.6805900`` style wall-clock times, at 100 ns resolution or finer, or plain
numbers taken as seconds), sorted and turned into offsets from the first. The whole
trace is then compressed (or stretched) by one factor so that its mean rate, ``(n - 1)``
gaps over the span, equals ``target_rate_rps``: burstiness and the inter-arrival CV are
unchanged, only the clock runs faster. ``duration_s`` cuts the result, or, when the
compressed trace is shorter, repeats it end to end (one mean gap between copies).
The file is read once; nothing is cached.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from bench.traces.trace import NS_PER_S, Trace

__all__ = ["read_csv_times", "replay_csv", "replay_csv_window"]


def _parse_times(values: list[str], path: Path, first_line: int) -> np.ndarray:
    """Nanosecond integers from wall-clock strings or numeric seconds."""
    try:
        seconds = np.array(values, dtype=np.float64)
    except ValueError:
        pass
    else:
        if not np.all(np.isfinite(seconds)):
            raise ValueError(f"{path}: non-finite timestamp in the column")
        return np.rint(seconds * NS_PER_S).astype(np.int64)
    try:
        return np.array(values, dtype="datetime64[ns]").astype(np.int64)
    except ValueError:
        for i, v in enumerate(values):  # find the culprit for a precise message
            try:
                np.datetime64(v, "ns")
            except ValueError:
                raise ValueError(f"{path}:{first_line + i}: cannot parse timestamp {v!r}") from None
        raise


def read_csv_times(
    path: str | Path, column: str = "TIMESTAMP", size_column: str | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Sorted arrival offsets (ns from the first) and optional sizes from a CSV file.

    Raises ``FileNotFoundError`` when the file is missing and ``ValueError`` naming the
    file (and line) when a column is absent, a row is short or a value does not parse.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file")
        header = [h.strip() for h in header]
        if column not in header:
            raise ValueError(f"{path}: no column {column!r}; columns are {header}")
        col = header.index(column)
        scol = None
        if size_column is not None:
            if size_column not in header:
                raise ValueError(f"{path}: no column {size_column!r}; columns are {header}")
            scol = header.index(size_column)
        need = max(col, scol if scol is not None else 0)
        stamps: list[str] = []
        sizes: list[str] = []
        for row in reader:
            if not row:
                continue
            if len(row) <= need:
                raise ValueError(f"{path}:{reader.line_num}: row has {len(row)} fields")
            stamps.append(row[col].strip())
            if scol is not None:
                sizes.append(row[scol].strip())
    if not stamps:
        raise ValueError(f"{path}: no rows")
    times = _parse_times(stamps, path, 2)
    order = np.argsort(times, kind="stable")
    times = times[order] - times[order[0]]
    size_array = None
    if scol is not None:
        try:
            size_array = np.array(sizes, dtype=np.int64)[order]
        except ValueError:
            raise ValueError(f"{path}: column {size_column!r} must hold integers") from None
        size_array = np.maximum(size_array, 1)
    return times, size_array


def replay_csv(
    path: str | Path,
    target_rate_rps: float,
    column: str = "TIMESTAMP",
    duration_s: float | None = None,
    *,
    model: str = "m",
    size_column: str | None = None,
) -> Trace:
    """The arrivals of ``path``'s ``column``, compressed to mean rate ``target_rate_rps``.

    ``duration_s`` (seconds at the new rate) cuts the trace or repeats it to fill.
    ``size_column`` (e.g. ``ContextTokens``) becomes the request sizes (clamped to >= 1).
    Raises ``ValueError`` for a non-positive rate or duration, fewer than two rows or
    all rows at one instant, plus whatever ``read_csv_times`` raises.
    """
    if not target_rate_rps > 0:
        raise ValueError(f"target_rate_rps must be > 0, got {target_rate_rps}")
    if duration_s is not None and not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    times, sizes = read_csv_times(path, column, size_column)
    n = times.size
    if n < 2 or times[-1] <= 0:
        raise ValueError(f"{path}: need at least two distinct timestamps to find a rate")
    # (n - 1) gaps over the span: scale so that one mean gap is 1/target seconds.
    factor = (NS_PER_S / target_rate_rps) * (n - 1) / float(times[-1])
    scaled = np.rint(times.astype(np.float64) * factor).astype(np.int64)
    gap = round(NS_PER_S / target_rate_rps)
    period = int(scaled[-1]) + gap  # one copy plus the gap before the next
    if duration_s is None:
        return Trace(scaled, np.zeros(n, dtype=np.int32), (model,), sizes, period)
    end = round(duration_s * NS_PER_S)
    copies = max(1, -(-end // period))
    if copies > 1:
        offsets = np.repeat(np.arange(copies, dtype=np.int64) * period, n)
        scaled = np.tile(scaled, copies) + offsets
        sizes = None if sizes is None else np.tile(sizes, copies)
    cut = int(np.searchsorted(scaled, end, side="left"))
    return Trace(
        scaled[:cut],
        np.zeros(cut, dtype=np.int32),
        (model,),
        None if sizes is None else sizes[:cut],
        end,
    )


def replay_csv_window(
    path: str | Path,
    target_rate_rps: float,
    duration_s: float,
    column: str = "TIMESTAMP",
    *,
    model: str = "m",
) -> Trace:
    """The log's first ``target_rate_rps * duration_s`` arrivals, stretched or squeezed
    so that they fill ``duration_s`` exactly: a window that offers its nominal mean rate
    and keeps the log's shape within it.

    ``replay_csv`` compresses the *whole* log to the target rate, so a window much shorter
    than the compressed log offers the local rate of the log's opening minutes instead
    (0.84-0.89 of the target for the first seconds of the Azure conversation log). Raises
    ``ValueError`` for a non-positive rate or duration, plus what ``replay_csv`` raises.
    """
    if not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    want = max(1, round(target_rate_rps * duration_s))
    span = duration_s * 2.0
    while True:  # enough of the (repeated) log to hold one more arrival than wanted
        base = replay_csv(path, target_rate_rps, column, span, model=model)
        if base.times_ns.size > want:
            break
        span *= 2.0
    times = base.times_ns[: want + 1].astype(np.float64)
    end = round(duration_s * NS_PER_S)
    scaled = np.rint(times[:want] * (end / times[want])).astype(np.int64)
    sizes = None if base.sizes is None else base.sizes[:want]
    return Trace(scaled, np.zeros(want, dtype=np.int32), (model,), sizes, end)
