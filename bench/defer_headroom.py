"""Does deferring at light load pay? ``symphony`` at several ``defer_headroom`` values (0:
always defer, pure Symphony; 2.0, the default; 1.25, which starts batches early below
capacity),
by goodput search in the simulator, and the latency each gives below capacity.

Theory of operation: each row is one ``search_goodput`` (Poisson or Gamma CV 3, the
default MobileNet-like profile ``l(b) = 1.082 b + 5.204`` ms, max batch 64) under a noisy
driver (latency CV 0.05, ticks up to 0.3 ms late), once per headroom. The knob only
changes what happens at light load, where a lone or small batch would otherwise wait to
its last moment; at the goodput point batches already need to grow, so the searches
should agree (they do, within the search's 2% resolution; docs/policy.md §11). Beside
each search, the same driver runs Poisson arrivals at 0.6 of the analytic bound (3 seeds
of 4 s) and reports p50 and p99 latency over the SLO and the attainment there: what the
knob buys below capacity.

Run: ``.venv/bin/python -m bench.defer_headroom [--jobs 2]`` (about 6 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
from multiprocessing import Pool

import numpy as np

from bench.search import search_goodput
from bench.sim.config import Cluster, Noise, SimConfig
from bench.sim.engine import policy_config_for, simulate_policy
from bench.traces import mix, poisson
from central.policy import PolicyConfig, Profile, analytic_bound

MS = 1_000_000
POINTS = (  # (trace, N, SLO ms, models sharing the workers)
    ("poisson", 1, 25, 1),
    ("poisson", 2, 25, 1),
    ("poisson", 8, 25, 1),
    ("poisson", 32, 25, 1),
    ("poisson", 8, 50, 1),
    ("poisson", 8, 100, 1),
    ("gamma", 8, 25, 1),
    ("poisson", 8, 25, 4),
)
HEADROOMS = (0.0, 2.0, 1.25)
Row = tuple[tuple[str, int, int, int, float], float, float, tuple[float, float, float]]


def below_capacity(
    cluster: Cluster, config: SimConfig, pconf: PolicyConfig, slo_ns: int, n: int, prof: Profile
) -> tuple[float, float, float]:
    """p50 and p99 latency over the SLO, and attainment, at 0.6 of the bound (Poisson,
    seeds 1-3, 4 s each, arrivals spread evenly over the models)."""
    bound = analytic_bound(n, prof.k_ns, prof.c_ns, slo_ns).goodput_rps
    models = list(cluster.profiles)
    lat: list[np.ndarray] = []
    ok = total = 0
    for seed in (1, 2, 3):
        tr = (
            mix(
                [
                    poisson(0.6 * bound / len(models), 4.0, seed=seed * 10 + i, model=m)
                    for i, m in enumerate(models)
                ]
            )
            if len(models) > 1
            else poisson(0.6 * bound, 4.0, seed=seed, model=models[0])
        )
        r = simulate_policy(
            "symphony",
            tr,
            cluster,
            config,
            policy_config_for(cluster, config, defer_headroom=pconf.defer_headroom),
        )
        done = r.finish_ns >= 0
        lat.append((r.finish_ns[done] - r.arrival_ns[done]) / slo_ns)
        ok += int(np.sum(r.outcome == 0))
        total += len(r.outcome)
    all_lat = np.concatenate(lat)
    return float(np.percentile(all_lat, 50)), float(np.percentile(all_lat, 99)), ok / max(1, total)


def run(task: tuple[str, int, int, int, float]) -> Row:
    trace, n, slo_ms, models, headroom = task
    prof = Profile(round(1.082 * MS), round(5.204 * MS), 64)
    cluster = Cluster.shared({f"m{i}": prof for i in range(models)}, slo_ms * MS, n)
    config = SimConfig(noise=Noise(cv=0.05), tick_lateness_ns=300_000, seed=1)
    below = below_capacity(
        cluster,
        SimConfig(noise=Noise(cv=0.05), tick_lateness_ns=300_000, seed=1, strict=False),
        PolicyConfig(defer_headroom=headroom),
        slo_ms * MS,
        n,
        prof,
    )
    res = search_goodput(
        "symphony",
        cluster,
        trace=trace,
        cv=3.0,
        requests=20_000,
        seed=1,
        config=config,
        policy_config=PolicyConfig(defer_headroom=headroom),
    )
    return task, res.goodput_rps, res.goodput_rps / res.bound_rps, below


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.defer_headroom", description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=2, help="worker processes (2)")
    p.add_argument(
        "--headrooms",
        type=float,
        nargs="+",
        default=list(HEADROOMS),
        help="defer_headroom values to compare (default: 0 2 1.25)",
    )
    args = p.parse_args(argv)
    tasks = [(*pt, h) for pt in POINTS for h in args.headrooms]
    print(
        "| trace | N | SLO ms | models | defer_headroom | goodput req/s | of bound "
        "| at 0.6: p50/SLO | p99/SLO | attainment |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    with Pool(args.jobs) as pool:
        for (trace, n, slo, models, h), good, ratio, (p50, p99, att) in pool.imap(run, tasks):
            print(
                f"| {trace} | {n} | {slo} | {models} | {h} | {good:.1f} | {ratio:.3f} "
                f"| {p50:.3f} | {p99:.3f} | {att:.4f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
