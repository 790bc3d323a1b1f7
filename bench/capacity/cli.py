"""``baton bench capacity`` (``python -m bench.capacity``): the command line over the
live ramp, the hot paths and the role costs."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.capacity.experiment import Setup
from bench.capacity.hot_path import hot_path, split_hot_path
from bench.capacity.ramp import run_capacity
from bench.capacity.roles import role_costs

__all__ = ["main"]


def _table(setup: Setup, results: list[dict[str, Any]]) -> str:
    lines = [
        "| shards | models | GPUs | highest sustained req/s | decision lag p50 / p99 (ms) "
        "| input lag p99 (ms) | scheduler CPU us/request | first failing step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        b = r["best"]
        fail = next(
            (f"{s['offered_rps']:.0f}: {s['verdict']}" for s in r["steps"] if s["verdict"] != "ok"),
            "none (max rate reached)",
        )
        if b is None:
            lines.append(f"| {r['shards']} | {setup.models} | {setup.gpus} | none | - | - | - | {fail} |")
            continue
        lines.append(
            f"| {r['shards']} | {setup.models} | {setup.gpus} | {b['sent_rps']:.0f} | "
            f"{b['lag_p50_ms']:.3f} / {b['lag_p99_ms']:.3f} | {b['input_lag_p99_ms']:.3f} | "
            f"{b['sched_cpu_us_per_request'] or 0:.1f} | {fail} |"
        )
    return "\n".join(lines)


def _write_json(path: str | None, setup: Setup, machine: str, key: str, value: Any) -> None:
    """With ``--json PATH``: the setup, the machine and one mode's results."""
    if path:
        Path(path).write_text(json.dumps({"setup": asdict(setup), "machine": machine, key: value}, indent=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="baton bench capacity",
        description="Scheduler capacity: feed the scheduler synthetic Poisson metadata from "
        "feeder processes, answer its Executes from emulated GPUs, and raise the rate until "
        "decisions lag their planned time by more than --max-lag-ms at p99 or a drop appears "
        "that the policy did not choose. Prints the highest sustained rate per shard count.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--shards",
        type=int,
        nargs="+",
        default=[1],
        help="shard counts, each measured in turn: 1 is the one-process "
        "scheduler, K >= 2 a matcher and K shard processes (baton scheduler "
        "--shards K); with --roles, the split's per-role CPU in one process",
    )
    p.add_argument("--models", type=int, default=64)
    p.add_argument("--gpus", type=int, default=256, help="emulated GPUs in all")
    p.add_argument(
        "--worker-procs",
        type=int,
        default=1,
        help="processes hosting the GPUs (more on a machine with more cores)",
    )
    p.add_argument(
        "--pools",
        type=int,
        default=16,
        help="models and GPUs split into this many groups; a GPU serves its group",
    )
    p.add_argument(
        "--feeders", type=int, default=1, help="feeder (synthetic frontend) processes (more on more cores)"
    )
    p.add_argument("--slo-ms", type=float, default=50.0)
    p.add_argument(
        "--interval-us",
        type=float,
        default=1000.0,
        help="feeder send period: one Requests message per feeder per period",
    )
    p.add_argument("--start-rps", type=float, default=2000.0)
    p.add_argument("--factor", type=float, default=1.5, help="rate multiplier per step")
    p.add_argument("--max-rps", type=float, default=400_000.0)
    p.add_argument("--step-s", type=float, default=4.0, help="seconds of load per step")
    p.add_argument("--max-lag-ms", type=float, default=1.0, help="decision lag p99 limit")
    p.add_argument("--patience", type=int, default=2, help="stop after this many failed steps in a row")
    p.add_argument(
        "--max-input-lag-ms",
        type=float,
        default=5.0,
        help="limit on the p99 heartbeat round trip through the scheduler",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a bounded smoke run (< 60 s): 8 models, 32 GPUs, 1 s steps, "
        "from 1000 req/s x2 up to 16000, stopping at the first failed step",
    )
    p.add_argument(
        "--split",
        action="store_true",
        help="the scheduler runs the split policy (model shards + matcher, "
        "central.policy.sharded) with both roles in its one process",
    )
    p.add_argument("--json", metavar="PATH", help="also write every step as JSON here")
    p.add_argument(
        "--profile-dir", metavar="DIR", help="run the scheduler under cProfile; write DIR/scheduler-K.pstats"
    )
    p.add_argument(
        "--hot-path",
        type=float,
        metavar="RPS",
        help="instead of the live ramp, replay RPS req/s of virtual time through "
        "the scheduler in-process (no sockets) and print its CPU cost per request; "
        "with --shards K >= 2, the matcher's and each shard's",
    )
    p.add_argument("--hot-path-s", type=float, default=5.0, help="virtual seconds to replay")
    p.add_argument(
        "--roles",
        type=float,
        metavar="RPS",
        help="instead of the live ramp, simulate the split policy at RPS req/s "
        "for each --shards K and print each role's CPU per request",
    )
    args = p.parse_args(argv)
    if any(k < 1 for k in args.shards):
        p.error("--shards: every count must be >= 1")
    if args.quick:
        args.models, args.gpus, args.pools, args.worker_procs = 8, 32, 4, 1
        args.feeders, args.step_s, args.start_rps, args.factor = 1, 1.0, 1000.0, 2.0
        args.max_rps, args.patience = 16000.0, 1
    setup = Setup(
        models=args.models,
        gpus=args.gpus,
        worker_procs=args.worker_procs,
        pools=min(args.pools, args.models, args.gpus),
        feeders=args.feeders,
        slo_ns=round(args.slo_ms * 1e6),
        interval_ns=round(args.interval_us * 1e3),
        split=args.split,
    )
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    if args.hot_path and args.shards != [1]:
        print(
            f"hot path of the split ({machine}): {args.hot_path:.0f} req/s offered, "
            f"{args.hot_path_s:g} virtual s, thread CPU per request of the whole load"
        )
        print(
            "| shards | mean batch | drops | busiest shard us/req (of all) | "
            "busiest shard us/own req | matcher us/req | messages/batch | "
            "matcher full at (req/s) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        rows = []
        for k in args.shards:
            if k == 1:
                r = hot_path(setup, args.hot_path, args.hot_path_s)
                rows.append({"shards": 1, **r})
                print(
                    f"| 1 (one process) | {r['mean_batch']:.1f} | {r['drops']} | - | - | "
                    f"{r['us_per_request']:.2f} | - | {r['capacity_rps']:.0f} |"
                )
                continue
            r = split_hot_path(setup, args.hot_path, args.hot_path_s, k)
            rows.append(r)
            print(
                f"| {k} | {r['mean_batch']:.1f} | {r['drops']} | "
                f"{max(r['shard_us_per_request']):.2f} | "
                f"{max(r['shard_us_per_own_request']):.2f} | "
                f"{r['matcher_us_per_request']:.2f} | "
                f"{r['messages_between_roles_per_batch']:.1f} | "
                f"{1e6 / r['matcher_us_per_request']:.0f} |"
            )
        _write_json(args.json, setup, machine, "split_hot_path", rows)
        return 0
    if args.hot_path:
        path = None
        if args.profile_dir:
            Path(args.profile_dir).mkdir(parents=True, exist_ok=True)
            path = str(Path(args.profile_dir) / "hot-path.pstats")
        res = hot_path(setup, args.hot_path, args.hot_path_s, profile_path=path)
        print(
            f"hot path ({machine}): {res['requests']} requests, {res['batches']} batches "
            f"(mean {res['mean_batch']:.1f}), {res['drops']} drops: "
            f"{res['us_per_request']:.2f} us/request inside the scheduler, "
            f"{res['capacity_rps']:.0f} req/s per core"
        )
        _write_json(args.json, setup, machine, "hot_path", res)
        return 0
    print(
        f"capacity: {setup.models} models, {setup.gpus} emulated GPUs in "
        f"{setup.worker_procs} processes, {setup.feeders} feeders, SLO {args.slo_ms} ms; "
        f"{machine}"
    )
    if args.roles:
        rows = [role_costs(setup, args.roles, args.hot_path_s, k) for k in args.shards]
        print("| shards | busiest shard us/req | matcher us/req | messages/batch | on time |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['shards']} | {max(r['shard_us_per_request']):.2f} | "
                f"{r['matcher_us_per_request']:.2f} | {r['messages_per_batch']:.1f} | "
                f"{r['on_time']:.4f} |"
            )
        _write_json(args.json, setup, machine, "roles", rows)
        return 0
    results = []
    for k in args.shards:
        profile_path = None
        if args.profile_dir:
            Path(args.profile_dir).mkdir(parents=True, exist_ok=True)
            profile_path = str(Path(args.profile_dir) / f"scheduler-{k}.pstats")
        results.append(
            run_capacity(
                setup,
                shards=k,
                start_rps=args.start_rps,
                factor=args.factor,
                max_rps=args.max_rps,
                step_s=args.step_s,
                max_lag_ms=args.max_lag_ms,
                max_input_lag_ms=args.max_input_lag_ms,
                patience=args.patience,
                profile_path=profile_path,
            )
        )
    print(_table(setup, results))
    if args.json:
        doc = {
            "setup": asdict(setup),
            "machine": machine,
            "argv": sys.argv[1:] if argv is None else list(argv),
            "results": results,
        }
        Path(args.json).write_text(json.dumps(doc, indent=1, allow_nan=True))
    return 0
