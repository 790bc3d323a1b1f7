"""SymphonyPolicy's rules one at a time, driven through ``handle`` on virtual time.

test_policy.py runs whole scenarios; these pin the single rules a mutation campaign
(``make mutation``, docs/testing.md) found unchecked there: what ``snapshot`` reports,
which ``BatchDone`` reports the profile learns from, how a worker's predicted free time
follows its reports, how a profile is taken from a joining worker, when a stale profile
is reset, how the margin is capped, and when a candidate is deferred; and, in small
scenes of two models and one or two pools with exact timings, how waiting batches are
granted, when a candidate is re-planned because a worker was taken, the shed floor's
edges and when the cached floor is refreshed. State is set up through public events
only; there are no sleeps and no sockets.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from central.policy import (
    Action,
    BatchDone,
    BatchStatus,
    Dispatch,
    Drop,
    DropReason,
    LoadEstimator,
    ModelStats,
    PolicyConfig,
    PolicySnapshot,
    Profile,
    Request,
    RequestsArrived,
    SymphonyPolicy,
    Tick,
    WorkerJoined,
    WorkerLost,
    WorkerStats,
    target_batch,
)

MS = 1_000_000
PROF = Profile(k_ns=1_000_000, c_ns=4_000_000, max_batch=8)  # l(b) = (b + 4) ms
D, R, T = 500_000, 300_000, 200_000  # PolicyConfig's default costs


def make_policy(**config: object) -> SymphonyPolicy:
    config.setdefault("profiles", {"m": PROF})
    return SymphonyPolicy(PolicyConfig(**config))  # type: ignore[arg-type]


def requests(first: int, n: int, deadline: int, arrival: int, model: str = "m") -> RequestsArrived:
    return RequestsArrived(tuple(Request(first + i, model, deadline, arrival) for i in range(n)))


def dispatches(actions: list[Action]) -> list[Dispatch]:
    return [a for a in actions if isinstance(a, Dispatch)]


def drops(actions: list[Action]) -> dict[DropReason, tuple[int, ...]]:
    return {a.reason: a.request_ids for a in actions if isinstance(a, Drop)}


# ------------------------------------------------------------------ snapshot


def test_a_fresh_policy_has_an_empty_snapshot() -> None:
    snap = SymphonyPolicy().snapshot()
    assert snap == PolicySnapshot(now_ns=None, models={}, workers={}, inflight_batches=0, next_wakeup_ns=None)
    assert snap.as_dict() == {
        "now_ns": None,
        "models": {},
        "workers": {},
        "inflight_batches": 0,
        "next_wakeup_ns": None,
    }


def test_snapshot_reports_every_model_and_worker() -> None:
    policy = make_policy(defer_headroom=0.0)
    policy.handle(WorkerJoined(0, ("m",)), 0)
    policy.handle(WorkerJoined(1, ("m", "n")), 0)  # "n" has no profile anywhere
    idle = {
        "queue": 0,
        "margin_ns": 0,
        "rate_rps": 0.0,
        "budget_ns": None,
        "target_batch": 0,
        "candidate_batch": 0,
        "ready": False,
        "waiting": False,
    }
    no_profile = {"k_ns": None, "c_ns": None, "max_batch": None}
    # the JSON shape the scheduler's stats, the dashboard and docs/metrics.md know
    assert policy.snapshot().as_dict() == {
        "now_ns": 0,
        "models": {
            "m": {**idle, "workers": 2, "k_ns": PROF.k_ns, "c_ns": PROF.c_ns, "max_batch": 8},
            "n": {**idle, "workers": 1, **no_profile},
        },
        "workers": {
            0: {"alive": True, "models": ["m"], "free_at_ns": 0, "busy": False, "inflight": 0},
            1: {"alive": True, "models": ["m", "n"], "free_at_ns": 0, "busy": False, "inflight": 0},
        },
        "inflight_batches": 0,
        "next_wakeup_ns": None,
    }
    idle_m = ModelStats(
        queue=0,
        workers=2,
        k_ns=PROF.k_ns,
        c_ns=PROF.c_ns,
        max_batch=8,
        margin_ns=0,
        rate_rps=0.0,
        budget_ns=None,
        target_batch=0,
        candidate_batch=0,
        ready=False,
        waiting=False,
    )
    assert policy.snapshot() == PolicySnapshot(
        now_ns=0,
        models={"m": idle_m, "n": replace(idle_m, workers=1, k_ns=None, c_ns=None, max_batch=None)},
        workers={
            0: WorkerStats(alive=True, models=("m",), free_at_ns=0, busy=False, inflight=0),
            1: WorkerStats(alive=True, models=("m", "n"), free_at_ns=0, busy=False, inflight=0),
        },
        inflight_batches=0,
        next_wakeup_ns=None,
    )

    load = LoadEstimator(PolicyConfig().rate_window_ns)
    load.arrived(MS, 25 * MS)
    policy.handle(requests(1, 1, 26 * MS, MS), MS)  # one request: deferred to grow
    t_ready = 26 * MS - R - PROF.latency_ns(2) - D - T
    snap = policy.snapshot()
    assert snap.now_ns == MS and snap.next_wakeup_ns == t_ready
    assert snap.models["m"] == replace(
        idle_m,
        queue=1,
        candidate_batch=1,
        budget_ns=25 * MS,
        rate_rps=load.rate_per_ns(MS) * 1e9,
        target_batch=target_batch(
            PROF, rate_per_ns=load.rate_per_ns(MS), n_workers=2, budget_ns=25 * MS - D - R - T
        ),
    )

    for _i in range(8):
        load.arrived(2 * MS, 28 * MS)
    [d] = dispatches(policy.handle(requests(10, 8, 30 * MS, 2 * MS), 2 * MS))
    assert (d.worker_id, len(d.request_ids), d.earliest_ns) == (0, 8, 2 * MS + D)
    snap = policy.snapshot()
    assert snap.inflight_batches == 1
    assert snap.workers[0] == WorkerStats(
        alive=True, models=("m",), busy=True, inflight=1, free_at_ns=d.earliest_ns + PROF.latency_ns(8)
    )
    model = snap.models["m"]
    assert model.budget_ns == round(load.budget_ns)
    assert model.rate_rps == load.rate_per_ns(2 * MS) * 1e9
    assert (
        model.target_batch
        == target_batch(
            PROF, rate_per_ns=load.rate_per_ns(2 * MS), n_workers=2, budget_ns=load.budget_ns - D - R - T
        )
        > 1
    )

    policy.handle(WorkerLost(1), 3 * MS)
    snap = policy.snapshot()
    assert snap.workers[1] == WorkerStats(alive=False, models=(), free_at_ns=0, busy=False, inflight=0)
    assert (snap.models["m"].workers, snap.models["n"].workers) == (1, 0)
    assert snap.workers[0].busy
    policy.handle(Tick(), d.earliest_ns + PROF.latency_ns(8))  # its planned end: not busy
    assert not policy.snapshot().workers[0].busy


# ------------------------------------------------------------------ what reports teach

FAR = 100 * MS  # a budget no batch here comes near: the margin cap is 0.2 of it


def full_batch(policy: SymphonyPolicy, first: int, now: int) -> Dispatch:
    """Eight requests at ``now``: a full batch, sent at once to the first free worker."""
    [d] = dispatches(policy.handle(requests(first, 8, now + FAR, now), now))
    assert len(d.request_ids) == 8
    return d


def learnt(policy: SymphonyPolicy) -> tuple[int, int, int]:
    model = policy.snapshot().models["m"]
    return model.k_ns, model.c_ns, model.margin_ns


def test_only_successful_reports_teach_the_profile() -> None:
    took = 2 * PROF.latency_ns(8)  # every batch takes twice its plan
    cases = [
        (BatchStatus.FAILED, 8, took),
        (BatchStatus.TOO_LATE, 8, took),
        (BatchStatus.TOO_EARLY, 8, took),
        (BatchStatus.OK, 0, took),
        (BatchStatus.OK, 8, -1),
        (BatchStatus.OK, 8, took),
    ]
    results = []
    for status, size, duration in cases:
        policy = make_policy()
        policy.handle(WorkerJoined(0, ("m",)), 0)
        now = 0
        for i in range(10):
            d = full_batch(policy, 100 * i, now)
            end = d.earliest_ns + duration
            policy.handle(BatchDone(d.batch_id, 0, status, d.earliest_ns, end, size), max(now, end))
            now = max(now, end) + MS
        results.append(learnt(policy))
    assert results[:-1] == [(PROF.k_ns, PROF.c_ns, 0)] * 5
    # one batch size only: k cannot be told from c, so c takes the whole overrun
    assert results[-1][:2] == (PROF.k_ns, took - 8 * PROF.k_ns)


def test_a_stalled_start_counts_in_the_margin() -> None:
    policy = make_policy(refit=False)
    policy.handle(WorkerJoined(0, ("m",)), 0)
    d = full_batch(policy, 0, 0)
    start = d.earliest_ns + 3 * MS  # the worker was free but started 3 ms late
    end = start + PROF.latency_ns(8)
    policy.handle(BatchDone(d.batch_id, 0, BatchStatus.OK, start, end, 8), end)
    assert learnt(policy)[2] == 3 * MS


def test_waiting_behind_an_overrun_is_not_a_stall() -> None:
    policy = make_policy(refit=False)
    policy.handle(WorkerJoined(0, ("m",)), 0)
    first = full_batch(policy, 0, 0)
    now = first.earliest_ns + first.expected_ns - D  # the worker is about to be free
    second = full_batch(policy, 100, now)
    assert second.earliest_ns == first.earliest_ns + first.expected_ns
    # the first batch overruns by 2 ms and fails; the second starts right after it
    end = first.earliest_ns + first.expected_ns + 2 * MS
    policy.handle(BatchDone(first.batch_id, 0, BatchStatus.FAILED, first.earliest_ns, end, 8), end)
    done = end + second.expected_ns
    policy.handle(BatchDone(second.batch_id, 0, BatchStatus.OK, end, done, 8), done)
    assert learnt(policy)[2] == 0  # started 2 ms after its plan, but not stalled


def test_the_margin_is_capped_at_a_fraction_of_the_typical_budget() -> None:
    policy = make_policy(refit=False, max_margin_fraction=0.1)
    policy.handle(WorkerJoined(0, ("m",)), 0)
    d = full_batch(policy, 0, 0)
    end = d.earliest_ns + d.expected_ns + 50 * MS  # a 50 ms overrun
    policy.handle(BatchDone(d.batch_id, 0, BatchStatus.OK, d.earliest_ns, end, 8), end)
    assert learnt(policy)[2] == FAR // 10


# ------------------------------------------------------------------ a worker's timeline


def two_batches_on_one_worker(**config: object) -> tuple[SymphonyPolicy, Dispatch, Dispatch]:
    policy = make_policy(refit=False, **config)
    policy.handle(WorkerJoined(0, ("m",)), 0)
    first = full_batch(policy, 0, 0)
    second = full_batch(policy, 100, first.earliest_ns + first.expected_ns - D)
    assert second.earliest_ns == first.earliest_ns + first.expected_ns
    return policy, first, second


def free_at(policy: SymphonyPolicy, worker: int = 0) -> int:
    return policy.snapshot().workers[worker].free_at_ns


def test_an_overrun_report_pushes_the_queued_batch_out() -> None:
    policy, first, second = two_batches_on_one_worker()
    end = second.earliest_ns + 2 * MS
    policy.handle(BatchDone(first.batch_id, 0, BatchStatus.OK, first.earliest_ns, end, 8), end)
    assert free_at(policy) == end + second.expected_ns
    assert policy.snapshot().inflight_batches == 1


def test_an_early_report_keeps_the_queued_batch_at_its_earliest() -> None:
    policy, first, second = two_batches_on_one_worker()
    now = second.earliest_ns - D
    end = second.earliest_ns - MS  # ran 1 ms short
    policy.handle(BatchDone(first.batch_id, 0, BatchStatus.OK, first.earliest_ns, end, 8), now)
    assert free_at(policy) == second.earliest_ns + second.expected_ns


def test_a_report_ends_every_batch_before_it_on_that_worker() -> None:
    policy, first, second = two_batches_on_one_worker()
    end = second.earliest_ns + second.expected_ns - MS
    policy.handle(BatchDone(second.batch_id, 0, BatchStatus.OK, second.earliest_ns, end, 8), end)
    assert policy.snapshot().inflight_batches == 0  # the first one's report was lost
    assert free_at(policy) == end
    # a late report of the first batch changes nothing any more
    assert policy.handle(BatchDone(first.batch_id, 0, BatchStatus.OK, 0, end, 8), end) == []
    assert free_at(policy) == end


def test_reports_of_unknown_batches_and_lost_workers_are_ignored() -> None:
    policy, _, second = two_batches_on_one_worker()
    before = policy.snapshot()
    assert policy.handle(BatchDone(999, 0, BatchStatus.OK, 0, MS, 8), second.earliest_ns) == []
    assert policy.snapshot().workers == before.workers
    policy.handle(WorkerLost(0), second.earliest_ns)
    assert policy.snapshot().inflight_batches == 0
    end = second.earliest_ns + second.expected_ns
    assert policy.handle(BatchDone(second.batch_id, 0, BatchStatus.OK, second.earliest_ns, end, 8), end) == []
    assert policy.handle(WorkerLost(0), end) == []  # lost twice: nothing more happens
    assert policy.handle(WorkerLost(7), end) == []  # never known


# ------------------------------------------------------------------ an overdue worker


def overdue_after(policy: SymphonyPolicy, first: int, now: int) -> tuple[int, list[Action]]:
    """Send a full batch at ``now``, then offer another one once the first is overdue
    (its planned end passed, no report): return that moment and what it caused."""
    d = full_batch(policy, first, now)
    later = d.earliest_ns + d.expected_ns + 100_000
    return later, policy.handle(requests(first + 100, 8, later + FAR, later), later)


def test_an_overdue_worker_counts_busy_for_its_models_margin() -> None:
    policy = make_policy(refit=False)
    policy.handle(WorkerJoined(0, ("m",)), 0)
    d = full_batch(policy, 0, 0)
    start = d.earliest_ns + 3 * MS  # learn a 3 ms margin from a stalled start
    end = start + d.expected_ns
    policy.handle(BatchDone(d.batch_id, 0, BatchStatus.OK, start, end, 8), end)
    assert learnt(policy)[2] == 3 * MS
    now, actions = overdue_after(policy, 100, end + MS)
    assert dispatches(actions) == []
    assert free_at(policy) == now + D + 3 * MS


def test_an_overdue_worker_counts_busy_at_least_a_fifth_of_a_millisecond() -> None:
    policy = make_policy(refit=False)
    policy.handle(WorkerJoined(0, ("m",)), 0)
    now, actions = overdue_after(policy, 0, 0)  # no margin learnt
    assert dispatches(actions) == []
    assert free_at(policy) == now + D + 200_000
    assert policy.next_wakeup_ns() == now + 200_000  # when it may be granted again


# ------------------------------------------------------------------ joining workers


def profile_of(policy: SymphonyPolicy, model: str) -> tuple[int | None, int | None, int | None]:
    snap = policy.snapshot().models[model]
    return snap.k_ns, snap.c_ns, snap.max_batch


def test_a_configured_profile_wins_over_a_workers_own() -> None:
    policy = make_policy()
    theirs = Profile(5 * MS, 0, 4)
    policy.handle(WorkerJoined(0, ("m", "n"), (("m", theirs), ("n", theirs))), 0)
    assert profile_of(policy, "m") == (PROF.k_ns, PROF.c_ns, PROF.max_batch)
    assert profile_of(policy, "n") == (5 * MS, 0, 4)
    # the first profile a model gets stays: a later worker's measurement does not replace it
    policy.handle(WorkerJoined(1, ("n",), (("n", Profile(MS, MS, 16)),)), 0)
    assert profile_of(policy, "n") == (5 * MS, 0, 4)


def test_a_degenerate_worker_profile_is_made_usable() -> None:
    # CPU CNNs can measure k <= 0; a worker may report max_batch 0
    policy = make_policy(profiles={})
    policy.handle(WorkerJoined(0, ("m", "n"), (("m", Profile(0, 3 * MS, 0)), ("n", Profile(-5, -MS, 4)))), 0)
    assert profile_of(policy, "m") == (1, 3 * MS, 1)
    assert profile_of(policy, "n") == (1, -MS, 4)
    [d] = dispatches(policy.handle(requests(1, 2, 50 * MS, 0), 0))
    assert d.request_ids == (1,)  # one at a time: max_batch 1


def test_a_worker_serves_each_model_once_however_it_lists_them() -> None:
    policy = make_policy(profiles={"a": PROF, "b": PROF})
    policy.handle(WorkerJoined(0, ("b", "a", "a")), 0)
    policy.handle(WorkerJoined(1, ("a", "b")), 0)
    snap = policy.snapshot()
    assert snap.workers[0].models == ("a", "b")
    assert snap.models["a"].workers == 2 and snap.models["b"].workers == 2


def test_rejoining_with_the_same_models_changes_nothing() -> None:
    policy = make_policy()
    policy.handle(WorkerJoined(0, ("m",)), 0)
    d = full_batch(policy, 0, 0)
    before = policy.snapshot()
    assert policy.handle(WorkerJoined(0, ("m",)), MS) == []  # a re-registration
    assert policy.snapshot().workers == before.workers
    assert policy.snapshot().models["m"].workers == 1
    now = d.earliest_ns + d.expected_ns - D
    [again] = dispatches(policy.handle(requests(100, 8, now + FAR, now), now))
    assert again.worker_id == 0


def test_a_busy_worker_that_rejoins_with_other_models_stays_busy() -> None:
    policy = make_policy(profiles={"m": PROF, "n": PROF})
    policy.handle(WorkerJoined(0, ("m",)), 0)
    d = full_batch(policy, 0, 0)
    policy.handle(WorkerJoined(0, ("m", "n")), MS)
    assert free_at(policy) == d.earliest_ns + d.expected_ns
    # while a lost worker that comes back starts afresh, free at once
    policy.handle(WorkerLost(0), 2 * MS)
    policy.handle(WorkerJoined(0, ("n",)), 3 * MS)
    assert free_at(policy) == 3 * MS and policy.snapshot().workers[0].inflight == 0


def test_a_joining_worker_takes_a_waiting_batch_at_once() -> None:
    policy = make_policy()
    policy.handle(WorkerJoined(0, ("m",)), 0)
    full_batch(policy, 0, 0)
    assert dispatches(policy.handle(requests(100, 8, MS + FAR, MS), MS)) == []  # waits
    assert policy.snapshot().models["m"].waiting is True
    [d] = dispatches(policy.handle(WorkerJoined(1, ("m",)), 2 * MS))
    assert (d.worker_id, d.request_ids, d.earliest_ns) == (1, tuple(range(100, 108)), 2 * MS + D)
    model = policy.snapshot().models["m"]
    assert (model.queue, model.candidate_batch, model.ready, model.waiting) == (0, 0, False, False)
    assert policy.next_wakeup_ns() is None  # nothing waits: no grant to wake up for


def test_an_emptied_pool_serves_again_when_a_worker_rejoins_it() -> None:
    policy = make_policy(profiles={"m": PROF, "n": PROF})
    policy.handle(WorkerJoined(0, ("m",)), 0)
    policy.handle(WorkerJoined(0, ("n",)), MS)  # moves over: m's pool is empty
    assert drops(policy.handle(requests(1, 1, FAR, 2 * MS), 2 * MS)) == {DropReason.NO_WORKER: (1,)}
    policy.handle(WorkerJoined(1, ("m",)), 3 * MS)  # the same pool again
    assert policy.snapshot().models["m"].workers == 1
    [d] = dispatches(policy.handle(requests(10, 8, 4 * MS + FAR, 4 * MS), 4 * MS))
    assert d.worker_id == 1


# ------------------------------------------------------------------ shedding


def shed_scene(fresh: int, shed_fraction: float = 0.95, doomed: bool = False) -> tuple[list[Action], int]:
    """One worker busy until 12.5 ms with a full batch; three requests from 1 ms that must
    end by 22 ms (only a batch of 5 or fewer still fits them) and, at 12 ms (12.3 ms),
    ``fresh`` ones with 25 ms to go. The load makes 7 the target batch, so 7 is the shed
    floor."""
    policy = make_policy(shed_fraction=shed_fraction)
    policy.handle(WorkerJoined(0, ("m",)), 0)
    policy.handle(requests(200, 8, 25 * MS, 0), 0)
    assert policy.handle(requests(0, 3, 22 * MS, MS), MS) == []
    at = 12 * MS
    if doomed:  # by 12.3 ms it cannot end by 18 ms even alone: 12.8 + l(1) + R = 18.1 ms
        assert policy.handle(requests(50, 1, 18 * MS, MS), MS) == []
        at += 300_000
    actions = policy.handle(requests(100, fresh, at + 25 * MS, at), at)
    return actions, policy.snapshot().models["m"].target_batch


def test_heads_that_would_hold_the_batch_below_the_floor_are_shed() -> None:
    actions, target = shed_scene(10)
    assert target == 7
    assert drops(actions) == {DropReason.SHED: (0, 1, 2)}
    [d] = dispatches(actions)
    assert d.request_ids == tuple(range(100, 108))  # a full batch instead of five


def test_doomed_heads_go_as_deadline_drops_beside_the_shed_ones() -> None:
    actions, _ = shed_scene(10, doomed=True)
    assert drops(actions) == {DropReason.DEADLINE: (50,), DropReason.SHED: (0, 1, 2)}
    assert len(dispatches(actions)[0].request_ids) == 8


def test_heads_short_of_the_floor_by_less_than_the_reply_cost_are_shed_too() -> None:
    policy = make_policy()
    policy.handle(WorkerJoined(0, ("m",)), 0)
    policy.handle(requests(200, 8, 25 * MS, 0), 0)
    # a batch of 7 from 12.5 ms ends at 23.5 ms, too late by the reply cost for 23.6 ms
    assert policy.handle(requests(0, 3, 23_600_000, MS), MS) == []
    actions = policy.handle(requests(100, 10, 37 * MS, 12 * MS), 12 * MS)
    assert drops(actions) == {DropReason.SHED: (0, 1, 2)}


def test_heads_are_shed_only_when_enough_requests_stand_behind_them() -> None:
    actions, _ = shed_scene(7)  # exactly the floor behind them: shed, the rest waits to grow
    assert drops(actions) == {DropReason.SHED: (0, 1, 2)} and dispatches(actions) == []
    for actions in (shed_scene(6)[0], shed_scene(10, shed_fraction=0.0)[0]):
        assert drops(actions) == {}
        [d] = dispatches(actions)
        assert d.request_ids == (0, 1, 2, 100, 101)  # what still fits the heads' deadline


# ------------------------------------------------------------------ deferral


def lone_request(*workers: tuple[str, ...], lose: int | None = None, headroom: float = 2.0) -> list[Action]:
    """One request for "m" at 1 ms (the measured rate then is 64/s, a batch of 1 takes
    5 ms: twice that load fills 0.64 of one worker)."""
    policy = make_policy(profiles={"m": PROF, "n": PROF}, defer_headroom=headroom)
    for wid, models in enumerate(workers):
        policy.handle(WorkerJoined(wid, models), 0)
    if lose is not None:
        policy.handle(WorkerLost(lose), 0)
    return policy.handle(requests(1, 1, 26 * MS, MS), MS)


def test_a_light_load_goes_at_once_on_a_worker_of_its_own() -> None:
    assert len(dispatches(lone_request(("m",), ("n",)))) == 1
    assert len(dispatches(lone_request(("m",), ("n",), headroom=1.0))) == 1
    assert lone_request(("m",), ("n",), headroom=0.0) == []  # 0: always defer


def test_a_worker_shared_by_two_models_counts_half_when_deciding_to_defer() -> None:
    assert lone_request(("m", "n")) == []  # 0.64 > 0.5 of a worker: wait to grow
    assert len(dispatches(lone_request(("m", "n"), ("m", "n")))) == 1  # two halves
    assert lone_request(("m", "n"), ("m", "n"), lose=1) == []  # one half left


# ------------------------------------------------------------------ a stale profile


def learn_slow_profile(policy: SymphonyPolicy) -> int:
    """Ten full batches that each take twice their plan: returns when the last ended."""
    policy.handle(WorkerJoined(0, ("m",)), 0)
    now = 0
    for i in range(10):
        d = full_batch(policy, 100 * i, now)
        end = d.earliest_ns + 2 * d.expected_ns
        policy.handle(BatchDone(d.batch_id, 0, BatchStatus.OK, d.earliest_ns, end, 8), end)
        now = end + MS
    assert learnt(policy)[1] > PROF.c_ns
    return now


def test_a_profile_learnt_long_ago_is_forgotten_when_it_dooms_everything() -> None:
    policy = make_policy(stale_after_ns=200 * MS)
    now = learn_slow_profile(policy) + 200 * MS + 1
    # 6 ms is enough for a batch of 1 as configured (l(1) = 5 ms), not as learnt, and
    # not for two; 5.7 ms is too little even as configured (D + l(1) + R = 5.8 ms)
    arrivals = RequestsArrived(
        (
            Request(5000, "m", now + 6 * MS, now),
            Request(5001, "m", now + 6 * MS, now),
            Request(5002, "m", now + 5_700_000, now),
        )
    )
    actions = policy.handle(arrivals, now)
    assert learnt(policy) == (PROF.k_ns, PROF.c_ns, 0)
    assert [d.request_ids for d in dispatches(actions)] == [(5000,)]
    assert drops(actions) == {DropReason.DEADLINE: (5002, 5001)}


def test_a_recently_used_profile_is_kept_even_if_it_dooms_a_request() -> None:
    policy = make_policy(stale_after_ns=200 * MS)
    now = learn_slow_profile(policy) + 50 * MS
    before = learnt(policy)
    actions = policy.handle(requests(5000, 1, now + 6 * MS, now), now)
    assert drops(actions) == {DropReason.DEADLINE: (5000,)}
    assert learnt(policy)[:2] == before[:2]


def test_losing_a_shared_worker_empties_only_the_models_left_without_one() -> None:
    policy = make_policy(profiles={"a": PROF, "b": PROF}, defer_headroom=0.0)
    policy.handle(WorkerJoined(0, ("a", "b")), 0)
    policy.handle(WorkerJoined(1, ("a",)), 0)
    assert policy.handle(requests(1, 1, FAR, 0, "a"), 0) == []  # both wait to grow
    assert policy.handle(requests(2, 1, FAR, 0, "b"), 0) == []
    assert policy.handle(WorkerLost(0), MS) == [Drop((2,), DropReason.NO_WORKER)]
    snap = policy.snapshot().models
    assert (snap["a"].queue, snap["a"].workers) == (1, 1)
    assert (snap["b"].queue, snap["b"].workers) == (0, 0)


# ------------------------------------------------------------------ the target batch


def test_the_target_batch_leaves_room_for_the_overheads_and_the_margin() -> None:
    # Eight requests at once on one worker: the rate is high enough that the target is
    # the largest b with 2 l(b) <= budget - (D + R + T) - margin, and l(4) = 8 ms.
    policy = make_policy(refit=False)
    policy.handle(WorkerJoined(0, ("m",)), 0)
    [d] = dispatches(policy.handle(requests(0, 8, 17 * MS, 0), 0))
    assert policy.snapshot().models["m"].target_batch == 4  # 16 ms: just fits
    start = d.earliest_ns + MS  # a 1 ms stall: a 1 ms margin
    policy.handle(
        BatchDone(d.batch_id, 0, BatchStatus.OK, start, start + d.expected_ns, 8), start + d.expected_ns
    )
    assert learnt(policy)[2] == MS
    assert policy.snapshot().models["m"].target_batch == 3

    tighter = make_policy(refit=False)
    tighter.handle(WorkerJoined(0, ("m",)), 0)
    tighter.handle(requests(0, 8, 16_900_000, 0), 0)
    assert tighter.snapshot().models["m"].target_batch == 3  # 15.9 ms < 2 l(4)


def test_a_batch_holds_only_what_meets_the_heads_deadline() -> None:
    policy = make_policy()
    policy.handle(WorkerJoined(0, ("m",)), 0)
    deadline = D + PROF.latency_ns(1) + R + 500_000  # l(2) is 1 ms more: it does not fit
    actions = policy.handle(requests(0, 2, deadline, 0), 0)
    assert [d.request_ids for d in dispatches(actions)] == [(0,)]
    assert drops(actions) == {DropReason.DEADLINE: (1,)}


def test_a_busy_worker_is_planned_free_one_margin_late() -> None:
    # Its last batch may overrun as much as ours: the next batch is sized as if the
    # worker freed up a margin after its predicted end (but it may start at that end).
    policy = make_policy(refit=False)
    policy.handle(WorkerJoined(0, ("m",)), 0)
    d = full_batch(policy, 0, 0)
    start = d.earliest_ns + 3 * MS
    end = start + d.expected_ns
    policy.handle(BatchDone(d.batch_id, 0, BatchStatus.OK, start, end, 8), end)
    margin = learnt(policy)[2]
    assert margin == 3 * MS
    busy = full_batch(policy, 100, end)
    now = busy.earliest_ns + busy.expected_ns - D  # about to be free
    # the head can end by its deadline in a batch of 5 planned from free_at + margin
    deadline = busy.earliest_ns + busy.expected_ns + margin + PROF.latency_ns(5) + R + margin
    [d] = dispatches(policy.handle(requests(200, 8, deadline, now), now))
    assert len(d.request_ids) == 5
    assert d.earliest_ns == busy.earliest_ns + busy.expected_ns
    assert d.latest_ns == deadline - R - margin - PROF.latency_ns(5)


# ------------------------------------------------------------------ more rules


def test_one_bad_request_does_not_hide_the_rest_of_its_message() -> None:
    policy = make_policy(profiles={"m": PROF, "gone": PROF}, defer_headroom=0.0)
    policy.handle(WorkerJoined(0, ("gone",)), 0)
    policy.handle(WorkerJoined(0, ("m",)), 0)  # "gone" has no worker any more
    arrivals = RequestsArrived(
        (Request(1, "nope", FAR, 0), Request(2, "gone", FAR, 0), Request(3, "m", FAR, 0))
    )
    actions = policy.handle(arrivals, 0)
    assert drops(actions) == {DropReason.UNKNOWN_MODEL: (1,), DropReason.NO_WORKER: (2,)}
    assert policy.snapshot().models["m"].queue == 1


def test_a_pending_timer_is_not_hidden_by_a_later_grant() -> None:
    policy = make_policy(profiles={"a": PROF, "b": PROF}, defer_headroom=0.0)
    policy.handle(WorkerJoined(0, ("a",)), 0)
    policy.handle(WorkerJoined(1, ("b",)), 0)
    busy = full_batch_of(policy, "a", 0, 0)
    assert policy.handle(requests(100, 8, FAR, 0, "a"), 0) == []  # waits for worker 0
    assert policy.handle(requests(200, 1, 15 * MS, 0, "b"), 0) == []  # deferred
    t_ready = 15 * MS - R - PROF.latency_ns(2) - D - T
    assert t_ready < busy.earliest_ns + busy.expected_ns - D  # before the grant
    assert policy.next_wakeup_ns() == t_ready


def full_batch_of(policy: SymphonyPolicy, model: str, first: int, now: int) -> Dispatch:
    [d] = dispatches(policy.handle(requests(first, 8, now + FAR, now, model), now))
    return d


def test_two_waiters_of_one_pool_get_its_two_workers_at_the_same_tick() -> None:
    policy = make_policy(profiles={"a": PROF, "b": PROF})
    policy.handle(WorkerJoined(0, ("a", "b")), 0)
    policy.handle(WorkerJoined(1, ("a", "b")), 0)
    first = full_batch_of(policy, "a", 0, 0)
    full_batch_of(policy, "a", 100, 0)
    assert policy.handle(requests(200, 8, MS + FAR, MS, "a"), MS) == []
    assert policy.handle(requests(300, 8, MS + FAR, MS, "b"), MS) == []
    grant = first.earliest_ns + first.expected_ns - D
    assert policy.next_wakeup_ns() == grant
    sent = dispatches(policy.handle(Tick(), grant))
    assert sorted((d.model, d.worker_id) for d in sent) in ([("a", 0), ("b", 1)], [("a", 1), ("b", 0)])


def test_two_requests_at_light_load_go_at_once() -> None:
    # 128/s for a batch of 2 (6 ms): twice that load fills 1.5 of the 2 a worker carries
    policy = make_policy(defer_headroom=2.0)
    policy.handle(WorkerJoined(0, ("m",)), 0)
    [d] = dispatches(policy.handle(requests(1, 2, 26 * MS, MS), MS))
    assert d.request_ids == (1, 2)


def test_the_estimator_gets_the_configured_knobs() -> None:
    def margin_after(**config: object) -> list[int]:
        policy = make_policy(refit=False, **config)
        policy.handle(WorkerJoined(0, ("m",)), 0)
        margins, now = [], 0
        for i, stall in enumerate((3 * MS, 0)):
            d = full_batch(policy, 100 * i, now)
            start = d.earliest_ns + stall
            end = start + d.expected_ns
            policy.handle(BatchDone(d.batch_id, 0, BatchStatus.OK, start, end, 8), end)
            margins.append(learnt(policy)[2])
            now = end + MS
        return margins

    assert margin_after() == [3 * MS, 3 * MS]
    assert margin_after(stall_window=1) == [3 * MS, 0]  # a stall counts for one batch
    assert margin_after(margin_percentile=0.5) == [3 * MS, 0]  # the median residual

    def profile_after(batches: int, **config: object) -> tuple[int, int]:
        policy = make_policy(**config)
        policy.handle(WorkerJoined(0, ("m",)), 0)
        now = 0
        for i in range(batches):
            d = full_batch(policy, 100 * i, now)
            end = d.earliest_ns + 2 * d.expected_ns
            policy.handle(BatchDone(d.batch_id, 0, BatchStatus.OK, d.earliest_ns, end, 8), end)
            now = end + MS
        return learnt(policy)[:2]

    assert profile_after(2) == (PROF.k_ns, PROF.c_ns)  # 8 batches before trusting a refit
    assert profile_after(2, refit_window=2) != (PROF.k_ns, PROF.c_ns)  # the window caps it
    assert profile_after(10, refit=False) == (PROF.k_ns, PROF.c_ns)


def test_an_idle_worker_is_planned_free_after_the_dispatch_cost_only() -> None:
    policy = make_policy(refit=False)
    policy.handle(WorkerJoined(0, ("m",)), 0)
    d = full_batch(policy, 0, 0)
    start = d.earliest_ns + 3 * MS
    end = start + d.expected_ns
    policy.handle(BatchDone(d.batch_id, 0, BatchStatus.OK, start, end, 8), end)
    margin = learnt(policy)[2]
    assert margin == 3 * MS
    deadline = end + D + PROF.latency_ns(5) + R + margin  # the worker is idle since `end`
    [d] = dispatches(policy.handle(requests(200, 8, deadline, end), end))
    assert (len(d.request_ids), d.earliest_ns) == (5, end + D)


def test_a_long_wait_for_a_busy_worker_keeps_the_waiting_batch() -> None:
    # Every arrival re-plans the waiting candidate and queues it again in the pool's
    # waiting heap; past 68 entries the heap is compacted, which must keep the live one.
    policy = make_policy()
    policy.handle(WorkerJoined(0, ("m",)), 0)
    busy = full_batch(policy, 0, 0)
    for i in range(80):
        t = 2 * MS + i * 100_000
        assert dispatches(policy.handle(requests(100 + i, 1, 2 * MS + FAR, t), t)) == []
    grant = busy.earliest_ns + busy.expected_ns - D
    assert policy.next_wakeup_ns() == grant
    [d] = dispatches(policy.handle(Tick(), grant))
    assert d.request_ids == tuple(range(100, 108))


def test_a_non_event_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match=r"not a policy event: 'tick'"):
        make_policy().handle("tick", 0)  # type: ignore[arg-type]


def test_a_head_only_the_margin_rules_out_goes_alone_even_with_company() -> None:
    policy = make_policy(refit=False)
    policy.handle(WorkerJoined(0, ("m",)), 0)
    d = full_batch(policy, 0, 0)
    start = d.earliest_ns + 3 * MS  # learn a 3 ms margin
    end = start + d.expected_ns
    policy.handle(BatchDone(d.batch_id, 0, BatchStatus.OK, start, end, 8), end)
    margin = learnt(policy)[2]
    head = Request(1, "m", end + D + PROF.latency_ns(1) + R + margin // 2, end)
    other = Request(2, "m", end + FAR, end)
    [sent] = dispatches(policy.handle(RequestsArrived((head, other)), end))
    assert sent.request_ids == (1,)
    assert sent.latest_ns == head.deadline_ns - R - PROF.latency_ns(1)


# ------------------------------------------------------------------ waiting and granting


def two_busy_workers(first_b: int = 0) -> SymphonyPolicy:
    """Worker 0 serves "a", worker 1 serves "b"; each gets a full batch, at 0 and at
    ``first_b``: busy until 12.5 ms and ``first_b`` + 12.5 ms."""
    policy = make_policy(profiles={"a": PROF, "b": PROF})
    policy.handle(WorkerJoined(0, ("a",)), 0)
    policy.handle(WorkerJoined(1, ("b",)), 0)
    assert full_batch_of(policy, "a", 0, 0).worker_id == 0
    assert full_batch_of(policy, "b", 100, first_b).worker_id == 1
    return policy


def test_every_waiting_batch_is_granted_its_worker_in_turn() -> None:
    policy = two_busy_workers(first_b=MS)
    assert policy.handle(requests(200, 8, 2 * MS + FAR, 2 * MS, "a"), 2 * MS) == []
    assert policy.handle(requests(300, 8, 2 * MS + FAR, 2 * MS, "b"), 2 * MS) == []
    assert policy.next_wakeup_ns() == 12 * MS  # worker 0 about to be free
    [d] = dispatches(policy.handle(Tick(), 12 * MS))
    assert (d.model, d.worker_id) == ("a", 0)
    assert policy.next_wakeup_ns() == 13 * MS  # "b" still waits for worker 1
    [d] = dispatches(policy.handle(Tick(), 13 * MS))
    assert (d.model, d.worker_id, d.earliest_ns) == ("b", 1, 13 * MS + D)


def test_waiters_granted_at_one_tick_go_out_most_urgent_first() -> None:
    # Both workers free up at 12.5 ms; "b"'s batch must start earlier than "a"'s, so it
    # is sent first although worker 0 (of "a") comes first in the grant order.
    policy = two_busy_workers()
    assert policy.handle(requests(200, 8, MS + FAR, MS, "a"), MS) == []
    assert policy.handle(requests(300, 8, MS + 50 * MS, MS, "b"), MS) == []
    sent = dispatches(policy.handle(Tick(), 12 * MS))
    assert [(d.model, d.worker_id) for d in sent] == [("b", 1), ("a", 0)]
    assert sent[0].latest_ns < sent[1].latest_ns


def test_a_model_replanned_in_the_same_call_still_gets_its_other_pools_worker() -> None:
    # Worker 0 serves "x" and "y", worker 1 only "y". "x" is more urgent and takes worker
    # 0, which moves its pool's earliest start past the point where "y"'s plan (on worker
    # 0's pool) would be stale: "y" is re-planned in the same call and goes to worker 1.
    policy = make_policy(profiles={"x": PROF, "y": PROF})
    policy.handle(WorkerJoined(0, ("x", "y")), 0)
    policy.handle(WorkerJoined(1, ("y",)), 0)
    arrivals = RequestsArrived(
        tuple(Request(i, "x", 16_900_000, 0) for i in range(8))
        + tuple(Request(100 + i, "y", 17 * MS, 0) for i in range(8))
    )
    sent = dispatches(policy.handle(arrivals, 0))
    assert [(d.model, d.worker_id, d.earliest_ns) for d in sent] == [("x", 0, D), ("y", 1, D)]


def test_an_early_report_hands_the_worker_to_another_models_waiting_batch() -> None:
    policy = make_policy(profiles={"a": PROF, "b": PROF})
    policy.handle(WorkerJoined(0, ("a", "b")), 0)
    first = full_batch_of(policy, "a", 0, 0)  # planned to end at 12.5 ms
    assert policy.handle(requests(100, 8, MS + FAR, MS, "b"), MS) == []  # waits
    end = 10 * MS  # "a" ran 2.5 ms short: the worker is free now
    [d] = dispatches(
        policy.handle(BatchDone(first.batch_id, 0, BatchStatus.OK, first.earliest_ns, end, 8), end)
    )
    assert (d.model, d.worker_id, d.earliest_ns) == ("b", 0, end + D)


# ------------------------------------------------------------------ the shed floor's edges


def head_and_fresh(fresh: int, shed_fraction: float) -> list[Action]:
    """The worker is busy until 12.5 ms; request 0 (from 1 ms) must end by 18 ms, which
    only a batch of 1 from 12.5 ms still makes (17.8 ms; a batch of 2 would end at
    18.8 ms); at 12 ms ``fresh`` requests with 25 ms to go arrive. The target batch is 7:
    a fraction of 0.5 makes 2 the shed floor, 0.95 makes it 7."""
    policy = make_policy(shed_fraction=shed_fraction)
    policy.handle(WorkerJoined(0, ("m",)), 0)
    policy.handle(requests(200, 8, 25 * MS, 0), 0)
    assert policy.handle(requests(0, 1, 18 * MS, MS), MS) == []  # waits for the worker
    actions = policy.handle(requests(100, fresh, 37 * MS, 12 * MS), 12 * MS)
    assert policy.snapshot().models["m"].target_batch == 7
    return actions


def test_a_floor_of_two_sheds_a_lone_head_when_two_requests_stand_behind_it() -> None:
    # three requests in all: the head is shed so that the other two can go together
    assert head_and_fresh(2, shed_fraction=0.5) == [Drop((0,), DropReason.SHED)]
    # with one behind it there is no batch of two to keep: the head goes alone
    for fresh, fraction in ((1, 0.5), (2, 0.95)):  # ... and with the floor at 7, too
        actions = head_and_fresh(fresh, shed_fraction=fraction)
        [d] = dispatches(actions)
        assert drops(actions) == {} and (d.request_ids, d.earliest_ns) == ((0,), 12 * MS + D)


def test_a_floor_of_one_sheds_nothing_a_head_only_the_margin_rules_out_goes_alone() -> None:
    policy = make_policy(refit=False, shed_fraction=0.01)  # 0.01: every floor is 1
    policy.handle(WorkerJoined(0, ("m",)), 0)
    d = full_batch(policy, 0, 0)
    start = d.earliest_ns + 3 * MS  # learn a 3 ms margin
    end = start + d.expected_ns
    policy.handle(BatchDone(d.batch_id, 0, BatchStatus.OK, start, end, 8), end)
    margin = learnt(policy)[2]
    head = Request(1, "m", end + D + PROF.latency_ns(1) + R + margin // 2, end)
    others = [Request(2 + i, "m", end + FAR, end) for i in range(2)]
    actions = policy.handle(RequestsArrived((head, *others)), end)
    assert drops(actions) == {}
    [sent] = dispatches(actions)
    assert sent.request_ids == (1,)


# ------------------------------------------------- re-planning when a worker is taken


def shared_worker_with_margin() -> SymphonyPolicy:
    """Worker 0 serves "m" and "n"; "m" learns a 3 ms margin from a batch that started
    3 ms late and ended at 15.5 ms; the worker is idle from then on."""
    policy = make_policy(profiles={"m": PROF, "n": PROF}, refit=False, defer_headroom=0.0)
    policy.handle(WorkerJoined(0, ("m", "n")), 0)
    d = full_batch_of(policy, "m", 0, 0)
    start = d.earliest_ns + 3 * MS
    end = start + d.expected_ns
    assert end == 15_500_000
    policy.handle(BatchDone(d.batch_id, 0, BatchStatus.OK, start, end, 8), end)
    assert learnt(policy)[2] == 3 * MS
    return policy


def test_a_deferred_batch_is_ready_once_the_worker_is_taken_past_its_growing_point() -> None:
    policy = shared_worker_with_margin()
    # one "m" request due at 38 ms: deferred, a batch of 2 would fit (timer at 28 ms)
    assert policy.handle(requests(1, 1, 38 * MS, 16 * MS), 16 * MS) == []
    assert policy.next_wakeup_ns() == 38 * MS - (R + 3 * MS) - PROF.latency_ns(2) - D - T
    assert policy.snapshot().models["m"].ready is False
    # "n" takes the worker until 28.5 ms: from then on no batch of 2 makes 38 ms (with
    # the margin on both ends), so "m" is ready at once and waits for the worker
    [d] = dispatches(policy.handle(requests(100, 8, FAR, 16 * MS, "n"), 16 * MS))
    assert (d.model, d.earliest_ns + d.expected_ns) == ("n", 28_500_000)
    model = policy.snapshot().models["m"]
    assert (model.ready, model.waiting, model.candidate_batch) == (True, True, 1)


def test_a_waiting_batch_is_replanned_when_the_worker_is_taken_by_a_more_urgent_one() -> None:
    policy = shared_worker_with_margin()
    # eight "m" requests due at 36 ms and eight "n" ones due at 32 ms, at 16 ms: "n" goes
    # first and holds the worker until 28.5 ms; from 28.5 ms + the margin only one "m"
    # request still makes 36 ms with the margin on both ends: "m" waits with a batch of 1
    arrivals = RequestsArrived(
        tuple(Request(100 + i, "n", 32 * MS, 16 * MS) for i in range(8))
        + tuple(Request(200 + i, "m", 36 * MS, 16 * MS) for i in range(8))
    )
    [d] = dispatches(policy.handle(arrivals, 16 * MS))
    assert d.model == "n"
    model = policy.snapshot().models["m"]
    assert (model.ready, model.waiting, model.candidate_batch) == (True, True, 1)


def test_a_waiting_request_is_dropped_as_soon_as_a_dispatch_dooms_it() -> None:
    # One worker for "m" and "n"; at 1 ms eight of each: "n" (due at 18 ms) goes first
    # and holds the worker until 13.5 ms, after which not even one "m" request (due at
    # 18.5 ms) can end in time (13.5 + 5 + 0.3 ms): they are dropped now, not at 13 ms.
    policy = make_policy(profiles={"m": PROF, "n": PROF})
    policy.handle(WorkerJoined(0, ("m", "n")), 0)
    arrivals = RequestsArrived(
        tuple(Request(100 + i, "n", 18 * MS, MS) for i in range(8))
        + tuple(Request(200 + i, "m", 18_500_000, MS) for i in range(8))
    )
    actions = policy.handle(arrivals, MS)
    assert drops(actions) == {DropReason.DEADLINE: tuple(range(200, 208))}
    [d] = dispatches(actions)
    assert (d.model, d.earliest_ns + d.expected_ns) == ("n", 13_500_000)
    assert policy.next_wakeup_ns() is None


def test_a_long_wait_does_not_lose_the_replan_when_the_worker_is_pushed_out() -> None:
    # Eighty "m" arrivals while worker 0 runs two "n" batches: each re-plans "m", and the
    # pool's watch heap is compacted on the way; the live entry must survive, so that an
    # overrun report that pushes the worker out dooms "m"'s head at once.
    policy = make_policy(profiles={"m": PROF, "n": PROF})
    policy.handle(WorkerJoined(0, ("m", "n")), 0)
    [first] = dispatches(policy.handle(requests(0, 16, FAR, 0, "n"), 0))
    [second] = dispatches(policy.handle(Tick(), 12 * MS))
    assert second.earliest_ns + second.expected_ns == 24_500_000
    # "m"'s head is due at 31 ms: a batch of 2 from 24.5 ms still makes it
    assert policy.handle(requests(1000, 1, 31 * MS, 12 * MS), 12 * MS) == []
    for i in range(80):
        t = 12_100_000 + i * 20_000
        assert policy.handle(requests(100 + i, 1, FAR, t), t) == []
    assert policy.snapshot().models["m"].waiting is True
    # the first batch ends 2 ms late: the worker is busy until 26.5 ms, and 26.5 + l(1)
    # + R = 31.8 ms is past the head's deadline
    end = 14_500_000
    actions = policy.handle(BatchDone(first.batch_id, 0, BatchStatus.OK, first.earliest_ns, end, 8), end)
    assert actions == [Drop((1000,), DropReason.DEADLINE)]


# ------------------------------------------------------------------ the cached shed floor


def test_the_shed_floor_follows_a_refit_at_once() -> None:
    # Configured without a fixed cost (l(b) = 0.5 ms x b) nothing is worth shedding for:
    # the floor is 1. Two batches of 8 that take 6 ms each refit c to 2 ms, and the next
    # decision, well within the floor's refresh period, already uses the new floor (7).
    base = 1_000_000_000  # a running system: the policy has been up for a second
    flat = Profile(k_ns=500_000, c_ns=0, max_batch=8)
    policy = make_policy(profiles={"m": flat}, refit_window=2)
    policy.handle(WorkerJoined(0, ("m",)), base)
    policy.handle(WorkerJoined(1, ("m",)), base)
    sent = dispatches(policy.handle(requests(0, 16, base + FAR, base), base))
    assert [(d.worker_id, d.expected_ns) for d in sent] == [(0, 4 * MS), (1, 4 * MS)]
    end = base + D + 6 * MS
    for d in sent:
        policy.handle(BatchDone(d.batch_id, d.worker_id, BatchStatus.OK, d.earliest_ns, end, 8), end)
    assert profile_of(policy, "m") == (500_000, 2 * MS, 8)
    now = base + 7 * MS
    # three heads that only a batch of 5 still gets in time, and eight with room
    arrivals = RequestsArrived(
        tuple(Request(100 + i, "m", now + 5 * MS, now) for i in range(3))
        + tuple(Request(200 + i, "m", now + FAR, now) for i in range(8))
    )
    actions = policy.handle(arrivals, now)
    assert policy.snapshot().models["m"].target_batch == 8  # its floor: 7
    assert drops(actions) == {DropReason.SHED: (100, 101, 102)}
    [d] = dispatches(actions)
    assert d.request_ids == tuple(range(200, 208))


def test_a_dispatch_that_leaves_the_pools_earliest_start_alone_replans_no_one() -> None:
    # Workers 0 and 1 serve "m" and "n". One "m" request at 1 ms is deferred to 30 ms
    # (headroom 4: its rate, 64/s, times 4 would fill more than its share of one worker).
    # At 26 ms "n" takes worker 0; worker 1 is still idle, so "m"'s earliest start did not
    # move and its plan stands: it goes at its timer. (Re-planned at 26 ms, it would see
    # the rate fallen to 40/s and go at once: a decision taken on a move that was not.)
    policy = make_policy(profiles={"m": PROF, "n": PROF}, defer_headroom=4.0)
    policy.handle(WorkerJoined(0, ("m", "n")), 0)
    policy.handle(WorkerJoined(1, ("m", "n")), 0)
    assert policy.handle(requests(1, 1, 37 * MS, MS), MS) == []
    assert policy.next_wakeup_ns() == 30 * MS
    [d] = dispatches(policy.handle(requests(100, 8, 26 * MS + FAR, 26 * MS, "n"), 26 * MS))
    assert (d.model, d.worker_id) == ("n", 0)
    assert policy.next_wakeup_ns() == 30 * MS
    [d] = dispatches(policy.handle(Tick(), 30 * MS))
    assert (d.model, d.worker_id, d.request_ids) == ("m", 1, (1,))


def test_a_late_report_that_frees_the_worker_just_in_time_still_grants_it() -> None:
    # Worker 0 serves "a" and "b": two "a" batches, planned 0.5-12.5 ms and 12.5-24.5 ms;
    # a "b" batch waits for it (grant at 24 ms). The driver runs late: no tick at 24 ms,
    # and at 24.2 ms it hands over the first batch's report: it ran 0.2 ms over, so the
    # worker frees up at 24.7 ms = now + D, which counts as about to be free (as when
    # dispatching): the waiting batch is granted now, not stranded without a wakeup.
    policy = make_policy(profiles={"a": PROF, "b": PROF})
    policy.handle(WorkerJoined(0, ("a", "b")), 0)
    [first] = dispatches(policy.handle(requests(0, 16, FAR, 0, "a"), 0))
    [second] = dispatches(policy.handle(Tick(), 12 * MS))
    assert second.earliest_ns + second.expected_ns == 24_500_000
    assert policy.handle(requests(100, 8, 13 * MS + FAR, 13 * MS, "b"), 13 * MS) == []
    now, end = 24_200_000, 12_700_000
    [d] = dispatches(
        policy.handle(BatchDone(first.batch_id, 0, BatchStatus.OK, first.earliest_ns, end, 8), now)
    )
    assert (d.model, d.worker_id, d.earliest_ns) == ("b", 0, now + D)


# ------------------------------------------------------------------ exact boundaries


def test_batch_ids_count_up_by_one_from_the_configured_first() -> None:
    policy = make_policy(first_batch_id=7)
    for wid in range(3):
        policy.handle(WorkerJoined(wid, ("m",)), 0)
    assert [full_batch(policy, 100 * i, 0).batch_id for i in range(3)] == [7, 8, 9]


def test_a_zero_duration_report_still_teaches_the_margin() -> None:
    # an OK report whose batch took no measurable time is a timing like any other: its
    # start, 20 ms after it could have, counts in the margin (less the 12 ms it did not
    # take: a residual of 0 + 20 - 12 ms)
    policy = make_policy(refit=False)
    policy.handle(WorkerJoined(0, ("m",)), 0)
    d = full_batch(policy, 0, 0)
    start = d.earliest_ns + 20 * MS
    policy.handle(BatchDone(d.batch_id, 0, BatchStatus.OK, start, start, 8), start)
    assert learnt(policy)[2] == 20 * MS - PROF.latency_ns(8)


def test_a_worker_is_overdue_from_exactly_its_planned_end() -> None:
    # 1 ns before its planned end, an unreported batch still looks on time: the next
    # batch is queued behind it; at the planned end itself, it is overdue
    for overdue in (False, True):
        policy = make_policy(refit=False)
        policy.handle(WorkerJoined(0, ("m",)), 0)
        d = full_batch(policy, 0, 0)
        end = d.earliest_ns + d.expected_ns
        now = end - 1 if not overdue else end
        actions = policy.handle(requests(100, 8, now + FAR, now), now)
        if overdue:
            assert dispatches(actions) == []
            assert free_at(policy) == now + D + 200_000
        else:
            [e] = dispatches(actions)
            assert e.earliest_ns == now + D


def test_a_profile_is_not_stale_at_exactly_its_age_limit() -> None:
    # the same arrivals as above, exactly stale_after_ns after the last dispatch: the
    # learnt profile stands, and dooms all three
    policy = make_policy(stale_after_ns=200 * MS)
    policy.handle(WorkerJoined(0, ("m",)), 0)
    now = last = 0
    for i in range(10):
        d = full_batch(policy, 100 * i, now)
        last = now
        end = d.earliest_ns + 2 * d.expected_ns
        policy.handle(BatchDone(d.batch_id, 0, BatchStatus.OK, d.earliest_ns, end, 8), end)
        now = end + MS
    before = learnt(policy)
    now = last + 200 * MS
    arrivals = RequestsArrived(
        (
            Request(5000, "m", now + 6 * MS, now),
            Request(5001, "m", now + 6 * MS, now),
            Request(5002, "m", now + 5_700_000, now),
        )
    )
    actions = policy.handle(arrivals, now)
    assert learnt(policy)[:2] == before[:2]
    assert dispatches(actions) == []
    assert drops(actions) == {DropReason.DEADLINE: (5002, 5000, 5001)}


def test_a_head_that_fits_exactly_one_with_its_margin_keeps_the_margin() -> None:
    # a 3 ms margin learnt; the head's deadline leaves exactly l(1) between the start
    # and the reply plus margin: a batch of one that must start now, with the margin
    # (not one sent alone as if only the margin ruled it out, which drops the margin)
    policy = make_policy(refit=False)
    policy.handle(WorkerJoined(0, ("m",)), 0)
    d = full_batch(policy, 0, 0)
    start = d.earliest_ns + 3 * MS
    end = start + d.expected_ns
    policy.handle(BatchDone(d.batch_id, 0, BatchStatus.OK, start, end, 8), end)
    now = end + MS
    deadline = now + D + PROF.latency_ns(1) + R + 3 * MS
    [e] = dispatches(policy.handle(requests(100, 1, deadline, now), now))
    assert learnt(policy)[2] == 3 * MS
    assert (e.request_ids, e.earliest_ns, e.latest_ns) == ((100,), now + D, now + D)


def test_a_load_that_exactly_fills_its_share_is_not_deferred() -> None:
    # headroom x rate x l(1) == share x 1 to the last bit: batches of one carry the load,
    # so the lone request goes at once (deferral pays only when the load needs more)
    load = LoadEstimator(PolicyConfig().rate_window_ns)
    load.arrived(MS, 25 * MS)
    rate = load.rate_per_ns(MS)
    headroom = 1.0 / (rate * PROF.latency_ns(1))
    while headroom * rate * PROF.latency_ns(1) < 1.0:
        headroom = math.nextafter(headroom, math.inf)
    while headroom * rate * PROF.latency_ns(1) > 1.0:
        headroom = math.nextafter(headroom, 0.0)
    assert headroom * rate * PROF.latency_ns(1) == 1.0
    policy = make_policy(defer_headroom=headroom)
    policy.handle(WorkerJoined(0, ("m",)), 0)
    [d] = dispatches(policy.handle(requests(1, 1, 26 * MS, MS), MS))
    assert (d.request_ids, d.earliest_ns) == ((1,), MS + D)


# ------------------------------------------------------------------ exact wake-ups


def b_waits_for_worker_1() -> tuple[SymphonyPolicy, Dispatch, Dispatch]:
    """Worker 0 serves "a", worker 1 "b"; both busy, a "b" batch waits for worker 1."""
    policy = make_policy(profiles={"a": PROF, "b": PROF}, defer_headroom=0.0)
    policy.handle(WorkerJoined(0, ("a",)), 0)
    policy.handle(WorkerJoined(1, ("b",)), 0)
    a = full_batch_of(policy, "a", 0, 0)
    b = full_batch_of(policy, "b", 100, MS)
    assert policy.handle(requests(200, 8, MS + FAR, MS, "b"), MS) == []
    assert policy.snapshot().models["b"].waiting is True
    return policy, a, b


def test_a_lost_workers_grant_is_no_wakeup() -> None:
    policy, _, b = b_waits_for_worker_1()
    policy.handle(WorkerLost(0), 2 * MS)
    assert policy.next_wakeup_ns() == b.earliest_ns + b.expected_ns - D


def test_a_tick_at_a_lost_workers_grant_time_changes_nothing() -> None:
    # a driver that did not ask for the wake-up again since worker 0 was lost still
    # ticks at its old grant time: nothing happens, "b" still waits for worker 1
    policy, a, b = b_waits_for_worker_1()
    policy.handle(WorkerLost(0), 2 * MS)
    assert policy.handle(Tick(), a.earliest_ns + a.expected_ns - D) == []
    assert policy.snapshot().models["b"].waiting is True
    assert policy.next_wakeup_ns() == b.earliest_ns + b.expected_ns - D


# ------------------------------------------------------------------ exact re-plans and refreshes


def test_a_move_that_stops_at_a_deferred_batchs_growing_point_replans_no_one() -> None:
    # As above, "m"'s lone request at 1 ms is deferred to 30 ms; its batch could grow
    # until a worker starts no earlier than 30.7 ms (37 - R - l(2)). At 18.2 ms "n" takes
    # worker 0 until exactly 30.7 ms; at 22 ms "n" takes worker 1 too, which moves the
    # pool's earliest start up to 30.7 ms: not past the growing point, so "m" stays
    # deferred. (Re-planned at 22 ms it would see the rate fallen to 48/s and not defer.)
    policy = make_policy(profiles={"m": PROF, "n": PROF}, defer_headroom=4.0)
    policy.handle(WorkerJoined(0, ("m", "n")), 0)
    policy.handle(WorkerJoined(1, ("m", "n")), 0)
    assert policy.handle(requests(1, 1, 37 * MS, MS), MS) == []
    assert policy.next_wakeup_ns() == 30 * MS
    now = 30_700_000 - D - PROF.latency_ns(8)
    [d] = dispatches(policy.handle(requests(100, 8, now + FAR, now, "n"), now))
    assert (d.worker_id, d.earliest_ns + d.expected_ns) == (0, 30_700_000)
    [d] = dispatches(policy.handle(requests(200, 8, 22 * MS + FAR, 22 * MS, "n"), 22 * MS))
    assert (d.model, d.worker_id) == ("n", 1)
    assert policy.snapshot().models["m"].waiting is False
    assert policy.next_wakeup_ns() == 30 * MS


def test_an_idle_worker_reported_free_ahead_of_now_is_planned_from_that_moment() -> None:
    # The worker's report puts its end 0.5 ms (D) ahead of the policy's clock. Idle from
    # then, with no batch left to overrun, it is planned free from exactly that moment
    # (a busy one would get the 3 ms margin on top): a head with exactly l(1) between it
    # and the deadline less the reply and the margin goes as a batch of one that keeps
    # the margin (planned even 1 ns later, it would go alone without the margin).
    policy = make_policy(refit=False)
    policy.handle(WorkerJoined(0, ("m",)), 0)
    d = full_batch(policy, 0, 0)
    start = d.earliest_ns + 3 * MS
    end = start + d.expected_ns
    policy.handle(BatchDone(d.batch_id, 0, BatchStatus.OK, start, end, 8), end)
    d = full_batch(policy, 100, end + MS)
    end = d.earliest_ns + d.expected_ns
    now = end - D
    policy.handle(BatchDone(d.batch_id, 0, BatchStatus.OK, d.earliest_ns, end, 8), now)
    assert learnt(policy)[2] == 3 * MS
    assert free_at(policy) == end
    deadline = end + PROF.latency_ns(1) + R + 3 * MS
    [e] = dispatches(policy.handle(requests(200, 1, deadline, now), now))
    assert (e.request_ids, e.earliest_ns, e.latest_ns) == ((200,), end, end)


def test_the_cached_shed_floor_is_refreshed_after_exactly_its_period() -> None:
    # The floor is cached for 1 s / 128 = 7.8125 ms. At 0 a full batch with 20 ms to go
    # makes 5 the target batch, and the floor cached then is 5. The three heads (from 1 ms,
    # due at 22 ms) still fit a batch of 5. Ten fresh requests 1 ns before the period is
    # up find the cached floor: nothing is shed; at exactly the period the floor is
    # recomputed from the 21 arrivals (target 6, floor 6) and the heads are shed.
    period = PolicyConfig().rate_window_ns // 128
    for at, shed in ((period - 1, {}), (period, {DropReason.SHED: (0, 1, 2)})):
        policy = make_policy(shed_fraction=0.95)
        policy.handle(WorkerJoined(0, ("m",)), 0)
        assert len(dispatches(policy.handle(requests(200, 8, 20 * MS, 0), 0))) == 1
        assert policy.snapshot().models["m"].target_batch == 5
        assert policy.handle(requests(0, 3, 22 * MS, MS), MS) == []
        actions = policy.handle(requests(100, 10, at + 25 * MS, at), at)
        assert policy.snapshot().models["m"].target_batch == 6
        assert drops(actions) == shed and dispatches(actions) == []


def test_a_rate_window_under_256_ns_refreshes_the_floor_every_nanosecond() -> None:
    # The refresh period is rate_window_ns // 128, at least 1 ns: 1 ns for a 200 ns
    # window, 2 ns for 256 ns. The scene above, squeezed: the floor cached at 0 (target
    # 5) is refreshed 1 ns later with the 200 ns window only (target 6: heads shed).
    for window, shed in ((200, {DropReason.SHED: (0, 1, 2)}), (256, {})):
        policy = make_policy(shed_fraction=0.95, rate_window_ns=window)
        policy.handle(WorkerJoined(0, ("m",)), 0)
        assert len(dispatches(policy.handle(requests(200, 8, 20 * MS, 0), 0))) == 1
        assert policy.snapshot().models["m"].target_batch == 5
        arrivals = RequestsArrived(
            requests(0, 3, 22 * MS, 1).requests + requests(100, 10, 1 + 25 * MS, 1).requests
        )
        actions = policy.handle(arrivals, 1)
        assert policy.snapshot().models["m"].target_batch == 6
        assert drops(actions) == shed and dispatches(actions) == []
