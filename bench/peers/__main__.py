"""``python -m bench.peers``: check the peers, replay one setting, or tune a peer's knobs.

``check`` says which peers can run here (and why not); ``tune`` scores every knob setting
of ``default_grid`` (or ``--grid``) at one offered Poisson rate and writes all of them with
the best to ``--out``. On a machine with fewer than 8 cores the profile is time-dilated by
default (k, c and the SLO multiplied by ``--dilation``; every ratio is unchanged), and the
output says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from central.policy.bound import analytic_bound

from .common import Knobs
from .replay import PEERS, available, default_grid, tune_peer

AUTO_DILATION = 12.0  # on < 8 cores: Ray's HTTP proxy alone costs ~20 ms a request there


def _parse_knobs(text: str) -> Knobs:
    batch, _, delay = text.partition(":")
    try:
        return Knobs(int(batch), int(delay))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MAX_BATCH:DELAY_US, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="which peers can run here, and why not")
    t = sub.add_parser("tune", help="best batching knobs of one peer at one offered rate")
    t.add_argument("--peer", choices=PEERS, required=True)
    t.add_argument("-n", type=int, default=2, help="replicas (2)")
    t.add_argument("--k-ms", type=float, default=1.082)
    t.add_argument("--c-ms", type=float, default=5.204)
    t.add_argument("--slo-ms", type=float, default=25.0)
    t.add_argument(
        "--dilation",
        type=float,
        help=f"multiply k, c and SLO (default {AUTO_DILATION:g} on < 8 cores, else 1)",
    )
    t.add_argument(
        "--load",
        type=float,
        default=0.7,
        help="offered rate as a fraction of the uncoordinated bound for N (0.7)",
    )
    t.add_argument("--duration", type=float, default=6.0, help="seconds per setting (6)")
    t.add_argument("--senders", type=int, default=1, help="sender processes (1)")
    t.add_argument(
        "--grid", type=_parse_knobs, nargs="+", help="settings as MAX_BATCH:DELAY_US (default: default_grid)"
    )
    t.add_argument("--out", default="results/peers_tune.json")
    args = p.parse_args(argv)

    if args.command == "check":
        for name in PEERS:
            reason = available(name)
            print(f"{name:7s} {'ok' if reason is None else 'unavailable: ' + reason}")
        return 0

    cores = os.cpu_count() or 1
    d = args.dilation if args.dilation else (AUTO_DILATION if cores < 8 else 1.0)
    k_ms, c_ms, slo_ms = args.k_ms * d, args.c_ms * d, args.slo_ms * d
    slo_ns = int(slo_ms * 1e6)
    un = analytic_bound(args.n, int(k_ms * 1e6), int(c_ms * 1e6), slo_ns, coordinated=False)
    rate = args.load * un.goodput_rps
    print(
        f"{args.peer}: N={args.n}, l(b) = {args.k_ms} ms*b + {args.c_ms} ms, SLO {args.slo_ms} ms"
        + (f", time-dilated x{d:g} (k={k_ms:.3f} ms, c={c_ms:.3f} ms, SLO {slo_ms:g} ms)" if d != 1 else "")
    )
    print(
        f"machine: {platform.machine()}, {cores} cores; offered {rate:.1f} req/s = "
        f"{args.load:.0%} of the uncoordinated bound {un.goodput_rps:.1f} (b={un.batch}); "
        f"{args.duration:g} s per setting",
        flush=True,
    )
    grid = args.grid or default_grid(k_ms, c_ms, slo_ms)
    res = tune_peer(
        args.peer,
        rate,
        args.duration,
        slo_ns,
        k_ms,
        c_ms,
        args.n,
        grid,
        senders=args.senders,
        log=lambda s: print(s, flush=True),
    )
    best = res["best"]
    print(
        f"best: max_batch={best['knobs']['max_batch']} delay={best['knobs']['queue_delay_us']} us"
        f" -> goodput {best['goodput_rps']:.1f} req/s, attainment {best['slo_attainment']:.4f}"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    res.update(
        dilation=d,
        k_ms=k_ms,
        c_ms=c_ms,
        slo_ms=slo_ms,
        n=args.n,
        cores=cores,
        machine=platform.machine(),
        uncoordinated_bound_rps=un.goodput_rps,
        time=time.time(),
    )
    out.write_text(json.dumps(res, indent=1))
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
