"""The split policy learns from stalls exactly as the single-process one does.

A batch that starts later than its window and its worker allowed (the worker's machine
stalled) feeds the policy's margin (``ProfileEstimator.observe(..., late_ns)``). Until
2026-12-03 the split's ``Finished`` carried no lateness, so fed the same events with an
8 ms worker stall ``SymphonyPolicy`` ended with an 8 ms margin (the issue's report) and ``ShardedPolicy`` with
0: its batches were planned as if no stall ever happened. Here both are driven by one
scripted worker model on virtual time, and their margins, snapshots and every action are
compared.
"""

from __future__ import annotations

import heapq
from typing import Any

import pytest

from central.policy import (
    Action,
    BatchDone,
    BatchStatus,
    Dispatch,
    PolicyConfig,
    Profile,
    Request,
    RequestsArrived,
    Tick,
    WorkerJoined,
    make_policy,
)
from central.policy.sharded import ShardedPolicy, ShardOptions

MS = 1_000_000
PROFILE = Profile(1_082_000, 5_204_000, 64)
SLO = 25 * MS
STALL = 3 * MS  # below the margin cap (max_margin_fraction of the 25 ms budget)


def drive(policy: Any, stall_every: int, n_requests: int = 3000) -> list[tuple[int, Action]]:
    """4 workers, Poisson-like arrivals at 60% of capacity (fixed gaps), every
    ``stall_every``-th batch starting ``STALL`` late; returns every action with its time."""
    events: list[tuple[int, int, Any]] = []
    seq = 0

    def at(t: int, ev: Any) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, ev))

    for w in range(4):
        at(0, WorkerJoined(w, ("m",), (("m", PROFILE),)))
    gap = 700_000  # ~1,430 req/s: 0.6 of the 4-GPU bound
    for i in range(n_requests):
        t = MS + i * gap + (i * 7919 % 300_000)  # a fixed, irregular pattern
        at(t, RequestsArrived((Request(i, "m", t + SLO, t),)))
    free = dict.fromkeys(range(4), 0)
    log: list[tuple[int, Action]] = []
    batches = 0
    while True:
        wake = policy.next_wakeup_ns()
        if events and (wake is None or events[0][0] <= wake):
            now, _, ev = heapq.heappop(events)
        elif wake is not None:
            now, ev = wake, Tick()
        else:
            break
        for action in policy.handle(ev, now):
            log.append((now, action))
            if isinstance(action, Dispatch):
                batches += 1
                start = max(action.earliest_ns, free[action.worker_id])
                if batches % stall_every == 0:
                    start += STALL
                end = start + PROFILE.latency_ns(len(action.request_ids))
                free[action.worker_id] = end
                at(
                    end,
                    BatchDone(
                        action.batch_id, action.worker_id, BatchStatus.OK, start, end, len(action.request_ids)
                    ),
                )
    return log


def _config() -> PolicyConfig:
    return PolicyConfig(profiles={"m": PROFILE})


def test_a_stall_enters_the_split_policys_margin_as_the_single_ones() -> None:
    single = make_policy("symphony", _config())
    split = ShardedPolicy(_config(), ShardOptions(shards=1))
    drive(single, stall_every=10)
    drive(split, stall_every=10)
    margin = single.snapshot().models["m"].margin_ns
    assert margin >= STALL  # the single policy learnt the stall (p99 of the lateness)
    assert split.snapshot().models["m"].margin_ns == margin


@pytest.mark.parametrize("shards", [1, 2, 4])
def test_with_stalls_the_split_decides_action_for_action_as_the_single_policy(shards: int) -> None:
    single = drive(make_policy("symphony", _config()), stall_every=10)
    split = drive(ShardedPolicy(_config(), ShardOptions(shards=shards)), stall_every=10)
    assert len(single) > 300
    assert split == single


def test_the_snapshots_show_the_same_models() -> None:
    single = make_policy("symphony", _config())
    split = ShardedPolicy(_config(), ShardOptions(shards=2))
    drive(single, stall_every=7, n_requests=400)
    drive(split, stall_every=7, n_requests=400)
    a, b = single.snapshot().models["m"].as_dict(), split.snapshot().models["m"].as_dict()
    for key in b:  # every field the split knows
        assert b[key] == a[key], key


def test_the_split_snapshot_json_has_its_own_keys() -> None:
    split = ShardedPolicy(_config(), ShardOptions(shards=2))
    drive(split, stall_every=7, n_requests=100)
    snap = split.snapshot()
    assert snap.shards is not None and len(snap.shards) == 2 and snap.moves == 0
    assert snap.workers[0].busy is None and snap.models["m"].target_batch is None
    plain = snap.as_dict()
    assert list(plain) == [
        "now_ns",
        "models",
        "shards",
        "workers",
        "inflight_batches",
        "moves",
        "next_wakeup_ns",
    ]
    assert list(plain["models"]["m"]) == [
        "queue",
        "workers",
        "k_ns",
        "c_ns",
        "max_batch",
        "margin_ns",
        "rate_rps",
        "budget_ns",
        "candidate_batch",
        "ready",
    ]
    assert list(plain["workers"][0]) == ["alive", "models", "free_at_ns", "inflight"]
    owner = split.owner("m")
    assert list(plain["shards"][owner]["models"]["m"]) == ["queue", "ready", "batch"]
