"""The scheduler's own CPU cost per request on virtual time, without sockets: the
one-process ``Scheduler`` (``hot_path``) and the split scheduler's matcher and shards
(``split_hot_path``), each fed one loop turn at a time, its ``Execute``s answered from
the plan (``bench.capacity.emulated``)."""

from __future__ import annotations

import cProfile
import heapq
import random
import time
from typing import Any

from bench.capacity.emulated import answer_from_plan
from bench.capacity.experiment import Setup
from central.protocol import (
    AttachFrontend,
    DropRequests,
    Execute,
    RegisterFrontend,
    RegisterWorker,
    Requests,
    decode,
    encode,
)

__all__ = ["hot_path", "split_hot_path"]


class _Capture:
    """A socket stand-in that keeps what the scheduler sends."""

    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
        self.sent.append(frames)


class _VirtualTimer:
    def __init__(self) -> None:
        self.target: int | None = None

    def arm(self, t_ns: int | None) -> None:
        self.target = t_ns


def hot_path(
    setup: Setup, rate_rps: float, seconds: float, *, seed: int = 1, profile_path: str | None = None
) -> dict[str, Any]:
    """The scheduler's own CPU cost per request, on virtual time, without sockets.

    The production ``Scheduler`` (decode, translate, policy, encode, accounting) is fed
    one loop turn per ``setup.interval_ns``: the Poisson metadata of every feeder plus the
    ``Done`` of every emulated batch that ended, and a ``tick`` whenever its timer is due;
    what it sends is captured and answered from the plan. Only the CPU time of this thread
    inside the scheduler's ``receive``/``tick`` is counted, so the figure is free of the
    load generator, the sockets and the other processes sharing the machine.
    """
    from central.protocol.conventions import make_request_id
    from central.runtime.scheduler import Scheduler, SchedulerConfig

    pconf = setup.policy_config()
    clock = [1_000_000_000]
    sched = Scheduler(
        SchedulerConfig(policy_config=pconf, inprocess_shards=1 if setup.split else 0), clock=lambda: clock[0]
    )
    out, timer = _Capture(), _VirtualTimer()
    sched.attach(out, timer)
    names = setup.model_names()
    gpus = setup.gpu_models()
    workers: list[bytes] = []
    for w in range(setup.worker_procs):
        mine = gpus[w :: setup.worker_procs]
        specs = tuple(
            (i, ms, tuple((m, setup.k_ns, setup.c_ns, setup.max_batch) for m in ms))
            for i, ms in enumerate(mine)
        )
        ident = f"w{w}".encode()
        workers.append(ident)
        sched.receive([[ident, *encode(RegisterWorker(ident.decode(), "tcp://127.0.0.1:9", specs))]])
    feeders = [f"f{f}".encode() for f in range(setup.feeders)]
    sched.receive([[ident, *encode(RegisterFrontend(ident.decode()))] for ident in feeders])
    index = {ident: i + 1 for i, ident in enumerate(feeders)}  # registration order
    out.sent.clear()
    rng = random.Random(seed)
    pending: list[tuple[int, int, list[bytes]]] = []  # (end, batch id, Done frames)
    seqs = dict.fromkeys(feeders, 0)
    arrivals = {ident: clock[0] + rng.expovariate(1.0) * 1e9 * len(feeders) / rate_rps for ident in feeders}
    requests = batches = drops = 0
    busy = 0.0
    profiler = cProfile.Profile() if profile_path else None
    end_at = clock[0] + int(seconds * 1e9)
    t = clock[0]
    perf = time.thread_time  # CPU time: preemption by other processes is not counted

    def answer() -> None:
        nonlocal batches, drops
        for frames in out.sent:
            msg, _ = decode(frames[1:])
            if isinstance(msg, Execute):
                batches += 1
                # virtual time: the Execute is at the worker by its earliest start
                done = answer_from_plan(msg, msg.earliest_ns)
                heapq.heappush(pending, (done.end_ns, msg.batch_id, [frames[0], *encode(done)]))
            elif isinstance(msg, DropRequests):
                drops += len(msg.request_ids)
        out.sent.clear()

    while t < end_at:
        t += setup.interval_ns
        while timer.target is not None and timer.target <= t:
            clock[0] = max(clock[0], timer.target)
            t0 = perf()
            if profiler is not None:
                profiler.enable()
            sched.tick()
            if profiler is not None:
                profiler.disable()
            busy += perf() - t0
            answer()
        clock[0] = t
        turn: list[list[bytes]] = []
        while pending and pending[0][0] <= t:
            turn.append(heapq.heappop(pending)[2])
        for ident in feeders:
            times: list[float] = []
            while arrivals[ident] <= t:
                times.append(arrivals[ident])
                arrivals[ident] += rng.expovariate(1.0) * 1e9 * len(feeders) / rate_rps
            if times:
                n, seq = len(times), seqs[ident]
                seqs[ident] = seq + n
                msg = Requests(
                    tuple(make_request_id(index[ident], seq + i) for i in range(n)),
                    tuple(names[rng.randrange(len(names))] for _ in range(n)),
                    tuple(setup.slo_ns - int(t - a) for a in times),
                    (0,) * n,
                )
                turn.append([ident, *encode(msg)])
                requests += n
        if turn:
            t0 = perf()
            if profiler is not None:
                profiler.enable()
            sched.receive(turn)
            if profiler is not None:
                profiler.disable()
            busy += perf() - t0
            answer()
    if profiler is not None and profile_path:
        profiler.dump_stats(profile_path)
    return {
        "rate_rps": rate_rps,
        "seconds": seconds,
        "requests": requests,
        "batches": batches,
        "drops": drops,
        "mean_batch": (requests - drops) / batches if batches else 0.0,
        "us_per_request": busy * 1e6 / requests if requests else float("nan"),
        "capacity_rps": requests / busy if busy else float("inf"),
    }


def split_hot_path(
    setup: Setup, rate_rps: float, seconds: float, shards: int, *, seed: int = 1
) -> dict[str, Any]:
    """A split scheduler's CPU cost per request, per process, on virtual time, without
    sockets: the production matcher (``SplitScheduler``) and ``shards`` production
    ``ShardServer`` objects in this thread, driven like ``hot_path`` (one loop turn per
    ``setup.interval_ns``), every message between them encoded and decoded as on the wire.
    The thread CPU time spent inside each is charged to it, so ``shard_us_per_request``
    is what one shard *process* would spend per request of the whole load and
    ``1e6 / max(...)`` the rate at which the busiest shard's core would be full."""
    from central.protocol.conventions import make_request_id, owner_of
    from central.runtime.matcher import SplitScheduler
    from central.runtime.scheduler import SchedulerConfig
    from central.runtime.shard import ShardConfig, ShardServer

    pconf = setup.policy_config()
    clock = [1_000_000_000]
    now = lambda: clock[0]  # noqa: E731
    matcher = SplitScheduler(
        SchedulerConfig(policy_config=pconf, shard_processes=shards, rebalance_interval_ns=0), clock=now
    )
    m_out, m_timer = _Capture(), _VirtualTimer()
    matcher.attach(m_out, m_timer)
    servers, fronts, ups, timers = [], [], [], []
    for i in range(shards):
        server = ShardServer(ShardConfig(index=i, policy_config=pconf), clock=now)
        front, up, timer = _Capture(), _Capture(), _VirtualTimer()
        server.attach(front, up, timer, f"inproc://shard{i}")
        servers.append(server)
        fronts.append(front)
        ups.append(up)
        timers.append(timer)
    spent = [0.0] * (shards + 1)  # per shard, then the matcher
    perf = time.thread_time
    rng = random.Random(seed)
    pending: list[tuple[int, int, list[bytes]]] = []
    counts = {"batches": 0, "drops": 0, "messages": 0}

    def to_matcher(batch: list[list[bytes]]) -> None:
        t0 = perf()
        matcher.receive(batch)
        spent[shards] += perf() - t0

    def to_shard(i: int, method: Any, *args: Any) -> None:
        t0 = perf()
        method(*args)
        spent[i] += perf() - t0

    def pump() -> None:
        while True:
            moved = False
            for i, up in enumerate(ups):
                if up.sent:
                    batch = [[f"s-{i}".encode(), *frames] for frames in up.sent]
                    up.sent.clear()
                    counts["messages"] += len(batch)
                    to_matcher(batch)
                    moved = True
            for front in fronts:
                for frames in front.sent:
                    msg, _ = decode(frames[1:])
                    if isinstance(msg, DropRequests):
                        counts["drops"] += len(msg.request_ids)
                front.sent.clear()
            if m_out.sent:
                by_shard: dict[int, list[list[bytes]]] = {}
                for frames in m_out.sent:
                    ident = frames[0]
                    if ident.startswith(b"s-"):
                        by_shard.setdefault(int(ident[2:]), []).append(frames[1:])
                        continue
                    msg, _ = decode(frames[1:])
                    if isinstance(msg, Execute):
                        counts["batches"] += 1
                        done = answer_from_plan(msg, msg.earliest_ns)
                        heapq.heappush(pending, (done.end_ns, msg.batch_id, [ident, *encode(done)]))
                    elif isinstance(msg, DropRequests):
                        counts["drops"] += len(msg.request_ids)
                m_out.sent.clear()
                for i, batch in sorted(by_shard.items()):
                    counts["messages"] += len(batch)
                    to_shard(i, servers[i]._on_up, batch)
                moved = True
            if not moved:
                return

    # registration, as on the wire: shards, workers, feeders
    for server in servers:
        server._register()
    pump()
    names = setup.model_names()
    gpus = setup.gpu_models()
    for w in range(setup.worker_procs):
        mine = gpus[w :: setup.worker_procs]
        specs = tuple(
            (i, ms, tuple((m, setup.k_ns, setup.c_ns, setup.max_batch) for m in ms))
            for i, ms in enumerate(mine)
        )
        to_matcher([[f"w{w}".encode(), *encode(RegisterWorker(f"w{w}", "tcp://127.0.0.1:9", specs))]])
    feeders = [f"f{f}".encode() for f in range(setup.feeders)]
    to_matcher([[ident, *encode(RegisterFrontend(ident.decode()))] for ident in feeders])
    index = {ident: i + 1 for i, ident in enumerate(feeders)}
    for ident in feeders:
        for i, server in enumerate(servers):
            to_shard(i, server._on_front, [[ident, *encode(AttachFrontend(index[ident]))]])
    pump()
    owners = dict(_directory_owners(matcher))
    spent = [0.0] * (shards + 1)  # start-up is not counted
    counts.update(batches=0, drops=0, messages=0)
    seqs = dict.fromkeys(feeders, 0)
    gap = 1e9 * len(feeders) / rate_rps
    arrivals = {ident: clock[0] + rng.expovariate(1.0) * gap for ident in feeders}
    requests = 0
    end_at = clock[0] + int(seconds * 1e9)
    t = clock[0]
    while t < end_at:
        t += setup.interval_ns
        while True:  # due timers, earliest first
            due = [
                (tm.target, i)
                for i, tm in enumerate([*timers, m_timer])
                if tm.target is not None and tm.target <= t
            ]
            if not due:
                break
            at, i = min(due)
            clock[0] = max(clock[0], at)
            if i == shards:
                m_timer.target = None
                to_matcher_tick = perf()
                matcher.tick()
                spent[shards] += perf() - to_matcher_tick
            else:
                timers[i].target = None
                to_shard(i, servers[i]._on_timer)
            pump()
        clock[0] = t
        done = []
        while pending and pending[0][0] <= t:
            done.append(heapq.heappop(pending)[2])
        if done:
            to_matcher(done)
        for ident in feeders:
            times: list[float] = []
            while arrivals[ident] <= t:
                times.append(arrivals[ident])
                arrivals[ident] += rng.expovariate(1.0) * gap
            if not times:
                continue
            n, seq = len(times), seqs[ident]
            seqs[ident] = seq + n
            requests += n
            rows: dict[int, list[int]] = {}
            models = [names[rng.randrange(len(names))] for _ in range(n)]
            for j, model in enumerate(models):
                rows.setdefault(owner_of(model, owners, shards), []).append(j)
            for i, js in rows.items():
                msg = Requests(
                    tuple(make_request_id(index[ident], seq + j) for j in js),
                    tuple(models[j] for j in js),
                    tuple(setup.slo_ns - int(t - times[j]) for j in js),
                    (0,) * len(js),
                )
                to_shard(i, servers[i]._on_front, [[ident, *encode(msg)]])
        pump()
    served = requests - counts["drops"]
    return {
        "shards": shards,
        "rate_rps": rate_rps,
        "seconds": seconds,
        "requests": requests,
        "batches": counts["batches"],
        "drops": counts["drops"],
        "mean_batch": served / counts["batches"] if counts["batches"] else 0.0,
        "messages_between_roles_per_batch": (
            counts["messages"] / counts["batches"] if counts["batches"] else float("nan")
        ),
        "shard_us_per_request": [x * 1e6 / requests for x in spent[:shards]] if requests else [],
        "matcher_us_per_request": spent[shards] * 1e6 / requests if requests else float("nan"),
        # each shard sees only its own models' requests: its cost per request *it* handled
        "shard_us_per_own_request": [
            x * 1e6 / max(1, s.counters.get("requests_in", 0)) for x, s in zip(spent[:shards], servers)
        ],
    }


def _directory_owners(matcher: Any) -> list[tuple[str, int]]:
    return list(matcher._shard_directory().owners)
