"""``baton bench sim --quick``: the table, the JSON results and the PNG plots."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

import matplotlib  # noqa: F401  (installed by the bench extra; a missing one is a failure)
import pytest

from bench import sim_table
from central.policy import Profile, analytic_bound
from central.policy.base import DEFAULT_POLICY
from central.policy.bound import target_batch

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MS = 1_000_000


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One quick grid (2 jobs, as the CLI runs it) shared by the tests of this module."""
    out = tmp_path_factory.mktemp("sim")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = sim_table.main(["--quick", "--out", str(out / "grid.json"), "--plots", str(out / "plots")])
    return {
        "rc": rc,
        "dir": out,
        "stdout": printed.getvalue(),
        "doc": json.loads((out / "grid.json").read_text()),
    }


def test_quick_grid_rows_and_fields(quick_run: dict[str, Any]) -> None:
    assert quick_run["rc"] == 0
    doc = quick_run["doc"]
    rows = doc["rows"]
    pols = [DEFAULT_POLICY, sim_table.BASELINE]
    assert [(r["policy"], r["trace"], r["n"], r["slo_ms"]) for r in rows] == [
        (p, "poisson", n, 25.0) for n in (1, 8) for p in pols
    ]
    for r in rows:
        for key in (
            "goodput_rps",
            "rate_rps",
            "attainment",
            "coord_rps",
            "coord_overhead_rps",
            "uncoord_rps",
            "uncoord_sim_rps",
            "ratio_coord",
            "ratio_coord_overhead",
            "ratio_uncoord_sim",
            "ratio_uncoord_bound",
            "probes",
            "requests",
            "seed",
            "wall_s",
        ):
            assert key in r, key
        assert r["requests"] == 3000
        assert r["probes"] and all(
            set(p) == {"rate_rps", "attainment", "goodput_rps", "requests", "passed"} for p in r["probes"]
        )
        assert r["attainment"] >= 0.99
        # goodput is the passing rate less its misses (<= 1%), counted over the trace's
        # window: a 3,000-request Poisson count is +-1.8% (1 sd) off rate x window, and
        # seeds 1-8 put goodput/rate at 0.979-1.030
        assert r["goodput_rps"] == pytest.approx(r["rate_rps"], rel=0.05)
    assert doc["machine"]["cpu_count"] >= 1 and doc["machine"]["machine"]
    assert doc["args"]["quick"] is True and doc["args"]["jobs"] == 2
    runs = doc["point"]["runs"]
    assert {(q["policy"], q["load"]) for q in runs} == {(p, x) for p in pols for x in (0.6, 0.8, 1.0)}
    assert all("gantt" in q for q in runs if q["load"] == 0.8)


def test_ratios_are_goodput_over_bound(quick_run: dict[str, Any]) -> None:
    rows = quick_run["doc"]["rows"]
    base = {r["n"]: r["goodput_rps"] for r in rows if r["policy"] == sim_table.BASELINE}
    for r in rows:
        k, c, slo = 1_082_000, 5_204_000, 25 * MS
        coord = analytic_bound(r["n"], k, c, slo, max_batch=64).goodput_rps
        coord_oh = analytic_bound(r["n"], k, c, slo, overhead_ns=800_000, max_batch=64).goodput_rps
        uncoord = analytic_bound(r["n"], k, c, slo, coordinated=False, max_batch=64).goodput_rps
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


# Expected figures of the quick grid (seed 1, 3,000-request probes, rel_tol 0.02), as a
# fraction of a bound, with the band each must fall in. docs/benchmarks.md's simulator
# table is the same setting with 20,000-request probes and the baseline's analytic
# defaults; its figure is given beside each. The search bisects from the coordinated
# bound, so a ratio moves in steps of 1/64 of it (0.016; 0.021 of the uncoordinated
# bound at N = 8); each band covers what seeds 1-6 gave (seeds 1-8 before the baseline
# was tuned) plus about one step each side: the seeded simulator cannot drift by noise,
# so leaving a band is a change in a policy, the simulator, the search or the tuning.
#   (policy, N): (the ratio, low, high)
_EXPECTED = {
    # 0.633-0.699, docs 0.652. N = 1: the next batch is whatever arrives during the
    # current one, so 99% on time needs two Poisson batches to fit the SLO
    (DEFAULT_POLICY, 1): ("ratio_coord", 0.61, 0.72),
    # 0.907-0.937, docs 0.917: Poisson costs a few % at N = 8
    (DEFAULT_POLICY, 8): ("ratio_coord", 0.89, 0.95),
    # tuned (max batch 10-12): 0.630-0.713 (at N = 1 both bounds are 2 l(b) <= SLO)
    (sim_table.BASELINE, 1): ("ratio_uncoord_bound", 0.61, 0.73),
    # tuned (max batch 8-12): 0.916-0.948, below its analytic bound
    (sim_table.BASELINE, 8): ("ratio_uncoord_bound", 0.89, 0.97),
}
# The baseline with its analytic defaults (max batch 6, the uncoordinated b*), searched
# first by the tuning: 0.537-0.622 (N = 1, docs 0.567) and 0.850-0.929 (N = 8, docs 0.90)
# of the uncoordinated bound over seeds 1-8
_EXPECTED_PINNED = {1: (0.52, 0.64), 8: (0.83, 0.95)}


def test_goodputs_match_the_bounds_and_the_table(quick_run: dict[str, Any]) -> None:
    rows = {(r["policy"], r["n"]): r for r in quick_run["doc"]["rows"]}
    assert set(rows) == set(_EXPECTED)
    for key, (ratio, low, high) in _EXPECTED.items():
        assert low <= rows[key][ratio] <= high, (key, ratio, rows[key][ratio])
    for n, (low, high) in _EXPECTED_PINNED.items():
        base = rows[(sim_table.BASELINE, n)]
        pinned = base["pinned_goodput_rps"] / base["uncoord_rps"]
        assert low <= pinned <= high, (n, pinned)
        # the defaults are a point of the tuning grid: tuning keeps or beats them
        assert base["goodput_rps"] >= base["pinned_goodput_rps"]
        # the grid's max batches are the uncoordinated b* = 6 times 1, 4/3, 5/3 and 2
        b_un = analytic_bound(
            n, 1_082_000, 5_204_000, 25 * MS, coordinated=False, overhead_ns=1_000_000, max_batch=64
        ).batch
        assert b_un == 6 and base["knobs"]["max_batch"] in {6, 8, 10, 12}
    # coordination pays where there is something to coordinate: seeds 1-6 give 1.32-1.37
    # at N = 8 against the tuned baseline (1.37-1.47 against its defaults; docs 1.39;
    # the project's target is 1.3), and 1.24-1.28 of the uncoordinated bound, which only
    # staggering can pass (b* = 15 staggered against two back-to-back batches of 6)
    assert rows[(DEFAULT_POLICY, 8)]["ratio_uncoord_sim"] >= 1.3
    assert rows[(DEFAULT_POLICY, 8)]["ratio_uncoord_bound"] > 1.2
    # at N = 1 the two bounds coincide and the tuned baseline is symphony's equal (0.96-1.02
    # for seeds 1-6): no ordering to hold, only that neither runs away from the other
    assert 0.93 <= rows[(DEFAULT_POLICY, 1)]["ratio_uncoord_sim"] <= 1.06


def test_load_runs_match_the_bounds(quick_run: dict[str, Any]) -> None:
    """The direct runs at 0.6, 0.8 and 1.0 of the coordinated bound (N = 8, SLO 25 ms)."""
    k, c, slo, n = 1_082_000, 5_204_000, 25 * MS, 8
    overhead = 800_000  # the simulator's dispatch delay + reply cost
    coord = analytic_bound(n, k, c, slo, max_batch=64)
    assert coord.batch == 15
    runs = {(q["policy"], q["load"]): q for q in quick_run["doc"]["point"]["runs"]}
    sym = {x: runs[(DEFAULT_POLICY, x)] for x in (0.6, 0.8, 1.0)}
    unc = {x: runs[(sim_table.BASELINE, x)] for x in (0.6, 0.8, 1.0)}

    def biggest(q: dict[str, Any]) -> int:
        return max(b for b, count in enumerate(q["batch_size_histogram"]) if count)

    # symphony: below its search threshold (~0.91 of the bound) it misses nothing (1.0
    # at 0.6 and 0.8 for seeds 1-8); at the bound itself Poisson bursts cost it a few %
    # (0.932-0.967), never the 99% it would need to sustain the bound
    assert sym[0.6]["attainment"] >= 0.998 and sym[0.8]["attainment"] >= 0.998
    assert 0.90 <= sym[1.0]["attainment"] < 0.99
    # its batches follow the policy's rule l(b) + max(l(b)/N, b/rate) <= SLO - overheads
    # (13 at 0.6, 14 at 0.8; seeds 1-8: means 12.82-13.01 and 13.52-13.65) and never
    # average above b* = 15 of the bound
    profile = Profile(k, c, 64)
    for load in (0.6, 0.8):
        target = target_batch(
            profile, rate_per_ns=load * coord.goodput_rps / 1e9, n_workers=n, budget_ns=slo - overhead
        )
        assert abs(sym[load]["mean_batch_size"] - target) <= 1.0, (load, target)
    assert all(q["mean_batch_size"] <= coord.batch for q in sym.values())
    # the baseline runs with the knobs tuned at this point; its capacity is 0.67-0.70 of
    # the coordinated bound (above). Below it (0.6) it keeps up (1.0 for seeds 1-6);
    # above it, it cannot hold 99% (0.64-0.79 at 0.8) and at the bound it collapses
    # (0.06-0.12), its queues full: batches at its max batch (means 0.94-0.97 of it)
    cap = unc[1.0]["knobs"]["max_batch"]
    assert all(q["knobs"]["max_batch"] == cap and biggest(q) <= cap for q in unc.values())
    assert unc[0.6]["attainment"] >= 0.99
    assert unc[0.8]["attainment"] < 0.9 and unc[1.0]["attainment"] < 0.2
    assert unc[1.0]["attainment"] < unc[0.8]["attainment"]
    assert biggest(unc[1.0]) == cap and unc[1.0]["mean_batch_size"] >= 0.9 * cap
    # nothing refused: exact profiles, no noise
    assert all(q["batches_refused"] == 0 for q in runs.values())


def test_pngs_are_valid(quick_run: dict[str, Any]) -> None:
    from matplotlib import image

    plots = quick_run["dir"] / "plots"
    for name in sim_table.PLOT_FILES.values():
        path = plots / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        pixels = image.imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 200
        assert pixels.std() > 0.01  # not a blank canvas
    assert sorted(Path(p).name for p in quick_run["doc"]["plots"]) == sorted(sim_table.PLOT_FILES.values())


def test_replot_from_results(quick_run: dict[str, Any], tmp_path: Path) -> None:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = sim_table.main(["--replot", str(quick_run["dir"] / "grid.json"), "--plots", str(tmp_path)])
    assert rc == 0
    for name in sim_table.PLOT_FILES.values():
        assert (tmp_path / name).read_bytes()[:8] == PNG_SIGNATURE, name


def test_table_printed(quick_run: dict[str, Any]) -> None:
    out = quick_run["stdout"]
    assert "/coord+oh" in out and "/uncoord bound" in out
    table = [
        ln
        for ln in out.splitlines()
        if ln.split()[:2] in ([DEFAULT_POLICY, "poisson"], [sim_table.BASELINE, "poisson"])
    ]
    assert len(table) == 4
    assert "[  4/4]" in out  # progress, one line per search
    assert "total wall time" in out


def test_no_plots_single_job(tmp_path: Path) -> None:
    rc = sim_table.main(
        [
            "--quick",
            "--jobs",
            "1",
            "--no-plots",
            "-n",
            "2",
            "--policy",
            sim_table.BASELINE,
            "--out",
            str(tmp_path / "g.json"),
            "--plots",
            str(tmp_path / "p"),
        ]
    )
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
