"""Open-loop Poisson load with per-request records, on the wire ledger or the SDK.

Theory of operation: arrival times are drawn up front from a seeded generator (so a run
is reproducible), split round-robin over ``senders`` processes when one process cannot
keep up, and each sender fires every request at its planned time without waiting for
earlier ones (open loop). Each request records its planned and actual send time, when its
first answer came, its terminal status and how many replies it got; ``summarize`` turns
records into SLO attainment, goodput, send-time lateness and the requests never answered
or answered twice. The default sender is the wire ledger (``central.client.ledger``: a
raw socket that sees every reply frame, so a lost or duplicated answer shows);
``sender="sdk"`` sends through ``AsyncClient`` instead, to measure the SDK itself.
Bounded: it stops after ``duration_s`` plus the longest wait, whatever the server does.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from central.protocol.messages import Status

from .client import AsyncClient
from .errors import BatonError, ClientTimeout
from .ledger import NO_ANSWER, play

__all__ = ["LoadSpec", "poisson_times", "run_load", "summarize"]


@dataclass(frozen=True)
class LoadSpec:
    address: str
    model: str
    rate_rps: float
    duration_s: float
    slo_ms: float
    seed: int = 1
    payload_bytes: int = 64  # float32 zeros plus an index, the emulated model sums them
    senders: int = 1
    grace_s: float = 5.0
    sender: str = "wire"  # "wire": the ledger's raw socket; "sdk": AsyncClient
    listen_s: float = 0.5  # the ledger listens this long after the last answer (duplicates)

    def __post_init__(self) -> None:
        if self.sender not in ("wire", "sdk"):
            raise ValueError(f"sender must be 'wire' or 'sdk', not {self.sender!r}")


def poisson_times(rate_rps: float, duration_s: float, seed: int) -> np.ndarray[Any, Any]:
    """Arrival offsets in ns, Poisson at ``rate_rps`` over ``duration_s`` (seeded)."""
    rng = np.random.default_rng(seed)
    n = int(rate_rps * duration_s * 1.2) + 16
    gaps = rng.exponential(1.0 / rate_rps, size=n)
    t = np.cumsum(gaps)
    offsets: np.ndarray[Any, Any] = (t[t < duration_s] * 1e9).astype(np.int64)
    return offsets


_progress: Any = None  # a shared counter of answered requests (run_load's ``progress``)


def _count_answer() -> None:
    if _progress is not None:
        with _progress.get_lock():
            _progress.value += 1


def _set_progress(counter: Any) -> None:
    global _progress
    _progress = counter


async def _send_all(spec: LoadSpec, offsets: np.ndarray[Any, Any], start_ns: int) -> np.ndarray[Any, Any]:
    # records: planned, sent, done (ns, absolute monotonic, at the client's socket), status,
    # replies (the SDK shows at most one; its ``duplicates`` counter is all it knows more)
    rec = np.zeros((len(offsets), 5), dtype=np.int64)
    rec[:, 3] = NO_ANSWER
    floats = max(1, spec.payload_bytes // 4)
    client = AsyncClient(spec.address, grace_s=spec.grace_s)
    tasks = []

    async def one(i: int) -> None:
        x = np.zeros(floats, dtype=np.float32)
        x[0] = float(i)
        result, sent, received = await client.infer_timed(spec.model, {"x": x}, spec.slo_ms)
        rec[i, 1] = sent
        if isinstance(result, ClientTimeout):
            return  # no answer: the record keeps NO_ANSWER
        rec[i, 2] = received
        rec[i, 3] = int(result.status) if isinstance(result, BatonError) else int(Status.OK)
        rec[i, 4] = 1
        _count_answer()

    try:
        for i, off in enumerate(offsets):
            planned = start_ns + int(off)
            rec[i, 0] = planned
            delay = (planned - time.monotonic_ns()) / 1e9
            if delay > 0.0002:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(i)))
        if tasks:
            await asyncio.wait(tasks, timeout=spec.slo_ms / 1e3 + spec.grace_s + 1.0)
    finally:
        for t in tasks:
            t.cancel()
        await client.close()
    return rec


def _sender(spec: LoadSpec, offsets: np.ndarray[Any, Any], start_ns: int) -> np.ndarray[Any, Any]:
    import gc

    gc.collect()
    gc.freeze()  # collector pauses would show up as send lateness and latency
    gc.set_threshold(100_000, 50, 1000)
    if spec.sender == "wire":
        run = play(
            spec.address,
            offsets,
            spec.model,
            spec.slo_ms,
            send_slo=True,
            payload_floats=max(1, spec.payload_bytes // 4),
            grace_s=spec.grace_s,
            listen_s=spec.listen_s,
            start_ns=start_ns,
            on_first_answer=_count_answer,
        )
        return run.records()

    import uvloop

    return uvloop.run(_send_all(spec, offsets, start_ns))


def run_load(
    spec: LoadSpec, offsets: np.ndarray[Any, Any] | None = None, progress: Any = None
) -> np.ndarray[Any, Any]:
    """Run the load; returns records ``[planned_ns, sent_ns, done_ns, status, replies]``
    per request (``done_ns`` and ``status`` of the first reply).

    ``offsets`` (sorted ns from the start) replaces the Poisson arrivals, to replay a
    trace; ``progress`` is a ``multiprocessing.Value("q")`` (spawn context) bumped once
    per answered request, for a progress bar. A status of -1 (``NO_ANSWER``) means no
    answer arrived before the run ended (a hang: a bug); ``replies`` > 1 a request
    answered more than once (a bug the SDK would hide; only the wire sender sees it).
    """
    if offsets is None:
        offsets = poisson_times(spec.rate_rps, spec.duration_s, spec.seed)
    if spec.senders <= 1:
        _set_progress(progress)
        try:
            return _sender(spec, offsets, time.monotonic_ns() + 200_000_000)
        finally:
            _set_progress(None)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        spec.senders, mp_context=ctx, initializer=_set_progress, initargs=(progress,)
    ) as pool:
        # warm the processes first so start-up cost does not eat the schedule
        list(pool.map(_noop, range(spec.senders)))
        start = time.monotonic_ns() + 500_000_000
        parts = [offsets[i :: spec.senders] for i in range(spec.senders)]
        futures = [pool.submit(_sender, spec, p, start) for p in parts]
        recs = [f.result() for f in futures]
    out = np.concatenate(recs)
    ordered: np.ndarray[Any, Any] = out[np.argsort(out[:, 0], kind="stable")]
    return ordered


def _noop(_: int) -> None:
    import central.client  # noqa: F401  (import cost paid before the clock starts)


def summarize(rec: np.ndarray[Any, Any], slo_ms: float, duration_s: float) -> dict[str, Any]:
    """SLO attainment, goodput, outcome counts (by first answer), the requests never
    answered and answered twice, and send lateness of a run's records."""
    n = len(rec)
    status = rec[:, 3]
    latency_ms = (rec[:, 2] - rec[:, 1]) / 1e6
    ok = status == int(Status.OK)
    good = ok & (latency_ms <= slo_ms)
    late_ms = (rec[:, 1] - rec[:, 0]) / 1e6
    counts = {s.name.lower(): int(np.sum(status == int(s))) for s in Status}
    counts["no_answer"] = int(np.sum(status == NO_ANSWER))
    return {
        "requests": n,
        # a lost or duplicated answer is a bug, whatever the load: tests assert both are 0
        "never_answered": counts["no_answer"],
        "answered_twice": int(np.sum(rec[:, 4] > 1)) if rec.shape[1] > 4 else 0,
        "offered_rps": n / duration_s if duration_s else 0.0,
        "goodput_rps": float(np.sum(good)) / duration_s if duration_s else 0.0,
        "slo_attainment": float(np.mean(good)) if n else 0.0,
        "outcomes": counts,
        "latency_ms": {
            "p50": float(np.percentile(latency_ms[ok], 50)) if ok.any() else None,
            "p99": float(np.percentile(latency_ms[ok], 99)) if ok.any() else None,
        },
        "send_lateness_ms": {
            "p50": float(np.percentile(late_ms, 50)) if n else 0.0,
            "p99": float(np.percentile(late_ms, 99)) if n else 0.0,
        },
    }
