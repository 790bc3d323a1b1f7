"""``bench.matrix``'s table and target logic on synthetic search results (no servers)."""

from __future__ import annotations

import math

import pytest

from bench import matrix
from bench.replay import Setup, bisect_rate, search_result, sim_attainment


def _found(goodput: float, fail: float | str | None = "above") -> dict:
    """A search that passed at ``goodput`` and failed at ``fail`` (default: 6% above it;
    None: no probe failed)."""
    fail = goodput * 1.06 if fail == "above" else fail
    return {
        "goodput_rps": goodput,
        "rate_rps": goodput,
        "attainment": 0.995,
        "fail_rps": fail,
        "probes": [{"rate_rps": goodput, "passed": True, "attainment": 0.995, "send_late_p99_ms": 1.0}],
    }


def _none_passed(fail: float) -> dict:
    return {
        "goodput_rps": None,
        "rate_rps": None,
        "attainment": None,
        "fail_rps": fail,
        "probes": [{"rate_rps": fail, "passed": False, "attainment": 0.5, "send_late_p99_ms": 9.0}],
    }


def _doc(cells: list[dict]) -> dict:
    return {
        "command": ".venv/bin/python -m bench.matrix --probes 4",
        "started": "2026-11-30 11:00 UTC",
        "wall_s": 600.0,
        "machine": {
            "arch": "x86_64",
            "cores": 2,
            "python": "3.11.7",
            "gpu": None,
            "load_before": [0.5, 0.6, 0.7],
            "load_after": [1.5, 1.2, 0.9],
        },
        "settings": {
            "n": 8,
            "dilation": 8.0,
            "probes": 4,
            "duration_s": 6.0,
            "senders": 1,
            "k_ms": 1.082,
            "c_ms": 5.204,
            "max_batch": 64,
            "baton_lo_frac": 0.3,
            "other_lo_frac": 0.05,
            "hi_frac": 1.05,
            "systems": ["baton", "baton-uncoordinated", "triton", "ray"],
        },
        "cells": cells,
        "tuning": {},
    }


def _cell(slo: float, trace: str, bound: float, **systems: dict) -> dict:
    return {
        "slo_ms": slo,
        "trace": trace,
        "bound_rps": bound,
        "systems": {k.replace("_", "-"): v for k, v in systems.items()},
    }


def _status(doc: dict) -> dict[tuple[str, float, str], str]:
    return {(t["id"], t["slo_ms"], t["trace"]): t["status"] for t in matrix.targets(doc)}


def test_interval_ratio_and_judgement() -> None:
    assert matrix.interval(_found(500.0, 550.0)) == (500.0, 500.0)
    # no probe failed: the search's ceiling, not the system's, ended it
    assert matrix.interval(_found(500.0, None)) == (500.0, math.inf)
    assert matrix.interval(_none_passed(80.0)) == (0.0, 80.0)
    assert matrix.interval({"skipped": "no ray"}) is None
    assert matrix.interval({"error": "PeerFailed: boom"}) is None
    assert matrix.interval(None) is None
    assert matrix.ratio((600.0, 600.0), (300.0, 300.0)) == (2.0, 2.0)
    # the divisor is only known to be below 80: the ratio is above 600/80
    assert matrix.ratio((600.0, 600.0), (0.0, 80.0)) == (7.5, math.inf)
    assert matrix.ratio((0.0, 80.0), (700.0, 700.0)) == (0.0, 80.0 / 700.0)
    assert matrix.ratio(None, (1.0, 1.0)) is None
    assert matrix.judge((2.0, 2.0), 2.0) == "met"
    assert matrix.judge((1.99, 1.99), 2.0) == "not met"
    assert matrix.judge((7.5, math.inf), 2.0) == "met"
    assert matrix.judge((1.5, math.inf), 2.0) == "undetermined"
    assert matrix.judge((0.0, 0.11), 0.9) == "not met"
    assert matrix.judge((0.0, 0.95), 0.9) == "undetermined"
    assert matrix.judge(None, 0.9) == "undetermined"
    assert matrix.fmt_interval((7.5, math.inf)) == ">= 7.50"
    assert matrix.fmt_interval((0.0, math.inf)) == "?"
    assert matrix.fmt_interval((0.0, 0.114)) == "< 0.11"
    assert matrix.fmt_interval((1.0, 1.0)) == "1.00"
    assert matrix.fmt_interval(None) == "?"


def test_targets_met_and_not_met_by_cell() -> None:
    doc = _doc(
        [
            # SLO 25: Baton at 0.91 of the bound, 1.4x uncoordinated, > 2x both peers
            _cell(
                25.0,
                "poisson",
                700.0,
                baton=_found(637.0, 670.0),
                baton_uncoordinated=_found(455.0),
                triton=_found(300.0),
                ray=_none_passed(80.0),
            ),
            # SLO 25 on the log: Baton below 0.9, uncoordinated close, a peer within 2x
            _cell(
                25.0,
                "azure",
                700.0,
                baton=_found(560.0),
                baton_uncoordinated=_found(500.0),
                triton=_found(400.0),
                ray=_found(60.0),
            ),
            # SLO 100: 0.96 of the bound; ray skipped, so the best peer is not known
            _cell(
                100.0,
                "poisson",
                860.0,
                baton=_found(826.0),
                baton_uncoordinated=_found(800.0),
                triton=_found(350.0),
                ray={"skipped": "no interpreter at .venv/ray/bin/python"},
            ),
            # SLO 100: Baton passed no probe at all
            _cell(
                100.0,
                "azure",
                860.0,
                baton=_none_passed(300.0),
                baton_uncoordinated=_found(200.0),
                triton=_found(100.0),
                ray=_found(40.0),
            ),
        ]
    )
    st = _status(doc)
    assert st[("bound-25", 25.0, "poisson")] == "met"
    assert st[("uncoord-25", 25.0, "poisson")] == "met"
    assert st[("peer", 25.0, "poisson")] == "met"  # 637 / 300 = 2.12; ray < 80
    assert st[("bound-25", 25.0, "azure")] == "not met"  # 0.8
    assert st[("uncoord-25", 25.0, "azure")] == "not met"  # 1.12
    assert st[("peer", 25.0, "azure")] == "not met"  # 1.4
    assert st[("bound-100", 100.0, "poisson")] == "met"  # 0.96
    assert st[("peer", 100.0, "poisson")] == "undetermined"
    assert st[("bound-100", 100.0, "azure")] == "not met"  # < 300/860
    assert st[("peer", 100.0, "azure")] == "undetermined"  # < 3x of 100: maybe below 2x
    # the 25 ms targets are not judged at 100 ms and vice versa
    assert ("bound-100", 25.0, "poisson") not in st and ("uncoord-25", 100.0, "azure") not in st
    assert len(st) == 3 * 2 + 2 * 2  # three targets at 25 ms, two at 100 ms
    why = {(t["id"], t["trace"], t["slo_ms"]): t["why"] for t in matrix.targets(doc)}
    assert why[("peer", "poisson", 100.0)] == "no result for ray"


def test_markdown_table_names_machine_dilation_ratios_and_targets() -> None:
    doc = _doc(
        [
            _cell(
                25.0,
                "poisson",
                700.0,
                baton=_found(630.0),
                baton_uncoordinated=_found(420.0),
                triton=_found(315.0),
                ray=_none_passed(126.0),
            )
        ]
    )
    doc["targets"] = matrix.targets(doc)
    md = matrix.markdown(doc)
    assert "x86_64, 2 cores" in md and "no GPU" in md and "dilation x8" in md
    assert "0.50/0.60/0.70" in md and "1.50/1.20/0.90" in md
    assert "`.venv/bin/python -m bench.matrix --probes 4`" in md
    row = next(line for line in md.splitlines() if line.startswith("| 25 ms | poisson"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == [
        "25 ms",
        "poisson",
        "700.0",
        "630.0 (0.90)",
        "420.0 (0.67)",
        "315.0 (0.50)",
        "< 126.0 (< 0.20)",
        "1.50",
        "2.00",
    ]
    assert "| Baton >= 0.9 of the analytic bound at SLO 25 ms | 25 ms | poisson | 0.90 | met |" in md
    assert "| Baton >= 1.3x baton-uncoordinated at SLO 25 ms | 25 ms | poisson | 1.50 | met |" in md
    assert "| Baton >= 2x the best peer | 25 ms | poisson | 2.00 | met |" in md


def test_skipped_and_failed_systems_show_in_the_table() -> None:
    doc = _doc(
        [
            _cell(
                25.0,
                "azure",
                700.0,
                baton=_found(600.0),
                baton_uncoordinated={"skipped": "time budget spent"},
                triton={"error": "PeerFailed: not ready within 120 s\nlog..."},
                ray={"skipped": "no ray"},
            )
        ]
    )
    md = matrix.markdown(doc)
    assert "skipped (time budget spent)" in md and "failed (PeerFailed: not ready within 120 s)" in md
    st = _status(doc)
    assert st[("uncoord-25", 25.0, "azure")] == "undetermined"
    assert st[("peer", 25.0, "azure")] == "undetermined"


class _Setup:
    """Just what ``bisect_rate`` reads of a ``Setup``."""

    def bound_rps(self) -> float:
        return 1000.0


@pytest.mark.parametrize(("capacity", "lo_frac"), [(640.0, 0.3), (90.0, 0.05), (20.0, 0.05)])
def test_bisection_and_its_answer(capacity: float, lo_frac: float) -> None:
    def probe(rate: float) -> dict:
        att = 1.0 if rate <= capacity else 0.9
        return {
            "slo_attainment": att,
            "goodput_rps": rate * att,
            "offered_rps": rate,
            "requests": int(rate),
            "send_lateness_ms": {"p99": 1.0},
        }

    probes = bisect_rate(_Setup(), probe, iters=5, lo_frac=lo_frac)  # type: ignore[arg-type]
    assert len(probes) == 5
    assert probes[0]["rate_rps"] == pytest.approx((lo_frac + 1.05) / 2 * 1000)
    r = search_result(probes)
    step = (1.05 - lo_frac) * 1000 / 2**5
    if capacity < lo_frac * 1000 + step:  # below every probe: only an upper bound
        assert r["goodput_rps"] is None and r["fail_rps"] == min(p["rate_rps"] for p in probes)
        assert matrix.interval(r) == (0.0, r["fail_rps"])
    else:
        assert capacity - 2 * step <= r["rate_rps"] <= capacity
        assert r["fail_rps"] is None or r["rate_rps"] < r["fail_rps"] <= capacity + 2 * step
        assert r["goodput_rps"] == pytest.approx(r["rate_rps"])


def test_a_search_that_never_failed_gives_only_a_lower_bound() -> None:
    # every probe passed: Baton's goodput is at least 774 (0.9 of 860), maybe more, but
    # not above what 8 devices run at batch 64 (859.6 req/s) plus answers within one SLO
    # of the 6 s probe's end: 859.6 * (6 + 0.8) / 6 = 974.2
    doc = _doc(
        [
            _cell(
                100.0,
                "azure",
                860.0,
                baton=_found(774.0, None),
                baton_uncoordinated=_found(760.0, None),
                triton=_found(300.0),
                ray=_found(100.0),
            ),
            _cell(
                100.0,
                "poisson",
                860.0,
                baton=_found(830.0, None),
                baton_uncoordinated=_found(700.0),
                triton=_found(500.0),
                ray=_found(100.0),
            ),
        ]
    )
    assert matrix.ceiling_rps(doc["settings"], 100.0) == pytest.approx(8 * 64 / 0.595616 * 6.8 / 6)
    st = _status(doc)
    assert st[("bound-100", 100.0, "azure")] == "undetermined"  # 0.90-1.13: maybe >= 0.95
    assert st[("peer", 100.0, "azure")] == "met"  # >= 774 / 300
    assert st[("bound-100", 100.0, "poisson")] == "met"  # >= 0.965
    assert st[("peer", 100.0, "poisson")] == "not met"  # 830-974 over 500: 1.66-1.95
    md = matrix.markdown(doc)
    row = next(line for line in md.splitlines() if line.startswith("| 100 ms | azure"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3:5] == [">= 774.0 (0.90-1.13)", ">= 760.0 (0.78-1.26)"]
    assert cells[-2:] == ["0.79-1.28", "2.58-3.25"]


def _setup(slo_ms: float = 25.0) -> Setup:
    return Setup(
        n=8,
        k_ms=1.082,
        c_ms=5.204,
        slo_ms=slo_ms,
        max_batch=64,
        dilation=1.0,
        trace_kind="poisson",
        cv=1.0,
        csv=None,
        duration_s=0.5,
        senders=1,
        seed=1,
    )


def test_the_simulator_check_tells_a_light_trace_from_an_overload() -> None:
    setup = _setup()
    bound = setup.bound_rps()
    light = sim_attainment(setup, setup.trace(0.5 * bound), "symphony")
    overload = sim_attainment(setup, setup.trace(1.5 * bound), "symphony")
    assert light == 1.0
    assert overload < 0.9
    # the uncoordinated policy is the weaker one on the same arrivals near the bound
    near = setup.trace(0.85 * bound)
    assert sim_attainment(setup, near, "uncoordinated") < sim_attainment(setup, near, "symphony")


def test_probe_lines_and_settings_show_the_bracket_and_the_simulator() -> None:
    found = _found(630.0)
    found["probes"][0]["sim_attainment"] = 0.9987
    doc = _doc([_cell(25.0, "poisson", 700.0, baton=found)])
    doc["settings"].update(baton_lo_frac=0.84, baton_hi_frac=0.96)
    md = matrix.markdown(doc)
    assert "bracket 0.84-0.96 (Baton)" in md
    assert "630+(0.995, late 1, sim 0.999)" in md


@pytest.mark.parametrize("bracket", [["0.9", "0.8"], ["0", "0.5"], ["0.5", "0.5"]])
def test_a_bad_baton_bracket_is_refused_before_anything_runs(
    bracket: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert matrix.main(["--systems", "baton", "--baton-bracket", *bracket]) == 2
    assert "--baton-bracket needs 0 < LO < HI" in capsys.readouterr().err


def test_live_uncoordinated_knobs_are_read_from_stats_and_shown() -> None:
    """The live ``baton-uncoordinated``'s report names the knobs its scheduler ran (from stats)."""
    from bench.replay import MODEL, policy_knobs

    stats = {"policy": {"models": {MODEL: {"max_batch_used": 6, "max_queue_delay_ns": 93_568_000}}}}
    knobs = policy_knobs(stats)
    assert knobs is not None
    assert (knobs["max_batch"], knobs["queue_delay_us"]) == (6, 93_568)
    assert "defaults" in knobs["source"]
    assert policy_knobs({"policy": {"models": {MODEL: {"batch": 14}}}}) is None  # symphony
    assert policy_knobs({}) is None
    line = matrix._probe_line("baton-uncoordinated", {**_found(400.0), "knobs": knobs})
    assert "knobs max batch 6, delay 93.568 ms (analytic defaults" in line


def _tried(b: int, delay_us: int, attainment: float, goodput: float, why: str = "") -> dict:
    return {
        "knobs": {"max_batch": b, "queue_delay_us": delay_us},
        "why": why or "simulator's next",
        "slo_attainment": attainment,
        "goodput_rps": goodput,
        "send_lateness_p99_ms": 2.0,
    }


def test_the_live_uncoordinated_tuning_keeps_attainment_then_goodput() -> None:
    from bench.replay import choose_knobs, uncoord_args

    tried = [
        _tried(10, 16_024, 0.981, 231.0, "simulator's best"),
        _tried(6, 187_136, 0.942, 222.0, "analytic defaults"),
        _tried(12, 0, 0.993, 228.0),  # the highest attainment wins over more goodput
        _tried(8, 0, 0.993, 229.5),  # same attainment, more goodput: this one
        {"knobs": {"max_batch": 16, "queue_delay_us": 0}, "why": "x", "error": "RuntimeError"},
    ]
    assert choose_knobs(tried)["knobs"] == {"max_batch": 8, "queue_delay_us": 0}
    # a tie on both (the live probes did not tell them apart): the grid's order, i.e.
    # the simulator's preference, not the smaller batch (that picked the defaults)
    tie = [
        _tried(10, 16_024, 1.0, 237.6, "simulator's best"),
        _tried(10, 0, 1.0, 237.6),
        _tried(6, 187_136, 1.0, 237.6, "analytic defaults"),
    ]
    assert choose_knobs(tie)["knobs"] == {"max_batch": 10, "queue_delay_us": 16_024}
    assert choose_knobs(tie[::-1])["knobs"] == {"max_batch": 6, "queue_delay_us": 187_136}
    with pytest.raises(ValueError, match="no knob setting"):
        choose_knobs([tried[-1]])
    assert uncoord_args(10, 16_024) == ("--uncoord-max-batch", "10", "--uncoord-queue-delay-us", "16024")


def test_the_report_names_the_tuned_uncoordinated_knobs_and_the_seeded_grid() -> None:
    from bench.replay import choose_knobs

    tried = [
        _tried(10, 16_024, 0.981, 231.0, "simulator's best"),
        _tried(6, 187_136, 0.942, 222.0, "analytic defaults"),
        _tried(8, 0, 0.993, 229.5),
    ]
    tuned = {
        "best": choose_knobs(tried),
        "tried": tried,
        "rate_rps": 236.3,
        "load": 0.95,
        "duration_s": 8.0,
        "wall_s": 75.0,
        "seed": {
            "sim_rate_rps": 248.8,
            "sim_goodput_rps": 247.0,
            "sim_pinned_goodput_rps": 236.1,
            "grid": [],
        },
    }
    ran = {"max_batch": 8, "queue_delay_us": 0, "source": "tuned live; grid seeded by the simulator's tuning"}
    doc = _doc(
        [
            _cell(
                25.0,
                "poisson",
                349.9,
                baton=_found(312.0),
                baton_uncoordinated={**_found(230.0), "knobs": ran},
            )
        ]
    )
    doc["tuning"] = {
        "baton-uncoordinated @ SLO 25 ms": tuned,
        "triton @ SLO 25 ms": {"skipped": "not installed"},
    }
    md = matrix.markdown(doc)
    assert "Live grid seeded by the simulator's tuning" in md
    assert "236.3 req/s (0.95 of the simulator's capacity)" in md
    kept = [line for line in md.splitlines() if "**kept**" in line]
    assert kept == [
        (
            "- max batch 8, delay 0 ms (simulator's next): attainment 0.9930, "
            "goodput 229.5 req/s, send late p99 2.0 ms **kept**"
        )
    ]
    assert "max batch 6, delay 187.136 ms (analytic defaults): attainment 0.9420" in md
    line = matrix._probe_line("baton-uncoordinated", doc["cells"][0]["systems"]["baton-uncoordinated"])
    assert "knobs max batch 8, delay 0 ms (tuned live; grid seeded by the simulator's tuning)" in line
    # the uncoordinated tuning is not listed among the peers', which still are
    peers = md.split("Peer knobs", 1)[1]
    assert "baton-uncoordinated" not in peers and "triton @ SLO 25 ms: not installed" in peers
