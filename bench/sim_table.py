"""``baton bench sim``: simulated goodput of every policy over a grid, against the bounds.

Theory of operation: for each (policy, trace kind, N, SLO) of the grid, one profile
``l(b) = k*b + c`` shared by N workers, ``bench.search.search_goodput`` finds the highest
mean rate at which ``target`` of requests meet their SLO (fixed seed, so a rerun gives
the same numbers). Each goodput is set against the analytic coordinated bound
(``central.policy.bound``) without overheads and with the simulator's overheads
(``SimConfig.dispatch_delay_ns + reply_cost_ns`` taken off the SLO), against the
``uncoordinated`` policy's simulated goodput at the same point and against the analytic
uncoordinated bound. The ``uncoordinated`` baseline is tuned at every point
(``bench.search.tune_uncoordinated``: max batch and queue delay from a small grid around
its analytic defaults, scored near its own capacity) and the table names the knobs chosen
and what the defaults gave; ``--pinned-baseline`` searches the defaults only. At one point
(default N=8, SLO 25 ms, Poisson) every policy is also run directly at a sweep of offered
loads (fractions of the coordinated bound) for the attainment curve, the batch-size
distribution and a per-worker Gantt window (the baseline with its knobs tuned there).

Grid points and load points are independent, so they run in a ``multiprocessing`` pool
(``--jobs``); every task is a plain dict in, a plain dict out. Results go to one JSON
file (rows, every probe, the arguments, the machine) and PNG plots (``bench/plots.py``).
This module only orchestrates: figures come from ``bench.search``, ``bench.sim`` and
``bench.metrics``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from bench import metrics
from bench.search import TRACE_KINDS, knobs_text, search_goodput, trace_maker, tune_uncoordinated
from bench.sim import Cluster, Noise, SimConfig, simulate
from bench.sim.engine import policy_config_for
from central.policy import PolicyConfig, Profile, analytic_bound, make_policy, policy_names
from central.policy.base import DEFAULT_POLICY
from central.policy.baselines import UncoordinatedConfig

__all__ = ["PLOT_FILES", "main", "run_point", "run_search"]

MS = 1_000_000
NS_PER_S = 1_000_000_000
BASELINE = "uncoordinated"  # the policy every other is compared with, when it ran
PLOT_FILES = {
    "goodput_vs_n": "goodput_vs_n.png",
    "attainment_vs_load": "attainment_vs_load.png",
    "batch_sizes": "batch_sizes.png",
    "gantt": "gantt.png",
}
_DEFAULT_LOADS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1)
_QUICK_LOADS = (0.6, 0.8, 1.0)


# ---------------------------------------------------------------- tasks (run in workers)


def _cluster(task: dict[str, Any]) -> Cluster:
    prof = Profile(round(task["k_ms"] * MS), round(task["c_ms"] * MS), task["max_batch"])
    return Cluster.shared({"m": prof}, round(task["slo_ms"] * MS), task["n"])


def _sim_config(task: dict[str, Any]) -> SimConfig:
    return SimConfig(noise=Noise(cv=task["noise_cv"]), seed=task["seed"])


def _policy_config(task: dict[str, Any], cluster: Cluster, config: SimConfig) -> PolicyConfig:
    """``policy_config_for`` the simulated cluster, with ``task["shed_fraction"]`` when set."""
    shed = task.get("shed_fraction")
    if shed is None:
        return policy_config_for(cluster, config)
    return policy_config_for(cluster, config, shed_fraction=shed)


def run_search(task: dict[str, Any]) -> dict[str, Any]:
    """One grid point: ``search_goodput`` for ``task`` (a plain dict, see ``_grid``).

    Returns the task's keys plus ``goodput_rps``, ``rate_rps``, ``attainment``,
    ``probes`` (a list of dicts), ``knobs`` and ``wall_s``. With ``task["tune"]`` the
    ``uncoordinated`` baseline is tuned (``tune_uncoordinated``): ``knobs`` are the chosen
    ``max_batch`` and ``max_queue_delay_ns``, and ``pinned_goodput_rps``, ``pinned_probes``,
    ``tuning`` (every setting scored) and ``searched`` say how; otherwise ``knobs`` is None.
    """
    start = time.perf_counter()
    cluster, config = _cluster(task), _sim_config(task)
    search: dict[str, Any] = {
        "trace": task["trace"],
        "cv": task["cv"],
        "csv_path": task["csv"],
        "requests": task["requests"],
        "seed": task["seed"],
        "target": task["target"],
        "rel_tol": task["rel_tol"],
        "config": config,
        "policy_config": _policy_config(task, cluster, config),
    }
    extra: dict[str, Any] = {"knobs": None}
    if task["policy"] == BASELINE and task.get("tune"):
        tuned = tune_uncoordinated(cluster, **search)
        res = tuned.result
        extra = {
            "knobs": asdict(tuned.knobs),
            "pinned_goodput_rps": tuned.pinned.goodput_rps,
            "pinned_probes": [asdict(p) for p in tuned.pinned.probes],
            "tuning": [asdict(t) for t in tuned.trials],
            "searched": [{"knobs": asdict(k), "goodput_rps": g} for k, g in tuned.searched],
        }
    else:
        res = search_goodput(task["policy"], cluster, **search)
    return {
        **task,
        "goodput_rps": res.goodput_rps,
        "rate_rps": res.rate_rps,
        "attainment": res.attainment,
        "probes": [asdict(p) for p in res.probes],
        **extra,
        "wall_s": time.perf_counter() - start,
    }


def run_point(task: dict[str, Any]) -> dict[str, Any]:
    """One direct run of ``task["policy"]`` at ``task["rate_rps"]`` (Poisson).

    Returns the task's keys plus attainment, goodput, the batch-size histogram of the
    batches that ran and, when ``task["gantt_ms"]`` is set, the batches that start in a
    window of that length from the middle of the trace (worker, start/end in ms from the
    window's start, size). ``task["knobs"]``, when set, are the policy's
    ``UncoordinatedConfig`` fields (the tuned baseline's).
    """
    start = time.perf_counter()
    make = trace_maker("poisson", ["m"])
    rate = task["rate_rps"]
    trace = make(rate, task["requests"] / rate, task["seed"])
    cluster, config = _cluster(task), _sim_config(task)
    knobs = task.get("knobs")
    options = UncoordinatedConfig(**knobs) if knobs else None
    policy = make_policy(task["policy"], _policy_config(task, cluster, config), options=options)
    res = simulate(policy, trace, cluster, config)
    ran = res.ran
    sizes = res.batch_size[ran]
    out: dict[str, Any] = {
        **task,
        "attainment": res.attainment,
        "goodput_rps": res.goodput_rps,
        "offered_rps": trace.mean_rate_rps,
        "batches": int(res.batch_size.size),
        "batches_refused": int(res.batch_size.size - np.count_nonzero(ran)),
        "mean_batch_size": metrics.mean_batch_size(sizes),
        "batch_size_histogram": metrics.batch_size_histogram(sizes).tolist(),
        "wall_s": 0.0,
    }
    if task.get("gantt_ms"):
        t0 = res.span_ns // 2
        t1 = t0 + round(task["gantt_ms"] * MS)
        # batches overlapping the window, clipped to it by the plot's axis limits
        keep = ran & (res.batch_end_ns > t0) & (res.batch_start_ns < t1)
        out["gantt"] = {
            "attainment": res.attainment,
            "window_start_ms": t0 / MS,
            "window_ms": task["gantt_ms"],
            "worker": res.batch_worker[keep].tolist(),
            "start_ms": ((res.batch_start_ns[keep] - t0) / MS).tolist(),
            "end_ms": ((res.batch_end_ns[keep] - t0) / MS).tolist(),
            "size": res.batch_size[keep].tolist(),
        }
    out["wall_s"] = time.perf_counter() - start
    return out


# ---------------------------------------------------------------- the grid and its bounds


def _base(args: argparse.Namespace) -> dict[str, Any]:
    """The task fields every grid and load point shares."""
    return {
        "k_ms": args.k_ms,
        "c_ms": args.c_ms,
        "max_batch": args.max_batch,
        "requests": args.requests,
        "seed": args.seed,
        "noise_cv": args.noise_cv,
        "shed_fraction": args.shed_fraction,
    }


def _grid(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every search task, the slowest first (small N: long simulated spans)."""
    tasks = [
        {
            **_base(args),
            "policy": pol,
            "trace": kind,
            "n": n,
            "slo_ms": slo,
            "cv": args.cv,
            "csv": args.csv,
            "target": args.target,
            "rel_tol": args.rel_tol,
            "tune": pol == BASELINE and not args.pinned_baseline,
        }
        for kind in args.trace
        for slo in args.slo_ms
        for n in args.n
        for pol in args.policy
    ]
    return sorted(tasks, key=lambda t: t["n"])  # stable: the table order is restored later


def _points(
    args: argparse.Namespace, bound_rps: float, knobs: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Direct runs at the plot point: every policy at every load (the baseline with
    ``knobs``, its tuned ones, when given)."""
    return [
        {
            **_base(args),
            "policy": pol,
            "n": args.point_n,
            "slo_ms": args.point_slo_ms,
            "load": load,
            "rate_rps": load * bound_rps,
            "gantt_ms": args.gantt_ms if abs(load - args.gantt_load) < 1e-9 else 0.0,
            "knobs": knobs if pol == BASELINE else None,
        }
        for pol in args.policy
        for load in args.loads
    ]


def _point_knobs(args: argparse.Namespace, done: list[dict[str, Any]]) -> dict[str, Any]:
    """The tuned baseline's knobs at the plot point: from the grid's Poisson search there,
    else from a tuning run of its own."""
    for r in done:
        if (r["policy"], r["trace"], r["n"], r["slo_ms"]) == (
            BASELINE,
            "poisson",
            args.point_n,
            args.point_slo_ms,
        ) and r.get("knobs"):
            return dict(r["knobs"])
    task = {
        **_base(args),
        "policy": BASELINE,
        "trace": "poisson",
        "n": args.point_n,
        "slo_ms": args.point_slo_ms,
        "cv": args.cv,
        "csv": None,
        "target": args.target,
        "rel_tol": args.rel_tol,
        "tune": True,
    }
    return dict(run_search(task)["knobs"])


def _bounds(args: argparse.Namespace, n: int, slo_ms: float) -> dict[str, float]:
    """Analytic bounds (req/s) at one point: coordinated without and with the simulator's
    overheads, uncoordinated without."""
    cfg = SimConfig()
    overhead = cfg.dispatch_delay_ns + cfg.reply_cost_ns
    k, c, slo = round(args.k_ms * MS), round(args.c_ms * MS), round(slo_ms * MS)

    def bound(coordinated: bool, overhead_ns: int) -> float:
        return analytic_bound(
            n, k, c, slo, coordinated=coordinated, overhead_ns=overhead_ns, max_batch=args.max_batch
        ).goodput_rps

    return {
        "coord_rps": bound(True, 0),
        "coord_overhead_rps": bound(True, overhead),
        "uncoord_rps": bound(False, 0),
        "overhead_ms": overhead / MS,
    }


def _ratio(num: float, den: float | None) -> float | None:
    return num / den if den else None


def _finish_rows(args: argparse.Namespace, done: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in table order, each with its bounds and ratios."""
    order = {
        (t, s, n, p): i
        for i, (t, s, n, p) in enumerate(
            (t, s, n, p) for t in args.trace for s in args.slo_ms for n in args.n for p in args.policy
        )
    }
    done = sorted(done, key=lambda r: order[(r["trace"], r["slo_ms"], r["n"], r["policy"])])
    base = {(r["trace"], r["slo_ms"], r["n"]): r["goodput_rps"] for r in done if r["policy"] == BASELINE}
    rows = []
    for r in done:
        b = _bounds(args, r["n"], r["slo_ms"])
        g = r["goodput_rps"]
        un = base.get((r["trace"], r["slo_ms"], r["n"]))
        rows.append(
            {
                **r,
                **b,
                "uncoord_sim_rps": un,
                "ratio_coord": _ratio(g, b["coord_rps"]),
                "ratio_coord_overhead": _ratio(g, b["coord_overhead_rps"]),
                "ratio_uncoord_sim": _ratio(g, un),
                "ratio_uncoord_bound": _ratio(g, b["uncoord_rps"]),
            }
        )
    return rows


# ---------------------------------------------------------------- output


def _fmt(x: float | None, spec: str) -> str:
    """``x`` formatted by ``spec`` (``"8.2f"``), or a dash of the same width for None."""
    if x is None:
        return format("-", ">" + spec.split(".")[0])
    return format(x, spec)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The grid as a fixed-width table (one line per row, a header first)."""
    head = (
        f"{'policy':14s} {'trace':9s} {'N':>3s} {'SLO ms':>6s} {'goodput':>9s} "
        f"{'/coord':>6s} {'/coord+oh':>9s} {'/uncoord':>8s} {'/uncoord bound':>14s} "
        f"{'probes':>6s}  knobs (defaults' goodput)"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        knobs = ""
        if r.get("knobs"):
            knobs = f"  {knobs_text(UncoordinatedConfig(**r['knobs']))} ({r['pinned_goodput_rps']:.0f})"
        elif r["policy"] == BASELINE:
            knobs = "  analytic defaults"
        lines.append(
            f"{r['policy']:14s} {r['trace']:9s} {r['n']:3d} {r['slo_ms']:6g} "
            f"{r['goodput_rps']:9.0f} {_fmt(r['ratio_coord'], '6.3f')} "
            f"{_fmt(r['ratio_coord_overhead'], '9.3f')} {_fmt(r['ratio_uncoord_sim'], '8.2f')} "
            f"{_fmt(r['ratio_uncoord_bound'], '14.2f')} {len(r['probes']):6d}{knobs}"
        )
    return "\n".join(lines)


def _machine() -> dict[str, Any]:
    return {
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _run_all(
    fn: Callable[[dict[str, Any]], dict[str, Any]],
    tasks: list[dict[str, Any]],
    pool: Any,
    on_done: Callable[[int, dict[str, Any]], None],
) -> list[dict[str, Any]]:
    """``fn`` over ``tasks`` (in ``pool`` when given), calling ``on_done`` as each ends."""
    results: Iterable[dict[str, Any]]
    if pool is None:
        results = map(fn, tasks)
    else:
        results = pool.imap_unordered(fn, tasks)
    out = []
    for i, r in enumerate(results, 1):
        on_done(i, r)
        out.append(r)
    return out


def _plot(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    points: list[dict[str, Any]],
    point_bounds: dict[str, float],
) -> list[Path]:
    from bench import plots  # matplotlib only when plotting

    outdir = Path(args.plots)
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    profile = f"l(b) = {args.k_ms:g} ms·b + {args.c_ms:g} ms"
    pois = [r for r in rows if r["trace"] == "poisson"]
    if pois:
        ns = sorted(set(args.n))
        panels = {}
        for slo in args.slo_ms:
            panels[slo] = {
                "goodput": {
                    p: [
                        next(
                            (
                                r["goodput_rps"]
                                for r in pois
                                if r["policy"] == p and r["n"] == n and r["slo_ms"] == slo
                            ),
                            float("nan"),
                        )
                        for n in ns
                    ]
                    for p in args.policy
                },
                "coord": [_bounds(args, n, slo)["coord_rps"] for n in ns],
                "coord_overhead": [_bounds(args, n, slo)["coord_overhead_rps"] for n in ns],
                "uncoord": [_bounds(args, n, slo)["uncoord_rps"] for n in ns],
            }
        path = outdir / PLOT_FILES["goodput_vs_n"]
        plots.goodput_vs_n(
            ns,
            panels,
            path,
            title=(
                f"Simulated goodput at ≥ {args.target:.0%} SLO attainment, Poisson arrivals\n"
                f"{profile}, max batch {args.max_batch}, {args.requests} requests per probe"
            ),
        )
        written.append(path)
    if points:
        where = (
            f"N = {args.point_n}, SLO {args.point_slo_ms:g} ms, Poisson arrivals\n"
            f"{profile}, {args.requests} requests per run"
        )
        curves = {
            p: sorted((q["load"], q["attainment"]) for q in points if q["policy"] == p) for p in args.policy
        }
        path = outdir / PLOT_FILES["attainment_vs_load"]
        plots.attainment_vs_load(
            curves,
            path,
            target=args.target,
            overhead_load=point_bounds["coord_overhead_rps"] / point_bounds["coord_rps"],
            uncoord_load=point_bounds["uncoord_rps"] / point_bounds["coord_rps"],
            title=f"SLO attainment vs offered load, {where}",
            bound_rps=point_bounds["coord_rps"],
        )
        written.append(path)
        at = [q for q in points if q["gantt_ms"]]
        hists = {q["policy"]: q["batch_size_histogram"] for q in at}
        b_co = analytic_bound(
            args.point_n,
            round(args.k_ms * MS),
            round(args.c_ms * MS),
            round(args.point_slo_ms * MS),
            max_batch=args.max_batch,
        ).batch
        b_un = analytic_bound(
            args.point_n,
            round(args.k_ms * MS),
            round(args.c_ms * MS),
            round(args.point_slo_ms * MS),
            coordinated=False,
            max_batch=args.max_batch,
        ).batch
        path = outdir / PLOT_FILES["batch_sizes"]
        plots.batch_size_distribution(
            hists,
            path,
            marks={"coordinated b*": b_co, "uncoordinated b*": b_un},
            title=f"Batch sizes at {args.gantt_load:g} × the coordinated bound, {where}",
        )
        written.append(path)
        gantts = {q["policy"]: q["gantt"] for q in at}
        shown = [p for p in dict.fromkeys((args.gantt_policy, BASELINE)) if p in gantts]
        if shown:
            path = outdir / PLOT_FILES["gantt"]
            plots.gantt(
                {p: gantts[p] for p in shown},
                args.point_n,
                path,
                title=(
                    f"Batches per worker over {args.gantt_ms:g} ms at {args.gantt_load:g} × "
                    f"the coordinated bound, {where}"
                ),
            )
            written.append(path)
    return written


def _replot(results: Path, plots_dir: str) -> int:
    """Redraw the plots of a results file written by ``main``."""
    doc = json.loads(results.read_text())
    args = argparse.Namespace(**{**doc["args"], "plots": plots_dir})
    point = doc["point"]
    for path in _plot(args, doc["rows"], point["runs"], point):
        print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="baton bench sim",
        description="Simulated goodput of each policy over a grid of trace kinds, N and "
        "SLOs, against the analytic bounds; JSON results and PNG plots.",
    )
    g = p.add_argument_group("grid")
    g.add_argument(
        "--policy",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"policies (default: all registered: {' '.join(policy_names())})",
    )
    g.add_argument(
        "--trace",
        nargs="+",
        choices=TRACE_KINDS,
        default=None,
        help="trace kinds (default: poisson gamma, plus replay when --csv is given)",
    )
    g.add_argument("--cv", type=float, default=3.0, help="inter-arrival CV of gamma (3)")
    g.add_argument(
        "--csv",
        default=None,
        metavar="PATH",
        help="a log to replay (e.g. ../shared/traces/azure_llm_2023_conv.csv)",
    )
    g.add_argument("--slo-ms", type=float, nargs="+", default=None, help="SLOs (25 50 100)")
    g.add_argument("-n", type=int, nargs="+", default=None, help="worker counts (1 2 8 32)")
    g.add_argument("--k-ms", type=float, default=1.082, help="ms per request in a batch (1.082)")
    g.add_argument("--c-ms", type=float, default=5.204, help="fixed ms per batch (5.204)")
    g.add_argument("--max-batch", type=int, default=64, help="largest batch (64)")
    s = p.add_argument_group("search")
    s.add_argument("--requests", type=int, default=None, help="requests per probe (20000)")
    s.add_argument("--seed", type=int, default=1, help="trace and simulator seed (1)")
    s.add_argument("--target", type=float, default=0.99, help="SLO attainment to reach (0.99)")
    s.add_argument("--rel-tol", type=float, default=0.02, help="search bracket width (0.02)")
    s.add_argument("--noise-cv", type=float, default=0.0, help="batch-duration noise CV (0)")
    s.add_argument(
        "--shed-fraction",
        type=float,
        default=None,
        metavar="F",
        help="PolicyConfig.shed_fraction for every policy (default: its own, "
        "0.95; 0 turns the default policy's shedding off)",
    )
    s.add_argument(
        "--pinned-baseline",
        action="store_true",
        help=f"search {BASELINE} with its analytic defaults only (max batch b with "
        "2 l(b) within the SLO, queue delay l(b)) instead of tuning them",
    )
    q = p.add_argument_group("plot point (direct runs at offered loads)")
    q.add_argument("--point-n", type=int, default=8, help="N (8)")
    q.add_argument("--point-slo-ms", type=float, default=25.0, help="SLO (25)")
    q.add_argument(
        "--loads",
        type=float,
        nargs="+",
        default=None,
        help="offered loads as fractions of the coordinated bound "
        f"({' '.join(f'{x:g}' for x in _DEFAULT_LOADS)})",
    )
    q.add_argument(
        "--gantt-load",
        type=float,
        default=0.8,
        help="load of the batch-size and Gantt plots (0.8; added to --loads)",
    )
    q.add_argument("--gantt-ms", type=float, default=200.0, help="Gantt window, ms (200)")
    q.add_argument(
        "--gantt-policy", default=DEFAULT_POLICY, help=f"policy of the Gantt's first panel ({DEFAULT_POLICY})"
    )
    o = p.add_argument_group("run and output")
    o.add_argument("--jobs", type=int, default=2, help="worker processes (2)")
    o.add_argument("--out", default="results/sim/grid.json", help="JSON results file (results/sim/grid.json)")
    o.add_argument("--plots", default="results/sim/", help="directory for the PNG plots (results/sim/)")
    o.add_argument("--no-plots", action="store_true", help="skip the plots and the load runs")
    o.add_argument(
        "--replot",
        metavar="JSON",
        default=None,
        help="only redraw the plots (into --plots) from a results file",
    )
    o.add_argument(
        "--quick",
        action="store_true",
        help=f"tiny grid for tests: {DEFAULT_POLICY} and {BASELINE}, poisson, "
        "N 1 8, SLO 25, 3000 requests, loads 0.6 0.8 1.0",
    )
    return p


def _resolve(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill the defaults that depend on --quick and --csv; check the rest."""
    quick = args.quick
    if args.policy is None:
        args.policy = [DEFAULT_POLICY, BASELINE] if quick else list(policy_names())
    if args.trace is None:
        args.trace = ["poisson"] if quick else ["poisson", "gamma"]
        if args.csv is not None:
            args.trace.append("replay")
    args.slo_ms = args.slo_ms or ([25.0] if quick else [25.0, 50.0, 100.0])
    args.n = args.n or ([1, 8] if quick else [1, 2, 8, 32])
    args.requests = args.requests or (3000 if quick else 20_000)
    loads = args.loads or list(_QUICK_LOADS if quick else _DEFAULT_LOADS)
    if not any(abs(x - args.gantt_load) < 1e-9 for x in loads):
        loads.append(args.gantt_load)
    args.loads = sorted(loads)
    known = set(policy_names())
    for name in args.policy:
        if name not in known:
            p.error(f"unknown policy {name!r}; known: {', '.join(sorted(known))}")
    if "replay" in args.trace and args.csv is None:
        p.error("--trace replay needs --csv PATH")
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    if args.shed_fraction is not None and not 0.0 <= args.shed_fraction <= 1.0:
        p.error("--shed-fraction must lie in [0, 1]")
    if min(args.n) < 1 or args.point_n < 1:
        p.error("worker counts must be >= 1")


def main(argv: list[str] | None = None) -> int:
    """Run the grid (and the plot point), print the table, write JSON and plots."""
    p = _parser()
    args = p.parse_args(argv)
    if args.replot is not None:
        return _replot(Path(args.replot), args.plots)
    _resolve(p, args)
    began = time.perf_counter()
    grid = _grid(args)
    point_bounds = _bounds(args, args.point_n, args.point_slo_ms)
    points_todo = [] if args.no_plots else _points(args, point_bounds["coord_rps"])
    print(
        f"baton bench sim: l(b) = {args.k_ms:g} ms*b + {args.c_ms:g} ms, max batch "
        f"{args.max_batch}; {len(grid)} searches ({len(args.policy)} policies x "
        f"{len(args.trace)} traces x {len(args.n)} N x {len(args.slo_ms)} SLOs), "
        f"{args.requests} requests per probe, {len(points_todo)} load runs, "
        f"{args.jobs} jobs",
        flush=True,
    )

    def searched(i: int, r: dict[str, Any]) -> None:
        b = _bounds(args, r["n"], r["slo_ms"])["coord_rps"]
        print(
            f"[{i:3d}/{len(grid)}] {r['policy']:13s} {r['trace']:9s} N={r['n']:<3d} "
            f"SLO={r['slo_ms']:g} ms: {r['goodput_rps']:8.0f} req/s "
            f"({_fmt(_ratio(r['goodput_rps'], b), '.3f')} of bound), "
            f"{len(r['probes'])} probes, {r['wall_s']:.1f} s"
            + (
                f"; knobs {knobs_text(UncoordinatedConfig(**r['knobs']))}, defaults "
                f"{r['pinned_goodput_rps']:.0f} req/s"
                if r.get("knobs")
                else ""
            ),
            flush=True,
        )

    def ran(i: int, r: dict[str, Any]) -> None:
        print(
            f"[{i:3d}/{len(points_todo)}] load {r['load']:.2f} {r['policy']:13s}: "
            f"attainment {r['attainment']:.4f}, mean batch {r['mean_batch_size']:.1f}, "
            f"{r['wall_s']:.1f} s",
            flush=True,
        )

    pool = multiprocessing.Pool(args.jobs) if args.jobs > 1 else None
    try:
        done = _run_all(run_search, grid, pool, searched)
        point_knobs = None
        if points_todo and BASELINE in args.policy and not args.pinned_baseline:
            point_knobs = _point_knobs(args, done)
            print(f"load runs: {BASELINE} with {knobs_text(UncoordinatedConfig(**point_knobs))}", flush=True)
            points_todo = _points(args, point_bounds["coord_rps"], point_knobs)
        points = _run_all(run_point, points_todo, pool, ran)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    rows = _finish_rows(args, done)
    points.sort(key=lambda q: (args.policy.index(q["policy"]), q["load"]))
    oh = point_bounds["overhead_ms"]
    base_how = (
        "its analytic defaults"
        if args.pinned_baseline
        else "tuned; the knobs column gives its max batch and queue delay and, in "
        "brackets, the goodput of its analytic defaults"
    )
    print()
    print(
        f"Goodput (req/s) at >= {args.target:.0%} SLO attainment. /coord: of the analytic "
        f"coordinated bound; /coord+oh: of that bound with the simulator's {oh:g} ms of "
        f"overheads (dispatch + reply) off the SLO; /uncoord: of the {BASELINE} policy's "
        f"simulated goodput ({base_how}); /uncoord bound: of the analytic uncoordinated "
        f"bound."
    )
    print(format_table(rows))
    plot_paths = [] if args.no_plots else _plot(args, rows, points, point_bounds)
    wall = time.perf_counter() - began
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "argv": list(sys.argv[1:] if argv is None else argv),
        "args": vars(args),
        "machine": _machine(),
        "wall_s": wall,
        "rows": rows,
        "point": {
            "n": args.point_n,
            "slo_ms": args.point_slo_ms,
            **point_bounds,
            "baseline_knobs": point_knobs,
            "runs": points,
        },
        "plots": [str(x) for x in plot_paths],
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}" + "".join(f", {x}" for x in plot_paths))
    print(
        f"total wall time {wall:.1f} s ({args.jobs} jobs, {platform.machine()}, {os.cpu_count()} cores)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
