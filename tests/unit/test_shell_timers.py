"""The shells' periodic rules on virtual time, with no sockets.

Each shell (scheduler, frontend, worker, model shard) is built with a ``VirtualClock``
and fake sockets that only record what is sent (decoded, with the virtual time it left
at); its real periodic loop (``_liveness_loop``, ``_sweep_loop``, ``_heartbeat_loop``,
``_drain``) runs as a task on ``VirtualClock.run``, which jumps time whenever every task
sleeps. So each rule is checked at its exact boundary instant, and a test that spans
seconds of virtual time takes milliseconds:

* liveness: a worker whose heartbeats stop is lost at the first check strictly more than
  ``worker_timeout_ns`` after its last heartbeat, not at the check that lands exactly on
  it; a worker that keeps beating never is;
* drain: a draining frontend refuses new requests, relays the answers that come in, and
  at ``drain_timeout_ns`` answers what is left UNAVAILABLE and returns; with nothing left
  it returns at once;
* the sweep: a request unanswered at deadline + ``answer_grace_ns`` is answered FAILED
  at the first sweep strictly past it, naming the silent party (scheduler or worker);
* re-registration: a frontend whose scheduler stops answering heartbeats re-registers at
  the first tick more than ``scheduler_timeout_ns`` after it last heard from it; a worker
  whose registration goes unanswered sends it again every ``register_retry_ns``; a model
  shard whose matcher falls silent registers again after ``matcher_timeout_ns``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import zmq

from central.frontend.server import SWEEP_INTERVAL_NS, Frontend, FrontendConfig, overdue
from central.plumbing.clock import VirtualClock
from central.protocol import (
    FrontendRegistered,
    Heartbeat,
    HeartbeatAck,
    RegisterFrontend,
    RegisterShard,
    RegisterWorker,
    Reply,
    Requests,
    Results,
    Route,
    ShardDirectory,
    Status,
    WorkerRegistered,
    arrays,
    decode,
    encode,
)
from central.runtime.scheduler import Scheduler, SchedulerConfig, is_silent
from central.runtime.shard import ShardConfig, ShardServer
from workers.emulated import EmulatedExecutor, EmulatedModel
from workers.worker import Worker, WorkerConfig

MS = 1_000_000
S = 1_000_000_000
MODEL = EmulatedModel("m", 1 * MS, 5 * MS)
X_METAS, X_BUFFERS = arrays.pack({"x": np.zeros(2, np.float32)})


class Sent:
    """A fake socket: records ``(virtual time, message)`` for every send."""

    def __init__(self, clock: VirtualClock, routed: bool = False) -> None:
        self.clock = clock
        self.routed = routed  # frames start with a routing id (a ROUTER's sends)
        self.log: list[tuple[int, Any]] = []
        self.on_send: Any = None  # called with each message, e.g. to answer it
        self.refuse = False  # True: sends fail as on a DEALER not yet connected
        self.refused = 0

    def send_multipart(self, frames: Sequence[Any], flags: int = 0, copy: bool = True) -> None:
        if self.refuse:
            self.refused += 1
            raise zmq.Again()
        body = [bytes(f) for f in frames[1:]] if self.routed else [bytes(f) for f in frames]
        msg = decode(body)[0]
        self.log.append((self.clock.now_ns(), msg))
        if self.on_send is not None:
            self.on_send(msg)

    def times(self, kind: type) -> list[int]:
        return [t for t, m in self.log if isinstance(m, kind)]

    def of(self, kind: type) -> list[Any]:
        return [m for _, m in self.log if isinstance(m, kind)]


class NoTimer:
    def arm(self, t_ns: int | None) -> None:
        pass


class NoReader:
    def poke(self) -> None:
        pass


class Frame:
    """What a zero-copy ``Reader`` hands over: ``.bytes`` and ``.buffer``."""

    def __init__(self, data: Any) -> None:
        self.bytes = bytes(data)
        self.buffer = memoryview(self.bytes)


def frames(msg: Any) -> list[bytes]:
    return [bytes(f) for f in encode(msg)]


# ------------------------------------------------------------------- liveness


def worker_specs() -> Any:
    return EmulatedExecutor(1, [MODEL]).gpu_specs()


@pytest.mark.parametrize("timeout_ms, lost_at_ms", [(900, 4_000), (500, 3_600), (1_000, 4_100)])
def test_a_worker_whose_heartbeats_stop_is_lost_after_the_timeout_not_before(
    timeout_ms: int, lost_at_ms: int
) -> None:
    # heartbeats every 200 ms until 3.0 s, checks every 100 ms: lost at the first check
    # strictly more than the timeout after 3.0 s (3.9 s for 900 ms is exactly the
    # timeout: still alive), never earlier, and the other worker, still beating, never
    clock = VirtualClock()
    config = SchedulerConfig(
        heartbeat_interval_ns=200 * MS, worker_timeout_ns=timeout_ms * MS, liveness_check_ns=100 * MS
    )
    sched = Scheduler(config, clock=clock)
    out = Sent(clock, routed=True)
    sched.attach(out, NoTimer())
    lost: list[tuple[str, int]] = []
    check = sched.check_liveness

    def spy(now: int) -> Any:
        gone = check(now)
        lost.extend((p.name, now) for p in gone)
        return gone

    sched.check_liveness = spy  # type: ignore[method-assign]

    async def worker(name: str, stop_at_ns: int) -> None:
        ident = f"w-{name}".encode()
        sched.receive([[ident, *frames(RegisterWorker(name, f"tcp://{name}:1", worker_specs()))]])
        while clock.now_ns() <= stop_at_ns:
            sched.receive([[ident, *frames(Heartbeat(clock.now_ns()))]])
            await clock.sleep(0.2)

    async def main() -> None:
        loop = asyncio.ensure_future(sched.liveness_loop())
        steady = asyncio.ensure_future(worker("steady", 10 * S))
        await worker("quiet", 3 * S)
        await clock.sleep_until(8 * S)
        assert len(sched.registry.procs) == 1  # the steady one
        sched.receive([[b"w-quiet", *frames(Heartbeat(clock.now_ns()))]])  # it wakes up
        loop.cancel()
        steady.cancel()

    clock.run(main())
    assert lost == [("quiet", lost_at_ms * MS)]
    assert sched.counters["workers_lost"] == 1
    acks = out.of(HeartbeatAck)
    assert acks[-1].registered == 0  # fenced: told it is unknown, so it registers again
    assert all(a.registered == 1 for a in acks[:-1])


def test_the_liveness_rule_is_strict_at_the_boundary() -> None:
    assert not is_silent(last_seen_ns=1 * S, now=1 * S + 900 * MS, timeout_ns=900 * MS)
    assert is_silent(last_seen_ns=1 * S, now=1 * S + 900 * MS + 1, timeout_ns=900 * MS)


# ------------------------------------------------------------------ frontends


def make_frontend(clock: VirtualClock, **config: Any) -> tuple[Frontend, Sent]:
    """A frontend registered (index 1, model "m") at the current virtual time, with a
    fake scheduler socket and no other socket; answers go to in-process clients."""
    fe = Frontend(FrontendConfig(name="fe", **config), clock=clock, context=object())  # type: ignore[arg-type]
    sched = Sent(clock)
    fe._sched = sched  # type: ignore[assignment]
    fe._on_sched([frames(FrontendRegistered(1, ("m",)))])
    return fe, sched


class Answers:
    """In-process clients: every terminal reply with the virtual time it came."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.got: list[tuple[int, Reply]] = []

    def submit(self, fe: Frontend, slo_ns: int) -> None:
        fe.submit(
            "m",
            X_METAS,
            list(X_BUFFERS),
            slo_ns,
            lambda reply, _: self.got.append((self.clock.now_ns(), reply)),
        )

    def statuses(self) -> list[tuple[int, str]]:
        return [(t, Status(r.status).name) for t, r in self.got]


def ship(fe: Frontend, rid: int, worker: int = 7) -> Sent:
    """Route ``rid`` to a fake worker (its payload pushed there); returns the socket."""
    sock = Sent(fe._time)  # type: ignore[arg-type]
    if worker not in fe._workers:
        fe._workers[worker] = ("tcp://w", sock, NoReader())  # type: ignore[assignment]
    fe._on_sched([frames(Route(1, worker, 0, (rid,)))])
    return fe._workers[worker][1]  # type: ignore[return-value]


def result(fe: Frontend, rid: int, worker: int = 7) -> None:
    fe._on_results(worker, [[Frame(f) for f in encode(Results(1, (rid,), (int(Status.OK),), ("",), ((),)))]])


def test_a_draining_frontend_answers_what_it_holds_then_stops_at_the_deadline() -> None:
    clock = VirtualClock()
    fe, _ = make_frontend(clock, drain_timeout_ns=5 * S)
    answers = Answers(clock)
    ended: list[int] = []

    async def main() -> None:
        for _ in range(3):
            answers.submit(fe, slo_ns=60 * S)  # long SLOs: the sweep plays no part
        await asyncio.sleep(0)
        first, second, _third = list(fe._pending)
        ship(fe, first)
        ship(fe, second)
        drain = asyncio.ensure_future(fe._drain())
        await clock.sleep_until(1 * S)
        answers.submit(fe, slo_ns=60 * S)  # draining: refused at once
        result(fe, first)  # in flight: relayed while draining
        await clock.sleep_until(4_990 * MS)
        result(fe, second)
        await drain
        ended.append(clock.now_ns())

    clock.run(main())
    assert ended == [5 * S]  # at the drain deadline, not before, not a poll later
    assert answers.statuses() == [
        (1 * S, "UNAVAILABLE"),
        (1 * S, "OK"),
        (4_990 * MS, "OK"),
        (5 * S, "UNAVAILABLE"),
    ]
    assert "shutting down" in answers.got[-1][1].error
    assert not fe._pending


def test_a_drain_with_nothing_left_ends_when_the_last_answer_comes() -> None:
    clock = VirtualClock()
    fe, _ = make_frontend(clock, drain_timeout_ns=5 * S)
    answers = Answers(clock)

    async def main() -> int:
        answers.submit(fe, slo_ns=60 * S)
        await asyncio.sleep(0)
        (rid,) = fe._pending
        ship(fe, rid)
        drain = asyncio.ensure_future(fe._drain())
        await clock.sleep_until(1_005 * MS)
        result(fe, rid)
        await drain
        return clock.now_ns()

    assert clock.run(main()) == 1_020 * MS  # the next 20 ms look, not the 5 s deadline
    assert answers.statuses() == [(1_005 * MS, "OK")]


def test_the_sweep_fails_requests_unanswered_at_deadline_plus_grace_naming_who() -> None:
    # SLO 300 ms, grace 2 s: deadline + grace = 2.3 s; the sweep looks every 100 ms, and
    # the one at 2.3 s is not yet past it: both are answered FAILED at 2.4 s
    assert SWEEP_INTERVAL_NS == 100 * MS
    clock = VirtualClock()
    fe, _ = make_frontend(clock, answer_grace_ns=2 * S)
    answers = Answers(clock)

    async def main() -> None:
        sweep = asyncio.ensure_future(fe._sweep_loop())
        for _ in range(3):
            answers.submit(fe, slo_ns=300 * MS)
        await asyncio.sleep(0)
        _at_scheduler, at_worker, answered = list(fe._pending)
        ship(fe, at_worker)
        ship(fe, answered)
        await clock.sleep_until(2 * S)
        result(fe, answered)  # late but answered: the sweep leaves it alone
        await clock.sleep_until(10 * S)
        sweep.cancel()

    clock.run(main())
    assert answers.statuses() == [(2 * S, "OK"), (2_400 * MS, "FAILED"), (2_400 * MS, "FAILED")]
    errors = sorted(r.error for _, r in answers.got[1:])
    assert errors == ["no answer from the scheduler in time", "no answer from the worker in time"]


def test_the_sweep_rule_is_strict_at_the_boundary() -> None:
    clock = VirtualClock()
    fe, _ = make_frontend(clock)
    answers = Answers(clock)

    async def main() -> None:
        answers.submit(fe, slo_ns=100 * MS)
        await asyncio.sleep(0)

    clock.run(main())
    edge = 100 * MS + 2 * S
    assert overdue(fe._pending, edge, 2 * S) == []
    assert overdue(fe._pending, edge + 1, 2 * S) == list(fe._pending)


def test_a_frontend_whose_scheduler_falls_silent_re_registers_after_the_timeout() -> None:
    # heartbeats every 250 ms, acknowledged until 1.0 s; timeout 2 s: at 3.0 s it is
    # exactly 2 s (not lost), at 3.25 s lost: queued requests UNAVAILABLE, registration
    # sent again; once the scheduler answers, plain heartbeats again
    clock = VirtualClock()
    fe, sched = make_frontend(clock, heartbeat_interval_ns=250 * MS, scheduler_timeout_ns=2 * S)
    answers = Answers(clock)

    def scheduler(msg: Any) -> None:
        now = clock.now_ns()
        if isinstance(msg, Heartbeat) and now <= 1 * S:
            asyncio.get_running_loop().call_soon(fe._on_sched, [frames(HeartbeatAck(msg.sent_ns, now, 1))])
        elif isinstance(msg, RegisterFrontend) and now >= 5 * S:
            asyncio.get_running_loop().call_soon(fe._on_sched, [frames(FrontendRegistered(2, ("m",)))])

    sched.on_send = scheduler

    async def main() -> None:
        beat = asyncio.ensure_future(fe._heartbeat_loop())
        await clock.sleep_until(2 * S)
        answers.submit(fe, slo_ns=60 * S)  # its metadata only at the scheduler
        await clock.sleep_until(6 * S)
        beat.cancel()

    clock.run(main())
    registrations = sched.times(RegisterFrontend)
    assert registrations[0] == 3_250 * MS
    assert registrations == [3_250 * MS + i * 250 * MS for i in range(len(registrations))]
    assert registrations[-1] == 5 * S  # answered then: registered again as index 2
    assert fe.registered_index == 2
    assert answers.statuses() == [(3_250 * MS, "UNAVAILABLE")]
    assert "no word from it for 2.2 s" in answers.got[0][1].error
    assert sched.times(Heartbeat)[-1] == 5_750 * MS  # still beating after


# -------------------------------------------------------------------- workers


def make_worker(clock: VirtualClock, **config: Any) -> tuple[Worker, Sent]:
    worker = Worker(
        WorkerConfig(name="w", **config), EmulatedExecutor(1, [MODEL]), clock=clock, context=object()
    )  # type: ignore[arg-type]
    ctrl = Sent(clock)
    worker._ctrl = ctrl  # type: ignore[assignment]
    worker._registered = asyncio.Event()
    worker._register_msg = RegisterWorker("w", "tcp://w:1", worker.executor.gpu_specs())
    return worker, ctrl


def test_a_worker_whose_registration_goes_unanswered_sends_it_again() -> None:
    # heartbeats every 250 ms (before registration), retry after 1 s: registration at 0,
    # 1, 2, 3 s; answered at 3.1 s, then no more; an ack saying "unknown" at 4.6 s makes
    # it register again at once
    clock = VirtualClock()

    async def main() -> Sent:
        worker, ctrl = make_worker(clock, register_retry_ns=1 * S)
        worker._register(clock.now_ns())
        beat = asyncio.ensure_future(worker._heartbeat_loop())
        await clock.sleep_until(3_100 * MS)
        worker._on_ctrl([frames(WorkerRegistered(1, (0,), 500 * MS))])
        await clock.sleep_until(4_600 * MS)
        worker._on_ctrl([frames(HeartbeatAck(0, clock.now_ns(), 0))])
        await clock.sleep_until(5 * S)
        beat.cancel()
        return ctrl

    ctrl = clock.run(main())
    assert ctrl.times(RegisterWorker) == [0, 1 * S, 2 * S, 3 * S, 4_600 * MS]
    beats = ctrl.times(Heartbeat)
    # every 250 ms until registered, then at the pace the scheduler gave (500 ms)
    assert beats[:13] == [i * 250 * MS for i in range(13)]
    assert beats[13:16] == [3_250 * MS, 3_750 * MS, 4_250 * MS]


def test_a_worker_retries_at_the_next_tick_a_registration_that_could_not_leave() -> None:
    # not connected until 100.6 s: every send fails (the DEALER refuses it); the
    # registration goes at the first tick after (100.75 s), not register_retry_ns later,
    # and then not again within register_retry_ns
    clock = VirtualClock(start_ns=100 * S)  # a real monotonic clock is far from 0

    async def main() -> Sent:
        worker, ctrl = make_worker(clock, register_retry_ns=10 * S)
        ctrl.refuse = True
        worker._register(clock.now_ns())
        beat = asyncio.ensure_future(worker._heartbeat_loop())
        await clock.sleep_until(100_600 * MS)
        ctrl.refuse = False
        await clock.sleep_until(102 * S)
        beat.cancel()
        return ctrl

    ctrl = clock.run(main())
    assert ctrl.times(RegisterWorker) == [100_750 * MS]
    assert ctrl.refused == 1 + 2 * 3  # the first, then a heartbeat and a retry per tick


# --------------------------------------------------------------------- shards


def test_a_shard_whose_matcher_falls_silent_registers_again() -> None:
    # heartbeats every 200 ms; the matcher answers until 1.0 s; timeout 2 s: at 3.0 s
    # silent exactly 2 s, at 3.2 s silent too long: RegisterShard again
    clock = VirtualClock()
    shard = ShardServer(
        ShardConfig(index=0, heartbeat_interval_ns=200 * MS, matcher_timeout_ns=2 * S), clock=clock
    )
    up = Sent(clock)
    shard.attach(Sent(clock, routed=True), up, NoTimer())

    def matcher(msg: Any) -> None:
        now = clock.now_ns()
        if isinstance(msg, RegisterShard) and now == 0:
            asyncio.get_running_loop().call_soon(
                shard._on_up, [frames(ShardDirectory(1, ((0, "inproc://shard"),), ()))]
            )
        elif isinstance(msg, Heartbeat) and now <= 1 * S:
            asyncio.get_running_loop().call_soon(shard._on_up, [frames(HeartbeatAck(msg.sent_ns, now, 1))])

    up.on_send = matcher

    async def main() -> None:
        shard._register()
        beat = asyncio.ensure_future(shard._heartbeat_loop())
        await clock.sleep_until(4 * S)
        beat.cancel()

    clock.run(main())
    again = up.times(RegisterShard)
    assert again[0] == 0 and again[1] == 3_200 * MS
    assert again == [0, *(3_200 * MS + i * 200 * MS for i in range(len(again) - 1))]


def test_requests_reach_the_scheduler_unchanged_on_virtual_time() -> None:
    # the fakes are faithful: accepted metadata goes out in one Requests per turn
    clock = VirtualClock()
    fe, sched = make_frontend(clock)
    answers = Answers(clock)

    async def main() -> None:
        answers.submit(fe, slo_ns=100 * MS)
        answers.submit(fe, slo_ns=100 * MS)
        await asyncio.sleep(0)

    clock.run(main())
    (msg,) = sched.of(Requests)
    assert msg.models == ("m", "m") and len(fe._pending) == 2
