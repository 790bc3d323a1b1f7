"""``baton bench sim --quick``: the table, the JSON results and the PNG plots."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench import sim_table
from central.policy import analytic_bound
from central.policy.base import DEFAULT_POLICY

import matplotlib  # noqa: F401,E402  (installed by the bench extra; a missing one is a failure)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MS = 1_000_000


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One quick grid (2 jobs, as the CLI runs it) shared by the tests of this module."""
    out = tmp_path_factory.mktemp("sim")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = sim_table.main(["--quick", "--out", str(out / "grid.json"),
                             "--plots", str(out / "plots")])
    return {"rc": rc, "dir": out, "stdout": printed.getvalue(),
            "doc": json.loads((out / "grid.json").read_text())}


def test_quick_grid_rows_and_fields(quick_run: dict[str, Any]) -> None:
    assert quick_run["rc"] == 0
    doc = quick_run["doc"]
    rows = doc["rows"]
    pols = [DEFAULT_POLICY, sim_table.BASELINE]
    assert [(r["policy"], r["trace"], r["n"], r["slo_ms"]) for r in rows] == [
        (p, "poisson", n, 25.0) for n in (1, 8) for p in pols]
    for r in rows:
        for key in ("goodput_rps", "rate_rps", "attainment", "coord_rps",
                    "coord_overhead_rps", "uncoord_rps", "uncoord_sim_rps", "ratio_coord",
                    "ratio_coord_overhead", "ratio_uncoord_sim", "ratio_uncoord_bound",
                    "probes", "requests", "seed", "wall_s"):
            assert key in r, key
        assert r["requests"] == 3000
        assert r["probes"] and all(
            set(p) == {"rate_rps", "attainment", "goodput_rps", "requests", "passed"}
            for p in r["probes"])
        assert r["goodput_rps"] > 0  # Poisson at SLO 25 ms: every policy serves some
        assert r["attainment"] >= 0.99
    assert doc["machine"]["cpu_count"] >= 1 and doc["machine"]["machine"]
    assert doc["args"]["quick"] is True and doc["args"]["jobs"] == 2
    runs = doc["point"]["runs"]
    assert {(q["policy"], q["load"]) for q in runs} == {
        (p, x) for p in pols for x in (0.6, 0.8, 1.0)}
    assert all("gantt" in q for q in runs if q["load"] == 0.8)


def test_ratios_are_goodput_over_bound(quick_run: dict[str, Any]) -> None:
    rows = quick_run["doc"]["rows"]
    base = {r["n"]: r["goodput_rps"] for r in rows if r["policy"] == sim_table.BASELINE}
    for r in rows:
        k, c, slo = 1_082_000, 5_204_000, 25 * MS
        coord = analytic_bound(r["n"], k, c, slo, max_batch=64).goodput_rps
        coord_oh = analytic_bound(r["n"], k, c, slo, overhead_ns=800_000,
                                  max_batch=64).goodput_rps
        uncoord = analytic_bound(r["n"], k, c, slo, coordinated=False,
                                 max_batch=64).goodput_rps
        assert r["coord_rps"] == coord
        assert r["coord_overhead_rps"] == coord_oh
        assert r["uncoord_rps"] == uncoord
        g = r["goodput_rps"]
        assert math.isclose(r["ratio_coord"], g / coord)
        assert math.isclose(r["ratio_coord_overhead"], g / coord_oh)
        assert math.isclose(r["ratio_uncoord_bound"], g / uncoord)
        assert math.isclose(r["ratio_uncoord_sim"], g / base[r["n"]])
        # the best passing probe is the row's answer
        passed = [p for p in r["probes"] if p["passed"]]
        assert r["rate_rps"] == max(p["rate_rps"] for p in passed)
        assert r["ratio_coord"] < 1.0  # no policy beats the analytic bound under Poisson


def test_pngs_are_valid(quick_run: dict[str, Any]) -> None:
    from matplotlib import image

    plots = quick_run["dir"] / "plots"
    for name in sim_table.PLOT_FILES.values():
        path = plots / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        pixels = image.imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 200
        assert pixels.std() > 0.01  # not a blank canvas
    assert sorted(Path(p).name for p in quick_run["doc"]["plots"]) == sorted(
        sim_table.PLOT_FILES.values())


def test_replot_from_results(quick_run: dict[str, Any], tmp_path: Path) -> None:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = sim_table.main(["--replot", str(quick_run["dir"] / "grid.json"),
                             "--plots", str(tmp_path)])
    assert rc == 0
    for name in sim_table.PLOT_FILES.values():
        assert (tmp_path / name).read_bytes()[:8] == PNG_SIGNATURE, name


def test_table_printed(quick_run: dict[str, Any]) -> None:
    out = quick_run["stdout"]
    assert "/coord+oh" in out and "/uncoord bound" in out
    table = [ln for ln in out.splitlines() if ln.split()[:2] in (
        [DEFAULT_POLICY, "poisson"], [sim_table.BASELINE, "poisson"])]
    assert len(table) == 4
    assert "[  4/4]" in out  # progress, one line per search
    assert "total wall time" in out


def test_no_plots_single_job(tmp_path: Path) -> None:
    rc = sim_table.main(["--quick", "--jobs", "1", "--no-plots", "-n", "2", "--policy",
                         sim_table.BASELINE, "--out", str(tmp_path / "g.json"),
                         "--plots", str(tmp_path / "p")])
    assert rc == 0
    doc = json.loads((tmp_path / "g.json").read_text())
    assert [(r["policy"], r["n"]) for r in doc["rows"]] == [(sim_table.BASELINE, 2)]
    assert doc["rows"][0]["ratio_uncoord_sim"] == 1.0
    assert doc["point"]["runs"] == [] and doc["plots"] == []
    assert not (tmp_path / "p").exists()


def test_bad_arguments_exit() -> None:
    with pytest.raises(SystemExit):
        sim_table.main(["--quick", "--policy", "no-such-policy", "--no-plots"])
    with pytest.raises(SystemExit):
        sim_table.main(["--quick", "--trace", "replay", "--no-plots"])
