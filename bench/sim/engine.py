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
from workers.gpu_model import EmulatedGpu, LognormalNoise

__all__ = ["InvariantViolation", "SimulationError", "policy_config_for", "simulate", "simulate_policy"]

_CHUNK = 8192  # noise and timer-lateness draws are made this many at a time
_SPIN_LIMIT = 100_000  # Ticks at one instant before the run is declared a livelock
_UNSEEN, _QUEUED, _ENDED = 0, 1, 2
_OK, _LATE, _REFUSED, _DROPPED, _UNFINISHED = 0, 1, 2, 3, 255  # bench.metrics.Outcome
_NONE = 255  # no drop reason (int8 -1 once viewed as signed)
_STATUS_OK, _STATUS_FAILED = BatchStatus.OK, BatchStatus.FAILED


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


class _Violations:
    """Invariant breaches: counted with up to 20 examples, or raised when ``strict``."""

    def __init__(self, strict: bool) -> None:
        self.counts: dict[str, int] = {}
        self.examples: list[str] = []
        self._strict = strict

    def __call__(self, kind: str, detail: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if len(self.examples) < 20:
            self.examples.append(f"{kind}: {detail}")
        if self._strict:
            raise InvariantViolation(f"{kind}: {detail}")


class _Requests:
    """Per request (index = request id), as plain lists: list indexing is the fastest thing
    Python has. Arrivals are grouped by instant: group ``g`` is requests
    ``lo[g]:hi[g]``, seen at ``at[g]`` (a pause's end when it falls in one)."""

    def __init__(self, trace: Trace, cluster: Cluster, pauses: _Pauses) -> None:
        names = trace.models
        missing = [m for m in names if m not in cluster.slo_ns]
        if missing:
            raise ValueError(f"trace models {missing} have no SLO in the cluster")
        self.names = names
        self.n = n = len(trace)
        slo = np.asarray([cluster.slo_ns[m] for m in names], dtype=np.int64)
        self.deadline_arr = trace.times_ns + slo[trace.model_ids]
        times = trace.times_ns.tolist()
        self.deadline: list[int] = self.deadline_arr.tolist()
        self.model_of: list[int] = trace.model_ids.tolist()
        self.size_of: list[int] | None = trace.sizes.tolist() if trace.sizes is not None else None
        if n:
            cuts = (np.flatnonzero(np.diff(trace.times_ns)) + 1).tolist()
            self.lo, self.hi = [0, *cuts], [*cuts, n]
            self.at = [times[i] for i in self.lo]
            if pauses:  # an arrival in a pause is seen at its end (still in order)
                self.at = [pauses.after(t) for t in self.at]
        else:
            self.lo, self.hi, self.at = [], [], []
        self.n_groups = len(self.lo)
        self.state = bytearray(n)
        self.outcome = bytearray(b"\xff") * n
        self.reason = bytearray(b"\xff") * n
        self.finish = [-1] * n
        self.batch_of = [-1] * n
        self.ended = 0  # requests that have ended (dispatched or dropped)

    def arrive(self, g: int, now: int) -> tuple[Request, ...]:
        """Group ``g``'s requests, seen at ``now``, marked queued."""
        lo, hi = self.lo[g], self.hi[g]
        names, model_of, deadline, size_of = self.names, self.model_of, self.deadline, self.size_of
        if hi - lo == 1:  # the common case at ns resolution: no generator
            self.state[lo] = _QUEUED
            return (
                Request(
                    lo, names[model_of[lo]], deadline[lo], now, size_of[lo] if size_of is not None else 1
                ),
            )
        self.state[lo:hi] = bytes((_QUEUED,)) * (hi - lo)
        return tuple(
            Request(r, names[model_of[r]], deadline[r], now, size_of[r] if size_of is not None else 1)
            for r in range(lo, hi)
        )

    def not_queued(self, r: int) -> str | None:
        """Why request ``r`` cannot be dispatched or dropped now (None: it can)."""
        if not 0 <= r < self.n:
            return "unknown"
        st = self.state[r]
        return None if st == _QUEUED else ("not arrived", "", "already ended")[st]


class _Batches:
    """Per batch, in dispatch order: the record's ``batch_*`` columns, as lists."""

    COLUMNS = (
        "batch_id",
        "batch_worker",
        "batch_model",
        "batch_size",
        "batch_decided_ns",
        "batch_earliest_ns",
        "batch_latest_ns",
        "batch_expected_ns",
        "batch_start_ns",
        "batch_end_ns",
        "batch_status",
    )

    def __init__(self) -> None:
        self.rows: list[tuple[int, ...]] = []

    def __len__(self) -> int:
        return len(self.rows)

    def columns(self) -> dict[str, np.ndarray]:
        cols = list(zip(*self.rows)) if self.rows else [()] * len(self.COLUMNS)
        return {name: np.asarray(col, dtype=np.int64) for name, col in zip(self.COLUMNS, cols)}


class _Workers:
    """The simulated workers: one ``EmulatedGpu`` each (``workers.gpu_model``, the rule every
    emulated GPU in Baton follows), the true ``l(b)`` per model and the seeded noise."""

    def __init__(self, cluster: Cluster, models: list[str], config: SimConfig, pauses: _Pauses) -> None:
        index = {m: i for i, m in enumerate(models)}
        self.n = cluster.n_workers
        self.serves = [frozenset(index[m] for m in ms) for ms in cluster.workers]
        self.max_batch = [cluster.profiles[m].max_batch if m in cluster.profiles else 0 for m in models]
        self.latency = [
            [cluster.profiles[m].latency_ns(b) for b in range(cluster.profiles[m].max_batch + 1)]
            if m in cluster.profiles
            else []
            for m in models
        ]
        hold = pauses.after if pauses else None
        self.gpus = [EmulatedGpu(hold=hold) for _ in range(self.n)]
        n = config.noise
        self._noise = (
            None
            if n.silent
            else LognormalNoise(n.cv, n.jitter_ns, n.outlier_prob, n.outlier_factor, [config.seed, 0], _CHUNK)
        )

    def run(
        self, w: int, m: int, b: int, earliest: int, latest: int, ready: int
    ) -> tuple[BatchStatus, int, int]:
        """``(status, start, end)`` of a batch of ``b`` of model ``m`` on worker ``w``
        whose Execute and payloads are there at ``ready``; a refusal ends at its start."""
        gpu = self.gpus[w]
        status, start = gpu.admit(earliest, latest, ready)
        if status != _STATUS_OK:
            return status, start, start
        lat = self.latency[m][b]
        noise = self._noise
        return status, start, gpu.occupy(start, noise.duration(lat) if noise is not None else lat)


class _Driver:
    """Carries out the policy's actions at once, checks the invariants, and keeps the heap
    of batch ends (``(time_ns, seq, BatchDone)``)."""

    def __init__(
        self, reqs: _Requests, workers: _Workers, index: dict[str, int], config: SimConfig, pauses: _Pauses
    ) -> None:
        self.reqs, self.workers, self.index, self.pauses = reqs, workers, index, pauses
        self.batches = _Batches()
        self.violate = _Violations(config.strict)
        self.heap: list[tuple[int, int, BatchDone]] = []
        self._seq = 0
        self._delay = config.dispatch_delay_ns
        self._reply = config.reply_cost_ns

    def carry_out(self, actions: list[Any], now: int) -> None:
        for a in actions:
            if type(a) is Dispatch:
                self.dispatch(a, now)
            elif type(a) is Drop:
                self.drop(a)
            else:
                self.violate("unknown_action", repr(a))

    def dispatch(self, d: Dispatch, now: int) -> None:
        reqs, workers, violate = self.reqs, self.workers, self.violate
        rids = d.request_ids
        b = len(rids)
        m = self.index.get(d.model, -1)
        w = d.worker_id
        earliest, latest = d.earliest_ns, d.latest_ns
        status = _STATUS_OK
        if now > latest:
            violate("dispatch_after_latest", f"batch {d.batch_id} decided at {now} > latest {latest}")
        if earliest > latest:
            violate("empty_window", f"batch {d.batch_id}: earliest {earliest} > latest {latest}")
        if m < 0 or not 0 <= w < workers.n or m not in workers.serves[w]:
            violate("wrong_worker", f"batch {d.batch_id} of {d.model!r} on worker {w}")
            status = _STATUS_FAILED
        elif not 1 <= b <= workers.max_batch[m]:
            violate("batch_size", f"batch {d.batch_id} of {b} (max {workers.max_batch[m]})")
            status = _STATUS_FAILED
        valid = self._take(d, m, len(self.batches))
        ready = now + self._delay
        if status == _STATUS_OK:
            status, start, end = workers.run(w, m, b, earliest, latest, ready)
        else:
            start = end = ready
        if status == _STATUS_OK:
            pauses = self.pauses
            fin = pauses.after(end + self._reply) if pauses else end + self._reply
            finish, outcome, deadline = reqs.finish, reqs.outcome, reqs.deadline
            for r in valid:
                finish[r] = fin
                outcome[r] = _OK if fin <= deadline[r] else _LATE
        else:
            outcome = reqs.outcome
            for r in valid:
                outcome[r] = _REFUSED
        self.batches.rows.append(
            (d.batch_id, w, m, b, now, earliest, latest, d.expected_ns, start, end, int(status))
        )
        self._seq += 1
        heapq.heappush(self.heap, (end, self._seq, BatchDone(d.batch_id, w, status, start, end, b)))

    def _take(self, d: Dispatch, m: int, bi: int) -> list[int]:
        """End the batch's queued requests (as batch ``bi``); the others are breaches."""
        reqs, violate = self.reqs, self.violate
        n, state, deadline, model_of, batch_of = (
            reqs.n,
            reqs.state,
            reqs.deadline,
            reqs.model_of,
            reqs.batch_of,
        )
        rids = d.request_ids
        valid = []
        head = deadline[rids[0]] if rids and 0 <= rids[0] < n else 0
        for r in rids:
            if not 0 <= r < n or state[r] != _QUEUED:
                violate("not_queued", f"batch {d.batch_id} holds request {r} ({reqs.not_queued(r)})")
                continue
            if model_of[r] != m:
                violate("wrong_model", f"batch {d.batch_id} of {d.model!r} holds request {r}")
            if deadline[r] < head:
                violate("head_not_first", f"batch {d.batch_id}: request {r} due before the head")
            state[r] = _ENDED
            batch_of[r] = bi
            valid.append(r)
        reqs.ended += len(valid)
        return valid

    def drop(self, a: Drop) -> None:
        reqs = self.reqs
        if not a.request_ids:
            self.violate("empty_drop", f"a Drop with no requests ({a.reason.name})")
        code = int(a.reason)
        n, state = reqs.n, reqs.state
        for r in a.request_ids:
            if not 0 <= r < n or state[r] != _QUEUED:
                self.violate("not_queued", f"drop ({a.reason.name}) of request {r} ({reqs.not_queued(r)})")
                continue
            state[r] = _ENDED
            reqs.outcome[r] = _DROPPED
            reqs.reason[r] = code
            reqs.ended += 1


def _run_events(
    policy: Policy, cluster: Cluster, config: SimConfig, reqs: _Requests, driver: _Driver, pauses: _Pauses
) -> tuple[int, dict[str, int]]:
    """Merge arrivals, batch ends and the policy's wake-ups in time order (module
    docstring), feeding each to ``policy.handle``; return the last instant and the
    ``handle`` calls by event kind."""
    handle = policy.handle
    next_wakeup = policy.next_wakeup_ns
    carry_out = driver.carry_out
    violate = driver.violate
    heap = driver.heap
    lateness = _Lateness(config)
    n_arrivals = n_done = n_tick = 0

    for w, ms in enumerate(cluster.workers):
        profs = tuple((m, cluster.profiles[m]) for m in ms)
        carry_out(handle(WorkerJoined(w, ms, profs), 0), 0)

    inf = 1 << 62
    n, n_groups, group_at = reqs.n, reqs.n_groups, reqs.at
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
            reqs_now = reqs.arrive(gi, now)
            gi += 1
            t_arrival = group_at[gi] if gi < n_groups else inf
            n_arrivals += 1
            spin = 0
            last_progress = now
            carry_out(handle(RequestsArrived(reqs_now), now), now)
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
        if reqs.ended == n and gi == n_groups and not heap:
            break  # everything arrived, ended and ran: later Ticks change nothing
    return now, {"arrivals": n_arrivals, "done": n_done, "tick": n_tick, "joined": cluster.n_workers}


def simulate(policy: Policy, trace: Trace, cluster: Cluster, config: SimConfig | None = None) -> SimResult:
    """Run ``policy`` (fresh, never used) over ``trace`` on ``cluster``; return the record.

    Request ``i`` is the trace's ``i``-th arrival (its ``request_id`` is ``i``); worker
    ``i`` is ``cluster.workers[i]``, joining at time 0 with the true profiles as its
    offline measurements. Raises ``ValueError`` when a trace model has no SLO,
    ``InvariantViolation`` on a breach in strict mode and ``SimulationError`` on a
    policy that livelocks.
    """
    config = config if config is not None else SimConfig()
    wall0 = time.perf_counter()
    pauses = _Pauses(config)
    reqs = _Requests(trace, cluster, pauses)
    models = list(trace.models) + [m for m in cluster.profiles if m not in trace.models]
    index = {m: i for i, m in enumerate(models)}
    driver = _Driver(reqs, _Workers(cluster, models, config, pauses), index, config, pauses)
    end_ns, handle_calls = _run_events(policy, cluster, config, reqs, driver, pauses)
    unfinished = reqs.n - reqs.ended
    if unfinished:
        first = reqs.state.index(_QUEUED) if _QUEUED in reqs.state else -1
        driver.violate("unfinished", f"{unfinished} requests never ended (first: {first})")
    return _result(
        trace, cluster, config, models, reqs, driver, end_ns, handle_calls, time.perf_counter() - wall0
    )


def _result(
    trace: Trace,
    cluster: Cluster,
    config: SimConfig,
    models: list[str],
    reqs: _Requests,
    driver: _Driver,
    end_ns: int,
    handle_calls: dict[str, int],
    wall_s: float,
) -> SimResult:
    """The run's record: one row per request, one per batch, the breaches."""
    return SimResult(
        models=tuple(models),
        n_workers=cluster.n_workers,
        span_ns=trace.span_ns,
        end_ns=end_ns,
        model_ids=trace.model_ids,
        arrival_ns=trace.times_ns,
        deadline_ns=reqs.deadline_arr,
        finish_ns=np.asarray(reqs.finish, dtype=np.int64),
        outcome=np.frombuffer(bytes(reqs.outcome), dtype=np.int8).copy(),
        drop_reason=np.frombuffer(bytes(reqs.reason), dtype=np.int8).copy(),
        batch_of=np.asarray(reqs.batch_of, dtype=np.int64),
        **driver.batches.columns(),
        reply_cost_ns=config.reply_cost_ns,
        violations=dict(driver.violate.counts),
        violation_examples=tuple(driver.violate.examples),
        handle_calls=handle_calls,
        wall_s=wall_s,
    )
