"""Chaos: kill and stop real processes under load, and keep a ledger at the client.

Every scenario runs a time-dilated cluster (as every live test here) with a steady
open-loop load from the wire ledger (``central.client.ledger``: a raw DEALER client that
tags each ``Infer``, records every ``Reply`` per tag and keeps listening after the last
answer, so a lost or late duplicate answer shows, which the SDK would hide). A fault is
injected by PID mid-run. Each scenario then checks:

* the ledger: every request exactly one answer, none never answered, none answered twice
  (tests/integration/test_ledger.py shows that this check fails on a faulty frontend);
* no request is answered later than its deadline plus ``GRACE_S``;
* goodput comes back: of the requests sent from ``RECOVERY_S`` after the fault (or the
  restart) on, at least ``TARGET`` are OK within SLO, and no ``WINDOW_S`` window of them
  falls below ``WINDOW_FLOOR``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from central.client.ledger import LedgerRun, play
from central.cluster import Cluster, ClusterConfig, ModelSpec, WorkerSpec, free_port
from central.demo import dilate
from central.policy.bound import analytic_bound
from central.protocol import Status

pytestmark = pytest.mark.integration

DILATION = 20.0  # this VM stalls processes 10-40 ms at times; x40 runs batches too long for a 10 s run
GRACE_S = 3.0  # answered at most this long after the deadline, whatever failed
LISTEN_S = 1.0  # the ledger listens this long after the last answer, for duplicates
RECOVERY_S = 3.0  # full goodput again this long after the fault (or the restart)
WINDOW_S = 0.5
TARGET = 0.95  # of all requests sent after recovery
WINDOW_FLOOR = 0.75  # and of each half-second window of them (about ten requests each)
LOAD = 0.3  # of the 4-GPU bound: the 2 GPUs that survive a worker loss still carry it


def run_ledger(
    address: str,
    rate: float,
    duration_s: float,
    slo_ms: float,
    events: list[tuple[float, Callable[[], None]]],
    seed: int = 1,
) -> tuple[LedgerRun, int]:
    """Open-loop Poisson load on the wire ledger with fault ``events`` at their offsets;
    returns the ledger and its start time (ns). It keeps listening ``LISTEN_S`` after the
    last answer, so a late duplicate is seen."""
    rng = np.random.default_rng(seed)
    offsets = np.cumsum(rng.exponential(1.0 / rate, int(rate * duration_s * 1.3) + 10))
    offsets = offsets[offsets < duration_s]
    run = play(
        address,
        (offsets * 1e9).astype(np.int64),
        "symphony",
        slo_ms,
        events=events,
        grace_s=GRACE_S,
        listen_s=LISTEN_S,
    )
    return run, run.start_ns


def check_ledger(ledger: LedgerRun, slo_ms: float) -> dict[str, int]:
    """Every request exactly one answer, none later than its deadline plus ``GRACE_S``;
    returns the count of requests by status."""
    assert ledger.one_answer_each(), ledger.report()
    late = ledger.first_answer_latency_ns() > (slo_ms / 1e3 + GRACE_S) * 1e9
    assert not late.any(), f"{late.sum()} answered after deadline + {GRACE_S} s"
    return ledger.statuses()


def _ok_within_slo(ledger: LedgerRun, i: int, slo_ms: float) -> bool:
    r = ledger.replies[i]
    return bool(r) and r[0][1] == Status.OK and r[0][0] - ledger.sent_ns[i] <= slo_ms * 1e6


def recovery(ledger: LedgerRun, start: int, after_s: float, slo_ms: float, until_s: float) -> list[float]:
    """Per WINDOW_S of send time from ``after_s`` to ``until_s``: fraction OK within SLO."""
    out = []
    t = after_s
    while t + WINDOW_S <= until_s:
        idx = [i for i, s in enumerate(ledger.sent_ns) if t * 1e9 <= s - start < (t + WINDOW_S) * 1e9]
        ok = sum(1 for i in idx if _ok_within_slo(ledger, i, slo_ms))
        out.append(ok / len(idx) if idx else 1.0)
        t += WINDOW_S
    return out


def _config(workers: int) -> ClusterConfig:
    base = ClusterConfig(
        f"tcp://127.0.0.1:{free_port()}",
        "symphony",
        f"tcp://127.0.0.1:{free_port()}",
        25.0,
        (ModelSpec("symphony", 25.0, 1.082, 5.204),),
        tuple(WorkerSpec("emulated", ("symphony",), gpus=4 // workers, seed=i) for i in range(workers)),
    )
    return dilate(base, DILATION, "symphony")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(_config(2), log_dir=str(tmp_path))
    c.start()
    try:
        yield c
    finally:
        c.stop()


def _rate(c: Cluster) -> tuple[float, float]:
    m = c.config.model("symphony")
    assert m.k_ms and m.c_ms and m.slo_ms
    bound = analytic_bound(4, round(m.k_ms * 1e6), round(m.c_ms * 1e6), round(m.slo_ms * 1e6))
    return LOAD * bound.goodput_rps, m.slo_ms


def _kill(c: Cluster, role: str, sig: int = signal.SIGKILL) -> Callable[[], None]:
    return lambda: os.kill(c.process(role).pid, sig)


def _assert_recovers(ledger: LedgerRun, start: int, fault_s: float, slo_ms: float, until_s: float) -> None:
    """From RECOVERY_S after the fault on: TARGET of all requests within SLO, and no
    half-second window (about ten requests at this load) below WINDOW_FLOOR."""
    after = fault_s + RECOVERY_S
    windows = recovery(ledger, start, after, slo_ms, until_s)
    whole = recovery_span(ledger, start, after, slo_ms, until_s)
    assert windows and whole >= TARGET and min(windows) >= WINDOW_FLOOR, (
        f"goodput not back {RECOVERY_S} s after the fault: {whole:.3f} overall, "
        f"per-{WINDOW_S}s attainment {windows}"
    )


def recovery_span(ledger: LedgerRun, start: int, from_s: float, slo_ms: float, until_s: float) -> float:
    idx = [i for i, s in enumerate(ledger.sent_ns) if from_s * 1e9 <= s - start < until_s * 1e9]
    ok = sum(1 for i in idx if _ok_within_slo(ledger, i, slo_ms))
    return ok / len(idx) if idx else 1.0


# --------------------------------------------------------------------------- cases


def test_sigkill_a_worker_mid_batch_then_restart_it(cluster: Cluster) -> None:
    rate, slo = _rate(cluster)
    events = [(2.0, _kill(cluster, "worker0")), (4.0, lambda: cluster.respawn("worker0"))]
    ledger, start = run_ledger(cluster.config.frontend_address, rate, 10.0, slo, events)
    statuses = check_ledger(ledger, slo)
    assert statuses.get("OK", 0) > 0.8 * len(ledger), statuses
    _assert_recovers(ledger, start, 2.0, slo, 10.0)
    from central.client import query_stats

    stats = query_stats(cluster.config.scheduler_address)
    assert len(stats["workers"]) == 4, stats["workers"]  # the restarted worker's GPUs rejoined
    # its in-flight batches were given back to the policy (re-dispatched or dropped early)
    assert stats["counters"].get("workers_lost", 0) >= 1, stats["counters"]
    assert stats["counters"].get("redispatched", 0) >= 1, stats["counters"]


def test_sigstop_a_worker_fences_it_then_it_rejoins(cluster: Cluster) -> None:
    rate, slo = _rate(cluster)
    events = [
        (2.0, _kill(cluster, "worker0", signal.SIGSTOP)),
        (4.0, _kill(cluster, "worker0", signal.SIGCONT)),
    ]
    ledger, start = run_ledger(cluster.config.frontend_address, rate, 10.0, slo, events)
    check_ledger(ledger, slo)  # no duplicates: the stopped worker's late results are fenced
    _assert_recovers(ledger, start, 2.0, slo, 10.0)
    from central.client import query_stats

    stats = query_stats(cluster.config.scheduler_address)
    assert len(stats["workers"]) == 4, stats["workers"]  # it came back and re-registered
    assert stats["counters"].get("workers_lost", 0) >= 1, stats["counters"]


def test_sigkill_the_scheduler_and_restart_it(cluster: Cluster) -> None:
    rate, slo = _rate(cluster)
    events = [(2.0, _kill(cluster, "scheduler")), (3.0, lambda: cluster.respawn("scheduler"))]
    ledger, start = run_ledger(cluster.config.frontend_address, rate, 10.0, slo, events)
    statuses = check_ledger(ledger, slo)
    assert statuses.get("UNAVAILABLE", 0) > 0, statuses  # told at once, not left hanging
    _assert_recovers(ledger, start, 3.0, slo, 10.0)


def test_sigkill_one_of_two_frontends_disturbs_nothing_else(cluster: Cluster, tmp_path: Path) -> None:
    rate, slo = _rate(cluster)
    other = f"tcp://127.0.0.1:{free_port()}"
    log = open(tmp_path / "frontend2.log", "wb")
    second = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "central.cli",
            "frontend",
            "--scheduler",
            cluster.config.scheduler_address,
            "--address",
            other,
            "--name",
            "second",
            "--slo",
            f"symphony={slo}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        from central.client import Client

        deadline = time.monotonic() + 30
        while True:  # wait until the second frontend serves
            try:
                with Client(other) as c:
                    c.infer("symphony", {"x": np.ones(2, np.float32)}, timeout_s=2.0)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        events = [(2.0, lambda: os.kill(second.pid, signal.SIGKILL))]
        # half the load through the frontend that dies, half through the one that stays
        victim = threading.Thread(target=run_ledger, args=(other, rate / 2, 2.5, slo, []), daemon=True)
        victim.start()
        ledger, _start = run_ledger(cluster.config.frontend_address, rate / 2, 6.0, slo, events)
        victim.join(timeout=30)
        statuses = check_ledger(ledger, slo)
        # nothing failed or went unavailable because the other frontend died
        assert set(statuses) <= {"OK", "DEADLINE_EXCEEDED"}, statuses
        assert statuses.get("OK", 0) >= 0.95 * len(ledger), statuses
        assert cluster.alive() == [r for r, _ in cluster.procs], "a cluster process died"
    finally:
        if second.poll() is None:
            second.kill()
        second.wait()
        log.close()


def test_sigterm_drains_the_frontend(cluster: Cluster) -> None:
    rate, slo = _rate(cluster)
    fe = cluster.process("frontend")
    exited: list[int] = []
    waiter = threading.Thread(
        target=lambda: (fe.wait(timeout=20), exited.append(time.monotonic_ns())), daemon=True
    )

    def sigterm() -> None:
        os.kill(fe.pid, signal.SIGTERM)
        waiter.start()

    # The load goes on for SEND_AFTER_S past the signal, well inside the drain: the
    # requests in flight at the signal were deferred towards their deadlines, one SLO
    # away, and the drain waits for them. So every request sent reached a frontend that
    # was still reading its socket, and each must get exactly one answer.
    signal_s, send_after_s = 1.5, 0.1
    ledger, start = run_ledger(
        cluster.config.frontend_address, rate, signal_s + send_after_s, slo, [(signal_s, sigterm)]
    )
    waiter.join(timeout=20)
    assert fe.returncode == 0
    assert exited and exited[0] > ledger.sent_ns.max(), "the drain ended before the last send"
    assert ledger.one_answer_each(), ledger.report()
    # sent before the signal: served; after it: refused UNAVAILABLE at once, never served
    t_signal = start + signal_s * 1e9
    first = [r[0][1] for r in ledger.replies]
    before = [f for f, t in zip(first, ledger.sent_ns) if t < t_signal - 0.1e9]
    after = [f for f, t in zip(first, ledger.sent_ns) if t > t_signal + 0.05e9]
    assert before and after, (len(before), len(after))
    assert before.count(Status.OK) >= 0.99 * len(before), ledger.statuses()
    assert set(after) == {Status.UNAVAILABLE}, ledger.statuses()


def test_sigterm_drains_a_worker(cluster: Cluster) -> None:
    rate, slo = _rate(cluster)
    worker = cluster.process("worker0")
    events = [(2.0, lambda: os.kill(worker.pid, signal.SIGTERM))]
    ledger, _start = run_ledger(cluster.config.frontend_address, rate, 6.0, slo, events)
    assert worker.wait(timeout=15) == 0
    statuses = check_ledger(ledger, slo)
    # its batches in flight finished; the scheduler planned nothing more on it
    assert set(statuses) <= {"OK", "DEADLINE_EXCEEDED"}, statuses
    assert statuses.get("OK", 0) >= 0.97 * len(ledger), statuses
    from central.client import query_stats

    stats = query_stats(cluster.config.scheduler_address)
    assert len(stats["workers"]) == 2, stats["workers"]  # forgotten once it fell silent
    assert stats["counters"].get("redispatched", 0) == 0, stats["counters"]  # nothing orphaned
