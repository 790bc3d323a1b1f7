"""The metric functions over plain arrays (shared by the simulator and live replay)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench import metrics
from bench.metrics import Outcome
from central.policy import BatchStatus, DropReason

MS = 1_000_000


def test_slo_metrics_on_hand_made_arrays() -> None:
    deadline = np.array([10, 10, 10, 10])
    finish = np.array([5, 10, 11, -1])
    met = metrics.met_slo(finish, deadline)
    assert met.tolist() == [True, True, False, False]
    assert metrics.slo_attainment(met) == 0.5
    assert metrics.slo_attainment([]) == 1.0
    assert metrics.goodput_rps(met, 2 * 1_000_000_000) == 1.0
    with pytest.raises(ValueError):
        metrics.goodput_rps(met, 0)


def test_outcomes_and_drop_reasons_are_counted_by_name() -> None:
    outcome = [Outcome.OK, Outcome.OK, Outcome.LATE, Outcome.DROPPED, Outcome.DROPPED, -1]
    assert metrics.outcome_counts(outcome) == {
        "UNFINISHED": 1,
        "OK": 2,
        "LATE": 1,
        "REFUSED": 0,
        "DROPPED": 2,
    }
    reasons = [-1, -1, -1, DropReason.SHED, DropReason.DEADLINE, 42]
    assert metrics.drops_by_reason(reasons) == {"DEADLINE": 1, "SHED": 1, "REASON_42": 1}
    assert metrics.drops_by_reason([-1, -1]) == {}


def test_batch_metrics() -> None:
    sizes = np.array([1, 3, 3, 8])
    assert metrics.mean_batch_size(sizes) == 3.75
    assert metrics.mean_batch_size([]) == 0.0
    hist = metrics.batch_size_histogram(sizes, max_batch=10)
    assert hist.tolist() == [0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 0]
    assert metrics.batch_size_histogram([]).tolist() == [0]
    busy = metrics.busy_fraction([0, 0, 2], [0, 50, 10], [25, 75, 20], n_workers=4, span_ns=100)
    assert busy.tolist() == [0.5, 0.0, 0.1, 0.0]


def test_latency_percentiles_skip_unfinished() -> None:
    lat = metrics.latency_percentiles([0, 0, 0], [2 * MS, 4 * MS, -1], percentiles=(50, 100))
    assert lat == {"p50": 3.0, "p100": 4.0}
    assert np.isnan(metrics.latency_percentiles([0], [-1])["p50"])


def test_summarize_is_plain_data() -> None:
    s = metrics.summarize(
        arrival_ns=[0, 0, 0],
        deadline_ns=[10, 10, 10],
        finish_ns=[5, 20, -1],
        outcome=[Outcome.OK, Outcome.LATE, Outcome.DROPPED],
        drop_reason=[-1, -1, 0],
        batch_size=[2, 1],
        batch_worker=[0, 1],
        batch_start_ns=[0, 7],
        batch_end_ns=[4, 7],
        batch_status=[BatchStatus.OK, BatchStatus.TOO_LATE],
        n_workers=2,
        span_ns=10,
    )
    json.dumps(s)
    assert s["slo_attainment"] == pytest.approx(1 / 3)
    assert s["batches_refused"] == 1 and s["mean_batch_size"] == 2.0
    assert s["drops_by_reason"] == {"DEADLINE": 1}
    assert s["busy_fraction_max"] == 0.4
