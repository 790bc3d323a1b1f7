"""What the scheduler counts: the stats snapshot's counters, the batch log, the metrics.

A part of the scheduler's shell (``Scheduler`` and ``SplitScheduler`` both hold one).
Per-model counters and histograms are bumped as events happen (an increment or a bisect
each); ``metric_families`` turns them into Prometheus families (docs/metrics.md lists
each), ``snapshot`` into the counter half of ``stats()`` (docs/protocol.md, StatsReply).
The batch log holds one ``BatchRecord`` per finished batch; JSON carries each as a list.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

from central.plumbing.clock import LatenessLog
from central.plumbing.metrics import BATCH_SIZE_BUCKETS, Family, Histogram
from central.policy.types import BatchStatus, Dispatch, DropReason
from central.protocol import Done
from central.protocol.records import BatchRecord

from .registry import Registry

__all__ = ["Accounting", "percentiles_us"]

_STATUS_NAME = {int(s): s.name for s in BatchStatus}  # Done.status -> label, no enum call
_RAN = (int(BatchStatus.OK), int(BatchStatus.FAILED))  # statuses of batches that ran


def percentiles_us(log: LatenessLog, with_max: bool = True) -> dict[str, float]:
    """``p50``, ``p99`` (and ``max``) of a lateness log, in microseconds."""
    out = {"p50": log.percentile(0.5) / 1e3, "p99": log.percentile(0.99) / 1e3}
    if with_max:
        out["max"] = log.percentile(1.0) / 1e3
    return out


class Accounting:
    """Counters, per-model counters and histograms, and the batch log."""

    def __init__(self, batch_log: int, started_ns: int) -> None:
        self.started_ns = started_ns
        self.counters: dict[str, int] = {
            "messages_in": 0,
            "bytes_in": 0,
            "request_messages": 0,
            "request_bytes_in": 0,
            "requests_in": 0,
            "batches": 0,
            "batched_requests": 0,
            "dropped": 0,
            "protocol_errors": 0,
        }
        self.drops_by_reason: dict[str, int] = {r.name: 0 for r in DropReason}
        self.done_by_status: dict[str, int] = {}
        self.batch_sizes: dict[int, int] = {}
        self.busy_ns: dict[int, int] = {}
        self.batches: deque[BatchRecord] = deque(maxlen=batch_log)
        self.batches_logged = 0  # batch records ever appended (the PUB's cursor)
        # per model, for /metrics
        self.model_requests: Counter[str] = Counter()
        self.model_drops: dict[tuple[str, str], int] = {}  # (model, reason) -> requests
        self.model_batches: dict[str, int] = {}
        self.model_batched_requests: dict[str, int] = {}
        self.model_done: dict[tuple[str, str], list[int]] = {}  # (model, status) -> [b, r]
        self.batch_size_hist: dict[str, Histogram] = {}
        self.queue_hist: dict[str, Histogram] = {}
        self.exec_hist: dict[str, Histogram] = {}

    def bump(self, key: str, n: int = 1) -> None:
        """Add ``n`` to a counter that exists only once something happened."""
        self.counters[key] = self.counters.get(key, 0) + n

    # ---------------------------------------------------------------- events

    def dispatched(self, action: Dispatch) -> Histogram:
        """Count a dispatched batch; returns its model's queue-time histogram, for the
        caller to observe each request's wait in its one pass over them."""
        model, n = action.model, len(action.request_ids)
        counters = self.counters
        counters["batches"] += 1
        counters["batched_requests"] += n
        self.batch_sizes[n] = self.batch_sizes.get(n, 0) + 1
        self.model_batches[model] = self.model_batches.get(model, 0) + 1
        self.model_batched_requests[model] = self.model_batched_requests.get(model, 0) + n
        sizes = self.batch_size_hist.get(model)
        if sizes is None:
            sizes = self.batch_size_hist[model] = Histogram(BATCH_SIZE_BUCKETS)
        sizes.observe(n)
        queue = self.queue_hist.get(model)
        if queue is None:
            queue = self.queue_hist[model] = Histogram()
        return queue

    def dropped(self, reason: str, models: list[str]) -> None:
        """Count a drop of requests of ``models`` (one entry per request; "" unknown)."""
        n = len(models)
        self.counters["dropped"] += n
        self.drops_by_reason[reason] += n
        drops = self.model_drops
        for model in models:
            key = (model, reason)
            drops[key] = drops.get(key, 0) + 1

    def done(self, msg: Done, worker_id: int, entry: tuple[Dispatch, int] | None) -> None:
        """A worker's ``Done`` for a batch this scheduler dispatched (``entry``: the
        dispatch and when it was sent; None if it was not in flight any more)."""
        status = str(msg.status)
        self.done_by_status[status] = self.done_by_status.get(status, 0) + 1
        self.busy_ns[worker_id] = self.busy_ns.get(worker_id, 0) + max(0, msg.end_ns - msg.start_ns)
        if entry is None:
            return
        action, sent = entry
        model = action.model
        status_name = _STATUS_NAME.get(msg.status, status)
        done = self.model_done.setdefault((model, status_name), [0, 0])
        done[0] += 1
        done[1] += msg.batch_size
        if msg.status in _RAN:  # it ran (not refused)
            hist = self.exec_hist.get(model)
            if hist is None:
                hist = self.exec_hist[model] = Histogram()
            hist.observe(max(0, msg.end_ns - msg.start_ns) / 1e9)
        self.batches_logged += 1
        self.batches.append(
            BatchRecord(
                batch_id=msg.batch_id,
                worker=worker_id,
                model=model,
                size=msg.batch_size,
                sent_ns=sent,
                earliest_ns=action.earliest_ns,
                latest_ns=action.latest_ns,
                start_ns=msg.start_ns,
                end_ns=msg.end_ns,
                status=msg.status,
            )
        )

    # ---------------------------------------------------------------- readers

    def snapshot(self, now: int) -> dict[str, Any]:
        """The counter half of the scheduler's ``stats()``."""
        return {
            "uptime_s": (now - self.started_ns) / 1e9,
            "counters": dict(self.counters),
            "drops_by_reason": dict(self.drops_by_reason),
            "done_by_status": dict(self.done_by_status),
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "busy_ns": {str(k): v for k, v in self.busy_ns.items()},
        }

    def batch_log(self) -> list[list[Any]]:
        """The whole batch log, oldest first, each record as a JSON list."""
        return [list(b) for b in self.batches]

    def recent_batches(self, count: int) -> list[list[Any]]:
        """The last ``count`` batch records (fewer if the log holds fewer), oldest first."""
        count = min(count, len(self.batches))
        return [list(self.batches[-i]) for i in range(count, 0, -1)]

    def busy_ratios(self, now: int, window: int, workers: Mapping[int, object]) -> dict[int, float]:
        """Per worker: the fraction of the last ``window`` ns covered by batches that
        finished (a batch still running is not counted), from the batch log."""
        since = now - window
        busy: dict[int, int] = dict.fromkeys(workers, 0)
        for i in range(len(self.batches) - 1, -1, -1):
            rec = self.batches[i]
            if rec.end_ns < since - window:  # the log is in finish order; allow stragglers
                break
            overlap = min(rec.end_ns, now) - max(rec.start_ns, since)
            if overlap > 0 and rec.worker in busy:
                busy[rec.worker] += overlap
        return {gid: min(1.0, ns / window) for gid, ns in busy.items()}

    def metric_families(
        self,
        now: int,
        registry: Registry,
        policy: Mapping[str, Any],
        lateness: LatenessLog,
        busy_window_ns: int,
    ) -> list[Family]:
        """The scheduler's Prometheus families (docs/metrics.md lists each); ``policy``
        is the policy's snapshot as plain data."""
        fams: list[Family] = []

        def fam(name: str, kind: str, text: str) -> Family:
            f = Family(name, kind, text)
            fams.append(f)
            return f

        fam(
            "baton_scheduler_requests_total",
            "counter",
            "Requests whose metadata reached the scheduler, per model.",
        ).add_all(self.model_requests, "model")
        fam(
            "baton_scheduler_requests_dropped_total",
            "counter",
            "Requests the scheduler dropped before they ran, per model and reason.",
        ).add_all(self.model_drops, "model", "reason")
        fam(
            "baton_scheduler_batches_total", "counter", "Batches dispatched (Execute sent), per model."
        ).add_all(self.model_batches, "model")
        fam(
            "baton_scheduler_batched_requests_total", "counter", "Requests dispatched in batches, per model."
        ).add_all(self.model_batched_requests, "model")
        f = fam(
            "baton_scheduler_batches_done_total",
            "counter",
            "Batches a worker reported Done, per model and batch status.",
        )
        g = fam(
            "baton_scheduler_executed_requests_total",
            "counter",
            "Requests in batches a worker reported Done, per model and batch status.",
        )
        for (model, status), (nb, nr) in sorted(self.model_done.items()):
            f.add(nb, model=model, status=status)
            g.add(nr, model=model, status=status)
        fam("baton_scheduler_batch_size", "histogram", "Requests per dispatched batch, per model.").add_all(
            self.batch_size_hist, "model"
        )
        fam(
            "baton_scheduler_queue_seconds",
            "histogram",
            "Per request: scheduler receipt of its metadata to the dispatch of its batch.",
        ).add_all(self.queue_hist, "model")
        fam(
            "baton_scheduler_execution_seconds",
            "histogram",
            "Per batch that ran (OK or FAILED): end_ns - start_ns from its Done.",
        ).add_all(self.exec_hist, "model")
        f = fam(
            "baton_scheduler_worker_busy_seconds_total",
            "counter",
            "Per worker: sum of its finished batches' execution times.",
        )
        for gid, ns in sorted(self.busy_ns.items()):
            f.add(ns / 1e9, worker=str(gid))
        f = fam(
            "baton_scheduler_worker_busy_ratio",
            "gauge",
            "Per live worker: fraction of the last busy_window executing finished batches.",
        )
        for gid, ratio in sorted(self.busy_ratios(now, busy_window_ns, registry.gpu).items()):
            proc, index = registry.gpu[gid]
            f.add(ratio, worker=str(gid), process=proc.name, gpu=str(index))
        models = policy.get("models", {})
        gauges = (
            (
                "baton_scheduler_model_profile_k_seconds",
                "k_ns",
                "The policy's current profile slope k of l(b) = k*b + c, per model.",
            ),
            (
                "baton_scheduler_model_profile_c_seconds",
                "c_ns",
                "The policy's current profile intercept c of l(b) = k*b + c, per model.",
            ),
            (
                "baton_scheduler_model_margin_seconds",
                "margin_ns",
                "The policy's safety margin on batch latency, per model.",
            ),
        )
        for name, key, text in gauges:
            f = fam(name, "gauge", text)
            for model, m in sorted(models.items()):
                if isinstance(m, dict) and isinstance(m.get(key), (int, float)):
                    f.add(m[key] / 1e9, model=model)
        f = fam("baton_scheduler_model_queue_length", "gauge", "Requests queued at the policy, per model.")
        for model, m in sorted(models.items()):
            if isinstance(m, dict) and isinstance(m.get("queue"), int):
                f.add(m["queue"], model=model)
        fam("baton_scheduler_workers", "gauge", "Live workers (GPUs).").add(len(registry.gpu))
        fam("baton_scheduler_frontends", "gauge", "Frontend registrations.").add(len(registry.frontends))
        fam("baton_scheduler_protocol_errors_total", "counter", "Messages refused as malformed.").add(
            self.counters["protocol_errors"]
        )
        fam("baton_scheduler_uptime_seconds", "gauge", "Seconds since the scheduler started.").add(
            (now - self.started_ns) / 1e9
        )
        f = fam(
            "baton_scheduler_timer_lateness_seconds",
            "gauge",
            "Lateness of the scheduler's timer wake-ups over the recent log.",
        )
        for q, label in ((0.5, "0.5"), (0.99, "0.99"), (1.0, "1")):
            f.add(lateness.percentile(q) / 1e9, quantile=label)
        return fams
