"""``baton bench replay`` end to end on live Baton clusters (the short, --quick run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import replay

pytestmark = pytest.mark.integration


def test_quick_replay_reports_both_baton_policies(tmp_path: Path) -> None:
    code = replay.main(["--quick", "--duration", "6", "-n", "2", "--load", "0.4", "--out", str(tmp_path)])
    assert code == 0
    doc = json.loads((tmp_path / "replay.json").read_text())
    results = doc["results"]
    assert set(results) == {"baton", "baton-uncoordinated"}
    sizes = set()
    for name, r in results.items():
        n = r["requests"]
        sizes.add(n)
        assert n > 100 and len(r["records"]) == n
        assert r["outcomes"]["no_answer"] == 0  # every request got exactly one terminal answer
        assert sum(v for k, v in r["outcomes"].items() if k != "no_answer") == n
        # the harness's accounting is checked here, not the systems' speed (benchmarks do
        # that): both must still serve most of the trace
        assert r["slo_attainment"] > 0.5, (name, r["slo_attainment"])
        assert r["batches"]["count"] > 0 and r["batches"]["mean_size"] >= 1.0
        assert r["send_lateness_ms"]["p99"] < 50.0  # the sender kept to the trace
    assert len(sizes) == 1  # the same trace for both systems
    # the same trace through the simulator, beside the live run
    assert set(doc["agreement"]) == {"baton", "baton-uncoordinated"}
    for name, a in doc["agreement"].items():  # reported, not judged: live noise varies
        assert 0.0 <= a["sim_attainment"] <= 1.0 and 0.0 <= a["live_attainment"] <= 1.0
        assert a["attainment_gap"] == pytest.approx(a["live_attainment"] - a["sim_attainment"])
        assert a["live_attainment"] == results[name]["slo_attainment"]
    md = (tmp_path / "summary.md").read_text()
    assert "| baton |" in md and "| baton-uncoordinated |" in md and "time-dilated" in md
    for png in ("latency_cdf.png", "batch_sizes.png", "gantt.png"):
        assert (tmp_path / png).stat().st_size > 10_000


def test_replay_refuses_a_replay_trace_without_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert replay.main(["--trace", "replay"]) == 2
    assert "--csv" in capsys.readouterr().err
