"""The live ramp's child processes (``bench.capacity``'s docstring): the production
scheduler, the emulated workers that answer every ``Execute`` from its plan
(``bench.capacity.emulated``) and the feeders, synthetic frontends sending Poisson
metadata and timing a ``Heartbeat`` round trip through the scheduler every 5 ms."""

from __future__ import annotations

import cProfile
import gc
import heapq
import math
import random
import signal
import time
from multiprocessing.connection import Connection
from typing import Any

import zmq

from bench.capacity.emulated import answer_from_plan
from bench.capacity.experiment import Setup
from central.policy.types import BatchStatus, DropReason
from central.protocol import (
    AttachFrontend,
    DropRequests,
    Execute,
    FrontendRegistered,
    Heartbeat,
    HeartbeatAck,
    RegisterFrontend,
    RegisterWorker,
    Requests,
    Route,
    ShardDirectory,
    WorkerRegistered,
    decode,
    encode,
)

__all__ = ["await_message", "connect", "feeder_main", "scheduler_main", "worker_main"]

_PROBE_INTERVAL_NS = 5_000_000


def scheduler_main(address: str, setup: Setup, profile_path: str | None) -> None:
    """Child: the production scheduler (``central.runtime.scheduler``) until SIGTERM; with
    ``setup.shards >= 2`` the matcher (``central.runtime.matcher``) and its shard processes,
    started as ``baton scheduler --shards K`` starts them."""
    import asyncio

    import uvloop

    from central.runtime.scheduler import Scheduler, SchedulerConfig

    pconf = setup.policy_config()
    config = SchedulerConfig(
        address=address,
        policy_config=pconf,
        inprocess_shards=1 if setup.split else 0,
        shard_processes=setup.shards if setup.shards > 1 else 0,
    )
    children = None
    if setup.shards > 1:
        from central.runtime.matcher import ShardProcesses, SplitScheduler

        sched: Any = SplitScheduler(config)
        flags = [
            f
            for m in setup.model_names()
            for f in ("--profile", f"{m}:{setup.k_ns / 1e6!r}:{setup.c_ns / 1e6!r}:{setup.max_batch}")
        ]
        flags += [
            "--dispatch-cost-us",
            repr(setup.dispatch_cost_ns / 1e3),
            "--reply-cost-us",
            repr(setup.reply_cost_ns / 1e3),
            "--timer-slack-us",
            repr(setup.timer_slack_ns / 1e3),
        ]
        children = sched.children = ShardProcesses(setup.shards, address, flags)
    else:
        sched = Scheduler(config)

    async def runner() -> None:
        gc.collect()
        gc.freeze()
        gc.set_threshold(100_000, 50, 1000)  # as ``baton scheduler`` does
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        if children is not None:
            children.start()
        try:
            await sched.serve(stop)
        finally:
            if children is not None:
                children.stop()

    profiler = cProfile.Profile() if profile_path else None
    if profiler is not None:
        profiler.enable()
    uvloop.run(runner())
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile_path)


def connect(ctx: zmq.Context, address: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(address)
    return sock


def await_message(sock: zmq.Socket, kind: type, timeout_s: float = 10.0) -> Any:
    """Receive until a message of ``kind`` arrives (others are skipped)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sock.poll(100):
            msg, _ = decode(sock.recv_multipart())
            if isinstance(msg, kind):
                return msg
    raise TimeoutError(f"no {kind.__name__} from the scheduler within {timeout_s} s")


def worker_main(address: str, name: str, gpus: list[tuple[str, ...]], setup: Setup, ctrl: Connection) -> None:
    """Child: emulated GPUs that answer each Execute from its plan (module docstring)."""
    ctx = zmq.Context()
    sock = connect(ctx, address)
    profile = lambda m: (m, setup.k_ns, setup.c_ns, setup.max_batch)  # noqa: E731
    specs = tuple((i, models, tuple(profile(m) for m in models)) for i, models in enumerate(gpus))
    sock.send_multipart(encode(RegisterWorker(name, "tcp://127.0.0.1:9", specs)))
    reg = await_message(sock, WorkerRegistered)
    ctrl.send("ready")
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(ctrl.fileno(), zmq.POLLIN)
    pending: list[tuple[int, int, bytes]] = []  # (end_ns, batch id, encoded Done)
    lags: list[int] = []
    refused = batches = requests = 0
    heartbeat_ns = reg.heartbeat_interval_ns
    next_beat = time.monotonic_ns()
    dcost = setup.dispatch_cost_ns
    while True:
        now = time.monotonic_ns()
        while pending and pending[0][0] <= now:
            sock.send(heapq.heappop(pending)[2], copy=True)
        if now >= next_beat:
            sock.send_multipart(encode(Heartbeat(now)))
            next_beat = now + heartbeat_ns
        wake = min(pending[0][0] if pending else next_beat, next_beat)
        timeout_ms = max(0.0, (wake - time.monotonic_ns()) / 1e6)
        events = dict(poller.poll(math.ceil(timeout_ms)))
        if ctrl.fileno() in events:
            command = ctrl.recv()
            if command == "stop":
                break
            if command == "report":
                ctrl.send({"lags": lags, "refused": refused, "batches": batches, "requests": requests})
                lags, refused, batches, requests = [], 0, 0, 0
        if sock not in events:
            continue
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            t = time.monotonic_ns()
            msg, _ = decode(frames)
            if not isinstance(msg, Execute):
                continue  # HeartbeatAck, WorkerDirectory: nothing to do
            b = len(msg.request_ids)
            lags.append(t - (msg.earliest_ns - dcost))
            batches += 1
            requests += b
            done = answer_from_plan(msg, t)
            if done.status != BatchStatus.OK:  # past latest: refused at once
                refused += b
                sock.send_multipart(encode(done))
                continue
            heapq.heappush(pending, (done.end_ns, msg.batch_id, encode(done)[0]))
    sock.close(0)
    ctx.term()


def feeder_main(address: str, name: str, setup: Setup, seed: int, ctrl: Connection) -> None:
    """Child: a synthetic frontend sending Poisson metadata on command (module docstring)."""
    from central.protocol.conventions import make_request_id, owner_of

    ctx = zmq.Context()
    sock = connect(ctx, address)
    sock.send_multipart(encode(RegisterFrontend(name)))
    index = await_message(sock, FrontendRegistered).frontend_index
    rng = random.Random(seed)
    names = setup.model_names()
    seq = 0
    # With a split scheduler, metadata goes to the shard that owns each model, as a
    # frontend sends it (the matcher's ShardDirectory says which); Routes still come
    # from the matcher, drops from the shards.
    outs = [sock]  # per shard index, the socket its metadata goes to
    owners: dict[str, int] = {}
    if setup.shards > 1:
        directory = await_message(sock, ShardDirectory)
        while not all(addr for _, addr in directory.shards):
            directory = await_message(sock, ShardDirectory)
        outs = []
        for _, addr in sorted(directory.shards):
            shard_sock = connect(ctx, addr)
            shard_sock.send_multipart(encode(AttachFrontend(index)))
            outs.append(shard_sock)
        owners = dict(directory.owners)
    socks = [sock, *(o for o in outs if o is not sock)]
    poller = zmq.Poller()
    for s_ in socks:
        poller.register(s_, zmq.POLLIN)
    ctrl.send("ready")
    while True:
        command = ctrl.recv()
        if command[0] == "stop":
            break
        _, rate, duration_s, drain_s = command
        lo_seq = seq
        answered = 0
        drops: dict[str, int] = {}
        rtts: list[int] = []

        def consume(timeout_ms: int) -> None:
            nonlocal answered
            ready = dict(poller.poll(timeout_ms))
            for s_ in socks:
                if s_ in ready:
                    drain(s_)

        def drain(s_: zmq.Socket) -> None:
            nonlocal answered, owners
            while True:
                try:
                    frames = s_.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    return
                msg, _ = decode(frames)
                if isinstance(msg, Route):
                    if msg.request_ids[-1] & ((1 << 40) - 1) >= lo_seq:
                        answered += len(msg.request_ids)
                elif isinstance(msg, DropRequests):
                    fresh = sum(1 for r in msg.request_ids if r & ((1 << 40) - 1) >= lo_seq)
                    reason = DropReason(msg.reason).name
                    drops[reason] = drops.get(reason, 0) + fresh
                elif isinstance(msg, HeartbeatAck):
                    rtts.append(time.monotonic_ns() - msg.echo_sent_ns)
                elif isinstance(msg, ShardDirectory):  # a model moved
                    owners = dict(msg.owners)

        t0 = time.monotonic_ns()
        end = t0 + int(duration_s * 1e9)
        mean_gap = 1e9 / rate
        next_arrival = t0 + rng.expovariate(1.0) * mean_gap
        next_send = t0 + setup.interval_ns
        next_probe = t0
        slo = setup.slo_ns
        late_sends = sends = 0
        while True:
            now = time.monotonic_ns()
            if now >= end:
                break
            if now >= next_send:
                sends += 1
                if now - next_send > setup.interval_ns:
                    late_sends += 1
                arrivals: list[float] = []
                while next_arrival <= now:
                    arrivals.append(next_arrival)
                    next_arrival += rng.expovariate(1.0) * mean_gap
                if arrivals:
                    n = len(arrivals)
                    ids = [make_request_id(index, seq + i) for i in range(n)]
                    models = [names[rng.randrange(len(names))] for _ in range(n)]
                    budgets = [slo - int(now - a) for a in arrivals]
                    seq += n
                    if len(outs) == 1:
                        outs[0].send_multipart(
                            encode(Requests(tuple(ids), tuple(models), tuple(budgets), (0,) * n))
                        )
                    else:
                        rows: dict[int, list[int]] = {}
                        for i, m in enumerate(models):
                            rows.setdefault(owner_of(m, owners, len(outs)), []).append(i)
                        for shard, rs in rows.items():
                            outs[shard].send_multipart(
                                encode(
                                    Requests(
                                        tuple(ids[i] for i in rs),
                                        tuple(models[i] for i in rs),
                                        tuple(budgets[i] for i in rs),
                                        (0,) * len(rs),
                                    )
                                )
                            )
                next_send += setup.interval_ns
                if next_send < now:
                    next_send = now + setup.interval_ns
            if now >= next_probe:  # through the matcher's and every shard's backlog
                for s_ in socks:
                    s_.send_multipart(encode(Heartbeat(now)))
                next_probe = now + _PROBE_INTERVAL_NS
            wait = min(next_send, next_probe, end) - time.monotonic_ns()
            consume(max(0, wait // 1_000_000))
        sent = seq - lo_seq
        drain_end = time.monotonic() + drain_s
        while time.monotonic() < drain_end and answered + sum(drops.values()) < sent:
            consume(20)
        ctrl.send(
            {
                "sent": sent,
                "answered": answered,
                "drops": drops,
                "rtts": rtts,
                "elapsed_s": (end - t0) / 1e9,
                "late_fraction": late_sends / sends if sends else 1.0,
            }
        )
    for s_ in socks:
        s_.close(0)
    ctx.term()
