"""The wire ledger can fail: a frontend that drops one answer, or sends one twice, is caught.

Every live "exactly one answer" check in this suite rests on ``central.client.ledger``
(directly, or through ``run_load``'s default wire sender). Here a second frontend joins
the module's emulated cluster with the test-only ``--test-fault`` switch, which breaks the
promise once (the ``TEST_FAULT_AT``-th answer is dropped, or sent twice); the ledger must
name exactly that request, and a healthy frontend must give a clean ledger on the same
load. The SDK, which gives each call one answer, must tell the lost answer (its own
``ClientTimeout``) from the frontend's UNAVAILABLE, and count the duplicate it dropped.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from central.client import Client, ClientTimeout, Unavailable, query_stats
from central.client.ledger import LedgerRun, play
from central.client.load import LoadSpec, run_load, summarize
from central.cluster import Cluster, free_port
from central.frontend.server import TEST_FAULT_AT

pytestmark = pytest.mark.integration

N = 3 * TEST_FAULT_AT  # requests per run: the fault hits the TEST_FAULT_AT-th answer
GAP_NS = 20_000_000  # one request every 20 ms: far below the dilated cluster's capacity


def _slo_ms(cluster: Cluster) -> float:
    slo = cluster.config.model("symphony").slo_ms
    assert slo
    return slo


def _frontend(cluster: Cluster, log_dir: Path, fault: str | None) -> Iterator[str]:
    """A second frontend process on the cluster's scheduler; yields its address once it
    has registered and knows a worker; stopped by PID whatever happens."""
    address = f"tcp://127.0.0.1:{free_port()}"
    cmd = [
        sys.executable,
        "-m",
        "central.cli",
        "frontend",
        "--scheduler",
        cluster.config.scheduler_address,
        "--address",
        address,
        "--name",
        f"ledger-{fault or 'healthy'}",
        "--slo",
        f"symphony={_slo_ms(cluster)}",
    ]
    if fault:
        cmd += ["--test-fault", fault]
    log = open(log_dir / f"frontend-{fault or 'healthy'}.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:  # stats answers count no request: the fault's count starts at zero
            try:
                s = query_stats(address, server="frontend", timeout_s=1.0)
                if s["index"] is not None and s["workers"] > 0 and "symphony" in s["models"]:
                    break
            except Unavailable:
                pass
            assert proc.poll() is None, "the frontend exited"
            assert time.monotonic() < deadline, "the frontend did not get ready in 30 s"
            time.sleep(0.2)
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def healthy(emulated_cluster: Cluster, tmp_path: Path) -> Iterator[str]:
    yield from _frontend(emulated_cluster, tmp_path, None)


@pytest.fixture
def dropping(emulated_cluster: Cluster, tmp_path: Path) -> Iterator[str]:
    yield from _frontend(emulated_cluster, tmp_path, "drop-reply")


@pytest.fixture
def doubling(emulated_cluster: Cluster, tmp_path: Path) -> Iterator[str]:
    yield from _frontend(emulated_cluster, tmp_path, "duplicate-reply")


def _run(address: str, slo_ms: float) -> LedgerRun:
    return play(address, np.arange(N, dtype=np.int64) * GAP_NS, "symphony", slo_ms, grace_s=2.0, listen_s=1.0)


def test_a_healthy_frontend_gives_a_clean_ledger(emulated_cluster: Cluster, healthy: str) -> None:
    run = _run(healthy, _slo_ms(emulated_cluster))
    assert run.one_answer_each(), run.report()
    assert run.report() == ""
    assert run.statuses() == {"OK": N}
    assert run.listened_ns >= 0.9e9  # it kept listening after the last answer


def test_the_ledger_catches_a_dropped_answer(emulated_cluster: Cluster, dropping: str) -> None:
    run = _run(dropping, _slo_ms(emulated_cluster))
    assert not run.one_answer_each()
    assert len(run.never_answered()) == 1, run.report()
    assert run.answered_twice() == []
    assert "1 of 30 never answered" in run.report()
    assert run.statuses() == {"OK": N - 1, "NO_ANSWER": 1}


def test_the_ledger_catches_a_doubled_answer(emulated_cluster: Cluster, doubling: str) -> None:
    run = _run(doubling, _slo_ms(emulated_cluster))
    assert not run.one_answer_each()
    twice = run.answered_twice()
    assert len(twice) == 1, run.report()
    assert len(run.replies[twice[0]]) == 2
    assert run.never_answered() == []
    assert "1 answered more than once" in run.report()


def test_run_load_reports_both_faults(emulated_cluster: Cluster, dropping: str, doubling: str) -> None:
    """``run_load``'s default wire sender (what the serving, split and replay checks use)
    surfaces the lost and the doubled answer in ``summarize``."""
    slo = _slo_ms(emulated_cluster)
    offsets = np.arange(N, dtype=np.int64) * GAP_NS
    for address, lost, twice in ((dropping, 1, 0), (doubling, 0, 1)):
        rec = run_load(
            LoadSpec(address, "symphony", 1.0, 1.0, slo, grace_s=2.0, listen_s=1.0), offsets=offsets
        )
        s = summarize(rec, slo, 1.0)
        assert (s["never_answered"], s["answered_twice"]) == (lost, twice), s


def test_the_sdk_tells_its_own_timeout_from_unavailable_and_counts_duplicates(
    emulated_cluster: Cluster, dropping: str, doubling: str
) -> None:
    x = {"x": np.ones(2, np.float32)}
    with Client(dropping) as c:
        outcomes = []
        for _ in range(TEST_FAULT_AT + 2):
            try:
                c.infer("symphony", x, timeout_s=3.0)
                outcomes.append("ok")
            except ClientTimeout:
                outcomes.append("timeout")
        assert outcomes.count("timeout") == 1 and outcomes[TEST_FAULT_AT - 1] == "timeout", outcomes
        assert c.duplicates == 0
    with Client(doubling) as c:
        for _ in range(TEST_FAULT_AT + 2):
            assert c.infer("symphony", x, timeout_s=3.0)["sum"][0] == 2.0
        assert c.duplicates == 1 and c.late_replies == 0
