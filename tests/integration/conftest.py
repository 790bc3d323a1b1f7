"""Fixtures that start real clusters (separate processes, random loopback ports).

Every cluster is stopped by PID in a finalizer, so a failing test leaves no process or
socket behind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from central.cluster import Cluster, ClusterConfig, free_port, load_config
from central.demo import dilate

if TYPE_CHECKING:
    from bench.sim.result import SimResult

# This machine has 2 cores shared by the load generator and every Baton process, and
# Python's timers are late by up to a few ms there: the integration SLO checks run on a
# time-dilated copy of Symphony's profile (k, c and SLO all x DILATION; every ratio,
# including the analytic bound as a fraction, is unchanged). docs/benchmarks.md reports
# the undilated figures next to it.
DILATION = 40.0


# A split scheduler's grant makes one more round trip (matcher -> shard -> matcher)
# before the Execute, and the dispatch budget must cover it (docs/capacity.md): 2 ms does
# on a quiet machine, not while this VM stalls processes (results came back late, seen in
# a clean-clone CI run). The split clusters budget what docs/capacity.md tells users to.
SPLIT_POLICY_ARGS = ("--dispatch-cost-us", "6000")


def _cluster(config: ClusterConfig, tmp: Path, **ports: int) -> Iterator[Cluster]:
    config = config.with_ports(free_port(), free_port(), **ports)
    cluster = Cluster(config, log_dir=str(tmp), policy_args=SPLIT_POLICY_ARGS if config.shards > 1 else ())
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def emulated_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """8 emulated GPUs serving the dilated Symphony profile; no torch worker."""
    config = dilate(load_config(None), DILATION, "symphony")
    config = dataclasses.replace(config, workers=tuple(w for w in config.workers if w.kind == "emulated"))
    yield from _cluster(config, tmp_path_factory.mktemp("emulated"))


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "2-shards"])
def serving_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """The emulated cluster with a one-process scheduler, then with a scheduler split
    into a matcher and 2 model-shard processes (``[scheduler] shards``): the serving
    checks must hold for both."""
    config = dilate(load_config(None), DILATION, "symphony")
    config = dataclasses.replace(
        config, shards=request.param, workers=tuple(w for w in config.workers if w.kind == "emulated")
    )
    yield from _cluster(config, tmp_path_factory.mktemp(f"serving{request.param}"))


@pytest.fixture(scope="module")
def default_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The embedded default: 8 emulated GPUs plus a CPU torch worker (real models)."""
    yield from _cluster(load_config(None), tmp_path_factory.mktemp("default"))


@pytest.fixture(scope="module")
def kserve_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The embedded default (dilated emulated GPUs and the CPU torch worker) with the
    frontend's KServe v2 HTTP and gRPC endpoints on free ports."""
    config = dilate(load_config(None), DILATION, "symphony")
    yield from _cluster(
        config, tmp_path_factory.mktemp("kserve"), http_port=free_port(), grpc_port=free_port()
    )


def simulate_same_arrivals(
    cluster: Cluster,
    model: str,
    offsets_ns: np.ndarray,
    policy: str = "symphony",
    pauses: np.ndarray | None = None,
) -> SimResult:
    """The simulator's run of ``policy`` on the very arrivals a live test sent to
    ``cluster`` (its model's profile and SLO, its GPUs): the independent expectation a
    live figure is judged against. Default simulated overheads, not strict. ``pauses``
    (``[from, to)`` rows on the offsets' time base) are stalls the machine imposed, as a
    ``StallCanary`` measured them."""
    from bench.sim.config import Cluster as SimCluster
    from bench.sim.config import SimConfig
    from bench.sim.engine import simulate_policy
    from bench.traces import Trace
    from central.policy import Profile

    m = cluster.config.model(model)
    assert m.k_ms and m.c_ms and m.slo_ms
    gpus = sum(w.gpus for w in cluster.config.workers if model in w.models)
    trace = Trace(np.asarray(offsets_ns, np.int64), np.zeros(len(offsets_ns), np.int32), (model,))
    sim = SimCluster.shared(
        {model: Profile(round(m.k_ms * 1e6), round(m.c_ms * 1e6), m.max_batch)}, round(m.slo_ms * 1e6), gpus
    )
    spans = () if pauses is None else tuple((int(a), int(b)) for a, b in pauses if b > 0)
    return simulate_policy(policy, trace, sim, SimConfig(strict=False, pauses=spans))


def attainment_with_stalls(
    cluster: Cluster, model: str, sent_ns: np.ndarray, measured: slice, stalls: np.ndarray
) -> tuple[float, float]:
    """What the simulator attains on the requests ``measured`` of the live arrivals
    ``sent_ns`` (absolute monotonic ns, every request sent to ``model`` since the
    cluster last idled), without and with the machine's ``stalls`` (a ``StallCanary``'s,
    same clock): the live run is held to the second, so a stall is discounted by what it
    costs the simulated system, no more."""
    base = int(sent_ns.min())
    plain = simulate_same_arrivals(cluster, model, sent_ns - base)
    stalled = simulate_same_arrivals(cluster, model, sent_ns - base, pauses=np.clip(stalls - base, 0, None))
    from bench.metrics import Outcome

    return (
        float(np.mean(plain.outcome[measured] == Outcome.OK)),
        float(np.mean(stalled.outcome[measured] == Outcome.OK)),
    )
