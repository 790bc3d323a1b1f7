"""The record of one simulated run: plain numpy columns plus the invariant report.

Theory of operation: the engine fills one row per request (index = request id = the
request's position in the trace) and one row per dispatched batch (in dispatch order),
then freezes them here. Every figure comes from ``bench.metrics`` over these columns,
so the simulator and the live replay harness report the same things the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bench import metrics
from central.policy.types import BatchStatus

__all__ = ["SimResult"]


@dataclass(frozen=True, eq=False)
class SimResult:
    """What happened to every request and batch of one run."""

    models: tuple[str, ...]  # model index -> name (the trace's models first)
    n_workers: int
    span_ns: int  # the trace's observation window (goodput is per second of it)
    end_ns: int  # virtual time of the last event handled
    # per request
    model_ids: np.ndarray  # index into models
    arrival_ns: np.ndarray
    deadline_ns: np.ndarray  # arrival + the model's SLO
    finish_ns: np.ndarray  # result back at the client (end + reply cost); -1: no result
    outcome: np.ndarray  # int8 bench.metrics.Outcome
    drop_reason: np.ndarray  # int8 DropReason value; -1 when not dropped
    batch_of: np.ndarray  # row in the batch columns; -1 when never dispatched
    # per batch, in dispatch order
    batch_id: np.ndarray  # the policy's batch id
    batch_worker: np.ndarray
    batch_model: np.ndarray  # index into models (-1: a model the cluster does not know)
    batch_size: np.ndarray
    batch_decided_ns: np.ndarray  # when the policy sent the Dispatch
    batch_earliest_ns: np.ndarray  # the window it was given
    batch_latest_ns: np.ndarray
    batch_expected_ns: np.ndarray  # the policy's l(b)
    batch_start_ns: np.ndarray  # == end for a refused batch
    batch_end_ns: np.ndarray
    batch_status: np.ndarray  # BatchStatus value
    reply_cost_ns: int
    violations: dict[str, int]  # invariant breaches by kind (empty: none)
    violation_examples: tuple[str, ...]  # the first few, described
    handle_calls: dict[str, int]  # policy.handle calls by event kind
    wall_s: float  # wall-clock seconds the run took

    @property
    def n_requests(self) -> int:
        """How many requests the trace held (every one has a row)."""
        return int(self.outcome.size)

    @property
    def met(self) -> np.ndarray:
        """Per request: served and back by its deadline."""
        return self.outcome == metrics.Outcome.OK

    @property
    def attainment(self) -> float:
        """Fraction of all requests that met their SLO."""
        return metrics.slo_attainment(self.met)

    @property
    def goodput_rps(self) -> float:
        """Requests per second (of the trace's window) that met their SLO."""
        return metrics.goodput_rps(self.met, max(1, self.span_ns))

    @property
    def ran(self) -> np.ndarray:
        """Per batch: it ran (status OK), i.e. was neither refused nor failed."""
        return self.batch_status == BatchStatus.OK

    def head_deadline_ns(self) -> np.ndarray:
        """Per batch, the earliest deadline among its requests (its head's)."""
        head = np.full(self.batch_id.size, np.iinfo(np.int64).max, dtype=np.int64)
        rows = np.flatnonzero(self.batch_of >= 0)
        np.minimum.at(head, self.batch_of[rows], self.deadline_ns[rows])
        return head

    def planned_in_time(self) -> np.ndarray:
        """Per batch: the policy's own plan meets the head's deadline.

        That is ``latest + expected + reply_cost <= head deadline``: started by its latest
        start and taking the time the policy expected, the head's result is back in
        time. A deadline-planning policy makes this claim for every batch; one that
        plans no deadlines (``uncoordinated``) makes it for none or some.
        """
        return self.batch_latest_ns + self.batch_expected_ns + self.reply_cost_ns <= self.head_deadline_ns()

    def late_in_feasible_batches(self) -> int:
        """Batches the policy judged feasible (planned in time, not refused) whose head
        was late. With exact profiles and no noise this must be 0."""
        feasible = self.ran & self.planned_in_time()
        ends = self.batch_end_ns[feasible] + self.reply_cost_ns
        return int(np.count_nonzero(ends > self.head_deadline_ns()[feasible]))

    def summary(self) -> dict[str, Any]:
        """The standard metrics (``bench.metrics.summarize``) plus run facts, as plain data."""
        out = metrics.summarize(
            arrival_ns=self.arrival_ns,
            deadline_ns=self.deadline_ns,
            finish_ns=self.finish_ns,
            outcome=self.outcome,
            drop_reason=self.drop_reason,
            batch_size=self.batch_size,
            batch_worker=self.batch_worker,
            batch_start_ns=self.batch_start_ns,
            batch_end_ns=self.batch_end_ns,
            batch_status=self.batch_status,
            n_workers=self.n_workers,
            span_ns=self.span_ns,
        )
        out["violations"] = dict(self.violations)
        out["handle_calls"] = dict(self.handle_calls)
        out["wall_s"] = self.wall_s
        out["requests_per_wall_s"] = self.n_requests / self.wall_s if self.wall_s > 0 else 0.0
        return out

    def per_model(self) -> dict[str, dict[str, float]]:
        """Requests, attainment and mean batch size per model name."""
        out: dict[str, dict[str, float]] = {}
        met = self.met
        ran = self.ran
        for i, name in enumerate(self.models):
            mine = self.model_ids == i
            count = int(np.count_nonzero(mine))
            sizes = self.batch_size[ran & (self.batch_model == i)]
            out[name] = {
                "requests": count,
                "slo_attainment": metrics.slo_attainment(met[mine]),
                "mean_batch_size": metrics.mean_batch_size(sizes),
            }
        return out
