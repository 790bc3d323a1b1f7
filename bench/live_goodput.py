"""Live goodput vs the analytic bounds, for N emulated GPUs.

For each N, a real cluster (scheduler, frontend, one worker process with N emulated
GPUs) serves Symphony's benchmark profile; a bisection over the offered Poisson rate
finds the highest rate at which at least 99% of requests finish within the SLO, measured
at the client. The table puts that goodput next to the analytic coordinated and
uncoordinated bounds (``central.policy.bound``) with the ratios.

Run: ``.venv/bin/python -m bench.live_goodput [--dilation 8] [-n 1 2 4 8]``. On a 2-core
machine the full-speed profile's overheads (Python hops of ~1-3 ms) are a large part of
a 25 ms SLO, so the default runs a time-dilated copy (k, c and SLO x8: every ratio is
unchanged) and ``--dilation 1`` shows the undilated truth.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from central.client.load import LoadSpec, run_load, summarize
from central.cluster import Cluster, ClusterConfig, ModelSpec, WorkerSpec, free_port
from central.policy.bound import analytic_bound

__all__ = ["search_goodput", "main"]


def _config(n: int, k_ms: float, c_ms: float, slo_ms: float, policy: str) -> ClusterConfig:
    return ClusterConfig(
        f"tcp://127.0.0.1:{free_port()}",
        policy,
        f"tcp://127.0.0.1:{free_port()}",
        slo_ms,
        (ModelSpec("symphony", slo_ms, k_ms, c_ms),),
        (WorkerSpec("emulated", ("symphony",), gpus=n),),
    )


def search_goodput(
    address: str,
    slo_ms: float,
    bound_rps: float,
    *,
    duration_s: float,
    iters: int,
    target: float = 0.99,
    seed: int = 1,
    log: Any = print,
) -> dict[str, Any]:
    """Bisection on the offered rate for the highest one meeting ``target`` attainment.

    Returns the best passing run's summary (with ``rate``) and every probe made.
    """
    lo, hi = 0.2 * bound_rps, 1.05 * bound_rps
    best: dict[str, Any] | None = None
    probes = []
    for i in range(iters):
        rate = (lo + hi) / 2 if i else 0.6 * bound_rps
        s = summarize(
            run_load(LoadSpec(address, "symphony", rate, duration_s, slo_ms, seed=seed + i)),
            slo_ms,
            duration_s,
        )
        s["rate"] = rate
        probes.append({k: s[k] for k in ("rate", "slo_attainment", "goodput_rps")})
        ok = s["slo_attainment"] >= target
        log(
            f"    probe {rate:8.1f} req/s: attainment {s['slo_attainment']:.4f} "
            f"goodput {s['goodput_rps']:.1f} {'pass' if ok else 'fail'}"
        )
        if ok:
            lo = rate
            if best is None or s["goodput_rps"] > best["goodput_rps"]:
                best = s
        else:
            hi = rate
    return {"best": best, "probes": probes}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, nargs="+", default=[1, 2, 4, 8], help="GPU counts (1 2 4 8)")
    p.add_argument("--k-ms", type=float, default=1.082)
    p.add_argument("--c-ms", type=float, default=5.204)
    p.add_argument("--slo-ms", type=float, default=25.0)
    p.add_argument(
        "--dilation", type=float, default=8.0, help="multiply k, c and SLO by this (8; 1 = full speed)"
    )
    p.add_argument("--duration", type=float, default=4.0, help="seconds per probe (4)")
    p.add_argument("--iters", type=int, default=6, help="bisection probes per N (6)")
    p.add_argument("--policy", default="symphony")
    p.add_argument("--out", default="results/live_goodput.json")
    args = p.parse_args(argv)
    d = args.dilation
    k_ms, c_ms, slo_ms = args.k_ms * d, args.c_ms * d, args.slo_ms * d
    k, c, slo = int(k_ms * 1e6), int(c_ms * 1e6), int(slo_ms * 1e6)
    print(
        f"profile l(b) = {args.k_ms} ms*b + {args.c_ms} ms, SLO {args.slo_ms} ms"
        + (f", time-dilated x{d:g} (k={k_ms:.3f} ms, c={c_ms:.3f} ms, SLO {slo_ms:g} ms)" if d != 1 else "")
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; policy {args.policy}; "
        f"{args.duration:g} s per probe, {args.iters} probes per N"
    )
    rows = []
    for n in args.n:
        co = analytic_bound(n, k, c, slo)
        un = analytic_bound(n, k, c, slo, coordinated=False)
        print(
            f"N={n}: coordinated bound {co.goodput_rps:.1f} req/s (b*={co.batch}), "
            f"uncoordinated {un.goodput_rps:.1f} (b={un.batch})",
            flush=True,
        )
        cluster = Cluster(_config(n, k_ms, c_ms, slo_ms, args.policy))
        cluster.start()
        try:
            res = search_goodput(
                cluster.config.frontend_address,
                slo_ms,
                co.goodput_rps,
                duration_s=args.duration,
                iters=args.iters,
            )
        finally:
            cluster.stop()
        best = res["best"]
        good = best["goodput_rps"] if best else 0.0
        rows.append(
            {
                "n": n,
                "goodput_rps": good,
                "coordinated_bound_rps": co.goodput_rps,
                "uncoordinated_bound_rps": un.goodput_rps,
                "b_star": co.batch,
                "ratio_to_coordinated": good / co.goodput_rps if co.goodput_rps else 0.0,
                "ratio_to_uncoordinated": good / un.goodput_rps if un.goodput_rps else 0.0,
                "attainment": best["slo_attainment"] if best else None,
                "probes": res["probes"],
            }
        )
    print()
    unit = "req/s" + (f" of the x{d:g} dilated profile" if d != 1 else "")
    print(
        f"{'N':>3} {'live goodput':>13} {'coord bound':>12} {'uncoord bound':>14} "
        f"{'live/coord':>10} {'live/uncoord':>12}   ({unit}, >= 99% within SLO)"
    )
    for r in rows:
        print(
            f"{r['n']:>3} {r['goodput_rps']:>13.1f} {r['coordinated_bound_rps']:>12.1f} "
            f"{r['uncoordinated_bound_rps']:>14.1f} {r['ratio_to_coordinated']:>10.3f} "
            f"{r['ratio_to_uncoordinated']:>12.3f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows, "time": time.time()}, indent=1))
    print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
