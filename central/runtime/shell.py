"""The process around a scheduler: one ROUTER, one precise timer, a dispatch table.

A part of the scheduler's shell (``Scheduler`` and ``SplitScheduler`` both hold one). Each
loop turn it drains every queued message (``Reader``), decodes each and calls the handler
that ``table`` names for its type, ``handler(identity, message, nbytes, now)``; a message
whose type has no handler is refused (``Error`` BAD_REQUEST), and so is one whose handler
raises ``TypeError``/``ValueError``/``KeyError``/``RemoteProtocolError`` (a well-framed
message with bad contents: the peer's fault). Then ``end_turn(now)``. Sends never block
(``send``); the one ``PreciseTimer`` calls ``on_timer``, and ``arm`` re-arms it and
re-checks the socket's read edge (a send can swallow it).

``serve`` binds, runs the given periodic tasks, the optional stats PUB (``stats()`` plus
the batches finished since the last publish every ``stats_interval_ns``) and the optional
``/metrics`` endpoint, until ``stop``. ``attach`` drives the same object without a socket
or loop (the capacity benchmark, unit tests).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import zmq

from central.plumbing.clock import Clock, LatenessLog, PreciseTimer
from central.plumbing.metrics import MetricsServer
from central.plumbing.security import PeerGate, load_keys, warn_if_exposed
from central.plumbing.zmqio import Reader, close_all, configure, send_frames
from central.protocol import DEFAULT_LIMITS, Error, RemoteProtocolError, Status, decode, encode

from .accounting import Accounting
from .config import SchedulerConfig

__all__ = ["Handler", "Shell"]

log = logging.getLogger("baton.scheduler")

_NOBLOCK = int(zmq.NOBLOCK)

# (identity, message, its size in bytes, the turn's time)
Handler = Callable[[bytes, Any, int, int], None]


class _Out(Protocol):
    def send_multipart(self, frames: list[Any], flags: int) -> Any: ...


class _Timer(Protocol):
    def arm(self, t_ns: int | None) -> None: ...


def _unbound(frames: list[Any], flags: int) -> None:
    raise RuntimeError("the scheduler has no socket yet: serve() or attach() first")


def _anyone(identity: bytes, msg: Any) -> bool:
    return False


class Shell:
    """Sockets, the loop turn and the dispatch table of a scheduler process."""

    def __init__(
        self,
        config: SchedulerConfig,
        clock: Clock,
        context: zmq.Context[Any] | None,
        accounting: Accounting,
        *,
        on_timer: Callable[[], None],
        end_turn: Callable[[int], None],
    ) -> None:
        self.config = config
        self.clock = clock
        self.accounting = accounting
        self.table: dict[type, Handler] = {}
        # traffic inside the scheduler (a split scheduler's shards): counted apart from
        # what frontends and workers send (bytes_in stays "what came from outside")
        self.is_internal: Callable[[bytes, Any], bool] = _anyone
        self.lateness = LatenessLog()
        self._on_timer = on_timer
        self._end_turn = end_turn
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket[Any] | _Out | None = None
        self._out: Callable[[list[Any], int], Any] = _unbound  # sends one message
        self._reader: Reader | None = None
        self._timer: _Timer | None = None
        self._metrics_server: MetricsServer | None = None

    # ------------------------------------------------------------------ serving

    async def serve(
        self,
        stop: asyncio.Event,
        *,
        tasks: Sequence[Callable[[], Awaitable[None]]],
        stats: Callable[[], dict[str, Any]],
        render: Callable[[], str],
    ) -> None:
        """Bind, serve until ``stop`` is set, then close every socket."""
        cfg = self.config
        keys = load_keys(cfg.keys_dir, "scheduler") if cfg.keys_dir else None
        warn_if_exposed(cfg.address, keys, "the scheduler")
        sock: zmq.Socket[Any] = self._ctx.socket(zmq.ROUTER)
        if keys is not None:
            keys.server(sock, self._ctx)
        # handover: a restarted worker or shard reconnects under its old routing id and
        # takes the id over at once (without it the new connection may be refused while
        # the old one lingers; with keys, PeerGate still refuses an id moving to another key)
        configure(sock, hwm=0, mandatory=True, handover=True)
        sock.bind(cfg.address)
        self._sock = sock
        self._out = functools.partial(send_frames, sock)
        wakeups = self.clock.wakeups(spin_ns=cfg.spin_ns, lateness=self.lateness)
        timer = PreciseTimer(self._on_timer, wakeups)
        self._timer = timer
        if keys is None:
            reader = Reader(sock, self.receive)
        else:  # authorize on the sender's CURVE key before anything else sees the message
            gate = PeerGate(keys)
            reader = Reader(
                sock, lambda batch: self.receive(gate.admit(batch, self.unauthorized)), copy=False
            )
        self._reader = reader
        running = [asyncio.ensure_future(task()) for task in tasks]
        pub: zmq.Socket[Any] | None = None
        try:
            if cfg.stats_pub:
                pub = self._ctx.socket(zmq.PUB)
                if keys is not None:
                    keys.server(pub, self._ctx)
                configure(pub, sndhwm=16)  # a slow dashboard loses snapshots, not us
                pub.bind(cfg.stats_pub)
                running.append(asyncio.ensure_future(self._publish_loop(pub, stats)))
            if cfg.metrics_port is not None:
                self._metrics_server = MetricsServer(cfg.metrics_host, cfg.metrics_port, render)
                await self._metrics_server.start()
                log.info("metrics on http://%s:%d/metrics", cfg.metrics_host, self._metrics_server.port)
            await stop.wait()
        finally:
            for t in running:
                t.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            if self._metrics_server is not None:
                await self._metrics_server.close()
            if pub is not None:
                close_all([pub])
            timer.arm(None)
            wakeups.close()
            reader.close()
            close_all([sock])
            if keys is not None:
                keys.stop()

    def attach(self, sock: _Out, timer: _Timer) -> None:
        """Drive without a socket or loop: ``sock`` needs only ``send_multipart(frames,
        flags)``, ``timer`` only ``arm(t_ns | None)``; feed with ``receive`` and the
        timer's callback."""
        self._sock = sock
        self._out = sock.send_multipart
        self._timer = timer

    @property
    def bound_address(self) -> str:
        sock = self._sock
        assert isinstance(sock, zmq.Socket)
        return sock.getsockopt_string(zmq.LAST_ENDPOINT)

    # ------------------------------------------------------------------ the turn

    def receive(self, batch: Sequence[Sequence[bytes]]) -> None:
        """One loop turn's messages, each ``[identity, *frames]``: each to its handler."""
        now = self.clock.reader()
        counters = self.accounting.counters
        table, internal = self.table, self.is_internal
        for frames in batch:
            identity = frames[0]
            body = frames[1:]
            nbytes = sum(len(f) for f in body)
            try:
                msg, _ = decode(body, DEFAULT_LIMITS)
            except RemoteProtocolError as exc:
                counters["messages_in"] += 1
                counters["bytes_in"] += nbytes
                counters["protocol_errors"] += 1
                self.refuse(identity, str(exc))
                continue
            if internal(identity, msg):
                counters["internal_messages_in"] = counters.get("internal_messages_in", 0) + 1
                counters["internal_bytes_in"] = counters.get("internal_bytes_in", 0) + nbytes
            else:
                counters["messages_in"] += 1
                counters["bytes_in"] += nbytes
            handler = table.get(type(msg))
            if handler is None:
                self.refuse(identity, f"{type(msg).__name__} is not for the scheduler")
                continue
            try:
                handler(identity, msg, nbytes, now)
            except (TypeError, ValueError, KeyError, RemoteProtocolError) as exc:
                # a well-framed message with bad contents (e.g. a string where a budget
                # belongs): the peer's fault; refuse it and keep serving the others
                counters["protocol_errors"] += 1
                log.warning("refused %s from %r: %s", type(msg).__name__, identity, exc)
                self.refuse(identity, f"{type(msg).__name__}: {exc}")
        self._end_turn(now)

    def arm(self, t_ns: int | None) -> None:
        """The turn's end: the timer at the next wake-up, and the read edge re-checked."""
        assert self._timer is not None
        self._timer.arm(t_ns)
        if self._reader is not None:
            self._reader.poke()

    # ------------------------------------------------------------------ sending

    def send(self, identity: bytes, msg: Any) -> None:
        """Send without blocking. A send can swallow the socket descriptor's read edge:
        every path that sends ends in ``arm``, whose ``poke`` re-checks (once per turn
        rather than once per send: the check was 10% of the loop's CPU)."""
        try:
            self._out([identity, *encode(msg)], _NOBLOCK)
        except zmq.ZMQError as exc:  # peer gone (ROUTER_MANDATORY) or HWM: log, go on
            log.warning("send %s to %r failed: %s", type(msg).__name__, identity, exc)

    def refuse(self, identity: bytes, text: str) -> None:
        """Tell a peer its message was refused (its fault); it stays connected."""
        self.send(identity, Error(int(Status.BAD_REQUEST), text))

    def unauthorized(self, identity: bytes, text: str) -> None:
        self.accounting.bump("unauthorized")
        self.send(identity, Error(int(Status.UNAUTHORIZED), text))

    async def _publish_loop(self, pub: zmq.Socket[Any], stats: Callable[[], dict[str, Any]]) -> None:
        accounting = self.accounting
        cursor = accounting.batches_logged
        while True:
            await self.clock.sleep(self.config.stats_interval_ns / 1e9)
            new = accounting.batches_logged - cursor
            cursor = accounting.batches_logged
            snap = stats()
            snap["recent_batches"] = accounting.recent_batches(new)
            try:
                pub.send_multipart([b"stats", json.dumps(snap).encode()], zmq.NOBLOCK)
            except zmq.ZMQError as exc:  # HWM with a stalled subscriber: skip this one
                log.debug("stats publish skipped: %s", exc)
