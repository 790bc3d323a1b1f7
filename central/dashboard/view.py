"""What ``baton top`` shows: a ``Reading`` in, rows and lines of text out. No I/O, no textual.

Theory of operation: ``model_rows`` and ``worker_rows`` turn a reading into rows of
cells (strings, already formatted) plus sort keys; ``render`` lays them out in at most
``width`` x ``height`` characters: a status line, the model table, the worker table, and a
key-help footer. Every number is the scheduler's view except p50/p99 latency, which
only a frontend measures (``Reading.latency``; "-" when no frontend answers). The
scheduler counts drops globally, so a model's drops and SLO share include drops only
when it is the only model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from central.protocol.records import BatchRecord

from .source import Reading

__all__ = [
    "MODEL_COLUMNS",
    "WORKER_COLUMNS",
    "Sort",
    "model_rows",
    "worker_rows",
    "timeline",
    "busy_fraction",
    "render",
    "unreachable_message",
    "HELP",
]

TIMELINE_CHARS = 40
TIMELINE_NS = 400_000_000  # 40 chars over the last 400 ms: 10 ms a character
BUSY_WINDOW_NS = 1_000_000_000
BAR_CHARS = 8

# (title, width); the first cell of each table is left-aligned, the rest right-aligned.
MODEL_COLUMNS = [
    ("model", 11),
    ("offer/s", 8),
    ("good/s", 7),
    ("SLO%", 5),
    ("p50", 5),
    ("p99", 5),
    ("batch", 5),
    ("drops", 5),
    ("queue", 5),
    ("k ms", 5),
    ("c ms", 5),
]
WORKER_COLUMNS = [
    ("gpu", 3),
    ("model", 10),
    ("busy", BAR_CHARS + 5),
    ("run", 3),
    ("last 400 ms (10 ms/char)", TIMELINE_CHARS),
]

_LEFT = {"model", "gpu"}  # text columns; the rest are numbers, right-aligned

HELP = [
    "baton top: the scheduler's live view",
    "",
    "  q  quit          s  next sort column          r  reverse sort",
    "  ?  this help (any key closes it)",
    "",
    "Models: offer/s = arrivals/s (~ marks the policy's estimate when",
    "  several models share the counter); good/s = requests in batches",
    "  that ran OK inside their window; SLO% = those / (batched + dropped)",
    "  over the last 2 s, the scheduler's view; p50/p99 = frontend accept",
    "  to reply ms, last 5 s ('-': no frontend); batch = mean batch; k, c:",
    "  the profile l(b) = k*b + c. Drops are global: shown for one model only.",
    "Workers: busy = fraction of the last 1 s running batches; run =",
    "  batches in flight; timeline: '█' a batch ran, 'x' it failed, '·' idle.",
]


@dataclass(frozen=True)
class Sort:
    """Which column sorts which table; ``index`` runs over model then worker columns."""

    index: int = 0
    reverse: bool = False

    def next(self) -> Sort:
        return Sort((self.index + 1) % (len(MODEL_COLUMNS) + len(WORKER_COLUMNS)), self.reverse)

    def flipped(self) -> Sort:
        return Sort(self.index, not self.reverse)

    @property
    def table(self) -> str:
        return "models" if self.index < len(MODEL_COLUMNS) else "workers"

    @property
    def column(self) -> int:
        return self.index if self.index < len(MODEL_COLUMNS) else self.index - len(MODEL_COLUMNS)

    @property
    def title(self) -> str:
        cols = MODEL_COLUMNS if self.table == "models" else WORKER_COLUMNS
        return f"{self.table}.{cols[self.column][0]}"


Row = tuple[list[str], list[Any]]  # (cells, sort keys)


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _ms(ns: Any) -> str:
    return "-" if ns is None else f"{ns / 1e6:.2f}"


def model_rows(r: Reading) -> list[Row]:
    """One row per model the policy or the batch log knows."""
    pmodels = ((r.snapshot or {}).get("policy") or {}).get("models", {})
    rows: list[Row] = []
    for name, m in r.models.items():
        pm = pmodels.get(name, {})
        offer = _num(m.offered_rps, ".1f")
        if m.offered_rps is not None and not m.offered_exact:
            offer = "~" + offer
        slo = None if m.slo_fraction is None else 100.0 * m.slo_fraction
        p50, p99 = r.latency.get(name, (None, None))  # from a frontend, when one answers
        cells = [
            name,
            offer,
            _num(m.goodput_rps, ".1f"),
            _num(slo, ".1f"),
            _num(p50, ".1f"),
            _num(p99, ".1f"),
            _num(m.mean_batch, ".1f"),
            _num(m.drops, "d"),
            str(pm.get("queue", "-")),
            _ms(pm.get("k_ns")),
            _ms(pm.get("c_ns")),
        ]
        keys = [
            name,
            m.offered_rps,
            m.goodput_rps,
            slo,
            p50,
            p99,
            m.mean_batch,
            m.drops,
            pm.get("queue"),
            pm.get("k_ns"),
            pm.get("c_ns"),
        ]
        rows.append((cells, keys))
    return rows


def busy_fraction(records: list[BatchRecord], now_ns: int, window_ns: int = BUSY_WINDOW_NS) -> float:
    """Fraction of ``[now - window, now]`` covered by the records' ``[start, end]``."""
    lo = now_ns - window_ns
    covered = 0
    for rec in records:
        s, e = max(rec.start_ns, lo), min(rec.end_ns, now_ns)
        covered += max(0, e - s)
    return min(1.0, covered / window_ns)


def timeline(
    records: list[BatchRecord], now_ns: int, chars: int = TIMELINE_CHARS, span_ns: int = TIMELINE_NS
) -> str:
    """``chars`` characters over ``[now - span, now]``: '█' ran, 'x' failed, '·' idle."""
    step = span_ns / chars
    lo = now_ns - span_ns
    out = ["·"] * chars
    for rec in records:
        s, e = rec.start_ns, rec.end_ns
        if e <= lo or s >= now_ns:
            continue
        first = max(0, int((s - lo) // step))
        last = min(chars - 1, int((max(s, e - 1) - lo) // step))
        mark = "█" if rec.status == 0 else "x"
        for i in range(first, last + 1):
            if out[i] != "x":
                out[i] = mark
    return "".join(out)


def worker_rows(r: Reading) -> list[Row]:
    """One row per GPU the scheduler knows (its id, model, busy bar, timeline)."""
    snap = r.snapshot or {}
    pworkers = (snap.get("policy") or {}).get("workers", {})
    now = r.sched_now_ns
    ids = sorted({int(w) for w in snap.get("workers", {})} | {int(w) for w in pworkers})
    rows: list[Row] = []
    for wid in ids:
        pw = pworkers.get(str(wid), pworkers.get(wid, {}))  # JSON keys are strings
        recs = r.batches.get(wid, [])
        models = ",".join(pw.get("models", [])) or "-"
        alive = pw.get("alive", True)
        inflight = pw.get("inflight")
        if now is None:
            frac, line = None, " " * TIMELINE_CHARS
        else:
            frac, line = busy_fraction(recs, now), timeline(recs, now)
        if not alive:
            bar = "lost".ljust(BAR_CHARS + 5)
        elif frac is None:
            bar = "-"
        else:
            full = round(frac * BAR_CHARS)
            bar = "▮" * full + "▯" * (BAR_CHARS - full) + f"{100 * frac:4.0f}%"
        cells = [str(wid), models, bar, "-" if inflight is None else str(inflight), line]
        last_size = recs[-1].size if recs else None
        keys = [wid, models, frac, inflight, last_size]
        rows.append((cells, keys))
    return rows


def _sorted(rows: list[Row], column: int, reverse: bool) -> list[Row]:
    # None sorts last whichever the direction; numbers and strings never compare.
    present = [r for r in rows if r[1][column] is not None]
    missing = [r for r in rows if r[1][column] is None]
    present.sort(key=lambda r: (str(type(r[1][column])), r[1][column]), reverse=reverse)
    return present + missing


def _line(cells: list[str], columns: list[tuple[str, int]]) -> str:
    parts = []
    for i, (cell, (_, w)) in enumerate(zip(cells, columns)):
        cell = cell if len(cell) <= w else cell[: w - 1] + "…"
        left = columns[i][0] in _LEFT or w > 20  # names and the timeline
        parts.append(cell.ljust(w) if left else cell.rjust(w))
    return " ".join(parts).rstrip()


def _title_line(columns: list[tuple[str, int]], mark: int | None, reverse: bool) -> str:
    cells = []
    for i, (t, _) in enumerate(columns):
        cells.append(t + ("▼" if reverse else "▲") if i == mark else t)
    return _line(cells, columns)


def unreachable_message(r: Reading) -> str:
    """The status line when no stats came for over 2 s."""
    return f"scheduler unreachable at {r.address} (no stats for {r.silent_s:.0f} s)"


def _status(r: Reading) -> str:
    if r.unreachable:
        return unreachable_message(r)
    snap = r.snapshot or {}
    t = r.totals
    drops = snap.get("drops_by_reason", {})
    why = ",".join(f"{k.lower()} {v}" for k, v in drops.items() if v) or "none"
    return (
        f"{r.mode} {r.address}  up {snap.get('uptime_s', 0):.0f}s  in/s {t.get('offered_rps', 0):.1f}"
        f"  drop/s {t.get('dropped_rps', 0):.1f}  drops: {why}"
    )


def render(r: Reading, sort: Sort = Sort(), width: int = 80, height: int = 24) -> list[str]:
    """The whole screen as at most ``height`` lines of at most ``width`` characters."""
    lines = [_status(r)]
    if r.snapshot is not None:
        snap = r.snapshot
        lat = snap.get("timer_lateness_us", {})
        lines.append(
            f"frontends {snap.get('frontends', 0)}  gpus {len(snap.get('workers', {}))}"
            f"  timer late p99 {lat.get('p99', 0):.0f}us  sort {sort.title}"
            f"{' rev' if sort.reverse else ''}  (scheduler's view)"
        )
    mrows = model_rows(r)
    wrows = worker_rows(r)
    m_sort = sort.column if sort.table == "models" else 0
    w_sort = sort.column if sort.table == "workers" else 0
    rev_m = sort.reverse and sort.table == "models"
    rev_w = sort.reverse and sort.table == "workers"
    lines.append(_title_line(MODEL_COLUMNS, m_sort if sort.table == "models" else None, rev_m))
    lines += [_line(c, MODEL_COLUMNS) for c, _ in _sorted(mrows, m_sort, rev_m)]
    lines.append(_title_line(WORKER_COLUMNS, w_sort if sort.table == "workers" else None, rev_w))
    wl = [_line(c, WORKER_COLUMNS) for c, _ in _sorted(wrows, w_sort, rev_w)]
    room = height - len(lines) - 1
    if len(wl) > room:
        wl = [*wl[: max(0, room - 1)], f"... {len(wl) - max(0, room - 1)} more workers"]
    lines += wl
    lines = lines[: height - 1]
    lines += [""] * (height - 1 - len(lines))
    lines.append("q quit  s sort  r reverse  ? help")
    return [ln if len(ln) <= width else ln[: width - 1] + "…" for ln in lines]
