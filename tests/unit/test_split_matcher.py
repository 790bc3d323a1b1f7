"""The matcher of a multi-process split, without sockets: grants booked before the
shard answers, corrected or unbooked by the answer; moves and the rebalancing rule."""

from __future__ import annotations

from central.policy import PolicyConfig
from central.policy.exchange import Booked, Grant, Offer
from central.policy.matcher import Matcher
from central.policy.types import BatchDone, BatchStatus, Profile, WorkerJoined
from central.protocol import Dispatched, Offers
from central.runtime.matcher import MatcherPolicy
from central.runtime.scheduler import SchedulerConfig

MS = 1_000_000
PROFILE = Profile(1 * MS, 5 * MS, 64)


def _matcher() -> Matcher:
    m = Matcher(dispatch_cost_ns=2 * MS, first_batch_id=100)
    m.joined(WorkerJoined(0, ("a",), (("a", PROFILE),)), 0)
    return m


def _grant(m: Matcher, now: int, expected: int = 10 * MS) -> Grant:
    m.receive([Offer("a", 1, now + 50 * MS, expected, 0)])
    step = m.step(now)
    assert isinstance(step, Grant)
    m.booked(step, Booked(step.batch_id, expected, 0), now)
    return step


def test_batch_ids_start_where_configured() -> None:
    assert _grant(_matcher(), 0).batch_id == 100


def test_rebook_corrects_the_workers_plan() -> None:
    m = _matcher()
    g = _grant(m, 0)
    assert m.workers[0].free_at == g.earliest_ns + 10 * MS
    m.rebook(g.batch_id, 14 * MS, 0, 1)
    assert m.workers[0].free_at == g.earliest_ns + 14 * MS


def test_a_declined_grant_frees_the_worker_and_a_later_batch_is_replanned() -> None:
    m = _matcher()
    first = _grant(m, 0)
    now = first.earliest_ns + 8 * MS  # D before the first batch ends: grantable
    second = _grant(m, now)
    assert second.earliest_ns == first.earliest_ns + 10 * MS  # queued behind the first
    m.rebook(first.batch_id, 0, 0, now)  # the shard declined the first
    assert list(m.workers[0].timeline) == [second.batch_id]
    # the second is planned from its own earliest start now, not behind the first
    assert m.workers[0].free_at == second.earliest_ns + 10 * MS
    m.rebook(second.batch_id, 0, 0, now)
    assert m.workers[0].free_at == 0  # back to the worker's plan before either
    assert m.inflight == 0


def test_a_done_batch_is_not_rebooked() -> None:
    m = _matcher()
    g = _grant(m, 0)
    m.done(
        BatchDone(g.batch_id, 0, BatchStatus.OK, g.earliest_ns, g.earliest_ns + 9 * MS, 1),
        g.earliest_ns + 9 * MS,
    )
    assert m.rebook(g.batch_id, 20 * MS, 0, g.earliest_ns + 9 * MS) == []
    assert m.workers[0].free_at == g.earliest_ns + 9 * MS


def _policy(shards: int = 2) -> MatcherPolicy:
    config = SchedulerConfig(
        policy_config=PolicyConfig(first_batch_id=7), shard_processes=shards, placement=(("a", 0), ("b", 0))
    )
    p = MatcherPolicy(config, shards)
    for wid, model in enumerate(("a", "b")):
        p.handle(WorkerJoined(wid, (model,), ((model, PROFILE),)), 0)
    return p


def test_a_grant_goes_to_the_owner_and_is_booked_with_the_offer() -> None:
    p = _policy()
    assert [m[0] for m in p.shards[0].models] == ["a", "b"]  # ShardModels for the owner
    assert p.shards[0].pools and not p.shards[1].pools  # views only where a model is
    p.offers_in(Offers((("a", 3, 40 * MS, 12 * MS, 1 * MS),), ()), 0)
    p.decide(1 * MS)
    (grant,) = p.shards[0].grants
    assert (grant.model, grant.batch_id, grant.worker_id) == ("a", 7, 0)
    assert p.matcher.workers[0].free_at == grant.earliest_ns + 12 * MS
    ok = Dispatched(7, "a", 0, (1, 2), grant.earliest_ns, 40 * MS, 13 * MS, 1 * MS)
    assert p.answered(ok, 2 * MS) is not None
    assert p.matcher.workers[0].free_at == grant.earliest_ns + 13 * MS
    assert p.answered(ok, 2 * MS) is None  # a duplicate answer is ignored


def test_offers_from_a_shard_that_no_longer_owns_the_model_are_ignored() -> None:
    p = _policy()
    assert p.move("a", 1) == 0
    assert p.directory_changed
    assert [v[0] for v in p.shards[1].pools] == [("a",)]  # the new owner gets a's pool
    p.offers_in(Offers((("a", 3, 40 * MS, 12 * MS, 0),), ()), 0)  # the old owner
    p.decide(1 * MS)
    assert not p.shards[0].grants and not p.shards[1].grants
    p.offers_in(Offers((("a", 4, 40 * MS, 12 * MS, 0),), ()), 1)  # the new owner
    p.decide(1 * MS)
    assert [g.model for g in p.shards[1].grants] == ["a"]


def test_rebalance_moves_models_off_a_shard_with_most_of_the_load() -> None:
    p = _policy()
    p.shards[0].stats = {"models": {"a": {"rate_rps": 100.0}, "b": {"rate_rps": 90.0}}}
    assert p.rebalance_plan(1.5) == [("b", 1)]
    p.shards[0].stats = {"models": {"a": {"rate_rps": 100.0}}}
    p.shards[1].stats = {"models": {"b": {"rate_rps": 90.0}}}
    p.owners["b"] = 1
    assert p.rebalance_plan(1.5) == []  # balanced enough: nothing moves


def test_a_batch_answers_to_the_shard_that_dispatched_it_after_a_move() -> None:
    p = _policy()
    p.offers_in(Offers((("a", 3, 40 * MS, 12 * MS, 0),), ()), 0)
    p.decide(1 * MS)
    (grant,) = p.shards[0].grants
    ok = Dispatched(grant.batch_id, "a", 0, (1, 2), grant.earliest_ns, 40 * MS, 12 * MS, 0)
    assert p.answered(ok, 2 * MS, by=0) is not None
    for shard in p.shards:
        shard.clear()
    p.move("a", 1)
    end = grant.earliest_ns + 12 * MS
    p.handle(BatchDone(grant.batch_id, 0, BatchStatus.OK, grant.earliest_ns, end, 2), end)
    # the old shard holds the requests (it forgets them), the new owner refits
    assert [n[0] for n in p.shards[0].notes[1]] == [grant.batch_id]
    assert [n[0] for n in p.shards[1].notes[1]] == [grant.batch_id]


def test_a_lost_batch_goes_back_to_the_shard_that_holds_its_requests() -> None:
    p = _policy()
    p.offers_in(Offers((("a", 3, 40 * MS, 12 * MS, 0),), ()), 0)
    p.decide(1 * MS)
    (grant,) = p.shards[0].grants
    p.answered(Dispatched(grant.batch_id, "a", 0, (1,), grant.earliest_ns, 40 * MS, 12 * MS, 0), 2 * MS, by=0)
    p.move("a", 1)
    p.give_back(grant.batch_id, "a")
    assert p.shards[0].notes[3] == [grant.batch_id] and not p.shards[1].notes[3]


def test_a_repeated_registration_keeps_grants_a_new_incarnation_drops_them() -> None:
    from central.protocol import RegisterShard
    from central.runtime.matcher import SplitScheduler

    class Out:
        def __init__(self) -> None:
            self.sent: list = []

        def send_multipart(self, frames: list, flags: int = 0) -> None:
            self.sent.append(frames)

    class Timer:
        def arm(self, t: object) -> None:
            pass

    from central.protocol import encode

    sched = SplitScheduler(SchedulerConfig(shard_processes=2, placement=(("a", 0),)), clock=lambda: 5 * MS)
    sched.attach(Out(), Timer())
    sched.policy.handle(WorkerJoined(0, ("a",), (("a", PROFILE),)), 0)
    reg = RegisterShard(0, "tcp://127.0.0.1:7000", "shard0-100")
    sched.receive([[b"s-0", *encode(reg)]])
    sched.policy.offers_in(Offers((("a", 3, 40 * MS, 12 * MS, 0),), ()), 0)
    sched.policy.decide(1 * MS)
    assert len(sched.policy.pending) == 1
    sched.receive([[b"s-0", *encode(reg)]])  # the same one again (crossed its answer)
    assert len(sched.policy.pending) == 1
    sched.receive([[b"s-0", *encode(RegisterShard(0, "tcp://127.0.0.1:7001", "shard0-101"))]])
    assert not sched.policy.pending  # restarted: its grant is unbooked
    assert sched.policy.matcher.workers[0].free_at == 0


def test_the_grant_round_trip_is_measured() -> None:
    p = _policy()
    p.offers_in(Offers((("a", 3, 40 * MS, 12 * MS, 0),), ()), 0)
    p.decide(1 * MS)
    (grant,) = p.shards[0].grants
    p.answered(
        Dispatched(grant.batch_id, "a", 0, (1,), grant.earliest_ns, 40 * MS, 12 * MS, 0),
        1 * MS + 700_000,
        by=0,
    )
    assert p.round_trips.percentile(0.99) == 700_000
