"""The integration check's scenario, run by hand with the scheduler's view of each batch.

Theory of operation: ``tests/integration/test_serving.py`` asserts >= 99% within SLO at
60% of the coordinated bound on 8 emulated GPUs with a time-dilated profile. This runs
that scenario ``--runs`` times at a chosen dilation and prints, per run, the attainment,
the client latency and, from the scheduler's batch log, how late batches started
against their planned earliest start and how much longer they ran than expected: the
two numbers that tell a slow policy from a stalled machine.

Run: ``.venv/bin/python -m bench.serving_check --dilation 20 --runs 5``.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from central.client import query_stats
from central.client.load import LoadSpec, run_load, summarize
from central.cluster import Cluster, free_port, load_config
from central.demo import dilate
from central.policy.bound import analytic_bound

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.serving_check", description=__doc__.split("\n")[0])
    p.add_argument("--dilation", type=float, default=20.0, help="k, c and SLO multiplier (20)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--load", type=float, default=0.6, help="fraction of the bound (0.6)")
    p.add_argument("--duration", type=float, default=5.0)
    args = p.parse_args(argv)
    base = dilate(load_config(None), args.dilation, "symphony")
    base = dataclasses.replace(base, workers=tuple(w for w in base.workers if w.kind == "emulated"))
    m = base.model("symphony")
    assert m.k_ms is not None and m.c_ms is not None and m.slo_ms is not None
    bound = analytic_bound(8, round(m.k_ms * 1e6), round(m.c_ms * 1e6), round(m.slo_ms * 1e6))
    print(
        f"x{args.dilation:g}: l(b) = {m.k_ms:.2f} b + {m.c_ms:.2f} ms, SLO {m.slo_ms:g} ms, "
        f"{args.load:.0%} of {bound.goodput_rps:.1f} req/s"
    )
    for run in range(args.runs):
        cfg = base.with_ports(free_port(), free_port())
        with Cluster(cfg):
            rec = run_load(
                LoadSpec(
                    cfg.frontend_address,
                    "symphony",
                    args.load * bound.goodput_rps,
                    args.duration,
                    m.slo_ms,
                    seed=run + 1,
                )
            )
            s = summarize(rec, m.slo_ms, args.duration)
            log = query_stats(cfg.scheduler_address, with_batches=True)["batches"]
        b = np.array([[x[5], x[7], x[8], x[3]] for x in log], dtype=np.int64)
        earliest, start, end, size = b.T
        late = np.percentile((start - earliest) / 1e6, 99)
        over = np.percentile((end - start - (m.k_ms * size + m.c_ms) * 1e6) / 1e6, 99)
        print(
            f"run {run + 1}: attainment {s['slo_attainment']:.4f}, latency p50 "
            f"{s['latency_ms']['p50']:.1f} p99 {s['latency_ms']['p99']:.1f} ms; batch start "
            f"late p99 {late:.2f} ms, ran over expected p99 {over:.2f} ms",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
