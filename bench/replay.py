"""``baton bench replay``: one trace, replayed open-loop on live systems side by side.

Theory of operation: a trace (``bench.traces``: Poisson, Gamma, piecewise or a replayed
CSV log, scaled to a mean rate) is built once, then replayed against each system in
turn, each started fresh with the same emulated model (``l(b) = k*b + c``), the same N
and the same SLO:

* ``baton`` (the default deferred, coordinated policy) and ``baton-uncoordinated``
  (per-worker batching like Triton's or Ray Serve's), as real local clusters;
* ``ray`` (Ray Serve, ``@serve.batch``) and ``triton`` (PyTriton's dynamic batcher), from
  ``bench.peers`` when the ``peers`` extra is installed (else reported as skipped, with
  the reason, and the rest still runs).

Sending follows the trace's times, never the replies (open loop), from ``--senders``
processes; the send-time lateness is reported so an overloaded load generator cannot
pass for a slow server. Latency and outcome are measured per request at the client. A
progress bar counts answers. Each system's records go through ``bench.metrics``, the
simulator's metric code. ``--search`` also bisects on the trace's rate for the highest
one at which 99% of requests meet the SLO, on the live system, as ``bench.search``
does in the simulator.

The agreement check replays the same trace through the simulator with the same policy
and cluster, with the driver overheads measured on the live run (dispatch delay from
the scheduler's batch log, timer lateness from its stats), and reports the difference in
SLO attainment and goodput.

Reports under ``--out``: ``replay.json`` (settings, per-system summaries and per-request
records), ``summary.md`` and PNG plots: latency CDF per system, SLO attainment against
offered load (with ``--search``), batch-size histogram and a Gantt chart of worker
batches from the scheduler's records (Baton systems).

On a machine with fewer than 8 cores the default profile is time-dilated (k, c and the
SLO multiplied by one factor; every ratio is unchanged), and every report says so.

Run: ``.venv/bin/python -m bench replay --quick`` (about 1 minute) or
``.venv/bin/python -m bench replay --systems baton baton-uncoordinated ray triton --search``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench import metrics
from bench.search import TRACE_KINDS, trace_maker
from bench.traces import Trace
from central.client import query_stats
from central.client.load import LoadSpec, run_load
from central.cluster import Cluster, ClusterConfig, ModelSpec, WorkerSpec, free_port
from central.policy import Profile
from central.policy.bound import analytic_bound
from central.protocol.messages import Status

__all__ = ["main", "replay_baton", "records_summary", "agreement"]

MODEL = "symphony"
BATON_SYSTEMS = {"baton": "symphony", "baton-uncoordinated": "uncoordinated"}
PEER_SYSTEMS = ("ray", "triton")
ALL_SYSTEMS = (*BATON_SYSTEMS, *PEER_SYSTEMS)
# batch record positions in the scheduler's log (central/runtime/scheduler.py)
B_WORKER, B_SIZE, B_SENT, B_START, B_END, B_STATUS = 1, 3, 4, 7, 8, 9


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every system in one run shares."""

    n: int
    k_ms: float
    c_ms: float
    slo_ms: float
    max_batch: int
    dilation: float
    trace_kind: str
    cv: float
    csv: str | None
    duration_s: float
    senders: int
    seed: int

    @property
    def profile(self) -> Profile:
        return Profile(round(self.k_ms * 1e6), round(self.c_ms * 1e6), self.max_batch)

    def bound_rps(self) -> float:
        """The analytic coordinated bound (no overheads), req/s."""
        p = self.profile
        return analytic_bound(self.n, p.k_ns, p.c_ns, round(self.slo_ms * 1e6),
                              max_batch=p.max_batch).goodput_rps

    def trace(self, rate_rps: float) -> Trace:
        make = trace_maker(self.trace_kind, (MODEL,), cv=self.cv, csv_path=self.csv)
        return make(rate_rps, self.duration_s, self.seed)


# ------------------------------------------------------------------ progress bar


class Progress:
    """A text progress bar on stderr, fed by a counter the sender processes bump."""

    def __init__(self, label: str, total: int, stream: Any = sys.stderr) -> None:
        self.counter = multiprocessing.get_context("spawn").Value("q", 0)
        self._label, self._total, self._stream = label, max(1, total), stream
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._draw(final=True)

    def _draw(self, final: bool = False) -> None:
        done = min(self.counter.value, self._total)
        width = 30
        fill = int(width * done / self._total)
        end = "\n" if final else "\r"
        self._stream.write(f"  {self._label:<22} [{'#' * fill}{'.' * (width - fill)}] "
                           f"{done}/{self._total}{end}")
        self._stream.flush()

    def _loop(self) -> None:
        live = getattr(self._stream, "isatty", lambda: False)()
        while not self._stop.wait(0.5):
            if live:  # redraw in place on a terminal; a log gets the final line only
                self._draw()


# ------------------------------------------------------------------------ Baton


def _cluster_config(setup: Setup, policy: str) -> ClusterConfig:
    return ClusterConfig(
        f"tcp://127.0.0.1:{free_port()}", policy, f"tcp://127.0.0.1:{free_port()}",
        setup.slo_ms,
        (ModelSpec(MODEL, setup.slo_ms, setup.k_ms, setup.c_ms, setup.max_batch),),
        (WorkerSpec("emulated", (MODEL,), gpus=setup.n),),
    )


def _play(address: str, setup: Setup, trace: Trace, label: str) -> np.ndarray:
    spec = LoadSpec(address, MODEL, 1.0, setup.duration_s, setup.slo_ms, seed=setup.seed,
                    senders=setup.senders, grace_s=2.0)
    with Progress(label, len(trace.times_ns)) as bar:
        return run_load(spec, offsets=np.asarray(trace.times_ns, np.int64), progress=bar.counter)


def replay_baton(
    setup: Setup, policy: str, trace: Trace, log_dir: Path, label: str,
    search: bool = False,
) -> dict[str, Any]:
    """One Baton system: a fresh cluster with ``policy``, the trace replayed through it."""
    config = _cluster_config(setup, policy)
    with Cluster(config, log_dir=str(log_dir)) as cluster:
        rec = _play(config.frontend_address, setup, trace, label)
        stats = query_stats(config.scheduler_address, with_batches=True)
        probes = _search(setup, config.frontend_address, label) if search else []
    out = records_summary(rec, setup.slo_ms, trace.duration_ns or 1)
    batches = np.asarray(stats.get("batches", []), dtype=object)
    out["batches"] = _batch_summary(batches)
    out["timer_lateness_us"] = stats.get("timer_lateness_us")
    out["probes"] = probes
    out["records"] = rec.tolist()
    out["batch_log"] = [list(map(_plain, b)) for b in stats.get("batches", [])]
    return out


def _plain(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


def _batch_summary(batches: np.ndarray) -> dict[str, Any]:
    if not len(batches):
        return {"count": 0}
    ok = np.array([int(b[B_STATUS]) == 0 for b in batches])
    sizes = np.array([int(b[B_SIZE]) for b in batches])[ok]
    delay = np.array([int(b[B_START]) - int(b[B_SENT]) for b in batches])[ok]
    return {
        "count": int(len(batches)),
        "refused": int((~ok).sum()),
        "mean_size": metrics.mean_batch_size(sizes),
        "size_histogram": metrics.batch_size_histogram(sizes).tolist(),
        "dispatch_delay_ms": {"p50": float(np.percentile(delay, 50)) / 1e6,
                              "p99": float(np.percentile(delay, 99)) / 1e6} if delay.size else None,
    }


def _search(setup: Setup, address: str, label: str, iters: int = 5) -> list[dict[str, Any]]:
    """Bisection on the trace's mean rate, live, for the highest with >= 99% on time."""
    bound = setup.bound_rps()
    lo, hi = 0.3 * bound, 1.05 * bound
    probes = []
    for _ in range(iters):
        rate = (lo + hi) / 2
        tr = setup.trace(rate)
        time.sleep(0.5)  # let the previous probe's stragglers drain
        rec = _play(address, setup, tr, f"{label} @{rate:.0f}/s")
        s = records_summary(rec, setup.slo_ms, tr.duration_ns or 1)
        probes.append({"rate_rps": rate, "load": rate / bound, "attainment": s["slo_attainment"],
                       "goodput_rps": s["goodput_rps"]})
        if s["slo_attainment"] >= 0.99:
            lo = rate
        else:
            hi = rate
    return probes


def records_summary(rec: np.ndarray, slo_ms: float, span_ns: int) -> dict[str, Any]:
    """Client records ``[planned, sent, done, status]`` -> the simulator's metrics."""
    status = rec[:, 3]
    sent, done = rec[:, 1], rec[:, 2]
    ok = status == int(Status.OK)
    deadline = sent + int(slo_ms * 1e6)
    finish = np.where(ok, done, -1)
    met = metrics.met_slo(finish, deadline)
    outcome = np.where(ok, np.where(met, metrics.Outcome.OK, metrics.Outcome.LATE),
                       np.where(status < 0, metrics.Outcome.UNFINISHED, metrics.Outcome.DROPPED))
    late = (rec[:, 1] - rec[:, 0]) / 1e6
    counts = {s.name.lower(): int(np.sum(status == int(s))) for s in Status}
    counts["no_answer"] = int(np.sum(status < 0))
    return {
        "requests": int(len(rec)),
        "offered_rps": len(rec) * 1e9 / span_ns,
        "slo_attainment": metrics.slo_attainment(met),
        "goodput_rps": metrics.goodput_rps(met, span_ns),
        "outcomes": counts,
        "outcome_codes": metrics.outcome_counts(outcome),
        "latency_ms": metrics.latency_percentiles(sent[ok], done[ok]),
        "send_lateness_ms": {"p50": float(np.percentile(late, 50)), "p99": float(np.percentile(late, 99)),
                             "max": float(late.max())} if len(late) else None,
    }


# -------------------------------------------------------------------------- peers


def replay_peer(name: str, setup: Setup, trace: Trace, out_dir: Path) -> dict[str, Any]:
    """Ray Serve or PyTriton through ``bench.peers``; ``{"skipped": why}`` when absent.

    The peer's knobs are tuned first at the trace's mean rate (``tune_peer``: several
    max batch sizes and queue delays, the best by goodput), then the trace is replayed
    once with the best. Peer outcomes map onto Baton's statuses: an HTTP 200 is OK (late
    or not, as measured), any other answer REJECTED (the peer refused it), none at all -1.
    """
    try:
        from bench import peers
    except ImportError as exc:
        return {"skipped": f"bench.peers unavailable: {exc}"}
    reason = peers.available(name)
    if reason:
        return {"skipped": reason}
    slo_ns = round(setup.slo_ms * 1e6)
    span = int(trace.duration_ns or (int(trace.times_ns[-1]) + 1))
    rate = len(trace.times_ns) * 1e9 / span
    tuned = peers.tune_peer(name, rate, min(setup.duration_s, 10.0), slo_ns, setup.k_ms,
                            setup.c_ms, setup.n, seed=setup.seed, senders=setup.senders,
                            log=lambda line: print(line, flush=True))
    knobs = peers.Knobs(**tuned["best"]["knobs"])
    with Progress(name, len(trace.times_ns)) as bar:
        run = peers.replay_peer(name, np.asarray(trace.times_ns, np.int64), slo_ns, setup.k_ms,
                                setup.c_ms, setup.n, knobs, span_ns=span, senders=setup.senders,
                                log_dir=out_dir)
        bar.counter.value = len(trace.times_ns)
    outcome = np.asarray(run["outcome"])
    served = (outcome == metrics.Outcome.OK) | (outcome == metrics.Outcome.LATE)
    status = np.where(served, int(Status.OK),
                      np.where(outcome == metrics.Outcome.UNFINISHED, -1, int(Status.REJECTED)))
    rec = np.stack([run["planned_ns"], run["arrival_ns"],
                    np.where(run["finish_ns"] >= 0, run["finish_ns"], 0), status], axis=1)
    rec = rec.astype(np.int64)
    out = records_summary(rec, setup.slo_ms, span)
    sizes = np.asarray(run["batch_size"])[served & (np.asarray(run["batch_size"]) > 0)]
    per_batch = np.repeat(np.unique(sizes), [int(round(c / b)) or 1 for b, c in
                                              zip(*np.unique(sizes, return_counts=True))])
    out["batches"] = {
        "count": int(per_batch.size),
        "mean_size": run["summary"]["mean_batch_size"],
        "size_histogram": metrics.batch_size_histogram(per_batch).tolist() if per_batch.size else [],
    }
    out["knobs"] = knobs.as_dict()
    out["tuning"] = tuned["tried"]
    out["version"] = run.get("version")
    out["records"] = rec.tolist()
    return out


# ---------------------------------------------------------------------- agreement


def agreement(setup: Setup, trace: Trace, live: dict[str, Any], policy: str) -> dict[str, Any]:
    """The same trace and policy in the simulator, with the live run's measured overheads."""
    from bench.sim.config import Cluster as SimCluster
    from bench.sim.config import SimConfig
    from bench.sim.engine import simulate_policy

    delay = (live.get("batches") or {}).get("dispatch_delay_ms") or {"p50": 0.5}
    lateness = live.get("timer_lateness_us") or {"p99": 0.0}
    cfg = SimConfig(dispatch_delay_ns=int(delay["p50"] * 1e6),
                    tick_lateness_ns=int(lateness.get("p99", 0.0) * 1e3), seed=setup.seed,
                    strict=False)
    cluster = SimCluster.shared({MODEL: setup.profile}, round(setup.slo_ms * 1e6), setup.n)
    sim = simulate_policy(policy, trace, cluster, cfg)
    return {
        "sim_attainment": sim.attainment,
        "sim_goodput_rps": sim.goodput_rps,
        "live_attainment": live["slo_attainment"],
        "live_goodput_rps": live["goodput_rps"],
        "attainment_gap": live["slo_attainment"] - sim.attainment,
        "goodput_gap_rps": live["goodput_rps"] - sim.goodput_rps,
        "sim_dispatch_delay_ms": delay["p50"],
        "sim_tick_lateness_ms": lateness.get("p99", 0.0) / 1e3,
    }


# ------------------------------------------------------------------------ reports


def _plots(results: dict[str, Any], setup: Setup, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench import plots

    made = []
    ran = {k: v for k, v in results.items() if "records" in v}
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in ran.items():
        rec = np.asarray(r["records"], dtype=np.int64)
        ok = rec[:, 3] == int(Status.OK)
        lat = np.sort((rec[ok, 2] - rec[ok, 1]) / 1e6)
        if lat.size:
            ax.plot(lat, np.arange(1, lat.size + 1) / len(rec), label=name)
    ax.axvline(setup.slo_ms, color="k", ls="--", lw=1, label=f"SLO {setup.slo_ms:g} ms")
    ax.set_xlabel("latency at the client (ms)")
    ax.set_ylabel("fraction of requests answered OK")
    ax.set_title(f"Latency CDF, N={setup.n}, {setup.trace_kind} (dilation x{setup.dilation:g})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency_cdf.png", dpi=110)
    plt.close(fig)
    made.append("latency_cdf.png")
    hists = {k: v["batches"]["size_histogram"] for k, v in ran.items()
             if (v.get("batches") or {}).get("size_histogram")}
    if hists:
        plots.batch_size_distribution(hists, out / "batch_sizes.png")
        made.append("batch_sizes.png")
    curves = {k: [(p["load"], p["attainment"]) for p in sorted(v["probes"], key=lambda p: p["load"])]
              for k, v in ran.items() if v.get("probes")}
    if curves:
        plots.attainment_vs_load(curves, out / "attainment_vs_load.png")
        made.append("attainment_vs_load.png")
    panels = {}
    for name, r in ran.items():
        log = r.get("batch_log") or []
        if not log:
            continue
        t0 = min(int(b[B_START]) for b in log)
        window_ms = min(6 * setup.slo_ms, (max(int(b[B_END]) for b in log) - t0) / 1e6)
        start_ms = 0.4 * ((max(int(b[B_END]) for b in log) - t0) / 1e6 - window_ms)
        panels[name] = {
            "worker": [int(b[B_WORKER]) for b in log],
            "start_ms": [(int(b[B_START]) - t0) / 1e6 - start_ms for b in log],
            "end_ms": [(int(b[B_END]) - t0) / 1e6 - start_ms for b in log],
            "size": [int(b[B_SIZE]) for b in log],
            "window_ms": window_ms, "window_start_ms": start_ms,
            "attainment": r["slo_attainment"],
        }
    if panels:
        plots.gantt(panels, setup.n, out / "gantt.png", clock="scheduler (live)")
        made.append("gantt.png")
    return made


def _markdown(results: dict[str, Any], setup: Setup, rate: float, checks: dict[str, Any],
              plots_made: list[str], command: str) -> str:
    bound = setup.bound_rps()
    lines = [
        f"# Trace replay: {setup.trace_kind}, N={setup.n}, SLO {setup.slo_ms:g} ms",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}  ",
        f"Model: l(b) = {setup.k_ms:g} b + {setup.c_ms:g} ms, max batch {setup.max_batch}"
        + (f" (Symphony's profile time-dilated x{setup.dilation:g}: k, c and SLO all scaled; "
           "every ratio is unchanged)" if setup.dilation != 1 else ""),
        f"Offered: {rate:.1f} req/s mean = {rate / bound:.2f} of the coordinated bound "
        f"({bound:.1f} req/s), {setup.duration_s:g} s, {setup.senders} sender process(es)",
        "",
        "| system | requests | SLO attainment | goodput req/s | p50 ms | p99 ms | mean batch | send late p99 ms | live goodput search (>= 99%) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} | | | | | | | |")
            continue
        lat = r["latency_ms"]
        best = max((p["rate_rps"] for p in r.get("probes", []) if p["attainment"] >= 0.99), default=None)
        search = "-" if not r.get("probes") else (f"{best:.0f} req/s ({best / bound:.2f} of bound)"
                                                 if best else "none passed")
        mb = (r.get("batches") or {}).get("mean_size")
        lines.append(
            f"| {name} | {r['requests']} | {r['slo_attainment']:.4f} | {r['goodput_rps']:.1f} | "
            f"{lat.get('p50', float('nan')):.1f} | {lat.get('p99', float('nan')):.1f} | "
            f"{'-' if mb is None else f'{mb:.1f}'} | {r['send_lateness_ms']['p99']:.2f} | {search} |")
    if checks:
        lines += ["", "## Agreement with the simulator (same trace, same policy)", "",
                  "| system | live attainment | sim attainment | gap | live goodput | sim goodput | gap req/s | sim dispatch delay ms | sim tick lateness ms |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, a in checks.items():
            lines.append(
                f"| {name} | {a['live_attainment']:.4f} | {a['sim_attainment']:.4f} | "
                f"{a['attainment_gap']:+.4f} | {a['live_goodput_rps']:.1f} | {a['sim_goodput_rps']:.1f} | "
                f"{a['goodput_gap_rps']:+.1f} | {a['sim_dispatch_delay_ms']:.2f} | {a['sim_tick_lateness_ms']:.2f} |")
        lines += ["", "The simulator gets the live run's measured dispatch delay (p50 of batch "
                  "start - decision, scheduler log) and timer lateness (p99); what remains of the "
                  "gap is what it does not model: per-hop jitter in the Python processes, the "
                  "client's own send lateness, and reply-path delay beyond the budgeted cost."]
    if plots_made:
        lines += ["", "Plots: " + ", ".join(f"`{p}`" for p in plots_made)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="baton bench replay",
        description="Replay one trace open-loop against Baton (default and uncoordinated "
        "policies) and, when installed, Ray Serve and PyTriton, side by side; JSON, "
        "Markdown and PNG reports.")
    p.add_argument("--systems", nargs="+", choices=ALL_SYSTEMS, default=list(ALL_SYSTEMS),
                   help="systems to run, in order (default: all; peers skip when absent)")
    p.add_argument("--trace", choices=TRACE_KINDS, default="poisson", help="trace kind (poisson)")
    p.add_argument("--cv", type=float, default=3.0, help="inter-arrival CV for gamma (3)")
    p.add_argument("--csv", help="log to replay for --trace replay "
                   "(e.g. ../shared/traces/azure_llm_2023_conv.csv)")
    p.add_argument("--load", type=float, default=0.7,
                   help="mean rate as a fraction of the coordinated bound (0.7)")
    p.add_argument("--rate", type=float, help="mean rate in req/s (overrides --load)")
    p.add_argument("--duration", type=float, default=20.0, help="trace seconds (20)")
    p.add_argument("-n", type=int, default=4, help="workers / replicas (4)")
    p.add_argument("--slo-ms", type=float, default=25.0, help="SLO before dilation (25)")
    p.add_argument("--k-ms", type=float, default=1.082, help="ms per request before dilation")
    p.add_argument("--c-ms", type=float, default=5.204, help="fixed ms per batch before dilation")
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--dilation", type=float, default=None,
                   help="multiply k, c and SLO by this (default: 8 below 8 cores, else 1)")
    p.add_argument("--senders", type=int, default=None,
                   help="sender processes (default: 1 below 8 cores, else 2)")
    p.add_argument("--search", action="store_true", help="also run a live goodput search per system")
    p.add_argument("--no-agreement", action="store_true", help="skip the simulator check")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="bench-results/replay", help="report directory")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="Baton systems only, 8 s trace, no search: a smoke run")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cores = os.cpu_count() or 1
    dilation = args.dilation if args.dilation is not None else (8.0 if cores < 8 else 1.0)
    if args.trace == "replay" and not args.csv:
        print("baton bench replay: --trace replay needs --csv PATH", file=sys.stderr)
        return 2
    if args.quick:
        args.systems = [s for s in args.systems if s in BATON_SYSTEMS]
        args.duration, args.search = 8.0, False
    setup = Setup(
        n=args.n, k_ms=args.k_ms * dilation, c_ms=args.c_ms * dilation,
        slo_ms=args.slo_ms * dilation, max_batch=args.max_batch, dilation=dilation,
        trace_kind=args.trace, cv=args.cv, csv=args.csv, duration_s=args.duration,
        senders=args.senders or (1 if cores < 8 else 2), seed=args.seed,
    )
    rate = args.rate if args.rate is not None else args.load * setup.bound_rps()
    trace = setup.trace(rate)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "baton bench replay " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"{len(trace.times_ns)} requests, {args.trace}, {rate:.1f} req/s mean "
          f"({rate / setup.bound_rps():.2f} of the coordinated bound), N={setup.n}, "
          f"l(b) = {setup.k_ms:g} b + {setup.c_ms:g} ms, SLO {setup.slo_ms:g} ms"
          + (f" (time-dilated x{dilation:g} on {cores} cores)" if dilation != 1 else ""))
    results: dict[str, Any] = {}
    runners: dict[str, Callable[[], dict[str, Any]]] = {}
    for name in args.systems:
        if name in BATON_SYSTEMS:
            runners[name] = (lambda n=name: replay_baton(
                setup, BATON_SYSTEMS[n], trace, out / "logs" / n, n, args.search))
        else:
            runners[name] = lambda n=name: replay_peer(n, setup, trace, out / n)
    for name, run in runners.items():
        results[name] = run()
        r = results[name]
        if "skipped" in r:
            print(f"  {name}: skipped ({r['skipped']})")
        else:
            print(f"  {name}: attainment {r['slo_attainment']:.4f}, goodput {r['goodput_rps']:.1f} "
                  f"req/s, p99 {r['latency_ms'].get('p99', float('nan')):.1f} ms")
    checks = {}
    if not args.no_agreement:
        for name, policy in BATON_SYSTEMS.items():
            if name in results and "records" in results[name]:
                checks[name] = agreement(setup, trace, results[name], policy)
    plots_made = [] if args.no_plots else _plots(results, setup, out)
    md = _markdown(results, setup, rate, checks, plots_made, command)
    (out / "summary.md").write_text(md)
    (out / "replay.json").write_text(json.dumps({
        "setup": dataclasses.asdict(setup), "rate_rps": rate, "command": command,
        "machine": {"arch": platform.machine(), "cores": cores, "python": platform.python_version()},
        "results": results, "agreement": checks}))
    print(md)
    for name, r in results.items():
        missing = r.get("outcomes", {}).get("no_answer", 0)
        if missing and name not in BATON_SYSTEMS:  # a peer's timeouts are its result
            print(f"note: {name}: {missing} requests got no answer within SLO + grace")
    unanswered = sum(results[n].get("outcomes", {}).get("no_answer", 0)
                     for n in BATON_SYSTEMS if n in results)
    if unanswered:  # Baton promises one answer per request: this is a bug
        print(f"ERROR: {unanswered} requests to Baton got no terminal answer", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
