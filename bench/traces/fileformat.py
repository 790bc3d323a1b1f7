"""Baton's own trace file: a small, line-oriented CSV that says what it is.

Format, version 1 (UTF-8 text, ``\\n`` line ends)::

    # baton-trace v1
    # models=resnet,bert
    # duration_ns=2000000000
    time_ns,model,size
    0,resnet,1
    1250000,bert,3

* Line 1 is exactly ``# baton-trace v1``: the magic and the format version.
* Before the header, ``# key=value`` lines are directives: ``models`` (comma-separated
  names; fixes the model order and lets a model with no arrival survive a round trip)
  and ``duration_ns`` (the observation window, >= the last arrival). Both are optional;
  without ``models`` the order is that of first appearance. Any other line that starts
  with ``#`` is a comment, and blank lines are ignored, anywhere.
* The header is ``time_ns,model`` or ``time_ns,model,size``.
* Each row: ``time_ns`` a decimal integer >= 0, never below the previous row's;
  ``model`` a non-empty name (no comma, no surrounding space, not starting with ``#``),
  listed in ``models`` when that directive is present; ``size`` an integer >= 1.

``load`` checks every rule and raises ``TraceFormatError`` (a ``ValueError``) naming
the file, the line and what is wrong. ``save`` refuses names the format cannot hold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.traces.trace import Trace

__all__ = ["MAGIC", "TraceFormatError", "load", "save"]

MAGIC = "# baton-trace v1"
_PREFIX = "# baton-trace v"


class TraceFormatError(ValueError):
    """The file is not a valid Baton trace; the message names file, line and cause."""


def _check_name(name: str) -> None:
    if not name or name != name.strip() or any(ch in name for ch in ",\n\r") or name.startswith("#"):
        raise ValueError(f"model name {name!r} cannot be written to a trace file")


def save(trace: Trace, path: str | Path) -> None:
    """Write ``trace`` to ``path`` in format v1 (overwriting it).

    Raises ``ValueError`` when a model name cannot be represented (empty, with a comma
    or line break, surrounding whitespace, or a leading ``#``).
    """
    for name in trace.models:
        _check_name(name)
    names = np.asarray(trace.models, dtype=object)[trace.model_ids]
    times = trace.times_ns.tolist()
    lines = [MAGIC, "# models=" + ",".join(trace.models)]
    if trace.duration_ns is not None:
        lines.append(f"# duration_ns={trace.duration_ns}")
    if trace.sizes is None:
        lines.append("time_ns,model")
        lines.extend(f"{t},{m}" for t, m in zip(times, names.tolist()))
    else:
        lines.append("time_ns,model,size")
        lines.extend(f"{t},{m},{s}" for t, m, s in zip(times, names.tolist(), trace.sizes.tolist()))
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _int(text: str, what: str, where: str) -> int:
    # Only plain decimal digits: int() would also take "+5", " 5", "5_000" or "٥".
    if not text.isascii() or not text.isdigit():
        raise TraceFormatError(f"{where}: {what} must be a non-negative integer, got {text!r}")
    return int(text)


def load(path: str | Path) -> Trace:
    """Read a format-v1 trace file.

    Raises ``FileNotFoundError`` when it is missing and ``TraceFormatError`` when it
    breaks any rule of the format (see the module docstring).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TraceFormatError(f"{path}: not UTF-8 text ({e.reason})") from None
    lines = text.split("\n")
    first = lines[0].rstrip("\r")
    if first != MAGIC:
        if first.startswith(_PREFIX):
            raise TraceFormatError(
                f"{path}:1: unsupported trace format version {first[len(_PREFIX) :]!r} (this reader knows v1)"
            )
        raise TraceFormatError(f"{path}:1: not a Baton trace (the first line must be {MAGIC!r})")
    declared: tuple[str, ...] | None = None
    duration: int | None = None
    header: list[str] | None = None
    index: dict[str, int] = {}
    times: list[int] = []
    ids: list[int] = []
    sizes: list[int] = []
    last = 0
    for lineno, raw in enumerate(lines[1:], start=2):
        line = raw.rstrip("\r")
        where = f"{path}:{lineno}"
        if not line.strip():
            continue
        if line.startswith("#"):
            body = line[1:].strip()
            key, eq, value = body.partition("=")
            if header is None and eq and key in ("models", "duration_ns"):
                if key == "models":
                    if declared is not None:
                        raise TraceFormatError(f"{where}: models declared twice")
                    declared = tuple(value.split(","))
                    for name in declared:
                        try:
                            _check_name(name)
                        except ValueError as e:
                            raise TraceFormatError(f"{where}: {e}") from None
                    if len(set(declared)) != len(declared):
                        raise TraceFormatError(f"{where}: a model is declared twice")
                    index = {name: i for i, name in enumerate(declared)}
                else:
                    if duration is not None:
                        raise TraceFormatError(f"{where}: duration_ns declared twice")
                    duration = _int(value.strip(), "duration_ns", where)
            continue
        fields = line.split(",")
        if header is None:
            if fields not in (["time_ns", "model"], ["time_ns", "model", "size"]):
                raise TraceFormatError(
                    f"{where}: header must be 'time_ns,model' or 'time_ns,model,size', got {line!r}"
                )
            header = fields
            continue
        if len(fields) != len(header):
            raise TraceFormatError(
                f"{where}: expected {len(header)} fields ({','.join(header)}), got {len(fields)}"
            )
        t = _int(fields[0], "time_ns", where)
        if t < last:
            raise TraceFormatError(f"{where}: time_ns {t} is before the previous row's {last}")
        last = t
        name = fields[1]
        mid = index.get(name)
        if mid is None:
            if declared is not None:
                raise TraceFormatError(f"{where}: model {name!r} is not in the models line")
            try:
                _check_name(name)
            except ValueError as e:
                raise TraceFormatError(f"{where}: {e}") from None
            mid = index[name] = len(index)
        times.append(t)
        ids.append(mid)
        if len(header) == 3:
            size = _int(fields[2], "size", where)
            if size < 1:
                raise TraceFormatError(f"{where}: size must be >= 1, got {size}")
            sizes.append(size)
    if header is None:
        raise TraceFormatError(f"{path}: no header line (time_ns,model[,size])")
    models = declared if declared is not None else tuple(index)
    if not models:
        raise TraceFormatError(f"{path}: no models: add a '# models=' line or rows")
    if duration is not None and duration < last:
        raise TraceFormatError(f"{path}: duration_ns {duration} is before the last arrival {last}")
    return Trace(
        np.asarray(times, dtype=np.int64),
        np.asarray(ids, dtype=np.int32),
        models,
        np.asarray(sizes, dtype=np.int64) if len(header) == 3 else None,
        duration,
    )
