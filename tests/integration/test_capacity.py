"""`baton bench capacity`: the scheduler alone under synthetic metadata, and its hot path.

The live run starts real processes (scheduler, emulated workers, a feeder); it runs in a
session of its own so that the finalizer can stop every one of them by process group, even
when the test fails. Its verdicts depend on how busy this shared machine is, so the test
checks that what it reports is consistent, not that a rate passes.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.capacity import Setup, hot_path

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_quick_capacity_run_reports_consistent_steps(tmp_path: Path) -> None:
    out = tmp_path / "capacity.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.capacity", "--quick", "--shards", "1", "2",
         "--json", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        text, _ = proc.communicate(timeout=150)
        _check(text, proc.returncode, out)
        # it stopped its children itself (multiprocessing's tracker may take a moment)
        deadline = time.monotonic() + 5
        while _session(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _session(proc.pid) == []
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the session: the run and all it started
        except ProcessLookupError:
            pass  # everything already exited
        proc.wait()


def _check(text: str, returncode: int, out: Path) -> None:
    assert returncode == 0, text
    assert "| shards | models | GPUs | highest sustained req/s" in text
    doc = json.loads(out.read_text())
    assert doc["setup"]["models"] == 8 and doc["setup"]["gpus"] == 32
    assert [r["shards"] for r in doc["results"]] == [1, 2]  # one process, then split
    for result in doc["results"]:
        _check_result(result)


def _check_result(result: dict) -> None:
    assert result["steps"]
    for step in result["steps"]:
        assert step["requests"] > 0.5 * step["offered_rps"]  # a 1 s step, Poisson
        assert step["batches"] > 0 and step["mean_batch"] >= 1.0
        # every request was answered exactly once (routed or dropped), or is counted
        # unanswered: none was answered twice
        drops = sum(step["drops_by_reason"].values())
        assert step["answered"] + drops + step["unanswered"] == step["requests"]
        assert step["policy_drops"] <= drops
        assert 0 <= step["lag_p50_ms"] <= step["lag_p99_ms"] < 1000
        assert math.isfinite(step["input_lag_p99_ms"])
        assert step["sched_cpu_us_per_request"] is not None
        assert step["sched_cpu_us_per_request"] > 0
        assert isinstance(step["verdict"], str) and step["verdict"]  # "ok" or the reason
    best = result["best"]
    if best is not None:  # the highest passing step met every criterion
        assert best["verdict"] == "ok" and best["lag_p99_ms"] <= 1.0
        assert best["other_drops"] == 0


def _session(sid: int) -> list[str]:
    ps = subprocess.run(["pgrep", "-s", str(sid)], capture_output=True, text=True)
    return ps.stdout.split()


def test_hot_path_replay_measures_the_scheduler_alone() -> None:
    setup = Setup(models=16, gpus=64, worker_procs=2, pools=4, feeders=2)
    light = hot_path(setup, 5_000, 1.0)
    heavy = hot_path(setup, 40_000, 1.0)
    for res in (light, heavy):
        assert res["requests"] > 0.9 * res["rate_rps"]
        assert res["drops"] == 0  # 64 GPUs carry this load easily: every batch on time
        assert 0 < res["us_per_request"] < 1000
    # heavier load makes larger batches, which is what makes a request cheaper
    assert heavy["mean_batch"] > 2 * light["mean_batch"]
    assert heavy["us_per_request"] < light["us_per_request"]


def test_split_hot_path_charges_each_role_and_decides_the_same_load() -> None:
    from bench.capacity import split_hot_path

    setup = Setup(models=16, gpus=64, worker_procs=2, pools=4, feeders=2)
    mono = hot_path(setup, 20_000, 1.0)
    for k in (2, 3):
        res = split_hot_path(setup, 20_000, 1.0, k)
        assert res["requests"] == mono["requests"]  # the same seeded arrivals
        assert res["drops"] == 0 and res["batches"] > 0
        # the same policy rules: batches of the same size on average (decisions may
        # differ in detail: the roles see each other's state a message later)
        assert abs(res["mean_batch"] - mono["mean_batch"]) < 0.25 * mono["mean_batch"]
        assert len(res["shard_us_per_request"]) == k
        assert all(x > 0 for x in res["shard_us_per_request"]) and res["matcher_us_per_request"] > 0
        # a few messages between the roles per batch, whatever the batch holds
        assert res["messages_between_roles_per_batch"] < 8
