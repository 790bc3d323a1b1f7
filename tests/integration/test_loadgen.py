"""MLPerf LoadGen's Server scenario against a live Baton cluster (``bench.loadgen``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.loadgen import main
from central.cluster import Cluster

# the same time-dilation as conftest.py's clusters (2 cores here; every ratio unchanged)
DILATION = 12.0

pytestmark = pytest.mark.integration

lg = pytest.importorskip("mlperf_loadgen", reason="package mlcommons-loadgen is not installed")


def _result(out: Path) -> dict:
    return json.loads((out / "baton_loadgen.json").read_text())


def test_low_qps_on_its_own_cluster_is_valid(tmp_path: Path) -> None:
    out = tmp_path / "valid"
    # 80 QPS for 7 s: ~560 queries, enough for LoadGen's early-stopping rule at p99
    code = main(
        [
            "--qps",
            "80",
            "--duration-s",
            "7",
            "--min-queries",
            "400",
            "--dilation",
            str(DILATION),
            "--out",
            str(out),
        ]
    )
    res = _result(out)
    assert code == 0, res
    assert res["result"] == "VALID" and res["errors"] == {}
    assert "Result is : VALID" in (out / "mlperf_log_summary.txt").read_text()
    assert (out / "mlperf_log_detail.txt").stat().st_size > 0
    assert res["completed"] >= 400
    assert res["p99_latency_ns"] <= 25.0 * DILATION * 1e6
    assert 60 <= res["scheduled_qps"] <= 100


def test_an_impossible_latency_bound_is_invalid(emulated_cluster: Cluster, tmp_path: Path) -> None:
    m = emulated_cluster.config.model("symphony")
    assert m.c_ms is not None and m.slo_ms is not None
    # a bound below l(1) = k + c cannot be met by any request
    code = main(
        [
            "--address",
            emulated_cluster.config.frontend_address,
            "--qps",
            "40",
            "--latency-ms",
            str(m.c_ms / 2),
            "--slo-ms",
            str(m.slo_ms),
            "--duration-s",
            "3",
            "--min-queries",
            "50",
            "--out",
            str(tmp_path),
        ]
    )
    res = _result(tmp_path)
    assert code == 1
    assert res["result"] == "INVALID" and res["performance_constraints_satisfied"] == "NO"
    assert res["errors"] == {} and res["completed"] >= 50
