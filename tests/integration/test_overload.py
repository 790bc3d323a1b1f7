"""Overload, live: at twice the cluster's capacity every request still gets exactly one
answer, what cannot make its deadline is told so before it, and goodput does not collapse.

Runs ``bench.overload`` (one live cluster of 4 emulated GPUs, open-loop Poisson from the
wire ledger) at 1x and 2x the analytic bound, time-dilated x20 like the chaos suite, and
judges the live goodput against the simulator's on the very same arrivals.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import overload
from bench.sim.config import Cluster as SimCluster
from bench.sim.config import SimConfig
from bench.sim.engine import simulate_policy
from bench.traces import Trace
from central.client.load import poisson_times
from central.policy import Profile

pytestmark = pytest.mark.integration

DILATION = 20.0
N = 4
DURATION_S = 5.0


def test_twice_the_capacity_answers_everyone_once_and_keeps_its_goodput(tmp_path: Path) -> None:
    out = tmp_path / "overload.json"
    code = overload.main(
        [
            "-n",
            str(N),
            "--multiples",
            "1",
            "2",
            "--duration",
            str(DURATION_S),
            "--dilation",
            str(DILATION),
            "--out",
            str(out),
        ]
    )
    assert code == 0  # it exits 1 when a request got no answer or two
    doc = json.loads(out.read_text())
    k, c, slo = (round(x * DILATION * 1e6) for x in (1.082, 5.204, 25.0))
    sim_cluster = SimCluster.shared({"symphony": Profile(k, c, 64)}, slo, N)
    for row in doc["rows"]:
        # the wire ledger: exactly one answer per request
        assert (row["never_answered"], row["answered_twice"]) == (0, 0), row
        assert row["outcomes"]["rejected"] == row["outcomes"]["failed"] == 0, row["outcomes"]
        # a request that cannot make its deadline is told so before the deadline
        drops = row["drop_answer_ms"]
        if drops is not None:
            assert drops["p99"] < slo / 1e6, drops
        # the same arrivals in the simulator (bench.overload's seeds)
        rate = row["multiple"] * doc["capacity_rps"]
        offsets = poisson_times(rate, DURATION_S, seed=int(row["multiple"] * 100))
        assert row["requests"] == len(offsets)
        trace = Trace(
            offsets, np.zeros(len(offsets), np.int32), ("symphony",), duration_ns=int(DURATION_S * 1e9)
        )
        sim = simulate_policy("symphony", trace, sim_cluster, SimConfig(strict=False))
        # No collapse: the simulator keeps ~0.95 of the bound at 1x and 2x on these
        # arrivals, and live at x20 came within 3% of it (126 vs 129, 135 vs 137 req/s);
        # this VM's stall phases cost up to ~40% at x8 (docs/benchmarks.md, Overload),
        # less at x20. A collapsing policy serves a tenth of it at 2x (the uncoordinated
        # baseline: 9.6 req/s in the simulator on the same arrivals).
        assert row["goodput_rps"] >= 0.7 * sim.goodput_rps, (
            row["multiple"],
            row["goodput_rps"],
            sim.goodput_rps,
        )
