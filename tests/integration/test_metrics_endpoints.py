"""/metrics on the scheduler and the frontend, and the stats PUB socket, on a real cluster.

The cluster runs as separate processes on random loopback ports (metrics and PUB
included) and is stopped by PID in the fixture's finalizer, whatever the test did.
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from central.client import BatonError, Client
from central.cluster import Cluster, free_port, load_config
from central.demo import dilate

pytestmark = pytest.mark.integration

DILATION = 12.0  # as in conftest: this machine's timers are late by a few ms
UNKNOWN = "(unknown)"  # central.frontend.server.UNKNOWN_MODEL_LABEL


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    config = dilate(load_config(None), DILATION, "symphony")
    config = dataclasses.replace(
        config,
        workers=tuple(dataclasses.replace(w, gpus=2) for w in config.workers if w.kind == "emulated"),
    )
    ports: list[int] = []
    while len(ports) < 5:  # free_port may hand out the same port twice in a row
        if (p := free_port()) not in ports:
            ports.append(p)
    config = config.with_ports(
        ports[0],
        ports[1],
        scheduler_metrics_port=ports[2],
        frontend_metrics_port=ports[3],
        stats_pub_port=ports[4],
    )
    c = Cluster(config, log_dir=str(tmp_path_factory.mktemp("metrics")))
    c.start()
    try:
        yield c
    finally:
        c.stop()


def _scrape(port: int | None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of http://127.0.0.1:port/metrics, keyed by (name, sorted labels)."""
    assert port is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _get(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_agree_with_the_sdk(cluster: Cluster) -> None:
    c = cluster.config
    fe0, sch0 = _scrape(c.frontend_metrics_port), _scrape(c.scheduler_metrics_port)
    outcomes: Counter[str] = Counter()
    n_good, n_unknown = 40, 3
    with Client(c.frontend_address) as client:
        for i in range(n_good):
            try:
                client.infer("symphony", {"x": np.full(8, i, np.float32)})
                outcomes["OK"] += 1
            except BatonError as exc:  # counted under its status, whatever it is
                outcomes[type(exc).__name__] += 1
        for _ in range(n_unknown):
            with pytest.raises(BatonError, match="unknown model"):
                client.infer("nope", {"x": np.zeros(4, np.float32)})
    status_of = {
        "OK": "OK",
        "DeadlineExceeded": "DEADLINE_EXCEEDED",
        "Unavailable": "UNAVAILABLE",
        "InferenceFailed": "FAILED",
        "Rejected": "REJECTED",
        "BadRequest": "BAD_REQUEST",
    }
    assert outcomes["OK"] >= 0.9 * n_good, outcomes

    fe = _scrape(c.frontend_metrics_port)
    d = lambda name, **kw: _get(fe, name, **kw) - _get(fe0, name, **kw)  # noqa: E731
    assert d("baton_frontend_requests_accepted_total", model="symphony") == n_good
    for exc_name, n in outcomes.items():
        assert d("baton_frontend_replies_total", model="symphony", status=status_of[exc_name]) == n, (
            exc_name,
            outcomes,
        )
    assert d("baton_frontend_replies_total", model=UNKNOWN, status="REJECTED") == n_unknown
    assert _get(fe, "baton_frontend_requests_accepted_total", model="nope") == 0
    assert d("baton_frontend_request_latency_seconds_count", model="symphony", status="OK") == outcomes["OK"]
    assert _get(fe, "baton_frontend_requests_pending") == 0

    def total(name: str) -> float:  # summed over every label set of the model
        return sum(
            v - _get(sch0, k[0], **dict(k[1]))
            for k, v in sch.items()
            if k[0] == name and dict(k[1]).get("model") == "symphony"
        )

    # the scheduler: every request either ran in a batch or was dropped; a worker's Done
    # may trail its results by a moment, so poll briefly until every batch has one
    deadline = time.monotonic() + 2.0
    while True:
        sch = _scrape(c.scheduler_metrics_port)
        # used within this iteration only
        s = lambda name, **kw: _get(sch, name, **kw) - _get(sch0, name, **kw)  # noqa: E731, B023
        batches = s("baton_scheduler_batches_total", model="symphony")
        done = total("baton_scheduler_batches_done_total")
        if done >= batches or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert done == batches
    batched = s("baton_scheduler_batched_requests_total", model="symphony")
    # what the workers say ran: a refused batch (TOO_LATE, ...) ran none of its requests
    executed = total("baton_scheduler_executed_requests_total")
    assert s("baton_scheduler_requests_total", model="symphony") == n_good
    dropped = total("baton_scheduler_requests_dropped_total")
    assert batched + dropped == n_good
    assert batched >= executed >= outcomes["OK"]
    assert batches >= 1
    assert s("baton_scheduler_batch_size_count", model="symphony") == batches
    assert s("baton_scheduler_batch_size_sum", model="symphony") == batched
    assert s("baton_scheduler_queue_seconds_count", model="symphony") == batched
    ran = sum(s("baton_scheduler_batches_done_total", model="symphony", status=st) for st in ("OK", "FAILED"))
    assert s("baton_scheduler_execution_seconds_count", model="symphony") == ran
    assert _get(sch, "baton_scheduler_workers") == 2
    # one request at a time makes batches of one size only, from which the online refit
    # cannot tell k from c: it keeps the worker's k (the profile's 1.082 ms, dilated)
    # and moves c alone (central/policy/profile.py)
    k_s = _get(sch, "baton_scheduler_model_profile_k_seconds", model="symphony")
    assert k_s == pytest.approx(1.082e-3 * DILATION, rel=0.05)
    ratios = [v for k, v in sch.items() if k[0] == "baton_scheduler_worker_busy_ratio"]
    assert len(ratios) == 2 and all(0.0 <= r <= 1.0 for r in ratios)


def test_counters_never_go_down_between_scrapes(cluster: Cluster) -> None:
    port = cluster.config.scheduler_metrics_port
    first = _scrape(port)
    with Client(cluster.config.frontend_address) as client:
        client.infer("symphony", {"x": np.zeros(4, np.float32)})
    second = _scrape(port)
    for key, value in first.items():
        if key[0].endswith(("_total", "_count", "_bucket")):
            assert second.get(key, 0.0) >= value, key


def test_other_paths_get_404(cluster: Cluster) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{cluster.config.frontend_metrics_port}/", timeout=5)
    assert info.value.code == 404


def test_stats_pub_sends_snapshots_with_recent_batches(cluster: Cluster) -> None:
    assert cluster.config.stats_pub is not None
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    try:
        sub.setsockopt(zmq.SUBSCRIBE, b"stats")
        sub.connect(cluster.config.stats_pub)
        assert sub.poll(2000), "no stats message within 2 s"
        topic, body = sub.recv_multipart()
        assert topic == b"stats"
        snap = json.loads(body)
        for key in (
            "uptime_s",
            "counters",
            "drops_by_reason",
            "batch_sizes",
            "busy_ns",
            "workers",
            "policy",
            "recent_batches",
        ):
            assert key in snap, key
        assert "batches" not in snap
        # a request now shows up as a 10-field batch record in a later message
        with Client(cluster.config.frontend_address) as client:
            client.infer("symphony", {"x": np.zeros(4, np.float32)})
        deadline = time.monotonic() + 2.0
        records: list[list[Any]] = []
        while not records and time.monotonic() < deadline:
            if sub.poll(max(1, int((deadline - time.monotonic()) * 1000))):
                records = json.loads(sub.recv_multipart()[1])["recent_batches"]
        assert records, "no batch record within 2 s"
        assert all(len(r) == 10 for r in records)
        assert records[-1][2] == "symphony"
    finally:
        sub.close(linger=0)


def test_processes_survive_scrapes_and_subscribers(cluster: Cluster) -> None:
    assert sorted(cluster.alive()) == sorted(r for r, _ in cluster.procs)
