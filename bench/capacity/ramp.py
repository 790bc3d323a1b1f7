"""The live ramp: the scheduler, emulated workers and feeders of one shard count as
processes (``bench.capacity.processes``), the rate raised step by step until the
scheduler no longer keeps up (``run_capacity``; the judgement in ``bench.capacity``'s
docstring)."""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import time
from multiprocessing.connection import Connection
from typing import Any

import zmq

from bench.capacity.experiment import Setup
from bench.capacity.processes import (
    await_message,
    connect,
    feeder_main,
    scheduler_main,
    worker_main,
)
from central.cluster import free_port
from central.protocol import (
    StatsQuery,
    StatsReply,
    encode,
)

__all__ = ["run_capacity"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _pct(values: list[int], q: float) -> float:
    """The ``q`` quantile of ``values`` in milliseconds (NaN when empty)."""
    if not values:
        return float("nan")
    data = sorted(values)
    return data[min(len(data) - 1, int(q * len(data)))] / 1e6


def _stats(address: str) -> dict[str, Any]:
    """The scheduler's ``stats()`` snapshot through its own socket."""
    ctx = zmq.Context.instance()
    sock = connect(ctx, address)
    try:
        sock.send_multipart(encode(StatsQuery(0)))
        return json.loads(await_message(sock, StatsReply).json)
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
            target=scheduler_main,
            args=(self.address, s, self._profile_path),
            name="capacity-scheduler",
            daemon=True,
        )
        self.scheduler.start()
        self._procs.append(self.scheduler)
        gpus = s.gpu_models()
        for w in range(s.worker_procs):
            mine = gpus[w :: s.worker_procs]
            self._workers.append(self._spawn(worker_main, f"emulated-{w}", mine, s))
        self._wait_ready(self._workers)
        if s.shards > 1:  # the shards register before the feeders look for them
            deadline = time.monotonic() + 30
            while not all(sh.get("address") for sh in _stats(self.address)["policy"]["shards"]):
                if time.monotonic() > deadline:
                    raise RuntimeError("the shard processes did not register within 30 s")
                time.sleep(0.1)
        for f in range(s.feeders):
            self._feeders.append(self._spawn(feeder_main, f"feeder-{f}", s, 1000 + f))
        self._wait_ready(self._feeders)

    def _scheduler_pids(self) -> list[int]:
        """The scheduler's processes: the matcher and, split, its shards."""
        pids = [self.scheduler.pid]
        if self.setup.shards > 1:
            pids += [p for p in _stats(self.address).get("shard_pids", []) if p]
        return pids

    def _spawn(self, target: Any, name: str, *args: Any) -> Connection:
        parent, child = self._mp.Pipe()
        proc = self._mp.Process(
            target=target, args=(self.address, name, *args, child), name=name, daemon=True
        )
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
            with contextlib.suppress(OSError):
                conn.send(("stop",))
        for conn in self._workers:
            with contextlib.suppress(OSError):
                conn.send("stop")
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


def run_capacity(
    setup: Setup,
    *,
    shards: int,
    start_rps: float,
    factor: float,
    max_rps: float,
    step_s: float,
    max_lag_ms: float,
    max_input_lag_ms: float,
    patience: int = 2,
    profile_path: str | None = None,
    log: Any = print,
) -> dict[str, Any]:
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
            log(
                f"  shards {shards}: {rate:9.0f} req/s offered, {step['sent_rps']:9.0f} sent, "
                f"lag p50/p99 {step['lag_p50_ms']:.3f}/{step['lag_p99_ms']:.3f} ms, input p99 "
                f"{step['input_lag_p99_ms']:.3f} ms, cpu {step['sched_cpu_us_per_request'] or 0:.1f}"
                f" us/req, batch {step['mean_batch']:.1f}: {step['verdict']}"
            )
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
