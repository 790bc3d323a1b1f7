"""``python -m bench`` (also ``baton bench``): Baton's benchmark programs.

Subcommands: ``bound`` (analytic goodput bounds), ``live`` (live goodput vs the bounds on
a real local cluster, ``bench/live_goodput.py``), ``sim`` (the discrete-event policy
lab), ``replay`` (one trace on Baton and its peers, ``bench/replay.py``), ``matrix`` (issue
4's SLO x trace x system table of live goodput searches, ``bench/matrix.py``),
``perf-analyzer`` (``bench/perf_analyzer.py``) and the others its usage lists.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "bound": "bench.bound_table",
        "live": "bench.live_goodput",
        "sim": "bench.sim_table",
        "replay": "bench.replay",
        "perf-analyzer": "bench.perf_analyzer",
        "overload": "bench.overload",
        "loadgen": "bench.loadgen",
        "peers": "bench.peers.__main__",
        "capacity": "bench.capacity",
        "matrix": "bench.matrix",
        "ab": "bench.ab",
        "cost": "bench.cost",
    }
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print(
            "usage: baton bench {bound,live,sim,replay,perf-analyzer,overload,loadgen,peers,capacity,matrix,ab,cost} [options]"
            "   ('baton bench sim --help' ...)"
        )
        print("  bound  analytic goodput bound table: coordinated vs uncoordinated")
        print("  live   live goodput at >= 99% SLO attainment vs the bounds (real processes)")
        print("  sim    simulated goodput of every policy (discrete-event simulator)")
        print("  replay one trace replayed live on Baton and its peers, side by side")
        print("  perf-analyzer  Triton's perf_analyzer against Baton's KServe gRPC endpoint")
        print("  overload  goodput at 1x, 1.5x, 2x and 3x capacity (no congestion collapse)")
        print("  loadgen   MLPerf LoadGen, Server scenario: VALID/INVALID at a QPS and bound")
        print("  peers     check or tune the Ray Serve and PyTriton peers (make peers)")
        print("  capacity  scheduler capacity: live ramp (--shards K...), --hot-path, --roles")
        print("  matrix    SLO x trace x system: live goodput searches of Baton and its peers")
        print("  ab        two sets of scheduler flags on the live cluster, runs interleaved")
        print("  cost      CPU us per request of each process beside a bare pyzmq relay; py-spy tops")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    import importlib

    module = importlib.import_module(commands[argv[0]])
    return int(module.main(argv[1:]))


if __name__ == "__main__":
    raise SystemExit(main())
