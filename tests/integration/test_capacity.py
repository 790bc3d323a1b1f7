"""`baton bench capacity`: the scheduler alone under synthetic metadata, and its hot path.

The live run starts real processes (scheduler, emulated workers, a feeder); it runs in a
session of its own so that the finalizer can stop every one of them by process group, even
when the test fails. Its verdicts depend on how busy this shared machine is: the test
checks that what it reports adds up, that the first step (1,000 req/s, a few % of one
core for this scheduler) was served, and that some step was sustained, unless the run
itself shows that the machine, not the scheduler, was the limit; then it skips, saying so.
The hot-path tests run on virtual time and are held to the simulator's figures.
"""

from __future__ import annotations

import contextlib
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
        [sys.executable, "-m", "bench.capacity", "--quick", "--shards", "1", "2", "--json", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
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
        # the session: the run and all it started (ProcessLookupError: all already exited)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _check(text: str, returncode: int, out: Path) -> None:
    assert returncode == 0, text
    assert "| shards | models | GPUs | highest sustained req/s" in text
    doc = json.loads(out.read_text())
    assert doc["setup"]["models"] == 8 and doc["setup"]["gpus"] == 32
    assert [r["shards"] for r in doc["results"]] == [1, 2]  # one process, then split
    for result in doc["results"]:
        _check_result(result)
    unsustained = [r for r in doc["results"] if r["best"] is None]
    if unsustained:
        # _check_result has shown that the scheduler served the first step and was not
        # what starved the machine; what remains is co-tenant load, reported, not hidden
        pytest.skip(
            "no step sustained, the machine was the limit: "
            + "; ".join(
                f"shards {r['shards']}: {r['steps'][0]['verdict']} (load avg "
                f"{r['steps'][0]['loadavg_1m']:.1f}, scheduler "
                f"{r['steps'][0]['sched_cpu_fraction']:.2f} of a core)"
                for r in unsustained
            )
        )


# The quick run's first step offers 1,000 req/s for 1 s. The hot path below costs ~100 us
# per request at such small batches and the live process ~3x that (docs/capacity.md),
# the split about twice again: 0.3 and 0.6 of a core. Seen at load average 5-9 on 2
# cores: 0.08-0.25 (one process), 0.34-0.98 (split, three processes summed). A scheduler
# over these limits is itself what starves the machine.
_QUICK_START_RPS = 1000.0
_MAX_CPU_FRACTION = {1: 0.8, 2: 1.5}
_MACHINE_VERDICTS = ("feeder-bound", "decision lag", "input lag")


def _check_result(result: dict) -> None:
    steps = result["steps"]
    max_cpu = _MAX_CPU_FRACTION[result["shards"]]
    assert steps and steps[0]["offered_rps"] == _QUICK_START_RPS
    # --quick doubles the rate and stops at the first failure (or after 16,000 req/s)
    rates = [s["offered_rps"] for s in steps]
    assert rates == [_QUICK_START_RPS * 2**i for i in range(len(steps))]
    assert all(s["verdict"] == "ok" for s in steps[:-1])
    for step in steps:
        # a 1 s step of Poisson arrivals: the count is rate +- sqrt(rate) (3% at 1,000
        # req/s); a late feeder can only lose the arrivals after its last send (seen: 9%
        # at load average 6.6), never add any
        rate = step["offered_rps"]
        assert 0.5 * rate < step["requests"] <= rate + 5 * math.sqrt(rate)
        assert step["sent_rps"] == pytest.approx(step["requests"])  # over exactly 1 s
        assert step["batches"] > 0 and step["mean_batch"] >= 1.0
        # no request answered twice (routed and dropped, or twice either way): the
        # routed and the dropped are at most those sent, and the rest is unanswered
        drops = sum(step["drops_by_reason"].values())
        assert step["answered"] + drops <= step["requests"]
        assert step["unanswered"] == step["requests"] - step["answered"] - drops
        assert step["policy_drops"] <= drops
        assert 0 <= step["lag_p50_ms"] <= step["lag_p99_ms"] < 1000
        assert math.isfinite(step["input_lag_p99_ms"])
        assert step["sched_cpu_us_per_request"] is not None
        assert step["sched_cpu_us_per_request"] > 0
        assert isinstance(step["verdict"], str) and step["verdict"]  # "ok" or the reason
    first = steps[0]
    # the first step was served whatever the machine's load: most requests routed (seen
    # 78-100% at load average 6.6; the rest the policy's deadline drops behind the lag),
    # none left unanswered, and the scheduler within its CPU (above)
    assert first["answered"] >= 0.5 * first["requests"], first
    assert first["unanswered"] == 0, first
    assert first["sched_cpu_fraction"] < max_cpu, first
    best = result["best"]
    if best is None:
        # nothing sustained: only a busy machine may explain it; a lost request, a
        # refusal-free drop or an unknown model would be the scheduler's fault
        assert first["verdict"].startswith(_MACHINE_VERDICTS) or (
            first["other_drops"] == first["refused"] and first["lag_p99_ms"] > 1.0
        ), first
    else:  # the highest passing step met every criterion
        assert best["verdict"] == "ok" and best["lag_p99_ms"] <= 1.0
        assert best["input_lag_p99_ms"] <= 5.0 and best["feeder_late_fraction"] <= 0.05
        assert best["other_drops"] == 0 and best["unanswered"] == 0
        assert best["answered"] + sum(best["drops_by_reason"].values()) == best["requests"]
        # the feeder kept its schedule, so it sent the whole Poisson count
        assert abs(best["requests"] - best["offered_rps"]) <= 5 * math.sqrt(best["offered_rps"])


def _session(sid: int) -> list[str]:
    ps = subprocess.run(["pgrep", "-s", str(sid)], capture_output=True, text=True)
    return ps.stdout.split()


def _simulated_mean_batch(setup: Setup, rate_rps: float) -> float:
    """The simulator's mean batch for the hot path's cluster, policy knobs and load."""
    from bench.sim import Cluster, SimConfig, simulate_policy
    from bench.traces import poisson
    from central.policy import Profile

    prof = Profile(setup.k_ns, setup.c_ns, setup.max_batch)
    names = tuple(setup.model_names())
    cluster = Cluster(
        dict.fromkeys(names, prof), dict.fromkeys(names, setup.slo_ns), tuple(setup.gpu_models())
    )
    config = SimConfig(dispatch_delay_ns=setup.dispatch_cost_ns, reply_cost_ns=setup.reply_cost_ns, seed=1)
    res = simulate_policy(
        "symphony", poisson(rate_rps, 1.0, 1, model=names), cluster, config, setup.policy_config()
    )
    assert res.attainment == 1.0
    sizes = res.batch_size[res.ran]
    return float(sizes.sum() / sizes.size)


def test_hot_path_replay_measures_the_scheduler_alone() -> None:
    setup = Setup(models=16, gpus=64, worker_procs=2, pools=4, feeders=2)
    light = hot_path(setup, 5_000, 1.0)
    heavy = hot_path(setup, 40_000, 1.0)
    for res in (light, heavy):
        # virtual time, seeded: the Poisson count of 1 s (seen -0.7 and -1.7 sd)
        assert abs(res["requests"] - res["rate_rps"]) <= 4 * math.sqrt(res["rate_rps"])
        assert res["drops"] == 0  # 64 GPUs carry this load easily: every batch on time
        assert 0 < res["us_per_request"] < 1000
        # the production scheduler decides as the policy does in the simulator: the same
        # cluster, knobs and load give mean batches of 1.34-1.42 (5,000 req/s) and
        # 25.6-25.7 (40,000) over seeds 1-3, the hot path 1.42 and 26.1: its arrivals
        # come in 1 ms turns, which lets a batch fill a little more (<= 8% seen)
        simulated = _simulated_mean_batch(setup, res["rate_rps"])
        assert res["mean_batch"] == pytest.approx(simulated, rel=0.15)
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
