"""Overload: goodput and answers at 1x, 1.5x, 2x and 3x the cluster's capacity, live.

Theory of operation: one live cluster (N emulated GPUs, Symphony's profile, time-dilated
below 8 cores like every live benchmark here) receives open-loop Poisson load at
multiples of its capacity, which is the analytic coordinated bound for N, k, c and the
SLO. For each multiple the table gives the goodput (answers OK within the SLO per
second) and its ratio to the goodput at 1x, the SLO attainment, how the rest were
answered (deadline exceeded, rejected, unavailable, failed) and whether any request got
no answer at all. A system without congestion collapse keeps its goodput near the 1x
figure at 2x and 3x: the policy drops what cannot make its deadline early, cheaply, and
keeps serving full batches.

Run: ``.venv/bin/python -m bench.overload`` (about 1 minute; ``--multiples 1 2`` for
fewer points).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from central.client.load import LoadSpec, run_load, summarize
from central.cluster import Cluster, ClusterConfig, ModelSpec, WorkerSpec, free_port
from central.policy.bound import analytic_bound
from central.protocol.messages import Status

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=4, help="emulated GPUs (4)")
    p.add_argument(
        "--multiples",
        type=float,
        nargs="+",
        default=[1.0, 1.5, 2.0, 3.0],
        help="offered load as multiples of the coordinated bound (1 1.5 2 3)",
    )
    p.add_argument("--duration", type=float, default=8.0, help="seconds per load point (8)")
    p.add_argument(
        "--dilation",
        type=float,
        default=None,
        help="multiply k, c and SLO by this (default: 8 below 8 cores, else 1)",
    )
    p.add_argument(
        "--senders",
        type=int,
        default=None,
        help="load processes (default: 1, or 2 when the top rate passes 2,000 req/s)",
    )
    p.add_argument("--policy", default="symphony")
    p.add_argument("--out", default="bench-results/overload.json")
    args = p.parse_args(argv)
    cores = os.cpu_count() or 1
    d = args.dilation if args.dilation is not None else (8.0 if cores < 8 else 1.0)
    k_ms, c_ms, slo_ms = 1.082 * d, 5.204 * d, 25.0 * d
    bound = analytic_bound(args.n, round(k_ms * 1e6), round(c_ms * 1e6), round(slo_ms * 1e6))
    capacity = bound.goodput_rps
    senders = args.senders or (1 if capacity * max(args.multiples) < 2000 else 2)
    print(
        f"N={args.n}, l(b) = {k_ms:.3f} b + {c_ms:.3f} ms, SLO {slo_ms:g} ms"
        + (f" (Symphony's profile time-dilated x{d:g})" if d != 1 else "")
        + f"; capacity (coordinated bound) {capacity:.1f} req/s; policy {args.policy}; "
        f"{platform.machine()}, {cores} cores"
    )
    config = ClusterConfig(
        f"tcp://127.0.0.1:{free_port()}",
        args.policy,
        f"tcp://127.0.0.1:{free_port()}",
        slo_ms,
        (ModelSpec("symphony", slo_ms, k_ms, c_ms),),
        (WorkerSpec("emulated", ("symphony",), gpus=args.n),),
    )
    rows = []
    with Cluster(config) as cluster:
        for mult in args.multiples:
            rate = mult * capacity
            time.sleep(1.0)  # the previous point's backlog drains
            rec = run_load(
                LoadSpec(
                    cluster.config.frontend_address,
                    "symphony",
                    rate,
                    args.duration,
                    slo_ms,
                    seed=int(mult * 100),
                    senders=senders,
                    grace_s=2.0,
                )
            )
            s = summarize(rec, slo_ms, args.duration)
            dropped = rec[rec[:, 3] == int(Status.DEADLINE_EXCEEDED)]
            wait = (dropped[:, 2] - dropped[:, 1]) / 1e6
            s["drop_answer_ms"] = (
                {"p50": float(np.percentile(wait, 50)), "p99": float(np.percentile(wait, 99))}
                if wait.size
                else None
            )
            rows.append({"multiple": mult, "offered_rps": rate, **s})
            o = s["outcomes"]
            print(
                f"  {mult:>4.1f}x: goodput {s['goodput_rps']:8.1f} req/s, attainment "
                f"{s['slo_attainment']:.3f}, ok {o['ok']}, deadline exceeded "
                f"{o['deadline_exceeded']}, rejected {o['rejected']}, failed {o['failed']}, "
                f"no answer {o['no_answer']}, answered twice {s['answered_twice']}",
                flush=True,
            )
    base = rows[0]["goodput_rps"] or 1.0
    print()
    print(
        "| load | offered req/s | goodput req/s | goodput / goodput at first point | SLO attainment | deadline exceeded (answered after p50 / p99 ms) | rejected | unavailable | failed | no answer | send late p99 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        o, w = r["outcomes"], r["drop_answer_ms"]
        drops = f"{o['deadline_exceeded']}" + (f" ({w['p50']:.0f} / {w['p99']:.0f})" if w else "")
        print(
            f"| {r['multiple']:g}x | {r['offered_rps']:.1f} | {r['goodput_rps']:.1f} | "
            f"{r['goodput_rps'] / base:.3f} | {r['slo_attainment']:.3f} | {drops} | "
            f"{o['rejected']} | {o['unavailable']} | {o['failed']} | {o['no_answer']} | "
            f"{r['send_lateness_ms']['p99']:.1f} |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"args": vars(args), "capacity_rps": capacity, "dilation": d, "rows": rows}, indent=1)
    )
    return 1 if any(r["outcomes"]["no_answer"] or r["answered_twice"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
