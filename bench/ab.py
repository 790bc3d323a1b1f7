"""``python -m bench.ab``: two sets of scheduler flags on the live cluster, interleaved.

Theory of operation: this VM's noise comes in phases (minutes of quiet, then minutes of
10-30 ms stalls), so two settings measured one after the other compare the phases, not
the settings. Here each seed's trace (``bench.replay``'s Poisson at ``--load`` of the
analytic coordinated bound, N = 8, the x8-dilated profile below 8 cores) is replayed on a
fresh cluster with flags A and on one with flags B, the order alternating from seed to
seed; each run gets the same 2 s of unmeasured warm-up. The report is one line per run and
the mean and spread of the attainment per setting. The flags are the scheduler's own
(``baton scheduler --help``), given as one string each.

Run: ``.venv/bin/python -m bench.ab --a "--stall-window 256" --b "--stall-window 64"``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import statistics
import sys
import tempfile
from typing import Any

import numpy as np

from bench.replay import Setup, _cluster_config, _play, _warmup_trace, records_summary
from central.client import query_stats
from central.cluster import Cluster
from central.protocol.records import BatchRecord

__all__ = ["main", "run_one"]


def _setup(args: argparse.Namespace, seed: int) -> Setup:
    d = args.dilation
    return Setup(
        n=args.n,
        k_ms=1.082 * d,
        c_ms=5.204 * d,
        slo_ms=args.slo_ms * d,
        max_batch=64,
        dilation=d,
        trace_kind="poisson",
        cv=1.0,
        csv=None,
        duration_s=args.duration,
        senders=1,
        seed=seed,
    )


def run_one(setup: Setup, load: float, flags: list[str], log_dir: str) -> dict[str, Any]:
    """One fresh cluster with scheduler ``flags``: warm-up, then the seed's trace at ``load``
    of the bound. Returns the attainment, outcome codes, mean batch and start lateness."""
    trace = setup.trace(load * setup.bound_rps())
    config = _cluster_config(setup, "symphony")
    with Cluster(config, log_dir=log_dir, policy_args=tuple(flags)):
        warm = _warmup_trace(setup, 0.8 * load, 2.0)
        if warm is not None:
            _play(config.frontend_address, dataclasses.replace(setup, duration_s=2.0), warm, "warm-up")
        rec = _play(config.frontend_address, setup, trace, " ".join(flags) or "defaults")
        stats = query_stats(config.scheduler_address, with_batches=True)
    s = records_summary(rec, setup.slo_ms, trace.duration_ns or 1)
    records = [BatchRecord.of(row) for row in stats.get("batches", [])]
    log = np.asarray([(b.size, b.earliest_ns, b.start_ns) for b in records] or [(0, 0, 0)], dtype=np.float64)
    return {
        "attainment": s["slo_attainment"],
        "goodput_rps": s["goodput_rps"],
        "never_answered": s["never_answered"],
        "answered_twice": s["answered_twice"],
        "outcome_codes": s["outcome_codes"],
        "mean_batch": float(log[:, 0].mean()),
        "start_late_p99_ms": float(np.percentile(log[:, 2] - log[:, 1], 99)) / 1e6,
        "timer_late_p99_ms": (stats.get("timer_lateness_us") or {}).get("p99", 0.0) / 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.ab",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--a", default="", help="scheduler flags of setting A, one string")
    p.add_argument("--b", default="", help="scheduler flags of setting B, one string")
    p.add_argument(
        "--load", type=float, default=0.9, help="mean rate as a fraction of the analytic coordinated bound"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13, 14, 15, 16])
    p.add_argument("--duration", type=float, default=20.0, help="seconds per run")
    p.add_argument("-n", type=int, default=8, help="emulated GPUs")
    p.add_argument("--slo-ms", type=float, default=25.0, help="SLO before dilation")
    p.add_argument(
        "--dilation",
        type=float,
        default=None,
        help="multiply k, c and the SLO by this (None: 8 below 8 cores, else 1)",
    )
    args = p.parse_args(argv)
    if args.dilation is None:
        args.dilation = 8.0 if (os.cpu_count() or 1) < 8 else 1.0
    if not args.load > 0 or args.duration <= 0 or args.n < 1:
        p.error("--load and --duration must be > 0, -n >= 1")
    settings = {"A": shlex.split(args.a), "B": shlex.split(args.b)}
    if settings["A"] == settings["B"]:
        p.error("--a and --b are the same flags: nothing to compare")
    print(
        f"A: {args.a or '(defaults)'}; B: {args.b or '(defaults)'}; load {args.load:g} of the "
        f"bound, N = {args.n}, SLO {args.slo_ms:g} ms x{args.dilation:g}, {args.duration:g} s "
        f"per run, seeds {args.seeds}; load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    got: dict[str, list[float]] = {"A": [], "B": []}
    broken = 0  # requests never answered or answered twice (the wire ledger): a bug
    with tempfile.TemporaryDirectory(prefix="baton-ab-") as logs:
        for i, seed in enumerate(args.seeds):
            for name in "AB" if i % 2 == 0 else "BA":
                r = run_one(_setup(args, seed), args.load, settings[name], f"{logs}/{name}{seed}")
                got[name].append(r["attainment"])
                broken += r["never_answered"] + r["answered_twice"]
                codes = r["outcome_codes"]
                print(
                    f"seed {seed} {name}: attainment {r['attainment']:.4f} (late "
                    f"{codes.get('LATE', 0)}, dropped {codes.get('DROPPED', 0)}, refused "
                    f"{codes.get('REFUSED', 0)}), mean batch {r['mean_batch']:.2f}, start "
                    f"lateness p99 {r['start_late_p99_ms']:.1f} ms, timer lateness p99 "
                    f"{r['timer_late_p99_ms']:.1f} ms; never answered "
                    f"{r['never_answered']}, answered twice {r['answered_twice']}",
                    flush=True,
                )
    for name in ("A", "B"):
        v = got[name]
        print(
            f"{name}: mean attainment {statistics.fmean(v):.4f}, min {min(v):.4f}, max "
            f"{max(v):.4f}, >= 99% in {sum(a >= 0.99 for a in v)} of {len(v)}"
        )
    if broken:
        print(f"ERROR: {broken} requests never answered or answered twice", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
