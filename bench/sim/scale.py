"""The scale scenario: 1,000 simulated GPUs, 100 models, a million requests.

Each model gets its own seeded profile (``k`` in 0.5-2 ms, ``c`` in 2-8 ms, max batch
64) and SLO (25-50 ms) and is served by its own block of ``gpus / models`` GPUs; each
model's arrivals are Poisson at ``--load`` (70%) of its analytic coordinated bound with
the policy's overheads, for long enough that the whole trace holds at least
``--requests`` arrivals (``--noise-cv`` adds seeded duration noise). Prints the run's
speed (simulated requests per wall-clock second) and its SLO attainment, goodput and
batch sizes.

Run: ``.venv/bin/python -m bench.sim.scale`` (``--profile`` adds a cProfile top 25).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import sys
import time

import numpy as np

from bench.sim.config import Cluster, Noise, SimConfig
from bench.sim.engine import policy_config_for, simulate_policy
from bench.traces import poisson
from central.policy import PolicyConfig, Profile, analytic_bound

__all__ = ["main", "scenario"]

MS = 1_000_000


def scenario(
    gpus: int, models: int, load: float, requests: int, seed: int
) -> tuple[Cluster, dict[str, float], float]:
    """The cluster, each model's offered rate (req/s) and the duration (s) to simulate.

    Raises ``ValueError`` when ``gpus`` is not a positive multiple of ``models``.
    """
    if models < 1 or gpus < models or gpus % models:
        raise ValueError(f"gpus ({gpus}) must be a positive multiple of models ({models})")
    per = gpus // models
    rng = np.random.default_rng(seed)
    d = PolicyConfig()
    overhead = d.dispatch_cost_ns + d.reply_cost_ns + d.timer_slack_ns
    profiles: dict[str, Profile] = {}
    slos: dict[str, int] = {}
    rates: dict[str, float] = {}
    for i in range(models):
        name = f"m{i:03d}"
        k = int(rng.uniform(0.5, 2.0) * MS)
        c = int(rng.uniform(2.0, 8.0) * MS)
        slo = int(rng.uniform(25.0, 50.0) * MS)
        profiles[name] = Profile(k, c, 64)
        slos[name] = slo
        bound = analytic_bound(per, k, c, slo, overhead_ns=overhead, max_batch=64)
        rates[name] = load * bound.goodput_rps
    duration = requests / sum(rates.values()) * 1.01
    return Cluster.partitioned(profiles, slos, per), rates, duration


def run(args: argparse.Namespace) -> dict[str, object]:
    t0 = time.perf_counter()
    cluster, rates, duration = scenario(args.gpus, args.models, args.load, args.requests, args.seed)
    names = tuple(rates)
    total = sum(rates.values())
    trace = poisson(total, duration, args.seed, model=names, weights=[rates[m] / total for m in names])
    t_trace = time.perf_counter() - t0
    config = SimConfig(noise=Noise(cv=args.noise_cv), seed=args.seed)
    result = simulate_policy(args.policy, trace, cluster, config, policy_config_for(cluster, config))
    s = result.summary()
    return {
        "policy": args.policy,
        "gpus": args.gpus,
        "models": args.models,
        "load": args.load,
        "noise_cv": args.noise_cv,
        "requests": result.n_requests,
        "simulated_s": round(duration, 3),
        "trace_wall_s": round(t_trace, 3),
        "sim_wall_s": round(result.wall_s, 2),
        "requests_per_wall_s": round(result.n_requests / result.wall_s),
        "slo_attainment": round(s["slo_attainment"], 5),
        "goodput_rps": round(s["goodput_rps"]),
        "offered_rps": round(s["offered_rps"]),
        "mean_batch_size": round(s["mean_batch_size"], 2),
        "busy_fraction_mean": round(s["busy_fraction_mean"], 3),
        "drops_by_reason": s["drops_by_reason"],
        "batches": s["batches"],
        "batches_refused": s["batches_refused"],
        "handle_calls": s["handle_calls"],
        "violations": s["violations"],
        "machine": f"{platform.machine()}, {_cores()} cores, Python {platform.python_version()}",
    }


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


def main(argv: list[str] | None = None) -> int:
    """Run the scale scenario and print its figures as JSON; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m bench.sim.scale", description=__doc__.split("\n")[0])
    p.add_argument("--gpus", type=int, default=1000)
    p.add_argument("--models", type=int, default=100)
    p.add_argument("--load", type=float, default=0.7, help="fraction of each model's bound")
    p.add_argument("--requests", type=int, default=1_000_000)
    p.add_argument("--policy", default="symphony")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--noise-cv", type=float, default=0.0, help="CV of batch-duration noise")
    p.add_argument("--profile", action="store_true", help="print a cProfile top 25")
    args = p.parse_args(argv)
    if args.profile:
        prof = cProfile.Profile()
        out = prof.runcall(run, args)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    else:
        out = run(args)
    print(json.dumps(out, indent=1))
    return 0 if not out["violations"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
