"""The discrete-event driver: one policy, simulated workers, a trace, virtual time.

Theory of operation. Three sources of events are merged in time order:

* arrivals, straight from the trace's sorted arrays (no heap entry per request):
  arrivals at the same nanosecond are coalesced into one ``RequestsArrived``;
* a heap of ``(time_ns, seq, BatchDone)``, one entry per dispatched batch;
* the policy's own wake-up, ``next_wakeup_ns()`` (plus a seeded timer lateness), which
  becomes a ``Tick``.

At equal times a ``BatchDone`` goes first, then arrivals, then the ``Tick``. Every event
is fed to ``policy.handle(event, now)``, exactly as the live runtime does, and the
returned actions are carried out at once:

* ``Dispatch``: the worker gets the Execute and the payloads ``dispatch_delay_ns`` later
  and runs its batches in arrival order, so the start is ``max(earliest, the worker's
  free time, now + dispatch_delay)``, known already. Past ``latest`` the worker refuses:
  ``BatchDone(TOO_LATE)`` at that moment, its requests fail (``REFUSED``) and the worker's
  free time does not move. Otherwise it runs for the true ``l(b)`` times the seeded noise;
  ``BatchDone(OK)`` arrives at the end and each request's result is back at ``end +
  reply_cost_ns`` (``OK`` if that is by its deadline, else ``LATE``).
* ``Drop``: its requests end ``DROPPED`` with the reason.

``SimConfig.pauses`` models a machine that stood still: an arrival, a Tick, a batch's
start or end or a reply that falls inside a pause happens at the pause's end instead
(deadlines still count from the trace's arrival times).

Invariants are checked as actions are carried out, in O(batch): nothing dispatched after
its latest start or with an empty window, no batch larger than the executor's maximum
(or empty), batches only on a worker that serves the model and only of that model's
requests, head first in deadline order, and every request queued before it is
dispatched or dropped, exactly once; after the run, every request has ended. A breach
raises ``InvariantViolation`` (``SimConfig.strict``) or is counted in the result.

The same trace, cluster, config and seed give the same result: all randomness comes from
``numpy`` generators seeded from ``SimConfig.seed`` and nothing iterates over a set.
This module does no I/O; it reads the wall clock only to report its own speed.
"""

from __future__ import annotations

import bisect
import heapq
import math
import time
from typing import Any

import numpy as np

from bench.sim.config import Cluster, SimConfig
from bench.sim.result import SimResult
from bench.traces.trace import Trace
from central.policy import Policy, PolicyConfig, make_policy
from central.policy.types import (
    BatchDone,
    BatchStatus,
    Dispatch,
    Drop,
    Request,
    RequestsArrived,
    Tick,
    WorkerJoined,
)

__all__ = ["InvariantViolation", "SimulationError", "policy_config_for", "simulate",
           "simulate_policy"]

_CHUNK = 8192  # noise and timer-lateness draws are made this many at a time
_SPIN_LIMIT = 100_000  # Ticks at one instant before the run is declared a livelock
_UNSEEN, _QUEUED, _ENDED = 0, 1, 2
_OK, _LATE, _REFUSED, _DROPPED, _UNFINISHED = 0, 1, 2, 3, 255  # bench.metrics.Outcome
_NONE = 255  # no drop reason (int8 -1 once viewed as signed)


class InvariantViolation(AssertionError):
    """The policy broke the driver contract (strict mode); the message says how."""


class SimulationError(RuntimeError):
    """The run cannot go on: the policy asks for a Tick at one instant forever."""


def policy_config_for(cluster: Cluster, config: SimConfig, **overrides: Any) -> PolicyConfig:
    """A ``PolicyConfig`` that knows the cluster's true profiles and the sim's overheads.

    ``overrides`` replace any field (``shed_fraction=0``, ``profiles={...}``...).
    """
    fields: dict[str, Any] = {
        "profiles": dict(cluster.profiles),
        "dispatch_cost_ns": config.dispatch_delay_ns,
        "reply_cost_ns": config.reply_cost_ns,
        "timer_slack_ns": max(PolicyConfig().timer_slack_ns, config.tick_lateness_ns),
    }
    fields.update(overrides)
    return PolicyConfig(**fields)


def simulate_policy(
    name: str,
    trace: Trace,
    cluster: Cluster,
    config: SimConfig | None = None,
    policy_config: PolicyConfig | None = None,
) -> SimResult:
    """Build policy ``name`` (``make_policy``) and simulate it; see ``simulate``.

    Without ``policy_config`` the policy gets ``policy_config_for(cluster, config)``.
    """
    config = config if config is not None else SimConfig()
    pcfg = policy_config if policy_config is not None else policy_config_for(cluster, config)
    return simulate(make_policy(name, pcfg), trace, cluster, config)


class _Noise:
    """Seeded duration factors and jitter, drawn in chunks."""

    def __init__(self, config: SimConfig) -> None:
        self._n = config.noise
        self._rng = np.random.default_rng([config.seed, 0])
        self._f: list[float] = []
        self._j: list[int] = []
        self._i = _CHUNK

    def duration(self, latency: int) -> int:
        if self._i == _CHUNK:
            self._refill()
        i = self._i
        self._i = i + 1
        return max(1, int(latency * self._f[i]) + self._j[i])

    def _refill(self) -> None:
        n, rng = self._n, self._rng
        if n.cv > 0:
            sigma2 = math.log1p(n.cv * n.cv)
            f = rng.lognormal(-sigma2 / 2, math.sqrt(sigma2), _CHUNK)
        else:
            f = np.ones(_CHUNK)
        if n.outlier_prob > 0:
            f = np.where(rng.random(_CHUNK) < n.outlier_prob, f * n.outlier_factor, f)
        j = rng.integers(0, n.jitter_ns + 1, _CHUNK) if n.jitter_ns else np.zeros(_CHUNK, int)
        self._f, self._j, self._i = f.tolist(), j.tolist(), 0


class _Pauses:
    """``after(t)``: ``t``, or the end of the pause that holds it."""

    def __init__(self, config: SimConfig) -> None:
        self._lo = [p[0] for p in config.pauses]
        self._hi = [p[1] for p in config.pauses]

    def __bool__(self) -> bool:
        return bool(self._lo)

    def after(self, t: int) -> int:
        i = bisect.bisect_right(self._lo, t) - 1
        return self._hi[i] if i >= 0 and t < self._hi[i] else t


class _Lateness:
    """Seeded timer lateness, uniform in [0, max_ns], drawn in chunks."""

    def __init__(self, config: SimConfig) -> None:
        self._max = config.tick_lateness_ns
        self._rng = np.random.default_rng([config.seed, 1])
        self._buf: list[int] = []
        self._i = 0

    def draw(self) -> int:
        if not self._max:
            return 0
        if self._i == len(self._buf):
            self._buf = self._rng.integers(0, self._max + 1, _CHUNK).tolist()
            self._i = 0
        self._i += 1
        return self._buf[self._i - 1]


def simulate(policy: Policy, trace: Trace, cluster: Cluster, config: SimConfig | None = None
             ) -> SimResult:
    """Run ``policy`` (fresh, never used) over ``trace`` on ``cluster``; return the record.

    Request ``i`` is the trace's ``i``-th arrival (its ``request_id`` is ``i``); worker
    ``i`` is ``cluster.workers[i]``, joining at time 0 with the true profiles as its
    offline measurements. Raises ``ValueError`` when a trace model has no SLO,
    ``InvariantViolation`` on a breach in strict mode and ``SimulationError`` on a
    policy that livelocks.
    """
    config = config if config is not None else SimConfig()
    wall0 = time.perf_counter()
    names = trace.models
    missing = [m for m in names if m not in cluster.slo_ns]
    if missing:
        raise ValueError(f"trace models {missing} have no SLO in the cluster")
    models = list(names) + [m for m in cluster.profiles if m not in names]
    index = {m: i for i, m in enumerate(models)}
    n = len(trace)
    n_workers = cluster.n_workers
    pauses = _Pauses(config)

    # ---- per request, as plain lists: list indexing is the fastest thing Python has
    slo = np.asarray([cluster.slo_ns[m] for m in names], dtype=np.int64)
    deadline_arr = trace.times_ns + slo[trace.model_ids]
    times = trace.times_ns.tolist()
    deadline = deadline_arr.tolist()
    model_of = trace.model_ids.tolist()
    size_of = trace.sizes.tolist() if trace.sizes is not None else None
    if n:
        cuts = (np.flatnonzero(np.diff(trace.times_ns)) + 1).tolist()
        group_lo = [0, *cuts]
        group_hi = [*cuts, n]
        group_at = [times[i] for i in group_lo]
        if pauses:  # an arrival in a pause is seen at its end (still in order)
            group_at = [pauses.after(t) for t in group_at]
    else:
        group_lo, group_hi, group_at = [], [], []
    n_groups = len(group_lo)
    state = bytearray(n)
    outcome = bytearray(b"\xff") * n
    reason = bytearray(b"\xff") * n
    finish = [-1] * n
    batch_of = [-1] * n

    # ---- per model and per worker
    max_batch = [cluster.profiles[m].max_batch if m in cluster.profiles else 0 for m in models]
    latency = [
        [cluster.profiles[m].latency_ns(b) for b in range(cluster.profiles[m].max_batch + 1)]
        if m in cluster.profiles else []
        for m in models
    ]
    serves = [frozenset(index[m] for m in ms) for ms in cluster.workers]
    busy = [0] * n_workers  # when each worker is free of the batches it accepted

    # ---- per batch, in dispatch order
    b_id: list[int] = []
    b_worker: list[int] = []
    b_model: list[int] = []
    b_size: list[int] = []
    b_decided: list[int] = []
    b_earliest: list[int] = []
    b_latest: list[int] = []
    b_expected: list[int] = []
    b_start: list[int] = []
    b_end: list[int] = []
    b_status: list[int] = []

    violations: dict[str, int] = {}
    examples: list[str] = []
    strict = config.strict

    def violate(kind: str, detail: str) -> None:
        violations[kind] = violations.get(kind, 0) + 1
        if len(examples) < 20:
            examples.append(f"{kind}: {detail}")
        if strict:
            raise InvariantViolation(f"{kind}: {detail}")

    delay = config.dispatch_delay_ns
    reply = config.reply_cost_ns
    noise = None if config.noise.silent else _Noise(config)
    lateness = _Lateness(config)
    heap: list[tuple[int, int, BatchDone]] = []
    seq = 0
    ended = 0  # requests that have ended (dispatched or dropped)
    OK, TOO_LATE, FAILED = BatchStatus.OK, BatchStatus.TOO_LATE, BatchStatus.FAILED

    def dispatch(d: Dispatch, now: int) -> None:
        nonlocal seq, ended
        rids = d.request_ids
        b = len(rids)
        m = index.get(d.model, -1)
        w = d.worker_id
        earliest, latest = d.earliest_ns, d.latest_ns
        status = OK
        if now > latest:
            violate("dispatch_after_latest", f"batch {d.batch_id} decided at {now} > latest {latest}")
        if earliest > latest:
            violate("empty_window", f"batch {d.batch_id}: earliest {earliest} > latest {latest}")
        if m < 0 or not 0 <= w < n_workers or m not in serves[w]:
            violate("wrong_worker", f"batch {d.batch_id} of {d.model!r} on worker {w}")
            status = FAILED
        elif not 1 <= b <= max_batch[m]:
            violate("batch_size", f"batch {d.batch_id} of {b} (max {max_batch[m]})")
            status = FAILED
        bi = len(b_id)
        valid = []
        head = deadline[rids[0]] if b and 0 <= rids[0] < n else 0
        for r in rids:
            if not 0 <= r < n or state[r] != _QUEUED:
                what = "unknown" if not 0 <= r < n else ("not arrived", "", "already ended")[state[r]]
                violate("not_queued", f"batch {d.batch_id} holds request {r} ({what})")
                continue
            if model_of[r] != m:
                violate("wrong_model", f"batch {d.batch_id} of {d.model!r} holds request {r}")
            if deadline[r] < head:
                violate("head_not_first", f"batch {d.batch_id}: request {r} due before the head")
            state[r] = _ENDED
            batch_of[r] = bi
            valid.append(r)
        ended += len(valid)
        ready = now + delay
        if status == OK:
            start = earliest if earliest > ready else ready
            free = busy[w]
            if free > start:
                start = free
            if pauses:
                start = pauses.after(start)
            if start > latest:
                status, end = TOO_LATE, start
            else:
                lat = latency[m][b]
                end = start + (noise.duration(lat) if noise is not None else lat)
                if pauses:
                    end = pauses.after(end)
                busy[w] = end
        else:
            start = end = ready
        if status == OK:
            fin = pauses.after(end + reply) if pauses else end + reply
            for r in valid:
                finish[r] = fin
                outcome[r] = _OK if fin <= deadline[r] else _LATE
        else:
            for r in valid:
                outcome[r] = _REFUSED
        b_id.append(d.batch_id)
        b_worker.append(w)
        b_model.append(m)
        b_size.append(b)
        b_decided.append(now)
        b_earliest.append(earliest)
        b_latest.append(latest)
        b_expected.append(d.expected_ns)
        b_start.append(start)
        b_end.append(end)
        b_status.append(int(status))
        seq += 1
        heapq.heappush(heap, (end, seq, BatchDone(d.batch_id, w, status, start, end, b)))

    def drop(a: Drop) -> None:
        nonlocal ended
        if not a.request_ids:
            violate("empty_drop", f"a Drop with no requests ({a.reason.name})")
        code = int(a.reason)
        for r in a.request_ids:
            if not 0 <= r < n or state[r] != _QUEUED:
                what = "unknown" if not 0 <= r < n else ("not arrived", "", "already ended")[state[r]]
                violate("not_queued", f"drop ({a.reason.name}) of request {r} ({what})")
                continue
            state[r] = _ENDED
            outcome[r] = _DROPPED
            reason[r] = code
            ended += 1

    handle = policy.handle
    next_wakeup = policy.next_wakeup_ns
    n_arrivals = n_done = n_tick = 0  # policy.handle calls by event kind

    def carry_out(actions: list[Any], now: int) -> None:
        for a in actions:
            if type(a) is Dispatch:
                dispatch(a, now)
            elif type(a) is Drop:
                drop(a)
            else:
                violate("unknown_action", repr(a))

    for w, ms in enumerate(cluster.workers):
        profs = tuple((m, cluster.profiles[m]) for m in ms)
        carry_out(handle(WorkerJoined(w, ms, profs), 0), 0)

    inf = 1 << 62
    now = 0
    gi = 0
    armed_for: int | None = None  # the wake-up the current tick_at was drawn for
    tick_at = inf
    last_progress = 0
    spin = 0
    t_arrival = group_at[0] if n_groups else inf
    while True:
        wake = next_wakeup()
        if wake is None:
            tick_at = inf
            armed_for = None
        elif wake != armed_for:
            armed_for = wake
            if wake <= now:
                violate("wakeup_not_after_now", f"asked for {wake} at {now}")
            tick_at = max(wake, now) + lateness.draw()
            if pauses:
                tick_at = pauses.after(tick_at)
        t_done = heap[0][0] if heap else inf
        if t_done <= t_arrival and t_done <= tick_at:
            if t_done == inf:
                break
            now, _, event = heapq.heappop(heap)
            n_done += 1
            spin = 0
            last_progress = now
            carry_out(handle(event, now), now)
        elif t_arrival <= tick_at:
            now = t_arrival
            lo, hi = group_lo[gi], group_hi[gi]
            gi += 1
            t_arrival = group_at[gi] if gi < n_groups else inf
            if hi - lo == 1:  # the common case at ns resolution: no generator
                reqs: tuple[Request, ...] = (Request(
                    lo, names[model_of[lo]], deadline[lo], now,
                    size_of[lo] if size_of is not None else 1,
                ),)
                state[lo] = _QUEUED
            else:
                reqs = tuple(
                    Request(r, names[model_of[r]], deadline[r], now,
                            size_of[r] if size_of is not None else 1)
                    for r in range(lo, hi)
                )
                state[lo:hi] = bytes((_QUEUED,)) * (hi - lo)
            n_arrivals += 1
            spin = 0
            last_progress = now
            carry_out(handle(RequestsArrived(reqs), now), now)
        else:
            if tick_at == now:
                spin += 1
                if spin > _SPIN_LIMIT:
                    raise SimulationError(f"the policy asks for a Tick at {now} forever")
            else:
                spin = 0
            now = tick_at
            armed_for = None  # delivered: a repeated wake-up is a new request
            if gi == n_groups and not heap and now - last_progress > config.stall_ns:
                violate("stalled", f"nothing but Ticks for {config.stall_ns} ns from {last_progress}")
                break
            n_tick += 1
            actions = handle(Tick(), now)
            if actions:
                last_progress = now
            carry_out(actions, now)
        if ended == n and gi == n_groups and not heap:
            break  # everything arrived, ended and ran: later Ticks change nothing
    unfinished = n - ended
    if unfinished:
        first = state.index(_QUEUED) if _QUEUED in state else -1
        violate("unfinished", f"{unfinished} requests never ended (first: {first})")

    return SimResult(
        models=tuple(models),
        n_workers=n_workers,
        span_ns=trace.span_ns,
        end_ns=now,
        model_ids=trace.model_ids,
        arrival_ns=trace.times_ns,
        deadline_ns=deadline_arr,
        finish_ns=np.asarray(finish, dtype=np.int64),
        outcome=np.frombuffer(bytes(outcome), dtype=np.int8).copy(),
        drop_reason=np.frombuffer(bytes(reason), dtype=np.int8).copy(),
        batch_of=np.asarray(batch_of, dtype=np.int64),
        batch_id=np.asarray(b_id, dtype=np.int64),
        batch_worker=np.asarray(b_worker, dtype=np.int64),
        batch_model=np.asarray(b_model, dtype=np.int64),
        batch_size=np.asarray(b_size, dtype=np.int64),
        batch_decided_ns=np.asarray(b_decided, dtype=np.int64),
        batch_earliest_ns=np.asarray(b_earliest, dtype=np.int64),
        batch_latest_ns=np.asarray(b_latest, dtype=np.int64),
        batch_expected_ns=np.asarray(b_expected, dtype=np.int64),
        batch_start_ns=np.asarray(b_start, dtype=np.int64),
        batch_end_ns=np.asarray(b_end, dtype=np.int64),
        batch_status=np.asarray(b_status, dtype=np.int64),
        reply_cost_ns=reply,
        violations=dict(violations),
        violation_examples=tuple(examples),
        handle_calls={"arrivals": n_arrivals, "done": n_done, "tick": n_tick,
                      "joined": n_workers},
        wall_s=time.perf_counter() - wall0,
    )
