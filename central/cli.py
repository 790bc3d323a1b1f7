"""The ``baton`` command: run a cluster, one role, a request, or the demo.

Each role runs on uvloop and stops cleanly on SIGINT/SIGTERM (every socket closed,
every accepted request answered). Heavy imports (torch) happen only in the roles that
need them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

__all__ = ["main"]

log = logging.getLogger("baton")


def _run_role(make: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Run ``make(stop)`` on uvloop until SIGINT/SIGTERM sets ``stop``."""
    import uvloop

    async def runner() -> None:
        # Collector pauses are milliseconds of stall at a random instant: freeze what
        # start-up allocated (it lives forever) and collect young objects less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(100_000, 50, 1000)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await make(stop)

    uvloop.run(runner())
    return 0


def _profile_arg(text: str) -> tuple[str, Any]:
    from central.policy.types import Profile

    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME:K_MS:C_MS[:MAX_BATCH]")
    try:
        k, c = float(parts[1]), float(parts[2])
        mb = int(parts[3]) if len(parts) == 4 else 64
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: K_MS and C_MS must be numbers") from None
    return parts[0], Profile(round(k * 1e6), round(c * 1e6), mb)


def _kv(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE")
    k, v = text.split("=", 1)
    return k, v


# ------------------------------------------------------------------ role commands


def _policy_config(args: argparse.Namespace) -> Any:
    """The ``PolicyConfig`` of ``args``; a bad value exits with the field named, not a
    traceback."""
    try:
        return _make_policy_config(args)
    except ValueError as exc:
        raise SystemExit(f"baton {args.command}: {exc}") from None


def _make_policy_config(args: argparse.Namespace) -> Any:
    from central.policy import PolicyConfig

    return PolicyConfig(
        profiles=dict(args.profile or []),
        dispatch_cost_ns=int(args.dispatch_cost_us * 1e3),
        reply_cost_ns=int(args.reply_cost_us * 1e3),
        timer_slack_ns=int(args.timer_slack_us * 1e3),
        margin_percentile=args.margin_percentile,
        refit_window=args.refit_window,
        stall_window=args.stall_window,
        # batch ids unique across scheduler restarts: workers remember recent ones
        first_batch_id=time.time_ns() // 1_000_000 * 1_000_000,
    )


def _policy_options(args: argparse.Namespace) -> Any:
    """A baseline's own knobs from ``args`` (None: its defaults); a knob given to a policy
    that has no such knob, or a bad value, exits with a clear message."""
    knobs = {
        "max_batch": args.uncoord_max_batch,
        "max_queue_delay_ns": (
            None if args.uncoord_queue_delay_us is None else int(args.uncoord_queue_delay_us * 1e3)
        ),
    }
    if all(v is None for v in knobs.values()):
        return None
    if args.policy != "uncoordinated":
        raise SystemExit(
            f"baton {args.command}: --uncoord-max-batch and "
            "--uncoord-queue-delay-us are knobs of --policy uncoordinated, "
            f"not of {args.policy}"
        )
    from central.policy.baselines.uncoordinated import UncoordinatedConfig

    try:
        return UncoordinatedConfig(**knobs)
    except ValueError as exc:
        raise SystemExit(f"baton {args.command}: {exc}") from None


def _policy_flags(args: argparse.Namespace) -> list[str]:
    """The policy flags of ``args`` as a command line (a matcher passes them on to its
    shards: every role of one scheduler must plan with the same numbers)."""
    out = []
    for name, p in args.profile or []:
        out += ["--profile", f"{name}:{p.k_ns / 1e6!r}:{p.c_ns / 1e6!r}:{p.max_batch}"]
    out += [
        "--dispatch-cost-us",
        repr(args.dispatch_cost_us),
        "--reply-cost-us",
        repr(args.reply_cost_us),
        "--timer-slack-us",
        repr(args.timer_slack_us),
        "--margin-percentile",
        repr(args.margin_percentile),
        "--refit-window",
        str(args.refit_window),
        "--stall-window",
        str(args.stall_window),
    ]
    if args.keys:
        out += ["--keys", args.keys]
    return out


def cmd_scheduler(args: argparse.Namespace) -> int:
    from central.runtime.scheduler import Scheduler, SchedulerConfig

    placement = []
    for model, index in args.place or []:
        if not index.isdigit() or not 0 <= int(index) < max(args.shards, 1):
            raise SystemExit(
                f"baton scheduler: --place {model}={index}: the shard must be "
                f"a number from 0 to {max(args.shards, 1) - 1}"
            )
        placement.append((model, int(index)))
    if args.shards < 1:
        raise SystemExit("baton scheduler: --shards must be >= 1")
    if args.shards > 1 and args.policy != "symphony":
        raise SystemExit(
            "baton scheduler: --shards splits the default policy (symphony); "
            f"--policy {args.policy} runs in one process"
        )
    config = SchedulerConfig(
        address=args.address,
        policy=args.policy,
        policy_config=_policy_config(args),
        policy_options=_policy_options(args),
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port,
        stats_pub=args.stats_pub,
        keys_dir=args.keys,
        shard_processes=args.shards if args.shards > 1 else 0,
        placement=tuple(placement),
        rebalance_interval_ns=int(args.rebalance_s * 1e9),
    )
    if args.shards == 1:
        sched = Scheduler(config)
        log.info("scheduler on %s, policy %s", args.address, args.policy)
        return _run_role(sched.serve)

    from central.runtime.matcher import ShardProcesses, SplitScheduler

    matcher = SplitScheduler(config)
    host = args.shard_host or args.address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host in ("", "*", "0.0.0.0", "::"):
        log.warning(
            "shards bind to 127.0.0.1: frontends on other hosts cannot reach them; "
            "give --shard-host an address they can dial"
        )
        host = "127.0.0.1"
    children = matcher.children = ShardProcesses(
        args.shards, args.address, _policy_flags(args), log_dir=args.shard_log_dir, host=host
    )

    async def serve(stop: asyncio.Event) -> None:
        children.start()
        watch = asyncio.ensure_future(children.watch(stop))
        try:
            await matcher.serve(stop)
        finally:
            stop.set()
            await asyncio.gather(watch, return_exceptions=True)
            children.stop()

    log.info("scheduler (matcher of %d shard processes) on %s", args.shards, args.address)
    return _run_role(serve)


def cmd_shard(args: argparse.Namespace) -> int:
    from central.runtime.shard import ShardConfig, ShardServer

    config = ShardConfig(
        index=args.index,
        scheduler=args.scheduler,
        address=args.address,
        policy_config=_policy_config(args),
        keys_dir=args.keys,
    )
    return _run_role(ShardServer(config).serve)


def _ms_to_ns(ms: float) -> int:
    """A flag in milliseconds as the integer nanoseconds the roles count in."""
    return round(ms * 1e6)


def cmd_frontend(args: argparse.Namespace) -> int:
    from central.frontend.server import Frontend, FrontendConfig

    # the flags are in ms; the frontend counts in ns
    slo = {k: _ms_to_ns(float(v)) for k, v in (args.slo or [])}
    config = FrontendConfig(
        scheduler=args.scheduler,
        client_bind=args.address,
        default_slo_ns=_ms_to_ns(args.default_slo_ms),
        slo_ns=slo,
        client_allowance_ns=_ms_to_ns(args.client_allowance_ms),
        name=args.name or "",
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port,
        kserve_host=args.kserve_host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        keys_dir=args.keys,
        token=_token(args.token_file, "frontend"),
        test_fault=args.test_fault or "",
    )
    return _run_role(Frontend(config).serve)


def cmd_worker(args: argparse.Namespace) -> int:
    from workers.worker import Worker, WorkerConfig

    if bool(args.emulate) == bool(args.torch):
        print("baton worker: give either --emulate N with --model, or --torch MODEL", file=sys.stderr)
        return 2
    if args.emulate:
        from workers.emulated import EmulatedExecutor, parse_emulated_model

        if not args.model:
            print("baton worker: --emulate needs at least one --model NAME:K_MS:C_MS", file=sys.stderr)
            return 2
        try:
            models = [parse_emulated_model(m) for m in args.model]
        except ValueError as exc:
            print(f"baton worker: {exc}", file=sys.stderr)
            return 2
        executor: Any = EmulatedExecutor(args.emulate, models, noise_cv=args.noise, seed=args.seed)
    else:
        from workers.torch_executor import TorchExecutor

        checkpoints = dict(args.checkpoint or [])
        executor = TorchExecutor(
            [(m, checkpoints.get(m)) for m in args.torch], device=args.device, threads=args.threads
        )
    config = WorkerConfig(
        keys_dir=args.keys,
        scheduler=args.scheduler,
        data_bind=args.data_address,
        data_advertise=args.advertise,
        name=args.name or "",
    )
    return _run_role(Worker(config, executor).serve)


def cmd_up(args: argparse.Namespace) -> int:

    from central.cluster import Cluster, load_config

    try:
        config = load_config(args.config)
    except ValueError as exc:
        print(f"baton up: {exc}", file=sys.stderr)
        return 2
    cluster = Cluster(config, log_dir=args.log_dir)
    print(f"starting {len(config.workers)} worker process(es), {config.gpu_count} GPU(s)...")
    cluster.start()
    print(f"serving: frontend {config.frontend_address}, scheduler {config.scheduler_address}")
    if config.http_port is not None or config.grpc_port is not None:
        http = f"http://127.0.0.1:{config.http_port}" if config.http_port is not None else "off"
        grpc = f"127.0.0.1:{config.grpc_port}" if config.grpc_port is not None else "off"
        print(f"KServe v2: HTTP {http}, gRPC {grpc}")
    print("models: " + ", ".join(m.name for m in config.models) + ". Ctrl-C to stop.")
    stopping = False

    def on_signal(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stopping:
            dead = [r for r, p in cluster.procs if p.poll() is not None]
            if dead:
                print(f"baton up: {', '.join(dead)} exited; stopping", file=sys.stderr)
                break
            time.sleep(0.2)
    finally:
        codes = cluster.stop()
    print("stopped: " + ", ".join(f"{r}={c}" for r, c in codes.items()))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from central.demo import run_demo

    return run_demo(args)


def _token(path: str | None, who: str) -> str | None:
    from central.plumbing.security import read_token

    try:
        return read_token(path)
    except (OSError, ValueError) as exc:
        print(f"baton {who}: --token-file: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_keys(args: argparse.Namespace) -> int:
    from central.plumbing.security import make_keys

    try:
        made = make_keys(args.directory)
    except FileExistsError as exc:
        print(f"baton keys: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {len(made)} key files to {args.directory} (secret keys mode 0600) and the "
        f"allow-list {args.directory}/authorized/"
    )
    print(
        f"start every role with --keys {args.directory}; copy only the secret key a host "
        "needs (NAME.key_secret) plus the public *.key files and authorized/ to it"
    )
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    import numpy as np

    from central.client import BatonError, Client, cosine, image_file, text

    if bool(args.image) == bool(args.text):
        print("baton infer: give exactly one of --image FILE or --text SENTENCE", file=sys.stderr)
        return 2
    with Client(args.address, keys=args.keys, token=_token(args.token_file, "infer")) as client:
        try:
            if args.image:
                out = client.infer(args.model, image_file(args.image), args.slo_ms)
                for cid, score, label in zip(out["class_ids"], out["scores"], out["labels"]):
                    name = label.decode() if isinstance(label, bytes) else str(label)
                    print(f"{score:7.2%}  {int(cid):4d}  {name}")
            else:
                out = client.infer(args.model, text(args.text), args.slo_ms)
                emb = out["embedding"]
                print(f"embedding: {emb.shape[-1]} dims, norm {np.linalg.norm(emb):.3f}")
                if args.compare:
                    other = client.infer(args.model, text(args.compare), args.slo_ms)["embedding"]
                    print(f"cosine similarity: {cosine(emb, other):.4f}")
        except BatonError as exc:
            print(f"baton infer: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        except FileNotFoundError as exc:
            print(f"baton infer: {exc}", file=sys.stderr)
            return 2
    return 0


def cmd_bound(args: argparse.Namespace) -> int:
    from central.policy.bound import analytic_bound

    k, c, slo = int(args.k_ms * 1e6), int(args.c_ms * 1e6), int(args.slo_ms * 1e6)
    print(
        f"l(b) = {args.k_ms} ms * b + {args.c_ms} ms, SLO {args.slo_ms} ms, overheads {args.overhead_ms} ms"
    )
    print(f"{'N':>4} {'coord b*':>8} {'coord req/s':>12} {'uncoord b':>9} {'uncoord req/s':>13} {'ratio':>6}")
    for n in args.n:
        co = analytic_bound(n, k, c, slo, coordinated=True, overhead_ns=int(args.overhead_ms * 1e6))
        un = analytic_bound(n, k, c, slo, coordinated=False, overhead_ns=int(args.overhead_ms * 1e6))
        ratio = co.goodput_rps / un.goodput_rps if un.goodput_rps else float("inf")
        print(
            f"{n:>4} {co.batch:>8} {co.goodput_rps:>12.0f} {un.batch:>9} {un.goodput_rps:>13.0f} {ratio:>6.2f}"
        )
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    import json

    from central.client import Unavailable, query_stats

    try:
        print(
            json.dumps(
                query_stats(args.address, with_batches=args.batches, keys=args.keys, server=args.server),
                indent=2,
            )
        )
    except Unavailable as exc:
        print(f"baton stats: {exc}", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------- parser


def cmd_bench(args: argparse.Namespace) -> int:
    # The benchmarks are a separate program (``python -m bench``): the serving code never
    # imports them, so this hands over the process instead of importing ``bench``.
    import os

    argv = [sys.executable, "-m", "bench", *args.rest]
    os.execv(sys.executable, argv)
    return 127  # not reached


def _policy_args(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--profile",
        action="append",
        type=_profile_arg,
        metavar="NAME:K_MS:C_MS[:MAXB]",
        help="a model's latency profile (else the worker's own measurement)",
    )
    s.add_argument(
        "--dispatch-cost-us",
        type=float,
        default=2000.0,
        help="decision to worker start: Execute, Route and payload transfer; "
        "set it near the p99 you measure (2000)",
    )
    s.add_argument(
        "--reply-cost-us", type=float, default=1500.0, help="batch end to result at the frontend (1500)"
    )
    s.add_argument(
        "--timer-slack-us",
        type=float,
        default=1000.0,
        help="how late this process's wake-ups may be: a batch deferred to grow "
        "goes out this much before its last moment; set it near the p99 timer "
        "lateness that `baton stats` reports (1000)",
    )
    s.add_argument(
        "--margin-percentile",
        type=float,
        default=0.99,
        help="the safety margin is this quantile of the recent batches' overruns "
        "(their duration past l(b) plus any unexplained start lateness) (0.99)",
    )
    s.add_argument(
        "--refit-window",
        type=int,
        default=256,
        help="how many recent batches the profile refit and the margin look at (256)",
    )
    s.add_argument(
        "--stall-window",
        type=int,
        default=256,
        help="a batch's unexplained start lateness (a stall of this machine) counts "
        "in the margin for this many recent batches only; duration overruns for "
        "--refit-window ones (256: the same)",
    )


def _keys_arg(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--keys",
        metavar="DIR",
        help="CURVE keys made by `baton keys DIR`: encrypt and authenticate every "
        "socket (default: off; bind to loopback only without them)",
    )


def _metrics_args(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--metrics-port",
        type=int,
        metavar="N",
        help="serve Prometheus metrics at http://HOST:N/metrics (default: off; "
        "0 picks a free port); docs/metrics.md lists them",
    )
    s.add_argument(
        "--metrics-host", default="127.0.0.1", help="the metrics endpoint's listen address (127.0.0.1)"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="baton",
        description="Baton: deep-learning inference serving with a central, deferred, "
        "coordinated batch scheduler.",
        epilog="Start with 'baton demo' (what 'make run' does) or 'baton up'.",
    )
    p.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default), ERROR")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("up", help="run a local cluster (scheduler, frontend, workers) until Ctrl-C")
    s.add_argument("config", nargs="?", help="cluster TOML file (default: the embedded default)")
    s.add_argument("--log-dir", help="write each process's log here")
    s.set_defaults(func=cmd_up)

    s = sub.add_parser("demo", help="start the default cluster, send a load, print a summary, stop")
    s.add_argument("config", nargs="?", help="cluster TOML file (default: the embedded default)")
    s.add_argument("--duration", type=float, default=8.0, help="seconds of Poisson load (8)")
    s.add_argument(
        "--load", type=float, default=0.6, help="offered rate as a fraction of the analytic bound (0.6)"
    )
    s.add_argument(
        "--dilation",
        default="auto",
        help="multiply k, c and SLO by this factor; ratios are unchanged. 'auto' "
        "(default): 1 with 8 or more cores, else 4, since a few cores cannot carry "
        "the full-speed load's Python overheads (docs/benchmarks.md)",
    )
    s.add_argument("--model", default="symphony", help="the emulated model to load (symphony)")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--no-real", action="store_true", help="skip the real-model requests")
    s.add_argument("--log-dir", help="write each process's log here")
    s.add_argument(
        "--scheduler-arg",
        action="append",
        dest="policy_args",
        default=[],
        metavar="ARG",
        help="pass ARG to 'baton scheduler' (repeat: once per word)",
    )
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("scheduler", help="run the scheduler alone")
    s.add_argument("--address", default="tcp://127.0.0.1:5550", help="ROUTER bind address")
    s.add_argument("--policy", default="symphony", help="scheduling policy (symphony)")
    s.add_argument(
        "--uncoord-max-batch",
        type=int,
        metavar="B",
        help="with --policy uncoordinated: the largest batch a worker forms "
        "(default: the largest b with 2 l(b) within the budget)",
    )
    s.add_argument(
        "--uncoord-queue-delay-us",
        type=float,
        metavar="US",
        help="with --policy uncoordinated: how long the oldest queued request "
        "waits for company (default: l(max batch))",
    )
    _policy_args(s)
    _metrics_args(s)
    s.add_argument(
        "--stats-pub",
        metavar="ADDR",
        help="bind a PUB socket here (e.g. tcp://127.0.0.1:5551) publishing "
        "[b'stats', json] every 250 ms for dashboards (default: off)",
    )
    s.add_argument(
        "--shards",
        type=int,
        default=1,
        metavar="K",
        help="K >= 2: split the scheduler into K model-shard processes, which "
        "frontends send request metadata to, and this process, the matcher, "
        "which owns the workers (docs/capacity.md); 1: one process (1)",
    )
    s.add_argument(
        "--place",
        action="append",
        type=_kv,
        metavar="MODEL=SHARD",
        help="with --shards: start MODEL on shard SHARD (else a hash of its name)",
    )
    s.add_argument(
        "--rebalance-s",
        type=float,
        default=2.0,
        metavar="S",
        help="with --shards: compare the shards' arrival rates every S seconds "
        "and move models off a shard with 1.5x the mean; 0: never (2)",
    )
    s.add_argument(
        "--shard-host",
        metavar="HOST",
        help="with --shards: the address the shards bind to (any free port), "
        "which frontends must be able to dial (default: the --address host; "
        "127.0.0.1 when that is a wildcard)",
    )
    s.add_argument(
        "--shard-log-dir",
        metavar="DIR",
        help="with --shards: the shard processes log to DIR/shardI.log (else to this process's stderr)",
    )
    _keys_arg(s)
    s.set_defaults(func=cmd_scheduler)

    s = sub.add_parser(
        "shard",
        help="run one model shard of a split scheduler (the "
        "matcher starts its own: for running shards by hand)",
    )
    s.add_argument("--index", type=int, required=True, help="this shard's index, 0 to K-1")
    s.add_argument("--scheduler", default="tcp://127.0.0.1:5550", help="the matcher's address")
    s.add_argument(
        "--address",
        default="tcp://127.0.0.1:0",
        help="ROUTER bind address for frontends (port 0: any free port)",
    )
    _policy_args(s)
    _keys_arg(s)
    s.set_defaults(func=cmd_shard)

    s = sub.add_parser("frontend", help="run a frontend alone")
    s.add_argument("--scheduler", default="tcp://127.0.0.1:5550")
    s.add_argument("--address", default="tcp://127.0.0.1:5560", help="client ROUTER bind address")
    s.add_argument("--default-slo-ms", type=float, default=100.0)
    s.add_argument("--slo", action="append", type=_kv, metavar="MODEL=MS", help="a model's SLO")
    s.add_argument(
        "--client-allowance-ms",
        type=float,
        default=0.5,
        help="time for the client hops, taken off each request's budget (0.5)",
    )
    s.add_argument("--name", help="unique frontend name (default: host and pid)")
    s.add_argument(
        "--http-port",
        type=int,
        metavar="PORT",
        help="serve KServe v2 over HTTP here (tritonclient.http, curl); 0 picks a free port (default: off)",
    )
    s.add_argument(
        "--grpc-port",
        type=int,
        metavar="PORT",
        help="serve KServe v2 over gRPC here (tritonclient.grpc, perf_analyzer, "
        "Client('grpc://...')); 0 picks a free port (default: off)",
    )
    s.add_argument(
        "--kserve-host", default="127.0.0.1", help="interface for the HTTP and gRPC endpoints (127.0.0.1)"
    )
    s.add_argument(
        "--token-file",
        metavar="PATH",
        help="require clients to present the token in this file (ZMQ: X-Token "
        "metadata; KServe: Authorization: Bearer) (default: no token)",
    )
    _keys_arg(s)
    _metrics_args(s)
    # Tests only (tests/integration/test_ledger.py): break the one-answer promise on
    # purpose, to show that the wire ledger catches it. Not for users, so not in --help.
    s.add_argument("--test-fault", choices=("drop-reply", "duplicate-reply"), help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_frontend)

    s = sub.add_parser("worker", help="run a worker alone (emulated GPUs or torch models)")
    s.add_argument("--scheduler", default="tcp://127.0.0.1:5550")
    s.add_argument(
        "--data-address",
        default="tcp://127.0.0.1:0",
        help="where frontends push payloads (bind; port 0 picks one)",
    )
    s.add_argument("--advertise", help="the data address frontends dial, if not the bound one")
    s.add_argument("--name", help="unique worker name (default: host and pid)")
    s.add_argument("--emulate", type=int, metavar="N", help="N emulated GPUs in this process")
    s.add_argument(
        "--model", action="append", metavar="NAME:K_MS:C_MS[:MAXB]", help="an emulated model and its profile"
    )
    s.add_argument("--noise", type=float, default=0.0, help="emulated latency noise (CV)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--torch", action="append", metavar="MODEL", help="serve a real model: mobilenet_v2 or minilm"
    )
    s.add_argument(
        "--checkpoint",
        action="append",
        type=_kv,
        metavar="MODEL=PATH",
        help="a user's own weights for a torch model",
    )
    s.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    s.add_argument("--threads", type=int, default=1, help="torch CPU threads (1)")
    _keys_arg(s)
    s.set_defaults(func=cmd_worker)

    s = sub.add_parser("infer", help="send one request: an image file or a sentence")
    s.add_argument("model", help="mobilenet_v2 (with --image) or minilm (with --text)")
    s.add_argument("--image", help="an image file (JPEG, PNG)")
    s.add_argument("--text", help="a sentence")
    s.add_argument("--compare", help="with --text: a second sentence; prints the similarity")
    s.add_argument("--address", default="tcp://127.0.0.1:5560", help="the frontend")
    s.add_argument("--slo-ms", type=float, default=None)
    s.add_argument("--token-file", metavar="PATH", help="the frontend's client token")
    _keys_arg(s)
    s.set_defaults(func=cmd_infer)

    s = sub.add_parser("keys", help="make CURVE key pairs for every role and the allow-list")
    s.add_argument("directory", help="where to write them (created; refuses to overwrite)")
    s.set_defaults(func=cmd_keys)

    s = sub.add_parser("bound", help="print the analytic goodput bound, coordinated vs not")
    s.add_argument("--k-ms", type=float, default=1.082)
    s.add_argument("--c-ms", type=float, default=5.204)
    s.add_argument("--slo-ms", type=float, default=25.0)
    s.add_argument("--overhead-ms", type=float, default=0.0)
    s.add_argument("-n", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    s.set_defaults(func=cmd_bound)

    s = sub.add_parser(
        "bench", help="benchmarks: sim, bound, live (see 'baton bench --help')", add_help=False
    )
    s.add_argument("rest", nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_bench)

    from central.dashboard.cli import add_top_parser

    add_top_parser(sub)

    s = sub.add_parser("stats", help="print a scheduler's or frontend's statistics as JSON")
    s.add_argument("--address", default="tcp://127.0.0.1:5550")
    s.add_argument("--batches", action="store_true", help="include the recent batch log")
    s.add_argument(
        "--server",
        choices=("scheduler", "frontend"),
        default="scheduler",
        help="which role --address is (picks the server key with --keys)",
    )
    _keys_arg(s)
    s.set_defaults(func=cmd_stats)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.WARNING),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
