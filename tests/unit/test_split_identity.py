"""The split decides action for action as the single-process policy (issue #13).

One set of rules: the per-model candidate rules live in ``central/policy/candidate.py``
and the worker timeline in ``central/policy/timeline.py``, used by both ``SymphonyPolicy``
and the split (``ModelShard`` and ``Matcher``, composed by ``ShardedPolicy``). One event
stream, with arrivals of several models (one of them sharing workers with others), worker
stalls (late starts), overruns (batches that run long), a batch that never reports
(overdue), a worker lost, a worker joining later and models moved between shards, is fed to
``SymphonyPolicy`` and to ``ShardedPolicy`` with 1, 2 and 4 shards in lockstep; every
``handle`` must return the same actions: each Dispatch (batch id, model, worker, request
ids, earliest, latest, expected) in the same order, each Drop's reason and ids (the split
merges drops by reason and sorts their ids, so they are compared as such), and the same
``next_wakeup_ns``. Deadlines are whole milliseconds, so candidates of different models
often tie on their latest start: the tie order (the order models became dirty) is the
single policy's too.
"""

from __future__ import annotations

import heapq
import random
from typing import Any

import pytest

from central.policy import (
    Action,
    BatchDone,
    BatchStatus,
    Dispatch,
    Drop,
    PolicyConfig,
    Profile,
    Request,
    RequestsArrived,
    SymphonyPolicy,
    Tick,
    WorkerJoined,
    WorkerLost,
)
from central.policy.sharded import ShardedPolicy, ShardOptions

MS = 1_000_000
PROFILES = {
    "a": Profile(1_082_000, 5_204_000, 64),
    "b": Profile(700_000, 3_000_000, 32),
    "c": Profile(2_000_000, 4_000_000, 16),
    "d": Profile(500_000, 8_000_000, 64),
}
SLO = {"a": 25 * MS, "b": 20 * MS, "c": 40 * MS, "d": 30 * MS}
WORKERS = {0: ("a", "b"), 1: ("a", "b"), 2: ("c",), 3: ("c", "d"), 4: ("a", "b", "c", "d")}
LATE_JOIN = (300 * MS, 5, ("d",))  # worker 5 joins later
LOST = (450 * MS, 2)  # worker 2 is lost (its batches never report)
SILENT_BATCH = 17  # this batch never reports: its worker turns overdue
MOVES = ((150 * MS, "a", 1), (260 * MS, "c", 3), (520 * MS, "a", 0))  # (time, model, shard)


def _normal(actions: list[Action]) -> list[Any]:
    """Drops merged by reason with sorted ids (as the split returns them), then the
    dispatches in order."""
    drops: dict[int, list[int]] = {}
    out: list[Any] = []
    for a in actions:
        if isinstance(a, Drop):
            drops.setdefault(int(a.reason), []).extend(a.request_ids)
        else:
            assert isinstance(a, Dispatch), a
            out.append(
                (
                    "Dispatch",
                    a.batch_id,
                    a.model,
                    a.worker_id,
                    a.request_ids,
                    a.earliest_ns,
                    a.latest_ns,
                    a.expected_ns,
                )
            )
    return [("Drop", r, tuple(sorted(ids))) for r, ids in sorted(drops.items())] + out


def _events(seed: int) -> list[tuple[int, int, Any]]:
    rng = random.Random(seed)
    events: list[tuple[int, int, Any]] = []
    seq = 0
    for wid, models in WORKERS.items():
        seq += 1
        events.append((0, seq, WorkerJoined(wid, models, tuple((m, PROFILES[m]) for m in models))))
    t, rid = MS, 0
    while t < 700 * MS:
        batch = []
        for _ in range(rng.randrange(1, 6)):
            m = rng.choice("aabbccd")
            batch.append(Request(rid, m, t + SLO[m] + rng.randrange(0, 4) * MS, t))
            rid += 1
        seq += 1
        events.append((t, seq, RequestsArrived(tuple(batch))))
        t += rng.randrange(1, 5) * MS // 2  # many arrivals on the same millisecond grid
    at, wid, models = LATE_JOIN
    events.append((at, seq + 1, WorkerJoined(wid, models, ())))
    events.append((LOST[0], seq + 2, WorkerLost(LOST[1])))
    heapq.heapify(events)
    return events


def run_lockstep(policies: list[Any], sharded: list[ShardedPolicy], seed: int = 3) -> dict[str, int]:
    """Drive ``policies`` with one stream (workers simulated from the first's actions);
    assert every call's actions and the next wakeup agree. Returns what was exercised."""
    events = _events(seed)
    seq = len(events) + 10
    free: dict[int, int] = {}
    moves = list(MOVES)
    seen = {
        "dispatches": 0,
        "drops": 0,
        "stalls": 0,
        "overruns": 0,
        "too_late": 0,
        "silent": 0,
        "moves": 0,
        "calls": 0,
    }
    while True:
        wakes = [p.next_wakeup_ns() for p in policies]
        assert wakes[1:] == wakes[:-1], f"wakeups differ: {wakes}"
        wake = wakes[0]
        if events and (wake is None or events[0][0] <= wake):
            now, _, ev = heapq.heappop(events)
        elif wake is not None:
            now, ev = wake, Tick()
        else:
            break
        while moves and moves[0][0] <= now:  # between calls, as a runtime would
            _, model, to = moves.pop(0)
            for p in sharded:
                p.move(model, to % len(p.shards))
            seen["moves"] += 1
        if isinstance(ev, BatchDone) and ev.worker_id == LOST[1] and now >= LOST[0]:
            continue  # a lost worker says nothing more
        outs = [_normal(p.handle(ev, now)) for p in policies]
        seen["calls"] += 1
        for i, out in enumerate(outs[1:], 1):
            assert out == outs[0], f"policy {i} differs at {now} on {ev!r}"
        for action in outs[0]:
            if action[0] == "Drop":
                seen["drops"] += len(action[2])
                continue
            _, bid, model, wid, ids, earliest, latest, _expected = action
            seen["dispatches"] += 1
            if bid == SILENT_BATCH:  # never reports: its worker turns overdue
                seen["silent"] += 1
                continue
            start = max(earliest, free.get(wid, 0))
            if bid % 9 == 0:  # the worker's machine stalls: a late start
                start += 3 * MS
                seen["stalls"] += 1
            if start > latest:
                seen["too_late"] += 1
                seq += 1
                heapq.heappush(
                    events, (start, seq, BatchDone(bid, wid, BatchStatus.TOO_LATE, start, start, len(ids)))
                )
                continue
            duration = PROFILES[model].latency_ns(len(ids))
            if bid % 7 == 0:  # it runs long
                duration = duration * 3 // 2
                seen["overruns"] += 1
            end = start + duration
            free[wid] = end
            seq += 1
            heapq.heappush(events, (end, seq, BatchDone(bid, wid, BatchStatus.OK, start, end, len(ids))))
    return seen


def _config() -> PolicyConfig:
    return PolicyConfig(profiles=PROFILES)


def test_the_split_decides_action_for_action_as_the_single_policy() -> None:
    sharded = [ShardedPolicy(_config(), ShardOptions(k)) for k in (1, 2, 4)]
    single = SymphonyPolicy(_config())
    seen = run_lockstep([single, *sharded], sharded)
    # measured (seed 3): 295 dispatches, 140 requests dropped, 32 stalls, 38 overruns,
    # 32 refused (too late after a stall), one silent batch
    assert seen["dispatches"] > 250 and seen["drops"] > 50 and seen["too_late"] > 10
    assert seen["stalls"] > 20 and seen["overruns"] > 20 and seen["silent"] == 1
    assert seen["moves"] == len(MOVES)
    # the models really are split, and what was learnt is the same everywhere
    assert len({sharded[2].owner(m) for m in PROFILES}) > 1
    margins = {m: v.margin_ns for m, v in single.snapshot().models.items()}
    assert max(margins.values()) > 0  # the stalls and overruns were learnt
    for p in sharded:
        assert {m: v.margin_ns for m, v in p.snapshot().models.items()} == margins


@pytest.mark.parametrize("seed", [1, 2])
def test_other_streams_too(seed: int) -> None:
    sharded = [ShardedPolicy(_config(), ShardOptions(k)) for k in (1, 4)]
    run_lockstep([SymphonyPolicy(_config()), *sharded], sharded, seed)
