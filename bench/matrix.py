"""``python -m bench.matrix``: issue 4's live matrix, Baton against its peers, with targets.

Theory of operation: for every SLO (before dilation: 25 and 100 ms) and every trace
(Poisson; the Azure LLM conversation log, ``--trace replay`` of ``bench.replay``, its
timestamps compressed to the probe's mean rate), each system runs the live goodput search
of ``bench.replay`` (``bisect_rate``): the highest mean rate at which >= 99% of requests
meet the SLO, ``--probes`` probes of ``--duration`` seconds each, on N = 8 GPUs or
replicas of the emulated model ``l(b) = 1.082 ms*b + 5.204 ms``:

* ``baton`` and ``baton-uncoordinated``: a fresh local cluster per cell, probes on it;
  ``baton-uncoordinated``'s knobs (max batch, queue delay) are tuned live once per SLO
  as the peers' are (``bench.replay.tune_uncoordinated_live``: a small grid seeded by the
  simulator's tuning, ``bench.search.tune_uncoordinated``, on the same profile, N, SLO and
  a Poisson trace: its best, its next two and the analytic defaults, each on a fresh
  cluster for ``--tune-duration`` s at ``--uncoord-tune-load`` of the simulator's tuned
  capacity; the best by attainment, then goodput, ties to the simulator's order), then
  searched with the best (``--pinned-uncoordinated``: its analytic defaults, untuned; the
  report gives the knobs it ran with and where they came from); the bracket is
  ``BATON_LO_FRAC`` (0.3) or ``PEER_LO_FRAC`` (0.05, for uncoordinated systems, which may
  not reach 0.3 of the coordinated bound at a tight SLO) to ``HI_FRAC`` (1.05) of the
  analytic coordinated bound (``central.policy.bound``);
* ``triton`` and ``ray`` (``bench.peers``; skipped with the reason when not installed):
  their batching knobs are tuned once per SLO (``tune_peer``: a fresh server per
  setting, one seeded Poisson trace at ``--tune-load`` of the *uncoordinated* analytic
  bound, near what a per-replica batcher can carry; the best by goodput), then searched
  on one server kept up across the probes (``PeerSession``, drained between probes).

Each cell's answer per system is the goodput measured at its highest passing rate (a
bisection's lower end: the capacity lies below the lowest failing rate above it; a system
that passed no probe is reported as below its lowest failing rate). The table gives each
system's goodput as a ratio to Baton's, Baton's ratio to the analytic bound, Baton over
uncoordinated and over the best peer; the issue's targets are judged on them with interval
arithmetic (``targets``): *met* or *not met* only when the figures decide it, otherwise
*undetermined* (a system skipped, or only a bound known).

On a machine with fewer than 8 cores the profile is time-dilated x8 by default (k, c and
the SLO multiplied by one factor: every ratio, the bound as a fraction included, is
unchanged); the output names the machine, its cores, the load averages before and after,
and the dilation. The run is bounded: ``--budget-min`` (the systems not started by then
are reported as skipped for time), and an estimate is printed first.

Reports in ``--out`` (default ``bench-results/matrix``): ``matrix.json`` (settings,
machine, every probe, tuning and server start/drain costs; rewritten after every system,
so an interrupted run keeps what it measured) and ``matrix.md`` (the table and targets).

``--baton-bracket LO HI`` narrows Baton's search around a known capacity (finer steps in
few probes); ``--sim-check`` puts beside each probe of Baton's systems the simulator's
attainment for the same policy on the very same arrivals (``bench.replay.sim_attainment``):
what the policy alone does with that sample path, so that the live system's own loss shows.

Run: ``.venv/bin/python -m bench.matrix --quick`` (a smoke run, ~4 minutes) or
``.venv/bin/python -m bench.matrix --duration 8 --probes 5`` (the full matrix).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.replay import (
    ALL_SYSTEMS,
    BATON_LO_FRAC,
    BATON_SYSTEMS,
    HI_FRAC,
    PEER_LO_FRAC,
    PEER_SYSTEMS,
    UNCOORD_TUNE_LOAD,
    Setup,
    search_baton,
    search_peer,
    tune_knobs,
    tune_uncoordinated_live,
    uncoord_tuning_lines,
)
from central.policy.bound import analytic_bound

__all__ = [
    "main",
    "run_matrix",
    "estimate",
    "interval",
    "ratio",
    "judge",
    "targets",
    "markdown",
    "tune_load",
    "ceiling_rps",
    "TARGETS",
    "TRACES",
]

AZURE_CSV = Path(__file__).resolve().parents[2] / "shared" / "traces" / "azure_llm_2023_conv.csv"
# trace name in the matrix -> bench.replay's trace kind
TRACES = {"poisson": "poisson", "azure": "replay"}
K_MS, C_MS, N, MAX_BATCH = 1.082, 5.204, 8, 64
# (id, what, SLO it applies to (None: every cell), quantity, threshold)
TARGETS = (
    ("bound-25", "Baton >= 0.9 of the analytic bound at SLO 25 ms", 25.0, "baton/bound", 0.9),
    ("bound-100", "Baton >= 0.95 of the analytic bound at SLO 100 ms", 100.0, "baton/bound", 0.95),
    ("uncoord-25", "Baton >= 1.3x baton-uncoordinated at SLO 25 ms", 25.0, "baton/uncoord", 1.3),
    ("peer", "Baton >= 2x the best peer", None, "baton/best-peer", 2.0),
)
_NEEDS = {
    "baton/bound": ("baton",),
    "baton/uncoord": ("baton", "baton-uncoordinated"),
    "baton/best-peer": ("baton", *PEER_SYSTEMS),
}
# what the estimate assumes, seconds (measured on the 2-core VM, 2026-11-30)
START_S = {"baton": 6.0, "baton-uncoordinated": 6.0, "triton": 11.0, "ray": 22.0}
PROBE_OVERHEAD_S = 3.5  # sender warm-up lead, SLO + grace wait, drain
SIM_TUNE_S = 25.0  # the simulator's tuning that seeds the live uncoordinated grid, per SLO
UNCOORD_GRID = 4  # settings in that grid (its best, its next two, the defaults)
UNCOORD = "baton-uncoordinated"
TUNED_SOURCE = "tuned live; grid seeded by the simulator's tuning"

# ------------------------------------------------------------------ interval logic


def interval(r: dict[str, Any] | None) -> tuple[float, float] | None:
    """What a system's search result says of its goodput at >= 99%: ``(low, high)``.

    The search's answer, the goodput measured at its highest passing rate, is a point
    (twice) when a probe above it failed: the bisection's answer at its resolution. When
    no probe failed the search hit its bracket's top, not the system's limit: only
    ``(goodput, inf)`` is known. None passing gives ``(0, lowest failing rate)``; no
    result (skipped, failed, time budget) gives None.
    """
    if not r or "skipped" in r or "error" in r:
        return None
    if r.get("goodput_rps") is not None:
        g = float(r["goodput_rps"])
        return (g, g) if r.get("fail_rps") is not None else (g, math.inf)
    if r.get("fail_rps") is not None:
        return (0.0, float(r["fail_rps"]))
    return None


def ratio(a: tuple[float, float] | None, b: tuple[float, float] | None) -> tuple[float, float] | None:
    """The interval of ``a / b`` for non-negative intervals (None when either is unknown)."""
    if a is None or b is None:
        return None
    lo = a[0] / b[1] if b[1] > 0 else (math.inf if a[0] > 0 else 0.0)
    hi = a[1] / b[0] if b[0] > 0 else math.inf
    return (lo, hi)


def best_of(values: list[tuple[float, float] | None]) -> tuple[float, float] | None:
    """The interval of the max of several; None if any is unknown (it could be the best)."""
    if not values or any(v is None for v in values):
        return None
    return (max(v[0] for v in values), max(v[1] for v in values))  # type: ignore[index]


def judge(value: tuple[float, float] | None, threshold: float) -> str:
    """``met`` when all of the interval is >= threshold, ``not met`` when all is below."""
    if value is None:
        return "undetermined"
    if value[0] >= threshold:
        return "met"
    if value[1] < threshold:
        return "not met"
    return "undetermined"


def fmt_interval(v: tuple[float, float] | None, digits: int = 2) -> str:
    if v is None:
        return "?"
    lo, hi = v
    if lo == 0.0 and math.isinf(hi):  # nothing known
        return "?"
    if lo == hi:
        return f"{lo:.{digits}f}"
    if math.isinf(hi):
        return f">= {lo:.{digits}f}"
    if lo == 0.0:
        return f"< {hi:.{digits}f}"
    return f"{lo:.{digits}f}-{hi:.{digits}f}"


def ceiling_rps(settings: dict[str, Any], slo_ms: float) -> float:
    """The most goodput any system can show in one probe: the devices' throughput at the
    largest batch, ``N * B / l(B)``, times ``(duration + SLO) / duration`` (answers may
    come up to one SLO after the probe's last arrival and still count)."""
    d, b = settings["dilation"], settings["max_batch"]
    throughput = settings["n"] * b / ((settings["k_ms"] * b + settings["c_ms"]) * d / 1e3)
    duration = settings["duration_s"]
    return throughput * (duration + slo_ms * d / 1e3) / duration


def _capped(v: tuple[float, float] | None, cap: float) -> tuple[float, float] | None:
    return None if v is None else (v[0], max(v[0], min(v[1], cap)))


def cell_figures(
    cell: dict[str, Any], settings: dict[str, Any] | None = None
) -> dict[str, tuple[float, float] | None]:
    """The ratios the table and the targets use, for one cell.

    With ``settings`` (the doc's), a goodput known only from below is capped at
    ``ceiling_rps``: no system serves more than its devices can run.
    """
    cap = ceiling_rps(settings, cell["slo_ms"]) if settings else math.inf
    sys_ = cell["systems"]

    def iv(name: str) -> tuple[float, float] | None:
        return _capped(interval(sys_.get(name)), cap)

    baton = iv("baton")
    bound = (cell["bound_rps"], cell["bound_rps"])
    peers_run = [p for p in PEER_SYSTEMS if p in sys_]
    return {
        "baton/bound": ratio(baton, bound),
        "baton/uncoord": ratio(baton, iv("baton-uncoordinated")),
        "baton/best-peer": ratio(baton, best_of([iv(p) for p in peers_run])) if peers_run else None,
    }


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the issue in every cell it applies to, judged."""
    out = []
    for cell in doc["cells"]:
        figures = cell_figures(cell, doc.get("settings"))
        for tid, what, slo, quantity, threshold in TARGETS:
            if slo is not None and cell["slo_ms"] != slo:
                continue
            value = figures[quantity]
            why = ""
            if value is None:
                gone = [s for s in _NEEDS[quantity] if interval(cell["systems"].get(s)) is None]
                why = "no result for " + ", ".join(gone) if gone else ""
            out.append(
                {
                    "id": tid,
                    "target": what,
                    "slo_ms": cell["slo_ms"],
                    "trace": cell["trace"],
                    "quantity": quantity,
                    "threshold": threshold,
                    "value": None if value is None else list(value),
                    "status": judge(value, threshold),
                    "why": why,
                }
            )
    return out


# ------------------------------------------------------------------------ report


def _system_cell(r: dict[str, Any] | None, rel: tuple[float, float] | None) -> str:
    if not r:
        return "not run"
    if "skipped" in r:
        return f"skipped ({r['skipped']})"
    if "error" in r:
        return f"failed ({r['error'].splitlines()[0][:80]})"
    v = interval(r)
    if v is None:
        return "no probes"
    return f"{fmt_interval(v, 1)} ({fmt_interval(rel)})"


def _probe_line(name: str, r: dict[str, Any]) -> str:
    if "probes" not in r:
        return ""
    steps = ", ".join(
        f"{p['rate_rps']:.0f}{'+' if p['passed'] else '-'}"
        f"({p['attainment']:.3f}, late {p['send_late_p99_ms'] or 0:.0f}"
        + (f", sim {p['sim_attainment']:.3f}" if "sim_attainment" in p else "")
        + (
            f", offered {p['offered_rps']:.0f}"
            if abs(p.get("offered_rps", p["rate_rps"]) / p["rate_rps"] - 1) > 0.02
            else ""
        )
        + ")"
        for p in r["probes"]
    )
    extra = ""
    if "knobs" in r:
        k = r["knobs"]
        extra = f"; knobs max batch {k['max_batch']}, delay {k['queue_delay_us'] / 1000:g} ms" + (
            f" ({k['source']})" if k.get("source") else ""
        )
    if "server" in r:
        st = r["server"]
        starts = ", ".join(f"{s['seconds']:.1f} s" for s in st["starts"])
        drains = [d["seconds"] for d in st["drains"]]
        extra += f"; server starts {starts}" + (f", drains max {max(drains):.1f} s" if drains else "")
    return f"- {name}: {steps}{extra}"


def markdown(doc: dict[str, Any]) -> str:
    """The matrix's Markdown report: settings, the table, the targets, the probes."""
    m, st = doc["machine"], doc["settings"]
    d = st["dilation"]
    systems = st["systems"]
    lines = [
        f"# Live matrix (issue 4): N = {st['n']}, l(b) = {K_MS} ms*b + {C_MS} ms",
        "",
        f"Command: `{doc['command']}`  ",
        f"Machine: {m['arch']}, {m['cores']} cores, Python {m['python']}, "
        f"{'GPU: ' + m['gpu'] if m.get('gpu') else 'no GPU'}; load average (1/5/15 min) "
        f"before {_load(m.get('load_before'))}, after {_load(m.get('load_after'))}  ",
        (
            f"Time dilation x{d:g}: k = {K_MS * d:.3f} ms, c = {C_MS * d:.3f} ms and each SLO "
            f"multiplied by {d:g} (every ratio, the bound as a fraction included, unchanged); "
            "SLOs below are before dilation  "
            if d != 1
            else "No time dilation  "
        ),
        f"Search: {st['probes']} probes of {st['duration_s']:g} s per system and cell, "
        f">= 99% of requests within the SLO; bracket {st['baton_lo_frac']:g}-"
        f"{st.get('baton_hi_frac', st['hi_frac']):g} "
        f"(Baton) or {st['other_lo_frac']:g}-{st['hi_frac']:g} (the others) of the analytic "
        f"bound, after {st.get('warmup_s', 0):g} s of warm-up at its lower end (not measured); "
        f"{st['senders']} sender process(es)  ",
        f"Started {doc.get('started', '?')}, wall {doc.get('wall_s', 0) / 60:.1f} min",
        "",
        "Goodput at >= 99% SLO attainment, req/s of the dilated profile; in brackets: Baton's "
        "ratio to the analytic bound, every other system's ratio to Baton's. `< x`: no probe "
        "passed, below the lowest failing rate; `>= x`: every probe passed, the search's "
        "ceiling was reached before the system's. Ratios of such bounds use the devices' "
        "own ceiling as the upper end (`N*B/l(B)` at the largest batch B, times "
        "(duration + SLO) / duration).",
        "",
        "| SLO | trace | bound req/s | " + " | ".join(systems) + " | Baton / uncoord | Baton / best peer |",
        "|---" * (3 + len(systems) + 2) + "|",
    ]
    for cell in doc["cells"]:
        sys_ = cell["systems"]
        fig = cell_figures(cell, st)
        baton = interval(sys_.get("baton"))
        row = [f"{cell['slo_ms']:g} ms", cell["trace"], f"{cell['bound_rps']:.1f}"]
        for name in systems:
            r = sys_.get(name)
            cap = ceiling_rps(st, cell["slo_ms"])
            rel = (
                fig["baton/bound"]
                if name == "baton"
                else ratio(_capped(interval(r), cap), _capped(baton, cap))
            )
            row.append(_system_cell(r, rel))
        row += [fmt_interval(fig["baton/uncoord"]), fmt_interval(fig["baton/best-peer"])]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "| target | SLO | trace | measured | status |", "|---|---|---|---|---|"]
    for t in doc.get("targets") or targets(doc):
        value = None if t["value"] is None else tuple(t["value"])
        lines.append(
            f"| {t['target']} | {t['slo_ms']:g} ms | {t['trace']} | "
            f"{fmt_interval(value)} | {t['status']}" + (f" ({t['why']})" if t.get("why") else "") + " |"
        )
    lines += [
        "",
        "Probes (mean req/s asked for, + pass / - fail, attainment, sender late p99 ms, "
        "and what the trace's first seconds actually offered where it differs by over 2%):",
    ]
    for cell in doc["cells"]:
        lines += [
            "",
            f"SLO {cell['slo_ms']:g} ms, {cell['trace']} (load average at the start "
            f"{_load(cell.get('load_before'))}):",
        ]
        lines += [_probe_line(n, r) for n, r in cell["systems"].items() if _probe_line(n, r)]
    uncoord = {k: t for k, t in (doc.get("tuning") or {}).items() if k.startswith(UNCOORD)}
    peers = {k: t for k, t in (doc.get("tuning") or {}).items() if k not in uncoord}
    for key, t in uncoord.items():
        lines += ["", f"{key}: knobs tuned live once per SLO on a Poisson trace:", ""]
        lines += uncoord_tuning_lines(t) if "best" in t else [f"- {t.get('skipped') or t.get('error')}"]
    if peers:
        lines += ["", "Peer knobs, tuned once per SLO on a Poisson trace (best by goodput):"]
        for key, t in peers.items():
            if "best" in t:
                b = t["best"]
                lines.append(
                    f"- {key}: at {t['rate_rps']:.1f} req/s ({t.get('load', 0):g} of the "
                    f"uncoordinated bound), {len(t['tried'])} settings "
                    f"in {t['wall_s']:.0f} s; best max batch {b['knobs']['max_batch']}, "
                    f"delay {b['knobs']['queue_delay_us'] / 1000:g} ms (goodput "
                    f"{b['goodput_rps']:.1f}, attainment {b['slo_attainment']:.3f})"
                )
            else:
                lines.append(f"- {key}: {t.get('skipped') or t.get('error')}")
    return "\n".join(lines) + "\n"


def _load(v: Any) -> str:
    return "/".join(f"{x:.2f}" for x in v) if v else "?"


# ---------------------------------------------------------------------------- run


def _setup(args: argparse.Namespace, slo_ms: float, trace: str) -> Setup:
    d = args.dilation
    return Setup(
        n=args.n,
        k_ms=K_MS * d,
        c_ms=C_MS * d,
        slo_ms=slo_ms * d,
        max_batch=MAX_BATCH,
        dilation=d,
        trace_kind=TRACES[trace],
        cv=3.0,
        csv=str(args.csv) if trace == "azure" else None,
        duration_s=args.duration,
        senders=args.senders,
        seed=args.seed,
        window=args.azure_window,
    )


def estimate(args: argparse.Namespace, grid_size: int, peers_ok: list[str]) -> float:
    """A rough wall-clock estimate of the run, seconds."""
    probe = args.duration + PROBE_OVERHEAD_S
    total = 0.0
    for _ in args.slos:
        if UNCOORD in args.systems and not args.pinned_uncoordinated:
            total += SIM_TUNE_S + UNCOORD_GRID * (
                START_S[UNCOORD] + args.warmup + args.tune_duration + PROBE_OVERHEAD_S
            )
        for name in args.systems:
            if name in PEER_SYSTEMS:
                if name not in peers_ok:
                    continue
                total += grid_size * (START_S[name] + args.tune_duration + 6.0)
            total += len(args.traces) * (START_S[name] + args.warmup + PROBE_OVERHEAD_S + args.probes * probe)
    return total


def _uncoord_bound(setup: Setup) -> float:
    p = setup.profile
    return analytic_bound(
        setup.n, p.k_ns, p.c_ns, round(setup.slo_ms * 1e6), max_batch=p.max_batch, coordinated=False
    ).goodput_rps


def run_matrix(
    args: argparse.Namespace, command: str, log: Callable[[str], Any] = lambda s: print(s, flush=True)
) -> dict[str, Any]:
    """Every cell's searches; writes ``matrix.json`` after each system. Returns the doc."""
    from bench import peers as peers_mod  # noqa: F401  (import errors show up here)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    budget_s = args.budget_min * 60
    peer_reason = {p: _peer_available(p) for p in PEER_SYSTEMS if p in args.systems}
    doc: dict[str, Any] = {
        "command": command,
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "arch": platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "gpu": _gpu(),
            "load_before": list(os.getloadavg()),
        },
        "settings": {
            "n": args.n,
            "k_ms": K_MS,
            "c_ms": C_MS,
            "max_batch": MAX_BATCH,
            "dilation": args.dilation,
            "slos_ms": args.slos,
            "traces": args.traces,
            "csv": str(args.csv),
            "systems": args.systems,
            "probes": args.probes,
            "duration_s": args.duration,
            "senders": args.senders,
            "seed": args.seed,
            "baton_lo_frac": args.baton_bracket[0],
            "baton_hi_frac": args.baton_bracket[1],
            "other_lo_frac": args.lo_frac,
            "hi_frac": HI_FRAC,
            "tune_load": args.tune_load,
            "warmup_s": args.warmup,
            "tune_duration_s": args.tune_duration,
            "tune_grid": args.tune_grid,
            "uncoord_tune_load": args.uncoord_tune_load,
            "pinned_uncoordinated": args.pinned_uncoordinated,
            "budget_min": args.budget_min,
        },
        "cells": [],
        "tuning": {},
    }

    def save() -> None:
        doc["wall_s"] = time.monotonic() - t_start
        (out / "matrix.json").write_text(json.dumps(doc, indent=1))

    def over_budget() -> bool:
        return time.monotonic() - t_start > budget_s

    for slo in args.slos:
        knobs: dict[str, Any] = {}
        if UNCOORD in args.systems and not args.pinned_uncoordinated:
            key = f"{UNCOORD} @ SLO {slo:g} ms"
            setup = _setup(args, slo, "poisson")
            log(
                f"tuning {UNCOORD} at SLO {slo:g} ms: the simulator's tuning seeds a grid of "
                f"{UNCOORD_GRID}, each {args.tune_duration:g} s live at "
                f"{args.uncoord_tune_load:g} of its tuned capacity"
            )
            try:
                tuned = tune_uncoordinated_live(
                    setup,
                    args.tune_duration,
                    out / "logs" / f"uncoord-tuning-{slo:g}ms",
                    load=args.uncoord_tune_load,
                    warmup_s=args.warmup,
                    log=log,
                )
            except Exception as exc:
                doc["tuning"][key] = {"error": f"{type(exc).__name__}: {exc}"}
            else:
                doc["tuning"][key] = tuned
                knobs[UNCOORD] = tuned["best"]["knobs"]
                b = tuned["best"]
                log(
                    f"  -> {UNCOORD} kept max batch {b['knobs']['max_batch']}, delay "
                    f"{b['knobs']['queue_delay_us'] / 1000:g} ms"
                )
            save()
        for peer in [s for s in args.systems if s in PEER_SYSTEMS]:
            key = f"{peer} @ SLO {slo:g} ms"
            if peer_reason.get(peer):
                doc["tuning"][key] = {"skipped": peer_reason[peer]}
                continue
            if over_budget():
                doc["tuning"][key] = {"skipped": "time budget spent"}
                continue
            setup = _setup(args, slo, "poisson")
            frac = tune_load(args.tune_load, peer)
            rate = frac * _uncoord_bound(setup)
            grid = _grid(args.tune_grid, setup)
            log(
                f"tuning {peer} at SLO {slo:g} ms: {len(grid)} settings at {rate:.1f} req/s "
                f"({frac:g} of the uncoordinated bound), {args.tune_duration:g} s each"
            )
            try:
                tuned = tune_knobs(peer, setup, rate, args.tune_duration, grid)
            except Exception as exc:
                doc["tuning"][key] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            doc["tuning"][key] = {**tuned, "load": frac}
            knobs[peer] = tuned["best"]["knobs"]
            save()
        for trace in args.traces:
            setup = _setup(args, slo, trace)
            cell: dict[str, Any] = {
                "slo_ms": slo,
                "trace": trace,
                "bound_rps": setup.bound_rps(),
                "uncoordinated_bound_rps": _uncoord_bound(setup),
                "load_before": list(os.getloadavg()),
                "systems": {},
            }
            doc["cells"].append(cell)
            if trace == "azure" and not Path(args.csv).is_file():
                for name in args.systems:
                    cell["systems"][name] = {"skipped": f"no trace file {args.csv}"}
                continue
            for name in args.systems:
                label = f"{name} {slo:g}ms {trace}"
                if over_budget():
                    cell["systems"][name] = {"skipped": "time budget spent"}
                    continue
                t0 = time.monotonic()
                r: dict[str, Any]
                log(f"searching {label} (bound {cell['bound_rps']:.1f} req/s)")
                try:
                    if name == UNCOORD and not args.pinned_uncoordinated and name not in knobs:
                        r = {
                            "skipped": "its tuning did not finish: "
                            + str(doc["tuning"].get(f"{name} @ SLO {slo:g} ms"))[:200]
                        }
                    elif name in BATON_SYSTEMS:
                        lo, hi = args.baton_bracket if name == "baton" else (args.lo_frac, HI_FRAC)
                        r = search_baton(
                            setup,
                            BATON_SYSTEMS[name],
                            out / "logs" / label.replace(" ", "_"),
                            label,
                            iters=args.probes,
                            lo_frac=lo,
                            hi_frac=hi,
                            warmup_s=args.warmup,
                            log=log,
                            sim_check=args.sim_check,
                            knobs=knobs.get(name),
                            knobs_source=TUNED_SOURCE if name in knobs else "analytic defaults (pinned)",
                        )
                    elif peer_reason.get(name):
                        r = {"skipped": peer_reason[name]}
                    elif name not in knobs:
                        r = {
                            "skipped": "its tuning did not finish: "
                            + str(doc["tuning"].get(f"{name} @ SLO {slo:g} ms"))[:200]
                        }
                    else:
                        from bench.peers import Knobs

                        k = knobs[name]
                        r = search_peer(
                            name,
                            setup,
                            Knobs(k["max_batch"], k["queue_delay_us"], tuple(k.get("preferred") or ())),
                            out / "logs" / label.replace(" ", "_"),
                            label,
                            iters=args.probes,
                            lo_frac=args.lo_frac,
                            warmup_s=args.warmup,
                            log=log,
                        )
                except Exception as exc:
                    r = {"error": f"{type(exc).__name__}: {exc}"}
                r["wall_s"] = time.monotonic() - t0
                cell["systems"][name] = r
                log(
                    f"  -> {name}: {_system_cell(r, None)} in {r['wall_s']:.0f} s"
                    + (
                        f"; knobs max batch {r['knobs']['max_batch']}, delay "
                        f"{r['knobs']['queue_delay_us'] / 1000:g} ms"
                        if r.get("knobs")
                        else ""
                    )
                )
                save()
    doc["machine"]["load_after"] = list(os.getloadavg())
    doc["targets"] = targets(doc)
    save()
    return doc


def tune_load(spec: list[str], peer: str) -> float:
    """The tuning rate's fraction for ``peer`` from ``--tune-load`` (``0.7 ray=0.15``)."""
    default, own = 0.7, None
    for item in spec:
        name, eq, value = item.rpartition("=")
        if not eq:
            default = float(value)
        elif name == peer:
            own = float(value)
    return own if own is not None else default


def _grid(kind: str, setup: Setup) -> list[Any]:
    from bench.peers import Knobs, default_grid

    if kind == "mini":  # a smoke run's: b_u at a short and a long delay
        b_u = max(1, int((setup.slo_ms / 2 - setup.c_ms) // setup.k_ms))
        return [Knobs(b_u, int(setup.slo_ms * 1000 * f)) for f in (0.05, 0.30)]
    return default_grid(setup.k_ms, setup.c_ms, setup.slo_ms, reduced=kind == "reduced")


def _peer_available(name: str) -> str | None:
    try:
        from bench import peers
    except ImportError as exc:
        return f"bench.peers unavailable: {exc}"
    return peers.available(name)


def _gpu() -> str | None:
    """The first NVIDIA GPU's name, when ``nvidia-smi`` answers (none on the dev VM)."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


# ---------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.matrix",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Issue 4's live matrix: for each SLO and trace, the live goodput "
        "search (highest rate with >= 99% of requests within the SLO) of Baton, Baton "
        "uncoordinated, PyTriton and Ray Serve on N = 8 replicas of the emulated model "
        "l(b) = 1.082 ms*b + 5.204 ms; a table of each system's goodput as a ratio to "
        "Baton's, Baton's ratio to the analytic bound, and the issue's targets marked met "
        "or not. Writes OUT/matrix.json and OUT/matrix.md.",
        epilog="Time: each system and cell costs about its server start plus PROBES x "
        "(DURATION + 3.5 s); each peer's tuning, once per SLO, a server start (Ray ~22 s, "
        "Triton ~11 s on 2 cores) plus TUNE_DURATION per setting; baton-uncoordinated's, "
        "once per SLO, ~25 s of simulator plus 4 x (a cluster start, ~6 s, + WARMUP + "
        "TUNE_DURATION + 3.5 s). The run prints its "
        "estimate first and stops starting systems after --budget-min. Peers that are "
        "not installed (make peers) are skipped with the reason.",
    )
    p.add_argument("--slos", type=float, nargs="+", default=[25.0, 100.0], help="SLOs in ms, before dilation")
    p.add_argument(
        "--traces",
        nargs="+",
        choices=tuple(TRACES),
        default=list(TRACES),
        help="poisson, and/or azure (the Azure LLM conversation log, compressed to each probe's mean rate)",
    )
    p.add_argument("--csv", type=Path, default=AZURE_CSV, help="the Azure trace file")
    p.add_argument(
        "--azure-window",
        choices=("prefix", "whole"),
        default="prefix",
        help="prefix: each probe replays the log's opening arrivals rescaled to "
        "the probe's rate and length (it offers its nominal rate); whole: the "
        "whole log compressed to the rate, of which a short probe replays the "
        "sparser opening seconds (the first matrix run's setting)",
    )
    p.add_argument("--systems", nargs="+", choices=ALL_SYSTEMS, default=list(ALL_SYSTEMS))
    p.add_argument("--duration", type=float, default=8.0, help="seconds per probe")
    p.add_argument("--probes", type=int, default=5, help="bisection probes per system and cell")
    p.add_argument("-n", type=int, default=N, help="GPUs / replicas")
    p.add_argument(
        "--dilation",
        type=float,
        default=None,
        help="multiply k, c and the SLO by this (None: 8 below 8 cores, else 1)",
    )
    p.add_argument(
        "--senders", type=int, default=None, help="sender processes (None: 1 below 8 cores, else 2)"
    )
    p.add_argument(
        "--lo-frac",
        type=float,
        default=PEER_LO_FRAC,
        help="lower end of the bracket for every system but baton, as a fraction "
        "of the coordinated bound (baton's: --baton-bracket)",
    )
    p.add_argument(
        "--baton-bracket",
        type=float,
        nargs=2,
        default=[BATON_LO_FRAC, HI_FRAC],
        metavar=("LO", "HI"),
        help="baton's search bracket, as fractions of the coordinated bound (a "
        "narrow one around a known capacity gives a finer answer in few probes)",
    )
    p.add_argument(
        "--sim-check",
        action="store_true",
        help="beside each probe of Baton's systems, the simulator's attainment for "
        "the same policy on the same arrivals (what the policy alone does with "
        "them; the difference is the live system's)",
    )
    p.add_argument(
        "--tune-load",
        nargs="+",
        default=["0.7"],
        metavar="[PEER=]FRACTION",
        help="the peers' tuning rate, as a fraction of the uncoordinated bound: "
        "one for all, and/or per peer (e.g. 0.7 ray=0.15: aim near each peer's "
        "capacity; far above it every setting collapses and the ranking is noise)",
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds of Poisson at the bracket's lower end before each search's "
        "probes, not measured (every system alike)",
    )
    p.add_argument("--tune-duration", type=float, default=4.0, help="seconds per tuning setting")
    p.add_argument(
        "--uncoord-tune-load",
        type=float,
        default=UNCOORD_TUNE_LOAD,
        metavar="FRACTION",
        help="baton-uncoordinated's live tuning rate, as a fraction of the "
        "capacity the simulator's tuned search found (live runs a little below it)",
    )
    p.add_argument(
        "--pinned-uncoordinated",
        action="store_true",
        help="run baton-uncoordinated at its analytic defaults (max batch b with "
        "2 l(b) within the SLO, delay l(b)), untuned: the earlier matrices' baseline",
    )
    p.add_argument(
        "--tune-grid",
        choices=("full", "reduced", "mini"),
        default="reduced",
        help="knob settings tried: full (12: max batch b_u/2, b_u, 2 b_u x delay 0, "
        "5, 15, 30%% SLO), reduced (6: b_u, 2 b_u x 5, 15, 30%%), mini (2: b_u x 5, "
        "30%%)",
    )
    p.add_argument(
        "--budget-min",
        type=float,
        default=45.0,
        help="start no system after this many minutes (those left: skipped)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="bench-results/matrix", help="report directory")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: SLO 25 ms, Poisson, 2 probes of 3 s, mini tuning grid of 2 s settings",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    cores = os.cpu_count() or 1
    if args.dilation is None:
        args.dilation = 8.0 if cores < 8 else 1.0
    if args.senders is None:
        args.senders = 1 if cores < 8 else 2
    if args.quick:
        args.slos, args.traces, args.probes, args.duration = [25.0], ["poisson"], 2, 3.0
        args.tune_grid, args.tune_duration = "mini", 2.0
    try:
        [tune_load(args.tune_load, p) for p in PEER_SYSTEMS]
    except ValueError:
        print(
            f"python -m bench.matrix: --tune-load takes FRACTION or PEER=FRACTION, got {args.tune_load}",
            file=sys.stderr,
        )
        return 2
    lo, hi = args.baton_bracket
    if not 0 < lo < hi:
        print(
            f"python -m bench.matrix: --baton-bracket needs 0 < LO < HI, got {lo:g} {hi:g}", file=sys.stderr
        )
        return 2
    if args.probes < 1 or args.duration <= 0:
        print("python -m bench.matrix: --probes must be >= 1 and --duration > 0", file=sys.stderr)
        return 2
    command = ".venv/bin/python -m bench.matrix " + " ".join(argv)
    peers_ok = [p for p in PEER_SYSTEMS if p in args.systems and _peer_available(p) is None]
    grid_size = len(_grid(args.tune_grid, _setup(args, args.slos[0], "poisson")))
    est = estimate(args, grid_size, peers_ok)
    print(
        f"matrix: {platform.machine()}, {cores} cores, Python {platform.python_version()}; "
        f"time dilation x{args.dilation:g}; N = {args.n}; SLOs {args.slos} ms (before "
        f"dilation); traces {args.traces}; systems {args.systems}; {args.probes} probes of "
        f"{args.duration:g} s; estimated {est / 60:.0f} min (budget {args.budget_min:g} min); "
        f"load average {_load(os.getloadavg())}",
        flush=True,
    )
    for p in PEER_SYSTEMS:
        if p in args.systems and p not in peers_ok:
            print(f"  {p}: skipped ({_peer_available(p)})")
    doc = run_matrix(args, command)
    md = markdown(doc)
    (Path(args.out) / "matrix.md").write_text(md)
    print(md)
    print(f"reports: {Path(args.out) / 'matrix.json'}, {Path(args.out) / 'matrix.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
