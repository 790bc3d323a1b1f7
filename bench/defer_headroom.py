"""Does deferring at light load pay? ``symphony`` with ``defer_headroom`` 0 (always defer,
pure Symphony) against the default 2.0, by goodput search in the simulator.

Theory of operation: each row is one ``search_goodput`` (Poisson or Gamma CV 3, the
default MobileNet-like profile ``l(b) = 1.082 b + 5.204`` ms, max batch 64) under a noisy
driver (latency CV 0.05, ticks up to 0.3 ms late), once per headroom. The knob only
changes what happens at light load, where a lone or small batch would otherwise wait to
its last moment; at the goodput point batches already need to grow, so the searches
should agree (they do, within the search's 2% resolution; docs/policy.md §11).

Run: ``.venv/bin/python -m bench.defer_headroom [--jobs 2]`` (about 6 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
from multiprocessing import Pool

from bench.search import search_goodput
from bench.sim.config import Cluster, Noise, SimConfig
from central.policy import PolicyConfig, Profile

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
HEADROOMS = (0.0, 2.0)


def run(task: tuple[str, int, int, int, float]) -> tuple[tuple[str, int, int, int, float], float, float]:
    trace, n, slo_ms, models, headroom = task
    prof = Profile(round(1.082 * MS), round(5.204 * MS), 64)
    cluster = Cluster.shared({f"m{i}": prof for i in range(models)}, slo_ms * MS, n)
    res = search_goodput(
        "symphony",
        cluster,
        trace=trace,
        cv=3.0,
        requests=20_000,
        seed=1,
        config=SimConfig(noise=Noise(cv=0.05), tick_lateness_ns=300_000, seed=1),
        policy_config=PolicyConfig(defer_headroom=headroom),
    )
    return task, res.goodput_rps, res.goodput_rps / res.bound_rps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.defer_headroom", description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=2, help="worker processes (2)")
    args = p.parse_args(argv)
    tasks = [(*pt, h) for pt in POINTS for h in HEADROOMS]
    print("| trace | N | SLO ms | models | defer_headroom | goodput req/s | of bound |")
    print("|---|---|---|---|---|---|---|")
    with Pool(args.jobs) as pool:
        for (trace, n, slo, models, h), good, ratio in pool.imap(run, tasks):
            print(f"| {trace} | {n} | {slo} | {models} | {h} | {good:.1f} | {ratio:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
