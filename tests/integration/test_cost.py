"""``baton bench cost`` end to end: Baton and the bare relay floor, CPU per role, py-spy tops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import cost

pytestmark = pytest.mark.integration


def test_cost_reports_every_role_beside_its_floor_and_where_time_goes(tmp_path: Path) -> None:
    assert cost.main(["--rates", "200", "--duration", "1.5", "--top", "5", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "cost.json").read_text())
    assert doc["problems"] == []  # every request of both systems answered exactly once
    (row,) = doc["rows"]
    for system in ("baton", "floor"):
        m = row[system]
        assert m["summary"]["requests"] > 150
        assert (m["summary"]["never_answered"], m["summary"]["answered_twice"]) == (0, 0)
        assert set(m["cpu_us_per_request"]) == set(cost.ROLES)
        assert all(us > 0 for us in m["cpu_us_per_request"].values()), m
    # py-spy sampled each Baton role (make install puts it in .venv)
    assert cost.py_spy() is not None, "py-spy is missing: make install installs it"
    for role in ("scheduler", "frontend", "worker"):
        top = doc["profiles"][role]["top"]
        assert top and all(0 < share <= 1 for _, share in top), (role, doc["profiles"][role])
    md = (tmp_path / "summary.md").read_text()
    assert "| 200 | server |" in md and "### scheduler" in md


def test_top_functions_counts_self_samples_by_function() -> None:
    raw = [
        "<module> (a.py:1);f (a.py:5) 30",
        "<module> (a.py:1);g (b.py:9);f (a.py:6) 10",
        "<module> (a.py:1);g (b.py:9) 60",
        "garbage",
    ]
    assert cost.top_functions(raw) == [("g (b.py)", 0.6), ("f (a.py)", 0.4)]
