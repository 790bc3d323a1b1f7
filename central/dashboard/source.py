"""Where ``baton top`` gets its numbers: the scheduler's stats PUB socket, or polling.

Theory of operation: a source turns scheduler snapshots into a ``Reading`` (what the view
renders). The arithmetic lives in ``Tracker``, which does no I/O and takes the local time
as an argument, so unit tests feed it synthetic snapshots. ``StatsSource`` SUBscribes to
the scheduler's ``[b"stats", json]`` messages (each carries the batches finished since
the previous one in ``recent_batches``); ``PollSource`` asks the scheduler's ROUTER with
``query_stats(with_batches=True)`` from a background thread, for schedulers without the
PUB socket. Neither ever blocks the caller's loop. ``FrontendLatency`` wraps either and
adds each model's p50/p99 latency, which only a frontend can measure.

Rates are deltas of cumulative counters over a sliding window (``rate_window_ns``); the
scheduler's counters are global, so per-model counts are accumulated here from batch
records (``[batch_id, worker_id, model, batch_size, sent_ns, earliest_ns, latest_ns,
start_ns, end_ns, status]``, scheduler clock). The scheduler's clock is estimated as
``local - offset`` with ``offset`` the smallest ``local receive time - newest scheduler
time seen`` (the policy's ``now_ns`` or a batch end): exact on one host, close elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from central.protocol.conventions import BatchStatus
from central.protocol.records import BatchRecord

__all__ = [
    "UNREACHABLE_AFTER_NS",
    "ModelRates",
    "Reading",
    "Tracker",
    "StatsSource",
    "PollSource",
    "FrontendLatency",
]

UNREACHABLE_AFTER_NS = 2_000_000_000  # no stats for longer than this: say so


@dataclass(frozen=True)
class ModelRates:
    """Per-model rates over the tracker's window (None: not derivable yet)."""

    offered_rps: float | None  # requests arriving per second
    offered_exact: bool  # True: from the requests_in counter; False: the policy's estimate
    goodput_rps: float | None  # requests in batches that ran OK inside their window, per s
    slo_fraction: float | None  # OK requests / (batched + dropped) requests in the window
    mean_batch: float | None  # batched requests / batches in the window
    drops: int | None  # cumulative drops (None when drops cannot be attributed to a model)


@dataclass(frozen=True)
class Reading:
    """Everything the view needs for one frame."""

    address: str
    snapshot: dict[str, Any] | None  # the newest scheduler snapshot, None before the first
    age_ns: int | None  # local time since it arrived (None: nothing ever arrived)
    waited_ns: int  # local time since the source started (for "no stats yet")
    sched_now_ns: int | None  # estimate of the scheduler's clock now
    models: dict[str, ModelRates]
    totals: dict[str, float]  # offered_rps, dispatched_rps, dropped_rps over the window
    batches: dict[int, list[BatchRecord]]  # worker id -> recent batch records, by end time
    mode: str  # "pub" or "poll"
    # model -> (p50 ms, p99 ms) of recent OK replies, from a frontend (``FrontendLatency``)
    latency: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def unreachable(self) -> bool:
        gap = self.age_ns if self.age_ns is not None else self.waited_ns
        return self.age_ns is None or gap > UNREACHABLE_AFTER_NS

    @property
    def silent_s(self) -> float:
        """Seconds without stats (since start if none ever came)."""
        return (self.age_ns if self.age_ns is not None else self.waited_ns) / 1e9


@dataclass
class _Sample:
    local_ns: int
    requests_in: int
    batched: int
    dropped: int
    per_model: dict[str, tuple[int, int, int]]  # model -> (ok reqs, all reqs, batches)


@dataclass
class Tracker:
    """Pure accumulation of snapshots into rates and per-worker batch history."""

    address: str
    started_ns: int
    mode: str = "pub"
    rate_window_ns: int = 2_000_000_000
    history_ns: int = 2_000_000_000  # batch records kept per worker (scheduler clock)
    snapshot: dict[str, Any] | None = None
    last_ns: int | None = None
    _offset_ns: int | None = None
    _uptime_s: float = -1.0
    _samples: deque[_Sample] = field(default_factory=deque)
    _cum: dict[str, list[int]] = field(default_factory=dict)  # model -> [ok, all, batches]
    _seen: dict[Any, int] = field(default_factory=dict)  # batch id -> end_ns
    _history: dict[int, list[BatchRecord]] = field(default_factory=dict)
    _horizon_ns: int = -(1 << 62)  # records ending before this are old news

    def update(self, snapshot: dict[str, Any], local_ns: int) -> None:
        """Take one snapshot received at ``local_ns``; batches from ``recent_batches``
        (PUB) or ``batches`` (poll, the scheduler's whole log: duplicates are skipped)."""
        uptime = float(snapshot.get("uptime_s", 0.0))
        if uptime < self._uptime_s:  # the scheduler restarted: start over
            self._reset()
        self._uptime_s = uptime
        records = snapshot.get("recent_batches")
        if records is None:
            records = snapshot.get("batches", [])
        newest = (snapshot.get("policy") or {}).get("now_ns")
        for row in records:
            rec = BatchRecord.of(row)
            self._add_batch(rec)
            newest = rec.end_ns if newest is None else max(newest, rec.end_ns)
        if newest is not None:
            off = local_ns - int(newest)
            self._offset_ns = off if self._offset_ns is None else min(self._offset_ns, off)
        self.snapshot = snapshot
        self.last_ns = local_ns
        counters = snapshot.get("counters", {})
        self._samples.append(
            _Sample(
                local_ns,
                int(counters.get("requests_in", 0)),
                int(counters.get("batched_requests", 0)),
                int(counters.get("dropped", 0)),
                {m: (c[0], c[1], c[2]) for m, c in self._cum.items()},
            )
        )
        while len(self._samples) > 2 and local_ns - self._samples[1].local_ns >= self.rate_window_ns:
            self._samples.popleft()
        self._prune()

    def _reset(self) -> None:
        self._offset_ns = None
        self._samples.clear()
        self._cum.clear()
        self._seen.clear()
        self._history.clear()
        self._horizon_ns = -(1 << 62)

    def _add_batch(self, rec: BatchRecord) -> None:
        if rec.batch_id in self._seen or rec.end_ns < self._horizon_ns:
            return
        self._seen[rec.batch_id] = rec.end_ns
        c = self._cum.setdefault(rec.model, [0, 0, 0])
        if rec.status == BatchStatus.OK:
            c[0] += rec.size
        c[1] += rec.size
        c[2] += 1
        self._history.setdefault(rec.worker, []).append(rec)

    def _prune(self) -> None:
        latest = max(self._seen.values(), default=None)
        if latest is None:
            return
        self._horizon_ns = max(self._horizon_ns, latest - self.history_ns)
        h = self._horizon_ns
        self._seen = {b: e for b, e in self._seen.items() if e >= h}
        for _wid, recs in self._history.items():
            recs[:] = sorted((r for r in recs if r.end_ns >= h), key=lambda r: r.end_ns)

    def reading(self, local_ns: int) -> Reading:
        """The frame to render at local time ``local_ns``."""
        snap = self.snapshot
        models: dict[str, ModelRates] = {}
        totals: dict[str, float] = {}
        first, last = (self._samples[0], self._samples[-1]) if self._samples else (None, None)
        dt = (last.local_ns - first.local_ns) / 1e9 if first and last else 0.0
        policy_models = ((snap or {}).get("policy") or {}).get("models", {})
        names = sorted(set(policy_models) | set(self._cum))
        if dt > 0 and first and last:
            totals = {
                "offered_rps": (last.requests_in - first.requests_in) / dt,
                "dispatched_rps": (last.batched - first.batched) / dt,
                "dropped_rps": (last.dropped - first.dropped) / dt,
            }
        # Drops are counted globally: they belong to a model only when it is the only one.
        sole = names[0] if len(names) == 1 else None
        for name in names:
            pm = policy_models.get(name, {})
            offered: float | None = pm.get("rate_rps")
            exact = False
            good = frac = mean = None
            if dt > 0 and first and last:
                a = first.per_model.get(name, (0, 0, 0))
                b = last.per_model.get(name, (0, 0, 0))
                ok, all_, nb = (b[i] - a[i] for i in range(3))
                good = ok / dt
                drops = last.dropped - first.dropped if name == sole else 0
                if all_ + drops > 0:
                    frac = ok / (all_ + drops)
                mean = all_ / nb if nb else None
                if name == sole:
                    offered, exact = totals["offered_rps"], True
            dropped = int((snap or {}).get("counters", {}).get("dropped", 0)) if name == sole else None
            models[name] = ModelRates(offered, exact, good, frac, mean, dropped)
        sched_now = local_ns - self._offset_ns if self._offset_ns is not None else None
        return Reading(
            address=self.address,
            snapshot=snap,
            age_ns=None if self.last_ns is None else local_ns - self.last_ns,
            waited_ns=local_ns - self.started_ns,
            sched_now_ns=sched_now,
            models=models,
            totals=totals,
            batches={w: list(r) for w, r in self._history.items()},
            mode=self.mode,
        )


def _parse(frames: list[bytes]) -> dict[str, Any] | None:
    if len(frames) != 2 or frames[0] != b"stats":
        return None
    try:
        out = json.loads(frames[1])
    except ValueError:
        return None
    return out if isinstance(out, dict) else None


class StatsSource:
    """SUBscribe to a scheduler's stats PUB socket (``baton scheduler --stats-pub``)."""

    def __init__(
        self,
        address: str,
        *,
        clock: Callable[[], int] = time.monotonic_ns,
        context: Any = None,
        keys: str | None = None,
    ) -> None:
        import zmq

        from central.client.client import secure_socket

        self._clock = clock
        self.tracker = Tracker(address, clock(), mode="pub")
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"stats")
        secure_socket(self._sock, keys, "scheduler", None)
        self._sock.connect(address)

    def poll(self) -> Reading:
        """Drain every queued message (never blocks); returns the current reading."""
        import zmq

        while True:
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            snap = _parse(frames)
            if snap is not None:
                self.tracker.update(snap, self._clock())
        return self.tracker.reading(self._clock())

    def close(self) -> None:
        self._sock.close(linger=0)


class PollSource:
    """Ask the scheduler's ROUTER for stats every ``interval_s`` from a background thread."""

    def __init__(
        self,
        address: str,
        *,
        interval_s: float = 0.25,
        clock: Callable[[], int] = time.monotonic_ns,
        query: Callable[..., dict[str, Any]] | None = None,
        keys: str | None = None,
    ) -> None:
        if query is None:
            from central.client import query_stats

            query = query_stats
        self._query: Callable[..., dict[str, Any]] = query
        self._keys = keys
        self._clock = clock
        self._interval_s = interval_s
        self._address = address
        self.tracker = Tracker(address, clock(), mode="poll")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="baton-top-poll", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                extra = {"keys": self._keys} if self._keys else {}
                snap = self._query(self._address, with_batches=True, timeout_s=1.0, **extra)
            except Exception:  # unreachable or garbled: the reading's age says so
                snap = None
            if snap is not None:
                with self._lock:
                    self.tracker.update(snap, self._clock())
            self._stop.wait(self._interval_s)

    def poll(self) -> Reading:
        with self._lock:
            return self.tracker.reading(self._clock())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


class FrontendLatency:
    """Wrap a source: add each model's recent p50/p99 latency, polled from a frontend.

    The scheduler never sees client latency; the frontend measures accept-to-reply time
    for every request, so ``baton top`` asks it (``StatsQuery`` on its client socket)
    every ``interval_s`` from a background thread. An unreachable frontend leaves the
    latency columns at "-" and changes nothing else.
    """

    def __init__(
        self,
        source: StatsSource | PollSource,
        address: str,
        *,
        interval_s: float = 1.0,
        query: Callable[..., dict[str, Any]] | None = None,
        keys: str | None = None,
        token: str | None = None,
    ) -> None:
        if query is None:
            from central.client import query_stats

            query = query_stats
        self._source = source
        self._query: Callable[..., dict[str, Any]] = query
        self._address = address
        self._interval_s = interval_s
        self._auth = {"keys": keys, "server": "frontend", "token": token} if keys or token else {}
        self._latency: dict[str, tuple[float, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="baton-top-latency", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                stats = self._query(self._address, timeout_s=1.0, **self._auth)
                lat = stats.get("model_latency_ms") or {}
                self._latency = {m: (float(v["p50"]), float(v["p99"])) for m, v in lat.items()}
            except Exception:  # unreachable or garbled: no latency, nothing else changes
                self._latency = {}
            self._stop.wait(self._interval_s)

    def poll(self) -> Reading:
        return dataclasses.replace(self._source.poll(), latency=dict(self._latency))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._source.close()
