"""The peer systems (Ray Serve, Triton through PyTriton) replaying short Poisson traces.

Each peer's smoke probe starts the real peer once, with N=2 replicas of the time-dilated
emulated model, and replays two traces open loop through the harness's ``PeerSession``
(177 requests, then a drain and 63 more on the same server, as a goodput search's probes
do). It checks what the harness relies on: one outcome per request, none left unanswered,
no request refused except by Triton's queue timeout, batch sizes within the knob and adding
up to whole batches, every latency at least ``l(b)``, most requests within a generous SLO,
and no process of the peer left running afterwards.

A peer that is not installed is skipped with the exact package, interpreter or binary that
is missing, or fails with it when ``BATON_REQUIRE_PEERS=1`` (``make test`` and CI set it:
there the peers are installed, and a skip would let docs/benchmarks.md's comparisons rot).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from bench.metrics import Outcome, met_slo
from bench.peers import Knobs, PeerSession, available
from bench.peers.common import alive
from central.client.load import poisson_times

# the same time-dilation as conftest.py's clusters (2 cores here; every ratio unchanged)
DILATION = 12.0

pytestmark = pytest.mark.integration

K_MS, C_MS, SLO_MS = 1.082 * DILATION, 5.204 * DILATION, 25.0 * DILATION
SLO_NS = int(SLO_MS * 1e6)
N = 2
RATE_RPS, DURATION_S = 30.0, 6.5  # 177 requests, ~70% of two replicas at batch 2
SECOND_S = 2.5  # the replay after the drain, on the same server (63 requests)
# Ray forms a batch when its wait times out, busy replica or not, so it needs a wait long
# enough to batch at this rate (30% of the SLO, its best in docs/peers.md); Triton's
# batcher only waits while an instance is free.
KNOBS = {
    "ray": Knobs(max_batch=6, queue_delay_us=int(0.3 * SLO_MS * 1000)),
    "triton": Knobs(max_batch=6, queue_delay_us=int(0.05 * SLO_MS * 1000)),
}


def require_peer(peer: str, python: str | None = None) -> None:
    """Return when ``peer`` can run here; else skip, or fail under ``BATON_REQUIRE_PEERS=1``."""
    reason = available(peer, python=python)
    if reason is None:
        return
    what = f"{reason} (`make peers` installs it)"
    if os.environ.get("BATON_REQUIRE_PEERS") == "1":
        pytest.fail(
            f"BATON_REQUIRE_PEERS=1 (`make test`, CI) requires the {peer} peer: {what}", pytrace=False
        )
    pytest.skip(what)


def check_replay(peer: str, run: dict[str, Any], arrivals: np.ndarray) -> None:
    """The invariants of one replay on a healthy peer well below its capacity."""
    summary = run["summary"]
    # a str, so that pytest shows it whole
    brief = (
        f"outcomes {summary['outcomes']}, HTTP {summary['http_status']}, "
        f"mean batch {summary['mean_batch_size']:.2f}, latency {summary['latency_ms']}"
    )
    # exactly one terminal outcome per trace arrival, none unanswered
    outcome = run["outcome"]
    assert len(outcome) == len(arrivals) == len(run["finish_ns"]) == len(run["deadline_ns"])
    assert not np.any(outcome == Outcome.UNFINISHED), brief
    assert set(np.unique(outcome).tolist()) <= {Outcome.OK, Outcome.LATE, Outcome.DROPPED}
    assert sum(summary["outcomes"].values()) == len(arrivals)
    # the trace's schedule was kept (open loop), and answers came after their sends
    np.testing.assert_array_equal(np.sort(run["planned_ns"]), arrivals - arrivals[0])
    assert np.percentile(run["send_lateness_ns"], 50) < 10e6, brief
    assert np.all(run["finish_ns"] >= run["arrival_ns"])
    # a refusal is Triton shedding a request that waited out its queue timeout (the SLO);
    # Ray Serve sheds nothing here, so any refusal is a request the peer lost
    dropped = outcome == Outcome.DROPPED
    if peer == "ray":
        assert not np.any(dropped), brief
    else:
        waited = (run["finish_ns"] - run["arrival_ns"])[dropped]
        early = waited[waited < SLO_NS] / 1e6
        assert early.size == 0, f"{early.size} refused before the SLO, after {early} ms; {brief}"
    # the handler batched within the knob and held the device at least l(b) each time
    served = (outcome == Outcome.OK) | (outcome == Outcome.LATE)
    b = run["batch_size"][served]
    assert b.min() >= 1 and b.max() <= KNOBS[peer].max_batch, brief
    latency = (run["finish_ns"] - run["arrival_ns"])[served]
    assert np.all(latency >= (K_MS * b + C_MS) * 1e6), brief
    # every batch of b held b requests of this replay (nothing else was in flight), so the
    # requests reporting b come in whole batches; the summary counts each batch once
    sizes, counts = np.unique(b, return_counts=True)
    assert all(c % s == 0 for s, c in zip(sizes.tolist(), counts.tolist())), (
        f"requests per reported batch size {dict(zip(sizes.tolist(), counts.tolist()))}"
    )
    assert summary["mean_batch_size"] == pytest.approx(b.size / np.sum(counts / sizes))
    # most requests meet a generous SLO (3x); the peers are not expected to meet the tight one
    generous = met_slo(run["finish_ns"], run["arrival_ns"] + 3 * SLO_NS)
    assert generous.mean() >= 0.9, brief
    assert summary["slo_attainment"] == pytest.approx(
        float(np.mean(served & met_slo(run["finish_ns"], run["deadline_ns"])))
    )


@pytest.mark.parametrize("peer", ["ray", "triton"])
def test_peer_serves_two_replays_on_one_server(peer: str, tmp_path) -> None:
    """The smoke probe: a Poisson trace, a drain, a second trace; started and stopped once."""
    require_peer(peer)
    first_arrivals = poisson_times(RATE_RPS, DURATION_S, seed=3)
    second_arrivals = poisson_times(RATE_RPS, SECOND_S, seed=4)
    assert 150 <= len(first_arrivals) <= 260 and 40 <= len(second_arrivals) <= 120
    with PeerSession(peer, SLO_NS, K_MS, C_MS, N, KNOBS[peer], log_dir=tmp_path) as session:
        first = session.play(first_arrivals, span_ns=int(DURATION_S * 1e9))
        second = session.play(second_arrivals, span_ns=int(SECOND_S * 1e9))
        processes = session.processes()
    check_replay(peer, first, first_arrivals)
    check_replay(peer, second, second_arrivals)
    assert first["version"] and first["n_replicas"] == N
    # one start, one drain between the replays, one stop
    assert [s["why"] for s in session.starts] == ["first start"], session.starts
    assert first["drain"] is None and second["drain"]["drained"], second["drain"]
    assert len(session.drains) == 1 and len(session.stops_s) == 1
    # every process the peer ran is gone
    assert len(processes) >= 2 and alive(processes) == [], processes


def test_a_session_refuses_unsorted_arrivals_before_starting_anything() -> None:
    session = PeerSession("triton", int(SLO_MS * 1e6), K_MS, C_MS, N, KNOBS["triton"])
    with pytest.raises(ValueError, match="sorted"):
        session.play(np.array([2, 1], dtype=np.int64))
    assert session.starts == [] and session.processes() == []


def test_unknown_peer_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown peer 'nope'"):
        available("nope")


@pytest.mark.parametrize(("peer", "package"), [("ray", "ray[serve]"), ("triton", "nvidia-pytriton")])
def test_a_missing_peer_skips_by_hand_and_fails_under_make_test(
    peer: str, package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BATON_REQUIRE_PEERS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="make peers") as skipped:
        require_peer(peer, python="/nonexistent/python")
    assert package in str(skipped.value)
    monkeypatch.setenv("BATON_REQUIRE_PEERS", "1")
    with pytest.raises(pytest.fail.Exception, match="BATON_REQUIRE_PEERS=1") as failed:
        require_peer(peer, python="/nonexistent/python")
    assert package in str(failed.value) and "/nonexistent/python" in str(failed.value)
