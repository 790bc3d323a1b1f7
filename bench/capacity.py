"""Scheduler capacity: the highest request rate the scheduler alone sustains on time.

Theory of operation. The scheduler runs as in production (``central.runtime``, one
process per role, its own ROUTER on loopback), but nothing else is real:

* **feeder** processes register as frontends (``RegisterFrontend``) and send ``Requests``
  metadata for an open-loop Poisson arrival process, coalesced into one message every
  ``--interval-us`` (a frontend's loop turn); each request's budget is the SLO less the
  time it has already waited in the feeder. They consume ``Route`` and ``DropRequests``
  (counting answered requests and drops by reason) and, every 5 ms, time a
  ``Heartbeat`` round trip through the scheduler's socket (the *input lag* probe: it
  queues behind every message the scheduler has not read yet). No payload exists.
* **emulated worker** processes register many GPUs each (``RegisterWorker``) and answer
  every ``Execute`` from the plan: the batch runs from ``max(earliest, receipt)`` for
  exactly ``expected_ns`` and ``Done`` is sent at its end; an Execute received after its
  ``latest`` is refused (``TOO_LATE``) at once. Every process shares the host's
  CLOCK_MONOTONIC, so worker and scheduler clocks agree without an offset.

**Decision lag** (per batch, measured by the worker that receives it):
``lag = t_received(Execute) - (earliest_ns - D)``, with ``D`` the policy's dispatch cost.
The policy grants a worker only when ``free_at <= now + D``, so it always sets
``earliest = now + D``: ``earliest - D`` is the instant the policy *planned* the decision
at (the ``now_ns`` it was handed). The lag is therefore everything between that instant
and the Execute being in the worker's hands: the rest of the scheduler's turn (its clock
is read once per turn, so a long turn makes every decision in it late), encoding and
sending, and the worker's own read. It does not include the lateness of the scheduler's
timer (a deferred batch fires late), which the scheduler reports itself
(``timer_lateness_us``, shown beside it), nor the time a message waits unread in the
scheduler's socket, which the input-lag probe shows.

A rate is **sustained** when, over the step: decision lag p99 <= ``--max-lag-ms`` (1 ms),
input-lag p99 <= ``--max-input-lag-ms`` (5 ms: a round trip through two busy processes on a
small machine is noisy, and a scheduler that falls behind grows its backlog without bound,
so the exact threshold barely moves the rate found), no drop the policy did not choose (worker refusals, requests
never answered within the SLO plus a drain period, ``UNKNOWN_MODEL``/``NO_WORKER``), and
the feeders kept to their schedule (at most 5% of their sends more than one period late;
else the load generator, not the scheduler, was the limit and the step is marked
``feeder-bound``). Policy drops
(``DEADLINE``, ``SHED``) are reported, not judged: they are the policy's choices. The
rate starts at ``--start-rps`` and is multiplied by ``--factor`` until a step fails; the
highest sustained rate is reported per shard count, with the scheduler's CPU time per
request (from ``/proc``, the hot path's cost).

Two more modes isolate the cost: ``--hot-path RPS`` drives the same ``Scheduler`` object
in-process on virtual time without sockets and counts only its own CPU time per request
(``hot_path``); ``--roles RPS --shards K...`` runs the split policy (model shards and a
matcher, ``central.policy.sharded``) in the simulator and charges each role its CPU time
(``role_costs``). docs/capacity.md has the figures and what they mean.

Run: ``python -m bench.capacity --help``; ``--quick`` finishes in well under a minute.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import heapq
import json
import math
import multiprocessing as mp
import os
import platform
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import zmq

from central.cluster import free_port
from central.policy.types import BatchStatus, DropReason
from central.protocol import (
    AttachFrontend,
    Done,
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
    StatsQuery,
    StatsReply,
    WorkerRegistered,
    decode,
    encode,
)

__all__ = ["Setup", "main", "run_capacity"]

_PROBE_INTERVAL_NS = 5_000_000
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Setup:
    """One capacity experiment: the synthetic cluster and the load shape."""

    models: int = 64
    gpus: int = 256
    worker_procs: int = 2  # processes the emulated GPUs are spread over
    pools: int = 16  # GPUs and models are split into this many groups (a GPU serves its group)
    feeders: int = 2
    k_ns: int = 1_082_000  # Symphony's benchmark profile l(b) = 1.082 ms b + 5.204 ms
    c_ns: int = 5_204_000
    max_batch: int = 64
    slo_ns: int = 50_000_000
    dispatch_cost_ns: int = 2_000_000
    reply_cost_ns: int = 1_500_000
    timer_slack_ns: int = 1_000_000
    interval_ns: int = 1_000_000  # feeder send period (one Requests message per turn)
    split: bool = False  # the scheduler runs the split policy (shards + matcher, 1 process)
    shards: int = 1  # >= 2: a matcher process and this many shard processes (live ramp)

    def model_names(self) -> list[str]:
        return [f"m{i:03d}" for i in range(self.models)]

    def pool_of_model(self, i: int) -> int:
        return i % self.pools

    def pool_of_gpu(self, g: int) -> int:
        return g % self.pools

    def gpu_models(self) -> list[tuple[str, ...]]:
        """Per emulated GPU, the models it serves (its pool's)."""
        names = self.model_names()
        groups = [tuple(m for i, m in enumerate(names) if self.pool_of_model(i) == p)
                  for p in range(self.pools)]
        return [groups[self.pool_of_gpu(g)] for g in range(self.gpus)]

    def policy_config(self) -> Any:
        """The policy knobs every scheduler process of the experiment plans with."""
        from central.policy import PolicyConfig
        from central.policy.types import Profile

        prof = Profile(self.k_ns, self.c_ns, self.max_batch)
        return PolicyConfig(profiles={m: prof for m in self.model_names()},
                            dispatch_cost_ns=self.dispatch_cost_ns,
                            reply_cost_ns=self.reply_cost_ns,
                            timer_slack_ns=self.timer_slack_ns)


# ---------------------------------------------------------------- child processes


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _scheduler_main(address: str, setup: Setup, profile_path: str | None) -> None:
    """Child: the production scheduler (``central.runtime.scheduler``) until SIGTERM; with
    ``setup.shards >= 2`` the matcher (``central.runtime.matcher``) and its shard processes,
    started as ``baton scheduler --shards K`` starts them."""
    import asyncio

    import uvloop

    from central.runtime.scheduler import Scheduler, SchedulerConfig

    pconf = setup.policy_config()
    config = SchedulerConfig(address=address, policy_config=pconf,
                             inprocess_shards=1 if setup.split else 0,
                             shard_processes=setup.shards if setup.shards > 1 else 0)
    children = None
    if setup.shards > 1:
        from central.runtime.matcher import ShardProcesses, SplitScheduler

        sched: Any = SplitScheduler(config)
        flags = [f for m in setup.model_names() for f in (
            "--profile", f"{m}:{setup.k_ns / 1e6!r}:{setup.c_ns / 1e6!r}:{setup.max_batch}")]
        flags += ["--dispatch-cost-us", repr(setup.dispatch_cost_ns / 1e3),
                  "--reply-cost-us", repr(setup.reply_cost_ns / 1e3),
                  "--timer-slack-us", repr(setup.timer_slack_ns / 1e3)]
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


def _connect(ctx: zmq.Context, address: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(address)
    return sock


def _await(sock: zmq.Socket, kind: type, timeout_s: float = 10.0) -> Any:
    """Receive until a message of ``kind`` arrives (others are skipped)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sock.poll(100):
            msg, _ = decode(sock.recv_multipart())
            if isinstance(msg, kind):
                return msg
    raise TimeoutError(f"no {kind.__name__} from the scheduler within {timeout_s} s")


def _worker_main(address: str, name: str, gpus: list[tuple[str, ...]], setup: Setup,
                 ctrl: Connection) -> None:
    """Child: emulated GPUs that answer each Execute from its plan (module docstring)."""
    ctx = zmq.Context()
    sock = _connect(ctx, address)
    profile = lambda m: (m, setup.k_ns, setup.c_ns, setup.max_batch)  # noqa: E731
    specs = tuple((i, models, tuple(profile(m) for m in models)) for i, models in enumerate(gpus))
    sock.send_multipart(encode(RegisterWorker(name, "tcp://127.0.0.1:9", specs)))
    reg = _await(sock, WorkerRegistered)
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
                ctrl.send({"lags": lags, "refused": refused, "batches": batches,
                           "requests": requests})
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
            if t > msg.latest_ns:
                refused += b
                done = Done(msg.batch_id, msg.gpu, int(BatchStatus.TOO_LATE), t, t, b)
                sock.send_multipart(encode(done))
                continue
            start = max(msg.earliest_ns, t)
            end = start + msg.expected_ns
            done = Done(msg.batch_id, msg.gpu, int(BatchStatus.OK), start, end, b)
            heapq.heappush(pending, (end, msg.batch_id, encode(done)[0]))
    sock.close(0)
    ctx.term()


def _feeder_main(address: str, name: str, setup: Setup, seed: int, ctrl: Connection) -> None:
    """Child: a synthetic frontend sending Poisson metadata on command (module docstring)."""
    from central.protocol.conventions import owner_of
    from central.protocol.conventions import make_request_id

    ctx = zmq.Context()
    sock = _connect(ctx, address)
    sock.send_multipart(encode(RegisterFrontend(name)))
    index = _await(sock, FrontendRegistered).frontend_index
    rng = random.Random(seed)
    names = setup.model_names()
    seq = 0
    # With a split scheduler, metadata goes to the shard that owns each model, as a
    # frontend sends it (the matcher's ShardDirectory says which); Routes still come
    # from the matcher, drops from the shards.
    outs = [sock]  # per shard index, the socket its metadata goes to
    owners: dict[str, int] = {}
    if setup.shards > 1:
        directory = _await(sock, ShardDirectory)
        while not all(addr for _, addr in directory.shards):
            directory = _await(sock, ShardDirectory)
        outs = []
        for _, addr in sorted(directory.shards):
            shard_sock = _connect(ctx, addr)
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
                        outs[0].send_multipart(encode(Requests(
                            tuple(ids), tuple(models), tuple(budgets), (0,) * n)))
                    else:
                        rows: dict[int, list[int]] = {}
                        for i, m in enumerate(models):
                            rows.setdefault(owner_of(m, owners, len(outs)), []).append(i)
                        for shard, rs in rows.items():
                            outs[shard].send_multipart(encode(Requests(
                                tuple(ids[i] for i in rs), tuple(models[i] for i in rs),
                                tuple(budgets[i] for i in rs), (0,) * len(rs))))
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
        ctrl.send({"sent": sent, "answered": answered, "drops": drops, "rtts": rtts,
                   "elapsed_s": (end - t0) / 1e9,
                   "late_fraction": late_sends / sends if sends else 1.0})
    for s_ in socks:
        s_.close(0)
    ctx.term()


# ---------------------------------------------------------------------- the driver


def _pct(values: list[int], q: float) -> float:
    """The ``q`` quantile of ``values`` in milliseconds (NaN when empty)."""
    if not values:
        return float("nan")
    data = sorted(values)
    return data[min(len(data) - 1, int(q * len(data)))] / 1e6


def _stats(address: str) -> dict[str, Any]:
    """The scheduler's ``stats()`` snapshot through its own socket."""
    ctx = zmq.Context.instance()
    sock = _connect(ctx, address)
    try:
        sock.send_multipart(encode(StatsQuery(0)))
        return json.loads(_await(sock, StatsReply).json)
    finally:
        sock.close(0)


class _Rig:
    """The scheduler, emulated workers and feeders of one shard count, as processes."""

    def __init__(self, setup: Setup, profile_path: str | None) -> None:
        self.setup = setup
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self._mp = mp.get_context("spawn")
        self._procs: list[Any] = []
        self._workers: list[Connection] = []
        self._feeders: list[Connection] = []
        self._profile_path = profile_path
        self.scheduler: Any = None

    def start(self) -> None:
        s = self.setup
        self.scheduler = self._mp.Process(
            target=_scheduler_main, args=(self.address, s, self._profile_path),
            name="capacity-scheduler", daemon=True)
        self.scheduler.start()
        self._procs.append(self.scheduler)
        gpus = s.gpu_models()
        for w in range(s.worker_procs):
            mine = gpus[w :: s.worker_procs]
            self._workers.append(self._spawn(_worker_main, f"emulated-{w}", mine, s))
        self._wait_ready(self._workers)
        if s.shards > 1:  # the shards register before the feeders look for them
            deadline = time.monotonic() + 30
            while not all(sh.get("address") for sh in _stats(self.address)["policy"]["shards"]):
                if time.monotonic() > deadline:
                    raise RuntimeError("the shard processes did not register within 30 s")
                time.sleep(0.1)
        for f in range(s.feeders):
            self._feeders.append(self._spawn(_feeder_main, f"feeder-{f}", s, 1000 + f))
        self._wait_ready(self._feeders)

    def _scheduler_pids(self) -> list[int]:
        """The scheduler's processes: the matcher and, split, its shards."""
        pids = [self.scheduler.pid]
        if self.setup.shards > 1:
            pids += [p for p in _stats(self.address).get("shard_pids", []) if p]
        return pids

    def _spawn(self, target: Any, name: str, *args: Any) -> Connection:
        parent, child = self._mp.Pipe()
        proc = self._mp.Process(target=target, args=(self.address, name, *args, child),
                                name=name, daemon=True)
        proc.start()
        self._procs.append(proc)
        return parent

    def _wait_ready(self, conns: list[Connection]) -> None:
        for conn in conns:
            if not conn.poll(30):
                raise RuntimeError("a benchmark process did not start within 30 s")
            conn.recv()

    def step(self, rate: float, duration_s: float) -> dict[str, Any]:
        """Offer ``rate`` req/s for ``duration_s``; return the step's measurements."""
        s = self.setup
        drain_s = s.slo_ns / 1e9 + 0.5
        for conn in self._workers:  # discard the previous step's samples
            conn.send("report")
            conn.recv()
        pids = self._scheduler_pids()
        cpu0 = sum(_proc_cpu_s(p) for p in pids)
        in0 = _stats(self.address)["counters"]["requests_in"]
        for conn in self._feeders:
            conn.send(("run", rate / len(self._feeders), duration_s, drain_s))
        feeds = [conn.recv() for conn in self._feeders]
        cpu1 = sum(_proc_cpu_s(p) for p in pids)
        if s.shards > 1:
            time.sleep(0.3)  # the shards' counters reach the matcher every 250 ms
        stats = _stats(self.address)
        work = []
        for conn in self._workers:
            conn.send("report")
            work.append(conn.recv())
        sent = sum(f["sent"] for f in feeds)
        answered = sum(f["answered"] for f in feeds)
        drops: dict[str, int] = {}
        for f in feeds:
            for reason, n in f["drops"].items():
                drops[reason] = drops.get(reason, 0) + n
        policy = drops.get("DEADLINE", 0) + drops.get("SHED", 0)
        refused = sum(w["refused"] for w in work)
        unanswered = max(0, sent - answered - sum(drops.values()))
        other = sum(drops.values()) - policy + refused + unanswered
        lags = [lag for w in work for lag in w["lags"]]
        rtts = [r for f in feeds for r in f["rtts"]]
        elapsed = max(f["elapsed_s"] for f in feeds)
        batches = sum(w["batches"] for w in work)
        handled = stats["counters"]["requests_in"] - in0
        out = {
            "loadavg_1m": os.getloadavg()[0],  # other processes on the machine, for context
            "offered_rps": rate,
            "sent_rps": sent / elapsed,
        "feeder_late_fraction": max(f["late_fraction"] for f in feeds),
            "requests": sent,
            "answered": answered,  # requests a Route sent to a worker
            "batches": batches,
            "mean_batch": sum(w["requests"] for w in work) / batches if batches else 0.0,
            "lag_p50_ms": _pct(lags, 0.5),
            "lag_p99_ms": _pct(lags, 0.99),
            "input_lag_p99_ms": _pct(rtts, 0.99),
            "timer_lateness_p99_ms": stats["timer_lateness_us"]["p99"] / 1e3,
            "policy_drops": policy,
            "other_drops": other,
            "refused": refused,
            "unanswered": unanswered,
            "drops_by_reason": drops,
            # all scheduler processes (matcher and shards) together
            "sched_cpu_us_per_request": (cpu1 - cpu0) * 1e6 / handled if handled else None,
            "sched_cpu_fraction": (cpu1 - cpu0) / elapsed,
        }
        return out

    def stop(self) -> None:
        for conn in self._feeders:
            try:
                conn.send(("stop",))
            except OSError:
                pass
        for conn in self._workers:
            try:
                conn.send("stop")
            except OSError:
                pass
        for proc in self._procs[1:]:
            proc.join(5)
        if self.scheduler is not None and self.scheduler.is_alive():
            self.scheduler.terminate()  # SIGTERM: serve() returns, a profile is written
            self.scheduler.join(10)
        for proc in self._procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def _judge(step: dict[str, Any], max_lag_ms: float, max_input_lag_ms: float) -> str:
    """``ok``, or the first reason the step was not sustained."""
    if step["feeder_late_fraction"] > 0.05:
        return "feeder-bound"
    if step["other_drops"]:
        return f"{step['other_drops']} non-policy drops"
    if not step["lag_p99_ms"] <= max_lag_ms:
        return f"decision lag p99 {step['lag_p99_ms']:.2f} ms"
    if not step["input_lag_p99_ms"] <= max_input_lag_ms:
        return f"input lag p99 {step['input_lag_p99_ms']:.2f} ms"
    return "ok"


def run_capacity(setup: Setup, *, shards: int, start_rps: float, factor: float,
                 max_rps: float, step_s: float, max_lag_ms: float, max_input_lag_ms: float,
                 patience: int = 2, profile_path: str | None = None,
                 log: Any = print) -> dict[str, Any]:
    """Ramp the rate for one shard count until ``patience`` steps in a row fail (a
    shared machine has noisy moments); return every step and the highest that passed."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    from dataclasses import replace

    rig = _Rig(replace(setup, shards=shards), profile_path)
    steps: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    try:
        rig.start()
        rate, failed = start_rps, 0
        while rate <= max_rps and failed < patience:
            step = rig.step(rate, step_s)
            step["verdict"] = _judge(step, max_lag_ms, max_input_lag_ms)
            steps.append(step)
            log(f"  shards {shards}: {rate:9.0f} req/s offered, {step['sent_rps']:9.0f} sent, "
                f"lag p50/p99 {step['lag_p50_ms']:.3f}/{step['lag_p99_ms']:.3f} ms, input p99 "
                f"{step['input_lag_p99_ms']:.3f} ms, cpu {step['sched_cpu_us_per_request'] or 0:.1f}"
                f" us/req, batch {step['mean_batch']:.1f}: {step['verdict']}")
            if step["verdict"] == "ok":
                failed = 0
                if best is None or step["sent_rps"] > best["sent_rps"]:
                    best = step
            else:
                failed += 1
            rate *= factor
    finally:
        rig.stop()
    return {"shards": shards, "steps": steps, "best": best}


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


def hot_path(setup: Setup, rate_rps: float, seconds: float, *, seed: int = 1,
             profile_path: str | None = None) -> dict[str, Any]:
    """The scheduler's own CPU cost per request, on virtual time, without sockets.

    The production ``Scheduler`` (decode, translate, policy, encode, accounting) is fed
    one loop turn per ``setup.interval_ns``: the Poisson metadata of every feeder plus the
    ``Done`` of every emulated batch that ended, and a ``tick`` whenever its timer is due;
    what it sends is captured and answered from the plan. Only the CPU time of this thread
    inside the scheduler's ``receive``/``tick`` is counted, so the figure is free of the
    load generator, the sockets and the other processes sharing the machine.
    """
    from central.runtime.scheduler import Scheduler, SchedulerConfig
    from central.protocol.conventions import make_request_id

    pconf = setup.policy_config()
    clock = [1_000_000_000]
    sched = Scheduler(SchedulerConfig(policy_config=pconf, inprocess_shards=1 if setup.split else 0),
                      clock=lambda: clock[0])
    out, timer = _Capture(), _VirtualTimer()
    sched.attach(out, timer)
    names = setup.model_names()
    gpus = setup.gpu_models()
    workers: list[bytes] = []
    for w in range(setup.worker_procs):
        mine = gpus[w :: setup.worker_procs]
        specs = tuple((i, ms, tuple((m, setup.k_ns, setup.c_ns, setup.max_batch) for m in ms))
                      for i, ms in enumerate(mine))
        ident = f"w{w}".encode()
        workers.append(ident)
        sched.receive([[ident, *encode(RegisterWorker(ident.decode(), "tcp://127.0.0.1:9",
                                                      specs))]])
    feeders = [f"f{f}".encode() for f in range(setup.feeders)]
    sched.receive([[ident, *encode(RegisterFrontend(ident.decode()))] for ident in feeders])
    index = {ident: i + 1 for i, ident in enumerate(feeders)}  # registration order
    out.sent.clear()
    rng = random.Random(seed)
    pending: list[tuple[int, int, list[bytes]]] = []  # (end, batch id, Done frames)
    owner: dict[int, bytes] = {}
    seqs = dict.fromkeys(feeders, 0)
    arrivals = {ident: clock[0] + rng.expovariate(1.0) * 1e9 * len(feeders) / rate_rps
                for ident in feeders}
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
                done = Done(msg.batch_id, msg.gpu, int(BatchStatus.OK), msg.earliest_ns,
                            msg.earliest_ns + msg.expected_ns, len(msg.request_ids))
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
                    tuple(setup.slo_ns - int(t - a) for a in times), (0,) * n)
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
    return {"rate_rps": rate_rps, "seconds": seconds, "requests": requests,
            "batches": batches, "drops": drops,
            "mean_batch": (requests - drops) / batches if batches else 0.0,
            "us_per_request": busy * 1e6 / requests if requests else float("nan"),
            "capacity_rps": requests / busy if busy else float("inf")}


def split_hot_path(setup: Setup, rate_rps: float, seconds: float, shards: int, *,
                   seed: int = 1) -> dict[str, Any]:
    """A split scheduler's CPU cost per request, per process, on virtual time, without
    sockets: the production matcher (``SplitScheduler``) and ``shards`` production
    ``ShardServer`` objects in this thread, driven like ``hot_path`` (one loop turn per
    ``setup.interval_ns``), every message between them encoded and decoded as on the wire.
    The thread CPU time spent inside each is charged to it, so ``shard_us_per_request``
    is what one shard *process* would spend per request of the whole load and
    ``1e6 / max(...)`` the rate at which the busiest shard's core would be full."""
    from central.runtime.scheduler import SchedulerConfig
    from central.protocol.conventions import owner_of
    from central.runtime.shard import ShardConfig, ShardServer
    from central.runtime.matcher import SplitScheduler
    from central.protocol.conventions import make_request_id

    pconf = setup.policy_config()
    clock = [1_000_000_000]
    now = lambda: clock[0]  # noqa: E731
    matcher = SplitScheduler(SchedulerConfig(policy_config=pconf, shard_processes=shards,
                                             rebalance_interval_ns=0), clock=now)
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
                        done = Done(msg.batch_id, msg.gpu, int(BatchStatus.OK), msg.earliest_ns,
                                    msg.earliest_ns + msg.expected_ns, len(msg.request_ids))
                        heapq.heappush(pending, (done.end_ns, msg.batch_id,
                                                 [ident, *encode(done)]))
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
        specs = tuple((i, ms, tuple((m, setup.k_ns, setup.c_ns, setup.max_batch) for m in ms))
                      for i, ms in enumerate(mine))
        to_matcher([[f"w{w}".encode(), *encode(RegisterWorker(f"w{w}", "tcp://127.0.0.1:9",
                                                             specs))]])
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
            due = [(tm.target, i) for i, tm in enumerate([*timers, m_timer])
                   if tm.target is not None and tm.target <= t]
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
                msg = Requests(tuple(make_request_id(index[ident], seq + j) for j in js),
                               tuple(models[j] for j in js),
                               tuple(setup.slo_ns - int(t - times[j]) for j in js), (0,) * len(js))
                to_shard(i, servers[i]._on_front, [[ident, *encode(msg)]])
        pump()
    served = requests - counts["drops"]
    return {
        "shards": shards, "rate_rps": rate_rps, "seconds": seconds, "requests": requests,
        "batches": counts["batches"], "drops": counts["drops"],
        "mean_batch": served / counts["batches"] if counts["batches"] else 0.0,
        "messages_between_roles_per_batch": (counts["messages"] / counts["batches"]
                                             if counts["batches"] else float("nan")),
        "shard_us_per_request": [x * 1e6 / requests for x in spent[:shards]] if requests else [],
        "matcher_us_per_request": spent[shards] * 1e6 / requests if requests else float("nan"),
        # each shard sees only its own models' requests: its cost per request *it* handled
        "shard_us_per_own_request": [
            x * 1e6 / max(1, s.counters.get("requests_in", 0))
            for x, s in zip(spent[:shards], servers)],
    }


def _directory_owners(matcher: Any) -> list[tuple[str, int]]:
    return list(matcher._shard_directory().owners)


def role_costs(setup: Setup, rate_rps: float, seconds: float, shards: int, *,
               seed: int = 1) -> dict[str, Any]:
    """CPU per request of each role of the split policy, in the simulator.

    ``ShardedPolicy`` (K model shards and a matcher, ``central.policy.sharded``) runs the
    setup's cluster on a Poisson trace in virtual time, its arrivals delivered once per
    ``setup.interval_ns`` as the runtime's loop turns deliver them; every call into a shard and into
    the matcher is timed (thread CPU time) and charged to that role. The result is the
    policy work each process of a K-shard scheduler would do, without its socket and
    codec work (which ``hot_path`` measures for the single process): a projection, not a
    live measurement.
    """
    from bench.sim import Cluster, SimConfig, policy_config_for, simulate
    from bench.traces.generators import poisson
    from bench.traces.trace import Trace
    from central.policy.sharded import ShardedPolicy, ShardOptions
    from central.policy.types import Profile

    names = setup.model_names()
    prof = Profile(setup.k_ns, setup.c_ns, setup.max_batch)
    cluster = Cluster({m: prof for m in names}, {m: setup.slo_ns for m in names},
                      tuple(setup.gpu_models()))
    config = SimConfig(dispatch_delay_ns=setup.dispatch_cost_ns,
                       reply_cost_ns=setup.reply_cost_ns, seed=seed)
    policy = ShardedPolicy(policy_config_for(cluster, config,
                                             timer_slack_ns=setup.timer_slack_ns),
                           ShardOptions(shards))
    spent = [0.0] * (shards + 1)  # per shard, then the matcher
    clock = time.thread_time

    def timed(obj: Any, method: str, slot: int) -> None:
        inner = getattr(obj, method)

        def call(*args: Any) -> Any:
            t0 = clock()
            try:
                return inner(*args)
            finally:
                spent[slot] += clock() - t0

        setattr(obj, method, call)

    for i, shard in enumerate(policy.shards):
        for method in ("arrive", "advance", "grant", "pool_state", "finished", "wake",
                       "take_drops", "next_wakeup_ns"):
            timed(shard, method, i)
    for method in ("receive", "step", "booked", "done", "joined", "next_wakeup_ns"):
        timed(policy.matcher, method, shards)
    raw = poisson(rate_rps, seconds, seed, model=names)
    # arrivals reach the policy once per loop turn, as in the runtime: quantize to turns
    turns = raw.times_ns // setup.interval_ns * setup.interval_ns
    trace = Trace(turns, raw.model_ids, raw.models, None, raw.duration_ns)
    result = simulate(policy, trace, cluster, config)
    n = len(trace)
    return {
        "shards": shards, "rate_rps": rate_rps, "requests": n,
        "batches": int(len(result.batch_id)),
        "on_time": float((result.outcome == 0).mean()),
        "shard_us_per_request": [t * 1e6 / n for t in spent[:shards]],
        "matcher_us_per_request": spent[shards] * 1e6 / n,
        "messages_per_batch": sum(policy.messages.values()) / max(1, len(result.batch_id)),
    }


def _table(setup: Setup, results: list[dict[str, Any]]) -> str:
    lines = [
        "| shards | models | GPUs | highest sustained req/s | decision lag p50 / p99 (ms) "
        "| input lag p99 (ms) | scheduler CPU us/request | first failing step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        b = r["best"]
        fail = next((f"{s['offered_rps']:.0f}: {s['verdict']}" for s in r["steps"]
                     if s["verdict"] != "ok"), "none (max rate reached)")
        if b is None:
            lines.append(f"| {r['shards']} | {setup.models} | {setup.gpus} | none | - | - | - "
                         f"| {fail} |")
            continue
        lines.append(
            f"| {r['shards']} | {setup.models} | {setup.gpus} | {b['sent_rps']:.0f} | "
            f"{b['lag_p50_ms']:.3f} / {b['lag_p99_ms']:.3f} | {b['input_lag_p99_ms']:.3f} | "
            f"{b['sched_cpu_us_per_request'] or 0:.1f} | {fail} |")
    return "\n".join(lines)


def _write_json(path: str | None, setup: Setup, machine: str, key: str, value: Any) -> None:
    """With ``--json PATH``: the setup, the machine and one mode's results."""
    if path:
        Path(path).write_text(json.dumps({"setup": asdict(setup), "machine": machine,
                                          key: value}, indent=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="baton bench capacity",
        description="Scheduler capacity: feed the scheduler synthetic Poisson metadata from "
        "feeder processes, answer its Executes from emulated GPUs, and raise the rate until "
        "decisions lag their planned time by more than --max-lag-ms at p99 or a drop appears "
        "that the policy did not choose. Prints the highest sustained rate per shard count.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--shards", type=int, nargs="+", default=[1],
                   help="shard counts, each measured in turn: 1 is the one-process "
                   "scheduler, K >= 2 a matcher and K shard processes (baton scheduler "
                   "--shards K); with --roles, the split's per-role CPU in one process")
    p.add_argument("--models", type=int, default=64)
    p.add_argument("--gpus", type=int, default=256, help="emulated GPUs in all")
    p.add_argument("--worker-procs", type=int, default=1,
                   help="processes hosting the GPUs (more on a machine with more cores)")
    p.add_argument("--pools", type=int, default=16,
                   help="models and GPUs split into this many groups; a GPU serves its group")
    p.add_argument("--feeders", type=int, default=1,
                   help="feeder (synthetic frontend) processes (more on more cores)")
    p.add_argument("--slo-ms", type=float, default=50.0)
    p.add_argument("--interval-us", type=float, default=1000.0,
                   help="feeder send period: one Requests message per feeder per period")
    p.add_argument("--start-rps", type=float, default=2000.0)
    p.add_argument("--factor", type=float, default=1.5, help="rate multiplier per step")
    p.add_argument("--max-rps", type=float, default=400_000.0)
    p.add_argument("--step-s", type=float, default=4.0, help="seconds of load per step")
    p.add_argument("--max-lag-ms", type=float, default=1.0, help="decision lag p99 limit")
    p.add_argument("--patience", type=int, default=2,
                   help="stop after this many failed steps in a row")
    p.add_argument("--max-input-lag-ms", type=float, default=5.0,
                   help="limit on the p99 heartbeat round trip through the scheduler")
    p.add_argument("--quick", action="store_true",
                   help="a bounded smoke run (< 60 s): 8 models, 32 GPUs, 1 s steps, "
                   "from 1000 req/s x2 up to 16000, stopping at the first failed step")
    p.add_argument("--split", action="store_true",
                   help="the scheduler runs the split policy (model shards + matcher, "
                   "central.policy.sharded) with both roles in its one process")
    p.add_argument("--json", metavar="PATH", help="also write every step as JSON here")
    p.add_argument("--profile-dir", metavar="DIR",
                   help="run the scheduler under cProfile; write DIR/scheduler-K.pstats")
    p.add_argument("--hot-path", type=float, metavar="RPS",
                   help="instead of the live ramp, replay RPS req/s of virtual time through "
                   "the scheduler in-process (no sockets) and print its CPU cost per request; "
                   "with --shards K >= 2, the matcher's and each shard's")
    p.add_argument("--hot-path-s", type=float, default=5.0, help="virtual seconds to replay")
    p.add_argument("--roles", type=float, metavar="RPS",
                   help="instead of the live ramp, simulate the split policy at RPS req/s "
                   "for each --shards K and print each role's CPU per request")
    args = p.parse_args(argv)
    if any(k < 1 for k in args.shards):
        p.error("--shards: every count must be >= 1")
    if args.quick:
        args.models, args.gpus, args.pools, args.worker_procs = 8, 32, 4, 1
        args.feeders, args.step_s, args.start_rps, args.factor = 1, 1.0, 1000.0, 2.0
        args.max_rps, args.patience = 16000.0, 1
    setup = Setup(
        models=args.models, gpus=args.gpus, worker_procs=args.worker_procs,
        pools=min(args.pools, args.models, args.gpus), feeders=args.feeders,
        slo_ns=round(args.slo_ms * 1e6), interval_ns=round(args.interval_us * 1e3),
        split=args.split,
    )
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    if args.hot_path and args.shards != [1]:
        print(f"hot path of the split ({machine}): {args.hot_path:.0f} req/s offered, "
              f"{args.hot_path_s:g} virtual s, thread CPU per request of the whole load")
        print("| shards | mean batch | drops | busiest shard us/req (of all) | "
              "busiest shard us/own req | matcher us/req | messages/batch | "
              "matcher full at (req/s) |")
        print("|---|---|---|---|---|---|---|---|")
        rows = []
        for k in args.shards:
            if k == 1:
                r = hot_path(setup, args.hot_path, args.hot_path_s)
                rows.append({"shards": 1, **r})
                print(f"| 1 (one process) | {r['mean_batch']:.1f} | {r['drops']} | - | - | "
                      f"{r['us_per_request']:.2f} | - | {r['capacity_rps']:.0f} |")
                continue
            r = split_hot_path(setup, args.hot_path, args.hot_path_s, k)
            rows.append(r)
            print(f"| {k} | {r['mean_batch']:.1f} | {r['drops']} | "
                  f"{max(r['shard_us_per_request']):.2f} | "
                  f"{max(r['shard_us_per_own_request']):.2f} | "
                  f"{r['matcher_us_per_request']:.2f} | "
                  f"{r['messages_between_roles_per_batch']:.1f} | "
                  f"{1e6 / r['matcher_us_per_request']:.0f} |")
        _write_json(args.json, setup, machine, "split_hot_path", rows)
        return 0
    if args.hot_path:
        path = None
        if args.profile_dir:
            Path(args.profile_dir).mkdir(parents=True, exist_ok=True)
            path = str(Path(args.profile_dir) / "hot-path.pstats")
        res = hot_path(setup, args.hot_path, args.hot_path_s, profile_path=path)
        print(f"hot path ({machine}): {res['requests']} requests, {res['batches']} batches "
              f"(mean {res['mean_batch']:.1f}), {res['drops']} drops: "
              f"{res['us_per_request']:.2f} us/request inside the scheduler, "
              f"{res['capacity_rps']:.0f} req/s per core")
        _write_json(args.json, setup, machine, "hot_path", res)
        return 0
    print(f"capacity: {setup.models} models, {setup.gpus} emulated GPUs in "
          f"{setup.worker_procs} processes, {setup.feeders} feeders, SLO {args.slo_ms} ms; "
          f"{machine}")
    if args.roles:
        rows = [role_costs(setup, args.roles, args.hot_path_s, k) for k in args.shards]
        print("| shards | busiest shard us/req | matcher us/req | messages/batch | on time |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['shards']} | {max(r['shard_us_per_request']):.2f} | "
                  f"{r['matcher_us_per_request']:.2f} | {r['messages_per_batch']:.1f} | "
                  f"{r['on_time']:.4f} |")
        _write_json(args.json, setup, machine, "roles", rows)
        return 0
    results = []
    for k in args.shards:
        profile_path = None
        if args.profile_dir:
            Path(args.profile_dir).mkdir(parents=True, exist_ok=True)
            profile_path = str(Path(args.profile_dir) / f"scheduler-{k}.pstats")
        results.append(run_capacity(
            setup, shards=k, start_rps=args.start_rps, factor=args.factor,
            max_rps=args.max_rps, step_s=args.step_s, max_lag_ms=args.max_lag_ms,
            max_input_lag_ms=args.max_input_lag_ms, patience=args.patience,
            profile_path=profile_path))
    print(_table(setup, results))
    if args.json:
        doc = {"setup": asdict(setup), "machine": machine, "argv": sys.argv[1:] if argv is None
               else list(argv), "results": results}
        Path(args.json).write_text(json.dumps(doc, indent=1, allow_nan=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
