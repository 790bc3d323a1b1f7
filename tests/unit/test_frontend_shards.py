"""central.frontend.server against a split scheduler: metadata goes to the model shards.

A real ``Frontend`` on loopback, a fake scheduler (the matcher) ROUTER that registers it
and sends it a ``ShardDirectory``, two fake model-shard ROUTERs, and a real
``AsyncClient``, all on one asyncio loop in one process: real sockets, because what is
checked is what reaches each socket and in which order. Ports are free ones, every wait
is bounded, and every socket and the frontend are stopped in ``finally``. The fake
shards never answer unless told to; requests left waiting are cancelled at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
import zmq
import zmq.asyncio

from central.client import AsyncClient
from central.client.errors import DeadlineExceeded, Unavailable
from central.cluster import free_port
from central.frontend.server import Frontend, FrontendConfig
from central.policy.types import DropReason
from central.protocol import (
    AttachFrontend,
    DropRequests,
    FrontendRegistered,
    Heartbeat,
    HeartbeatAck,
    RegisterFrontend,
    Requests,
    ShardDirectory,
    decode,
    encode,
)
from central.protocol.conventions import default_shard, frontend_of

MODELS = ("a", "b", "c", "d")  # placed: a on shard 0, b on 1; c and d by the hash
WAIT_S = 3.0
X = {"x": np.zeros(2, np.float32)}


class Peer:
    """A ROUTER on a free loopback port (given ``address``: bound by ``up``), bounded waits."""

    def __init__(self, ctx: zmq.asyncio.Context, address: str | None = None) -> None:
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if address is None:
            self.sock.bind("tcp://127.0.0.1:*")
            address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.address = address
        self.frontend = b""  # the frontend's identity, once it said something

    async def up(self) -> None:
        deadline = time.monotonic() + WAIT_S
        while True:  # a port just closed may take a moment to come free
            try:
                return self.sock.bind(self.address)
            except zmq.ZMQError:
                assert time.monotonic() < deadline, f"cannot bind {self.address}"
                await asyncio.sleep(0.01)

    async def recv(self, timeout_s: float | None = WAIT_S) -> Any:
        # no wait_for without a timeout: on 3.11 it can swallow a cancellation
        got = self.sock.recv_multipart()
        ident, *frames = await (got if timeout_s is None else asyncio.wait_for(got, timeout_s))
        self.frontend = ident
        return decode(frames)[0]

    async def send(self, msg: Any) -> None:
        await self.sock.send_multipart([self.frontend, *encode(msg)])

    async def requests(self, n: int) -> list[tuple[int, str]]:
        """(id, model) of the next ``n`` requests; ``AttachFrontend`` repeats skipped."""
        got: list[tuple[int, str]] = []
        while len(got) < n:
            msg = await self.recv()
            if isinstance(msg, Requests):
                got.extend(zip(msg.request_ids, msg.models))
        return got

    async def silent(self, window_s: float = 0.1) -> bool:
        with contextlib.suppress(asyncio.TimeoutError):
            while True:
                if isinstance(await self.recv(window_s), Requests):
                    return False
        return True


class Harness:
    """The fake matcher and its two shards; ``infer`` calls through a real client."""

    def __init__(self, ctx: zmq.asyncio.Context, directory: bool, late: bool) -> None:
        self.ctx = ctx
        self.sched = Peer(ctx)
        self.shards = [Peer(ctx), Peer(ctx, f"tcp://127.0.0.1:{free_port()}" if late else None)]
        self.index = 3
        self.directory = self.make_directory(1, a=0, b=1) if directory else None
        self.sched_requests: list[Requests] = []
        self.client: AsyncClient | None = None
        self.calls: list[asyncio.Task[Any]] = []

    def make_directory(self, version: int, **owners: int) -> ShardDirectory:
        shards = tuple((i, p.address) for i, p in enumerate(self.shards))
        return ShardDirectory(version, shards, tuple(owners.items()))

    async def matcher(self) -> None:
        while True:
            msg = await self.sched.recv(timeout_s=None)
            if isinstance(msg, RegisterFrontend):
                await self.sched.send(FrontendRegistered(self.index, MODELS))
                if self.directory is not None:
                    await self.sched.send(self.directory)
            elif isinstance(msg, Heartbeat):
                await self.sched.send(HeartbeatAck(msg.sent_ns, time.monotonic_ns(), 1))
            elif isinstance(msg, Requests):
                self.sched_requests.append(msg)

    def infer(self, model: str) -> asyncio.Task[Any]:
        assert self.client is not None
        call = asyncio.ensure_future(self.client.infer(model, X, 5_000, timeout_s=WAIT_S))
        self.calls.append(call)
        return call


async def refused(h: Harness, model: str) -> None:
    """Send ``model`` until a request is answered UNAVAILABLE: its shard is unreachable."""
    mine: list[asyncio.Task[Any]] = []
    deadline = time.monotonic() + WAIT_S
    while True:  # some may go into a connection still closing: those stay unanswered
        mine.append(h.infer(model))
        done, _ = await asyncio.wait(mine, timeout=0.05, return_when=asyncio.FIRST_COMPLETED)
        if done:
            assert "is unreachable" in str(done.pop().exception())
            return
        assert time.monotonic() < deadline, "timed out"


async def through(h: Harness, shard: Peer, model: str) -> list[Any]:
    """Send ``model`` until a request reaches ``shard`` (the ones before are refused at
    once); what the shard received, in order, up to that ``Requests``."""
    seen: list[Any] = []

    async def watch() -> None:
        while not seen or not isinstance(seen[-1], Requests):
            seen.append(await shard.recv(timeout_s=None))

    watcher = asyncio.ensure_future(watch())
    try:
        deadline = time.monotonic() + WAIT_S
        while not watcher.done():
            call = h.infer(model)
            await asyncio.wait([call, watcher], timeout=WAIT_S, return_when=asyncio.FIRST_COMPLETED)
            if call.done():
                assert "is unreachable" in str(call.exception())
            assert time.monotonic() < deadline, "timed out"
        return seen
    finally:
        watcher.cancel()


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def running(
    directory: bool = True, heartbeat_s: float = 0.02, late: bool = False
) -> AsyncIterator[tuple[Harness, Frontend]]:
    actx, ctx = zmq.asyncio.Context(), zmq.Context()  # the frontend's sockets are plain
    h = Harness(actx, directory, late)
    config = FrontendConfig(
        scheduler=h.sched.address,
        client_bind="tcp://127.0.0.1:*",
        heartbeat_interval_ns=round(heartbeat_s * 1e9),
        scheduler_timeout_ns=30_000_000_000,
        drain_timeout_ns=0,
    )
    fe = Frontend(config, context=ctx)
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(h.matcher()), asyncio.ensure_future(fe.serve(stop))]
    try:
        await asyncio.wait_for(fe.registered.wait(), WAIT_S)
        h.client = AsyncClient(fe.client_address)
        if directory and not late:  # each shard hears who we are before any request
            for shard in h.shards:
                assert await shard.recv() == AttachFrontend(h.index)
        yield h, fe
    finally:
        for call in h.calls:  # the fake shards never answer: stop waiting
            call.cancel()
        await asyncio.gather(*h.calls, return_exceptions=True)
        stop.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(tasks[1]), WAIT_S)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if h.client is not None:
            await h.client.close()
        for peer in (h.sched, *h.shards):
            peer.sock.close(linger=0)
        actx.destroy(linger=0)
        ctx.destroy(linger=0)


def test_each_shard_gets_only_its_models_in_order_after_attaching() -> None:
    async def main() -> None:
        async with running() as (h, fe):
            sent = ["a", "b", "c", "a", "d", "b", "c", "d"]
            owner = {"a": 0, "b": 1, "c": default_shard("c", 2), "d": default_shard("d", 2)}
            assert {owner["c"], owner["d"]} == {0, 1}  # the hash picks both shards here
            for m in sent:
                h.infer(m)
            for index, shard in enumerate(h.shards):
                want = [m for m in sent if owner[m] == index]
                got = await shard.requests(len(want))
                assert [m for _, m in got] == want
                assert all(frontend_of(rid) == h.index for rid, _ in got)
                assert [rid for rid, _ in got] == sorted(rid for rid, _ in got)
            assert h.sched_requests == []
            stats = fe.stats()
            assert stats["shards"] == {"version": 1, "addresses": [p.address for p in h.shards]}
            assert stats["pending"] == len(sent)

    asyncio.run(main())


def test_a_shard_down_is_answered_at_once_and_attached_again_when_back() -> None:
    async def main() -> None:
        # shard 1 starts down; ticks are rare, so mostly a flush attaches before its send
        async with running(heartbeat_s=0.5, late=True) as (h, fe):
            await until(lambda: "shards" in fe.stats())
            for _ in ("start", "restart at the same address"):
                await refused(h, "b")
                await h.shards[1].up()
                *attaches, last = await through(h, h.shards[1], "b")
                assert attaches and set(attaches) == {AttachFrontend(h.index)}
                assert isinstance(last, Requests) and last.models == ("b",)
                h.shards[1].sock.close(linger=0)
                h.shards[1] = Peer(h.ctx, h.shards[1].address)

    asyncio.run(main())


def test_a_shard_without_an_address_yet_is_refused_at_once() -> None:
    async def main() -> None:
        async with running() as (h, fe):
            shards = ((0, h.shards[0].address), (1, ""))  # shard 1 has not registered
            await h.sched.send(ShardDirectory(2, shards, (("a", 0), ("b", 1))))
            await until(lambda: fe.stats()["shards"]["version"] == 2)
            with pytest.raises(Unavailable, match="model shard 1 is unreachable"):
                await h.infer("b")
            h.infer("a")
            assert [m for _, m in await h.shards[0].requests(1)] == ["a"]

    asyncio.run(main())


def test_a_drop_from_a_shard_is_the_terminal_answer() -> None:
    async def main() -> None:
        async with running() as (h, fe):
            call = h.infer("b")
            ((rid, _),) = await h.shards[1].requests(1)
            await h.shards[1].send(DropRequests((rid,), int(DropReason.DEADLINE), "late"))
            with pytest.raises(DeadlineExceeded):
                await call
            assert fe.stats()["pending"] == 0 and fe.counters["deadline_exceeded"] == 1

    asyncio.run(main())


def test_a_newer_directory_moves_a_model_and_an_older_one_is_ignored() -> None:
    async def main() -> None:
        async with running() as (h, fe):
            await h.sched.send(h.make_directory(5, a=1, b=1))
            await until(lambda: fe.stats()["shards"]["version"] == 5)
            first = h.infer("a")
            ((rid, _),) = await h.shards[1].requests(1)
            # an older directory, then a drop on the same socket: once the drop is
            # answered, the old directory has been read (and must have been ignored)
            await h.sched.send(h.make_directory(4, a=0))
            await h.sched.send(DropRequests((rid,), int(DropReason.DEADLINE), "late"))
            with pytest.raises(DeadlineExceeded):
                await first
            h.infer("a")
            assert [m for _, m in await h.shards[1].requests(1)] == ["a"]
            assert await h.shards[0].silent()
            assert fe.stats()["shards"]["version"] == 5 and h.sched_requests == []

    asyncio.run(main())


def test_re_registration_attaches_again_and_takes_any_version() -> None:
    async def main() -> None:
        async with running() as (h, fe):
            await h.sched.send(h.make_directory(9, a=0, b=1))
            h.index, h.directory = 7, None  # a restarted matcher, its directory comes later
            await h.sched.send(HeartbeatAck(0, time.monotonic_ns(), 0))  # "who are you?"
            # the old directory is forgotten with the old scheduler (the new one may not
            # be split at all): until a new one comes, metadata goes to the scheduler
            await until(lambda: "shards" not in fe.stats())
            await h.sched.send(h.make_directory(1, a=1, b=0))  # numbered anew: taken
            await until(lambda: "shards" in fe.stats() and fe.stats()["shards"]["version"] == 1)
            for shard in h.shards:  # past the attaches with index 3
                while (msg := await shard.recv()) != AttachFrontend(7):
                    assert msg == AttachFrontend(3)
            h.infer("a")
            h.infer("b")
            (on_1,), (on_0,) = await h.shards[1].requests(1), await h.shards[0].requests(1)
            assert on_1[1] == "a" and on_0[1] == "b"
            assert frontend_of(on_1[0]) == frontend_of(on_0[0]) == 7

    asyncio.run(main())


def test_without_a_directory_everything_goes_to_the_scheduler() -> None:
    async def main() -> None:
        async with running(directory=False) as (h, fe):
            h.infer("a")
            h.infer("b")
            await until(lambda: sum(len(r.request_ids) for r in h.sched_requests) == 2)
            assert [m for r in h.sched_requests for m in r.models] == ["a", "b"]
            assert fe.counters["metadata_messages"] == len(h.sched_requests)
            assert "shards" not in fe.stats()
            for shard in h.shards:
                assert await shard.silent(0.05)

    asyncio.run(main())
