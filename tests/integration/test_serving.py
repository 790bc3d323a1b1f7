"""Real scheduler, frontend and emulated-GPU worker processes on loopback."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import attainment_with_stalls, simulate_same_arrivals

from central.client import BadRequest, Client, Rejected, query_stats
from central.client.canary import StallCanary
from central.client.load import LoadSpec, poisson_times, run_load, summarize
from central.cluster import Cluster
from central.policy.bound import analytic_bound
from central.protocol.records import BatchRecord

pytestmark = pytest.mark.integration


def _profile(cluster: Cluster) -> tuple[int, int, int, int]:
    m = cluster.config.model("symphony")
    assert m.k_ms and m.c_ms and m.slo_ms
    gpus = sum(w.gpus for w in cluster.config.workers if "symphony" in w.models)
    return gpus, int(m.k_ms * 1e6), int(m.c_ms * 1e6), int(m.slo_ms * 1e6)


def test_poisson_load_at_60_percent_of_bound_meets_slo(serving_cluster: Cluster) -> None:
    gpus, k, c, slo = _profile(serving_cluster)
    assert gpus == 8
    bound = analytic_bound(gpus, k, c, slo)
    rate = 0.6 * bound.goodput_rps
    address = serving_cluster.config.frontend_address
    sched_address = serving_cluster.config.scheduler_address
    # Warm-up, not measured: a fresh clone's processes compile and import code on their
    # first batches (tens of ms once), and the policy learns its margin from the first
    # ones. Its requests must still each get exactly one answer.
    with StallCanary() as canary:  # the machine's stalls, measured beside the run
        warm_rec = run_load(LoadSpec(address, "symphony", rate, 2.0, slo / 1e6, seed=99))
        warm = summarize(warm_rec, slo / 1e6, 2.0)
        assert (warm["never_answered"], warm["answered_twice"]) == (0, 0), warm
        time.sleep(slo / 1e9 + 0.5)  # its tail drains
        duration = 8.0
        before = query_stats(address)["counters"]
        batches_before = query_stats(sched_address)["counters"]["batches"]
        offsets = poisson_times(rate, duration, seed=1)
        rec = run_load(LoadSpec(address, "symphony", rate, duration, slo / 1e6), offsets=offsets)
    s = summarize(rec, slo / 1e6, duration)
    # the wire ledger (run_load's sender) saw exactly one answer per request
    assert (s["never_answered"], s["answered_twice"]) == (0, 0), s
    assert s["requests"] == len(offsets)
    # 99% within the SLO, unless the machine stalled: then what the simulator attains on
    # the same arrivals with the same stalls (the canary's) is the bar, no lower.
    sent = np.concatenate([warm_rec[:, 1], rec[:, 1]])
    plain, stalled = attainment_with_stalls(
        serving_cluster, "symphony", sent, slice(len(warm_rec), None), canary.stalls
    )
    print(
        f"live {s['slo_attainment']:.4f}; simulated {plain:.4f}, with the "
        f"{len(canary.stalls)} stalls the canary saw ({canary.stalled_ms():.0f} ms) {stalled:.4f}"
    )
    assert plain >= 0.99
    assert s["slo_attainment"] >= min(0.99, stalled), (s, plain, stalled, canary.stalls)
    fe = query_stats(serving_cluster.config.frontend_address)
    assert fe["pending"] == 0
    accepted = fe["counters"]["accepted"] - before["accepted"]
    answered = sum(
        fe["counters"][k] - before[k]
        for k in ("ok", "deadline_exceeded", "failed", "unavailable", "rejected", "bad_request")
    )
    assert accepted == s["requests"] == answered
    # The deferred policy batches as the simulator does on the very same arrivals (the
    # warm-up, the idle gap and this run, as sent): as large on average (not the batches
    # of 1-3 of a work-conserving policy; after the idle gap both ramp up while the rate
    # estimate recovers) and never larger than the largest the simulator formed plus one.
    sched = query_stats(sched_address, with_batches=True)
    count = sched["counters"]["batches"] - batches_before
    sizes = np.array([BatchRecord.of(b).size for b in sched["batches"][-count:]])
    sim = simulate_same_arrivals(serving_cluster, "symphony", sent - sent.min())
    rows = np.unique(sim.batch_of[len(warm_rec) :])
    sim_sizes = sim.batch_size[rows[rows >= 0]]
    print(
        f"live batches {count}, mean {sizes.mean():.2f}, max {sizes.max()}; "
        f"simulated {len(sim_sizes)}, mean {sim_sizes.mean():.2f}, max {sim_sizes.max()}; "
        f"b* {bound.batch}"
    )
    assert abs(sizes.mean() - sim_sizes.mean()) <= 0.15 * sim_sizes.mean(), (sizes.mean(), sim_sizes.mean())
    assert sizes.max() <= sim_sizes.max() + 1, (np.bincount(sizes), np.bincount(sim_sizes))


def test_scheduler_receives_no_payload_bytes(serving_cluster: Cluster) -> None:
    addr = serving_cluster.config
    before = query_stats(addr.scheduler_address)["counters"]
    payload = np.arange(25_000, dtype=np.float32)  # 100 KB per request
    n = 60
    with Client(addr.frontend_address) as client:
        for i in range(n):
            out = client.infer("symphony", {"x": payload + i})
            # the emulated GPU sums its input: proves the payload reached the worker intact
            assert out["sum"][0] == pytest.approx(float(np.sum(payload + i, dtype=np.float64)))
            assert out["count"][0] == payload.size
    deadline = time.monotonic() + 3.0
    while True:  # a split scheduler's shards report their counters every 250 ms
        after = query_stats(addr.scheduler_address)["counters"]
        if after["requests_in"] - before["requests_in"] >= n or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    requests = after["requests_in"] - before["requests_in"]
    meta_bytes = after["request_bytes_in"] - before["request_bytes_in"]
    all_bytes = after["bytes_in"] - before["bytes_in"]
    assert requests == n
    assert meta_bytes / requests < 200, meta_bytes / requests  # metadata only
    assert all_bytes < 0.01 * n * payload.nbytes  # everything the scheduler read


def test_bad_requests_get_clear_errors_and_nothing_is_lost(serving_cluster: Cluster) -> None:
    addr = serving_cluster.config.frontend_address
    with Client(addr) as client:
        with pytest.raises(Rejected, match="unknown model 'nope'"):
            client.infer("nope", {"x": np.zeros(4, np.float32)})
        with pytest.raises(BadRequest, match="numeric"):
            client.infer("symphony", {"x": np.array([b"text"], dtype=object)})
        with pytest.raises(BadRequest, match="dtype"):
            client.infer("symphony", {"x": np.zeros(3, dtype=np.complex64)})
        with pytest.raises(BadRequest, match="slo_ms"):
            client.infer("symphony", {"x": np.zeros(3, np.float32)}, slo_ms=-1)
        # the service still works after all of that
        assert client.infer("symphony", {"x": np.ones(3, np.float32)})["sum"][0] == 3.0
    fe = query_stats(addr)
    assert fe["pending"] == 0


def test_malformed_wire_message_is_refused_not_fatal(serving_cluster: Cluster) -> None:
    import zmq

    from central.protocol import Error, decode

    addr = serving_cluster.config.frontend_address
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(addr)
        sock.send_multipart([b"\x93\x01\x1e\xc1"])  # msgpack garbage
        assert sock.poll(5000)
        msg, _ = decode(sock.recv_multipart())
        assert isinstance(msg, Error) and "undecodable" in msg.message
    finally:
        sock.close(linger=0)
    with Client(addr) as client:
        assert client.infer("symphony", {"x": np.ones(2, np.float32)})["sum"][0] == 2.0
