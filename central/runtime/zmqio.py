"""ZeroMQ sockets on an asyncio loop without per-message futures.

Theory of operation: a ZeroMQ socket's file descriptor is edge-triggered and signals
"something changed", not "a message is ready". ``Reader`` registers the descriptor with
the loop, and on every wake-up drains the socket with non-blocking receives (bounded per
turn so that timers still run), then hands the whole batch of messages to one callback:
arrivals are coalesced per loop turn, which is what lets a frontend send one metadata
message for many requests. Because a send can consume the descriptor's edge, ``poke()``
re-checks readiness after the callback.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Sequence

import zmq

__all__ = ["Reader", "make_context", "close_all"]

Frames = list  # list of bytes or zmq.Frame


class Reader:
    """Drain ``sock`` whenever readable and pass the messages to ``on_messages``."""

    def __init__(
        self,
        sock: zmq.Socket,
        on_messages: Callable[[list[Sequence]], None],
        *,
        copy: bool = True,
        max_per_turn: int = 2000,
    ) -> None:
        self._sock = sock
        self._on_messages = on_messages
        self._copy = copy
        self._max = max_per_turn
        self._loop = asyncio.get_running_loop()
        self._fd = sock.getsockopt(zmq.FD)
        self._scheduled = False
        self._loop.add_reader(self._fd, self._wake)
        self._wake()  # messages may already be queued

    def _wake(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def poke(self) -> None:
        """Re-check readiness (call after sending on the same socket)."""
        if self._sock.closed:
            return
        if self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self._wake()

    def _drain(self) -> None:
        self._scheduled = False
        sock = self._sock
        if sock.closed:
            return
        batch: list[Sequence] = []
        recv = sock.recv_multipart
        try:
            while len(batch) < self._max and sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                batch.append(recv(zmq.NOBLOCK, copy=self._copy))
        except zmq.Again:
            pass
        if batch:
            self._on_messages(batch)
        self.poke()

    def close(self) -> None:
        """Stop watching the socket (does not close it)."""
        try:
            self._loop.remove_reader(self._fd)
        except Exception:  # the loop may already be closed at shutdown
            pass


def make_context() -> zmq.Context:
    return zmq.Context()


def close_all(sockets: Sequence[zmq.Socket]) -> None:
    """Close sockets with linger 0 (never block shutdown on unsent messages)."""
    for s in sockets:
        if not s.closed:
            s.close(linger=0)
