"""Replay a trace against a peer, and tune a peer's batching knobs; what the harness calls.

Theory of operation: ``replay_peer`` starts the named peer (N replicas of the emulated
model ``l(b) = k*b + c``, given knobs), sends one request per trace arrival open loop
(``common.send_open_loop``), stops the peer, and turns the records into per-request arrays
on the trace's clock (ns from the run's start) that ``bench.metrics`` takes as they are:
``arrival_ns`` is when the request actually left the sender, ``deadline_ns`` that plus the
SLO, ``finish_ns`` when its answer arrived (-1: none), ``outcome`` an ``Outcome`` code. How
late each send was against the trace (``send_lateness_ns``) is reported beside them, not
charged to the peer. The outcome of a request: ``OK``/``LATE`` for HTTP 200 by/after its
deadline, ``DROPPED`` for any other HTTP answer (the peer refused it, e.g. Triton's queue
timeout), ``UNFINISHED`` when nothing came back within the SLO plus ``grace_s`` (a hang).

``PeerSession`` keeps one peer (one knob setting) up across several replays, as a live
goodput search needs: starting Ray Serve with N = 8 replicas takes ~18 s on the 2-core VM
and stopping it ~4 s, against ~5 s and ~6 s for PyTriton. Before each replay after the
first it *drains* the peer: lone requests until one comes back HTTP 200 within the SLO, so
the backlog an overloaded replay left (requests the sender gave up on that the peer still
holds) is not charged to the next. A peer that does not drain within ``drain_timeout_s``
is restarted; every start and drain is timed and reported (``starts``, ``drains``).

``tune_peer`` replays one seeded Poisson trace at a fixed offered rate once per (max batch,
queue delay) setting, restarting the peer each time (the knobs are start-up arguments),
and picks the setting with the highest goodput (ties: higher attainment, then the smaller
batch, then the shorter delay). Every setting tried is returned, one whose server failed to
start with its ``error`` (``PeerFailed`` only if all failed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.metrics import (
    NS_PER_S,
    Outcome,
    goodput_rps,
    latency_percentiles,
    met_slo,
    outcome_counts,
    slo_attainment,
)
from central.client.load import poisson_times

from . import ray_peer, triton_peer
from .common import (
    REC_BATCH,
    REC_DONE,
    REC_PLANNED,
    REC_SENT,
    REC_STATUS,
    STATUS_NO_ANSWER,
    Knobs,
    PeerFailed,
    http_infer,
    send_open_loop,
)

__all__ = ["PEERS", "PeerSession", "available", "default_grid", "drain", "replay_peer", "tune_peer"]

PEERS = ("ray", "triton")


def available(peer_name: str, python: str | None = None) -> str | None:
    """``None`` when ``peer_name`` can run here, else a reason naming what is missing.

    Raises ``ValueError`` for an unknown peer.
    """
    if peer_name == "ray":
        return ray_peer.available(python)
    if peer_name == "triton":
        return triton_peer.available(python)
    raise ValueError(f"unknown peer {peer_name!r}; peers are {', '.join(PEERS)}")


def _make(
    peer_name: str,
    n: int,
    k_ms: float,
    c_ms: float,
    knobs: Knobs,
    slo_ns: int,
    python: str | None,
    log_dir: str | Path | None,
) -> Any:
    if peer_name == "ray":
        return ray_peer.RayPeer(n, k_ms, c_ms, knobs, python=python, log_dir=log_dir)
    if peer_name == "triton":
        return triton_peer.TritonPeer(
            n, k_ms, c_ms, knobs, queue_timeout_us=slo_ns // 1000, python=python, log_dir=log_dir
        )
    raise ValueError(f"unknown peer {peer_name!r}; peers are {', '.join(PEERS)}")


def records_to_run(rec: np.ndarray, slo_ns: int, span_ns: int) -> dict[str, Any]:
    """Per-request arrays (ns from the first planned send) and a summary, from records."""
    start = int(rec[:, REC_PLANNED].min()) if len(rec) else 0
    planned = rec[:, REC_PLANNED] - start
    arrival = rec[:, REC_SENT] - start
    answered = rec[:, REC_STATUS] != STATUS_NO_ANSWER
    finish = np.where(answered, rec[:, REC_DONE] - start, -1).astype(np.int64)
    deadline = arrival + slo_ns
    ok_http = rec[:, REC_STATUS] == 200
    outcome = np.full(len(rec), int(Outcome.UNFINISHED), dtype=np.int8)
    outcome[answered] = int(Outcome.DROPPED)
    outcome[ok_http] = int(Outcome.LATE)
    outcome[ok_http & (finish <= deadline)] = int(Outcome.OK)
    batch = rec[:, REC_BATCH].astype(np.int64)
    lateness = rec[:, REC_SENT] - rec[:, REC_PLANNED]
    met = ok_http & met_slo(finish, deadline)
    served_batches = batch[ok_http & (batch > 0)]
    statuses, counts = np.unique(rec[:, REC_STATUS], return_counts=True)
    summary = {
        "requests": len(rec),
        "slo_attainment": slo_attainment(met),
        "goodput_rps": goodput_rps(met, max(1, span_ns)),
        "offered_rps": len(rec) * NS_PER_S / max(1, span_ns),
        "outcomes": outcome_counts(outcome),
        "http_status": {int(s): int(c) for s, c in zip(statuses, counts)},
        # batches = sum over served requests of 1/b (each batch of b counted once)
        "mean_batch_size": (
            float(served_batches.size / np.sum(1.0 / served_batches)) if served_batches.size else 0.0
        ),
        "latency_ms": latency_percentiles(arrival, finish),
        "send_lateness_ms": (
            {f"p{p:g}": float(np.percentile(lateness, p)) / 1e6 for p in (50, 99, 100)} if len(rec) else {}
        ),
    }
    return {
        "planned_ns": planned,
        "arrival_ns": arrival,
        "deadline_ns": deadline,
        "finish_ns": finish,
        "outcome": outcome,
        "drop_reason": np.full(len(rec), -1, dtype=np.int64),  # peers give no reason codes
        "batch_size": batch,
        "send_lateness_ns": lateness,
        "span_ns": span_ns,
        "summary": summary,
    }


def replay_peer(
    peer_name: str,
    arrivals_ns: np.ndarray,
    slo_ns: int,
    k_ms: float,
    c_ms: float,
    n_replicas: int,
    knobs: Knobs,
    *,
    span_ns: int | None = None,
    senders: int = 1,
    grace_s: float = 2.0,
    python: str | None = None,
    log_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Replay sorted arrival offsets (int64 ns) open loop against a fresh peer.

    Returns ``records_to_run``'s dict plus ``peer``, ``knobs``, ``n_replicas``, the peer's
    ``version`` and ``server_processes`` (``(pid, start time)`` of every process it ran,
    all stopped by then; ``common.alive`` checks). ``span_ns`` is the observation window
    for goodput (default: the last arrival).
    Raises ``PeerUnavailable`` when the peer is not installed, ``PeerFailed`` when it does
    not start, ``ValueError`` for unsorted arrivals or an unknown peer.
    """
    with PeerSession(
        peer_name,
        slo_ns,
        k_ms,
        c_ms,
        n_replicas,
        knobs,
        senders=senders,
        grace_s=grace_s,
        python=python,
        log_dir=log_dir,
    ) as session:
        run = session.play(arrivals_ns, span_ns=span_ns)
        processes = session.processes()
    run["server_processes"] = processes
    return run


def _check_arrivals(arrivals_ns: np.ndarray) -> np.ndarray:
    arrivals = np.asarray(arrivals_ns, dtype=np.int64)
    if arrivals.size and np.any(np.diff(arrivals) < 0):
        raise ValueError("arrivals_ns must be sorted")
    return arrivals


async def _drain(target: Any, slo_s: float, timeout_s: float) -> tuple[bool, int]:
    import aiohttp

    deadline = time.monotonic() + timeout_s
    tries = 0
    async with aiohttp.ClientSession() as session:
        while True:
            tries += 1
            t0 = time.monotonic_ns()
            left = max(0.05, deadline - time.monotonic())
            status, _, done = await http_infer(session, target, min(left, slo_s + 1.0))
            if status == 200 and done - t0 <= slo_s * 1e9:
                return True, tries
            if time.monotonic() >= deadline:
                return False, tries
            await asyncio.sleep(0.2)


def drain(target: Any, slo_ns: int, timeout_s: float = 30.0) -> dict[str, Any]:
    """Lone requests until one is answered HTTP 200 within the SLO, or ``timeout_s`` passes.

    Returns ``{"drained": bool, "seconds": wait, "requests": lone requests sent}``.
    """
    t0 = time.monotonic()
    ok, tries = asyncio.run(_drain(target, slo_ns / 1e9, timeout_s))
    return {"drained": ok, "seconds": time.monotonic() - t0, "requests": tries}


class PeerSession:
    """One peer with one knob setting, kept up across replays (see the module docstring).

    ``play`` replays a trace and returns ``records_to_run``'s dict plus ``peer``, ``knobs``,
    ``n_replicas``, ``version``, and ``drain`` (the drain before it; None for the first
    replay on a fresh server). ``starts`` lists every server start ``{"seconds", "why"}``,
    ``drains`` every drain. A context manager; leaving it stops the peer by PID.
    """

    def __init__(
        self,
        peer_name: str,
        slo_ns: int,
        k_ms: float,
        c_ms: float,
        n_replicas: int,
        knobs: Knobs,
        *,
        senders: int = 1,
        grace_s: float = 2.0,
        drain_timeout_s: float = 30.0,
        python: str | None = None,
        log_dir: str | Path | None = None,
    ) -> None:
        self.peer_name, self.slo_ns, self.knobs = peer_name, slo_ns, knobs
        self._make_args = (peer_name, n_replicas, k_ms, c_ms, knobs, slo_ns, python, log_dir)
        self.n_replicas, self.senders, self.grace_s = n_replicas, senders, grace_s
        self.drain_timeout_s = drain_timeout_s
        self.starts: list[dict[str, Any]] = []
        self.drains: list[dict[str, Any]] = []
        self.stops_s: list[float] = []
        self._peer: Any = None
        self._fresh = False

    def __enter__(self) -> PeerSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self, why: str) -> None:
        t0 = time.monotonic()
        peer = _make(*self._make_args)
        peer.__enter__()  # closes itself when its start fails
        self._peer, self._fresh = peer, True
        self.starts.append({"seconds": time.monotonic() - t0, "why": why})

    def close(self) -> None:
        peer, self._peer = self._peer, None
        if peer is not None:
            t0 = time.monotonic()
            peer.__exit__(None, None, None)
            self.stops_s.append(time.monotonic() - t0)

    def processes(self) -> list[tuple[int, int]]:
        """``(pid, start time)`` of every process the running peer has (empty when stopped)."""
        return self._peer.processes() if self._peer is not None else []

    def play(self, arrivals_ns: np.ndarray, *, span_ns: int | None = None) -> dict[str, Any]:
        """Replay sorted arrival offsets on the running peer (started or drained first)."""
        arrivals = _check_arrivals(arrivals_ns)
        span = span_ns if span_ns is not None else int(arrivals[-1]) + 1 if arrivals.size else 1
        drained: dict[str, Any] | None = None
        if self._peer is None:
            self._start("first start")
        elif not self._fresh:
            drained = drain(self._peer.target, self.slo_ns, self.drain_timeout_s)
            self.drains.append(drained)
            if not drained["drained"]:
                self.close()
                self._start(f"did not drain within {self.drain_timeout_s:g} s")
        self._fresh = False
        rec = send_open_loop(
            self._peer.target, arrivals, wait_s=self.slo_ns / 1e9 + self.grace_s, senders=self.senders
        )
        run = records_to_run(rec, self.slo_ns, span)
        run.update(
            peer=self.peer_name,
            knobs=self.knobs.as_dict(),
            n_replicas=self.n_replicas,
            version=self._peer.info.get("ray") or self._peer.info.get("pytriton"),
            drain=drained,
        )
        return run


def default_grid(k_ms: float, c_ms: float, slo_ms: float, *, reduced: bool = False) -> list[Knobs]:
    """Max batch around the uncoordinated bound's batch, times queue delays of 0-30% SLO.

    The uncoordinated batch ``b_u`` is the largest with ``2*(k*b + c) <= SLO``; the sizes
    tried are ``b_u/2``, ``b_u`` and ``2*b_u``, the delays 0, 5, 15 and 30% of the SLO
    (Ray Serve closes a batch when its wait times out, busy replica or not, so it needs
    the long ones to batch at all): 12 settings. ``reduced`` keeps the six that won or
    came close in docs/peers.md's runs, sizes ``b_u`` and ``2*b_u`` times delays 5, 15 and
    30%, for runs that must fit a time budget (each setting is a fresh server start).
    """
    b_u = max(1, int((slo_ms / 2 - c_ms) // k_ms))
    if reduced:
        sizes, fractions = [b_u, 2 * b_u], (0.05, 0.15, 0.30)
    else:
        sizes, fractions = sorted({max(1, b_u // 2), b_u, 2 * b_u}), (0.0, 0.05, 0.15, 0.30)
    delays = [int(slo_ms * 1000 * f) for f in fractions]  # in us
    return [Knobs(b, d) for b in sizes for d in delays]


def tune_peer(
    peer_name: str,
    rate_rps: float,
    duration_s: float,
    slo_ns: int,
    k_ms: float,
    c_ms: float,
    n_replicas: int,
    grid: list[Knobs] | None = None,
    *,
    seed: int = 1,
    senders: int = 1,
    python: str | None = None,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Score every knob setting at one offered Poisson rate; returns the best and all tried.

    ``{"best": {...}, "tried": [{"knobs", "goodput_rps", "slo_attainment",
    "mean_batch_size", "p99_ms", "send_lateness_p99_ms"}, ...], "rate_rps": ...}``.
    """
    grid = grid if grid is not None else default_grid(k_ms, c_ms, slo_ns / 1e6)
    arrivals = poisson_times(rate_rps, duration_s, seed)
    tried = []
    for knobs in grid:
        try:
            run = replay_peer(
                peer_name,
                arrivals,
                slo_ns,
                k_ms,
                c_ms,
                n_replicas,
                knobs,
                span_ns=int(duration_s * NS_PER_S),
                senders=senders,
                python=python,
            )
        except PeerFailed as exc:  # one setting's server failed: say so, score the rest
            log(f"  {peer_name} {knobs.as_dict()}: the peer failed: {exc}")
            tried.append({"knobs": knobs.as_dict(), "error": str(exc)})
            continue
        s = run["summary"]
        row = {
            "knobs": knobs.as_dict(),
            "goodput_rps": s["goodput_rps"],
            "slo_attainment": s["slo_attainment"],
            "mean_batch_size": s["mean_batch_size"],
            "p99_ms": s["latency_ms"]["p99"],
            "send_lateness_p99_ms": s["send_lateness_ms"].get("p99", 0.0),
        }
        tried.append(row)
        log(
            f"  {peer_name} max_batch={knobs.max_batch:3d} delay={knobs.queue_delay_us:7d} us: "
            f"goodput {row['goodput_rps']:7.1f} req/s, attainment {row['slo_attainment']:.4f}, "
            f"mean batch {row['mean_batch_size']:.2f}"
        )
    scored = [r for r in tried if "error" not in r]
    if not scored:
        raise PeerFailed(f"{peer_name} failed at every setting tried; first: {tried[0]['error']}")
    best = max(
        scored,
        key=lambda r: (
            r["goodput_rps"],
            r["slo_attainment"],
            -r["knobs"]["max_batch"],
            -r["knobs"]["queue_delay_us"],
        ),
    )
    return {"peer": peer_name, "rate_rps": rate_rps, "duration_s": duration_s, "best": best, "tried": tried}
