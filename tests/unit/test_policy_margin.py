"""The measured margin cannot lock a model out after an overloaded stretch."""

from __future__ import annotations

from central.policy import PolicyConfig, make_policy
from central.policy.types import (
    BatchDone,
    BatchStatus,
    Dispatch,
    Drop,
    Profile,
    Request,
    RequestsArrived,
    Tick,
    WorkerJoined,
)

MS = 1_000_000
PROFILE = Profile(1_082_000, 5_204_000)
SLO = 25 * MS


def _run_until_idle(
    policy, now: int, horizon: int, overrun_ns: int, first: list | None = None
) -> tuple[int, list, list]:
    """Carry out ``first`` (the arrival's own actions), then follow next_wakeup_ns,
    completing every dispatched batch ``overrun_ns`` late."""
    dispatched, dropped, pending = [], [], []
    for a in first or []:
        if isinstance(a, Dispatch):
            dispatched.append(a)
            pending.append((a.earliest_ns + a.expected_ns + overrun_ns, a))
        elif isinstance(a, Drop):
            dropped.append(a)
    while True:
        wake = policy.next_wakeup_ns()
        nxt = min([t for t, _ in pending] + ([wake] if wake is not None else []), default=None)
        if nxt is None or nxt > horizon:
            return now, dispatched, dropped
        now = max(now, nxt)
        due = [p for p in pending if p[0] <= now]
        pending = [p for p in pending if p[0] > now]
        actions = []
        for end, d in due:
            actions += policy.handle(
                BatchDone(
                    d.batch_id,
                    d.worker_id,
                    BatchStatus.OK,
                    end - d.expected_ns - overrun_ns,
                    end,
                    len(d.request_ids),
                ),
                now,
            )
        actions += policy.handle(Tick(), now)
        for a in actions:
            if isinstance(a, Dispatch):
                dispatched.append(a)
                pending.append((a.earliest_ns + a.expected_ns + overrun_ns, a))
            elif isinstance(a, Drop):
                dropped.append(a)


def test_an_inflated_margin_still_lets_batches_run_and_relearn() -> None:
    policy = make_policy("symphony", PolicyConfig(profiles={"m": PROFILE}))
    now = 0
    policy.handle(WorkerJoined(0, ("m",)), now)
    rid = 0
    # an overloaded stretch: every batch overruns its plan by 15 ms
    for _ in range(40):
        rid += 1
        first = policy.handle(RequestsArrived((Request(rid, "m", now + SLO, now),)), now)
        now, _, _ = _run_until_idle(policy, now, now + 200 * MS, overrun_ns=15 * MS, first=first)
        now += 200 * MS
    # the cap (max_margin_fraction, 0.2 of the typical budget since the simulator showed
    # 0.1 too tight for CV 0.1 noise: p99 overrun 4.4 ms > 2.5 ms at SLO 25) still holds
    cap = PolicyConfig().max_margin_fraction
    assert policy.snapshot().models["m"].margin_ns <= cap * SLO + 1
    # load is back to normal: requests must still be served, not all dropped
    served = 0
    for _ in range(40):
        rid += 1
        first = policy.handle(RequestsArrived((Request(rid, "m", now + SLO, now),)), now)
        now, dispatched, _dropped = _run_until_idle(policy, now, now + 200 * MS, overrun_ns=0, first=first)
        served += sum(len(d.request_ids) for d in dispatched)
        now += 200 * MS
    assert served == 40


def test_a_head_only_the_margin_rules_out_goes_alone_instead_of_being_dropped() -> None:
    policy = make_policy("symphony", PolicyConfig(profiles={"m": PROFILE}))
    now = 0
    policy.handle(WorkerJoined(0, ("m",)), now)
    # learn a 5 ms margin: batches of 1 that overrun by 0..5 ms
    rid = 0
    for i in range(40):
        rid += 1
        first = policy.handle(RequestsArrived((Request(rid, "m", now + SLO, now),)), now)
        now, _, _ = _run_until_idle(policy, now, now + 200 * MS, overrun_ns=(i % 6) * MS, first=first)
        now += 200 * MS
    learnt = policy.snapshot().models["m"]
    margin = learnt.margin_ns
    assert margin >= 2 * MS
    l1 = learnt.k_ns + learnt.c_ns  # the refit profile's l(1)
    # a request whose budget fits l(1) plus the overheads but not the margin as well
    cfg = PolicyConfig()
    budget = cfg.dispatch_cost_ns + l1 + cfg.reply_cost_ns + margin // 2
    rid += 1
    actions = policy.handle(RequestsArrived((Request(rid, "m", now + budget, now),)), now)
    sent = [a for a in actions if isinstance(a, Dispatch)]
    assert not [a for a in actions if isinstance(a, Drop)]
    assert len(sent) == 1 and sent[0].request_ids == (rid,)
    assert sent[0].earliest_ns <= sent[0].latest_ns
    assert sent[0].latest_ns + sent[0].expected_ns + cfg.reply_cost_ns <= now + budget
