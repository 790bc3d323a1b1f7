"""``baton bench bound``: the analytic goodput bound, coordinated vs uncoordinated.

For profile ``l(b) = k*b + c``, each SLO and each N: ``b*`` is the largest batch with
``(1/N + 1) * l(b) <= SLO - overheads`` (coordinated, staggered workers) or
``2 * l(b) <= SLO - overheads`` (uncoordinated), and goodput is ``N * b* / l(b*)``
(``central.policy.bound.analytic_bound``). Prints a table and optionally writes JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from central.policy.bound import analytic_bound

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="baton bench bound", description=__doc__.split("\n\n")[0])
    p.add_argument("--k-ms", type=float, default=1.082, help="ms per request in a batch (1.082)")
    p.add_argument("--c-ms", type=float, default=5.204, help="fixed ms per batch (5.204)")
    p.add_argument("--slo-ms", type=float, nargs="+", default=[25.0, 50.0, 100.0])
    p.add_argument("-n", type=int, nargs="+", default=[1, 2, 8, 32])
    p.add_argument("--overhead-ms", type=float, default=0.0, help="taken off the SLO (0)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    k, c = int(args.k_ms * 1e6), int(args.c_ms * 1e6)
    oh = int(args.overhead_ms * 1e6)
    rows = []
    print(f"l(b) = {args.k_ms} ms*b + {args.c_ms} ms, overheads {args.overhead_ms} ms")
    print(
        f"{'SLO ms':>7} {'N':>4} {'coord b*':>8} {'coord req/s':>12} {'uncoord b':>9} "
        f"{'uncoord req/s':>13} {'coord/uncoord':>13}"
    )
    for slo_ms in args.slo_ms:
        for n in args.n:
            co = analytic_bound(n, k, c, int(slo_ms * 1e6), overhead_ns=oh)
            un = analytic_bound(n, k, c, int(slo_ms * 1e6), coordinated=False, overhead_ns=oh)
            ratio = co.goodput_rps / un.goodput_rps if un.goodput_rps else float("inf")
            rows.append(
                {
                    "slo_ms": slo_ms,
                    "n": n,
                    "coord_batch": co.batch,
                    "coord_rps": co.goodput_rps,
                    "uncoord_batch": un.batch,
                    "uncoord_rps": un.goodput_rps,
                    "ratio": ratio,
                }
            )
            print(
                f"{slo_ms:>7g} {n:>4} {co.batch:>8} {co.goodput_rps:>12.0f} {un.batch:>9} "
                f"{un.goodput_rps:>13.0f} {ratio:>13.2f}"
            )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
