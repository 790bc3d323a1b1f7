"""ZeroMQ sockets on an asyncio loop without per-message futures.

Theory of operation: a ZeroMQ socket's file descriptor is edge-triggered and signals
"something changed", not "a message is ready". ``Reader`` registers the descriptor with
the loop, and on every wake-up drains the socket with non-blocking receives (bounded per
turn so that timers still run), then hands the whole batch of messages to one callback:
arrivals are coalesced per loop turn, which is what lets a frontend send one metadata
message for many requests. Because a send can consume the descriptor's edge, ``poke()``
re-checks readiness after the callback.

Cost: this is the scheduler's innermost loop, so it avoids pyzmq's conveniences that
allocate per call: readiness is read with the backend's ``get`` and compared with plain
ints (``EVENTS & POLLIN`` on pyzmq's enum members builds an enum object each time: 8% of
the live scheduler's CPU at 2,000 req/s, measured with py-spy), and a drain receives until
``zmq.Again`` instead of asking for readiness before every message. ``send_frames`` is
``send_multipart`` through the backend directly: 0.8 us for two small frames instead of
4 us (pyzmq's wrapper re-checks its arguments frame by frame).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import zmq

__all__ = ["Reader", "configure", "make_context", "close_all", "send_frames"]

Frames = list  # list of bytes or zmq.Frame

# plain ints, no enum wrapping (pyzmq types ``get`` as int | bytes: EVENTS is an int)
_get: Callable[[Any, int], int] = zmq.backend.Socket.get  # type: ignore[assignment]  # pyzmq's stub says int | bytes for every option
_send = zmq.backend.Socket.send
_EVENTS, _POLLIN, _NOBLOCK = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)


def send_frames(sock: zmq.Socket[Any], frames: Sequence[Any], flags: int = 0) -> None:
    """Send ``frames`` (bytes or buffers, copied) as one message; raises like
    ``send_multipart`` (``zmq.Again`` with ``NOBLOCK`` at the high-water mark, ...)."""
    last = len(frames) - 1
    more = flags | _SNDMORE
    for i, frame in enumerate(frames):
        _send(sock, frame, more if i < last else flags, True, False)


class Reader:
    """Drain ``sock`` whenever readable and pass the messages to ``on_messages``."""

    def __init__(
        self,
        sock: zmq.Socket[Any],
        on_messages: Callable[[list[Any]], None],
        *,
        copy: bool = True,
        max_per_turn: int = 2000,
    ) -> None:
        self._sock = sock
        self._on_messages = on_messages
        self._copy = copy
        self._max = max_per_turn
        self._loop = asyncio.get_running_loop()
        self._fd: int = _get(sock, int(zmq.FD))
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
        if _get(self._sock, _EVENTS) & _POLLIN:
            self._wake()

    def _drain(self) -> None:
        self._scheduled = False
        sock = self._sock
        if sock.closed:
            return
        batch: list[Any] = []
        recv, copy, most = sock.recv_multipart, self._copy, self._max
        try:
            while len(batch) < most:
                batch.append(recv(_NOBLOCK, copy=copy))
        except zmq.Again:
            pass
        if batch:
            self._on_messages(batch)
        self.poke()

    def close(self) -> None:
        """Stop watching the socket (does not close it)."""
        with contextlib.suppress(Exception):  # the loop may already be closed at shutdown
            self._loop.remove_reader(self._fd)


def configure(
    sock: zmq.Socket[Any],
    *,
    linger: int = 0,
    hwm: int | None = None,
    sndhwm: int | None = None,
    rcvhwm: int | None = None,
    immediate: bool = False,
    mandatory: bool = False,
    handover: bool = False,
    identity: bytes | str | None = None,
) -> zmq.Socket[Any]:
    """Set the options every Baton socket is built from, before its bind or connect;
    returns ``sock``. Only what is asked is set (besides ``LINGER``):

    * ``linger``: ``LINGER`` (0: closing never blocks on unsent messages);
    * ``hwm``: both high-water marks (0: no limit; the senders bound their own queues),
      ``sndhwm``/``rcvhwm`` one of them (they override ``hwm``);
    * ``immediate``: ``IMMEDIATE`` (a DEALER queues nothing for a peer not connected:
      a send to a scheduler that is gone fails at once);
    * ``mandatory``: ``ROUTER_MANDATORY`` (a send to an unknown routing id raises
      rather than vanishing);
    * ``handover``: ``ROUTER_HANDOVER`` (a peer reconnecting under its routing id takes
      it over at once: without it the new connection can be refused while the old one
      lingers);
    * ``identity``: the routing id (``IDENTITY``; a str is UTF-8 encoded).

    CURVE is set apart (``central.plumbing.security.Keys.server``/``client``).
    """
    sock.setsockopt(zmq.LINGER, linger)
    if mandatory:
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    if handover:
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    if immediate:
        sock.setsockopt(zmq.IMMEDIATE, 1)
    snd = sndhwm if sndhwm is not None else hwm
    rcv = rcvhwm if rcvhwm is not None else hwm
    if snd is not None:
        sock.setsockopt(zmq.SNDHWM, snd)
    if rcv is not None:
        sock.setsockopt(zmq.RCVHWM, rcv)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity.encode() if isinstance(identity, str) else identity)
    return sock


def make_context() -> zmq.Context[Any]:
    return zmq.Context()


def close_all(sockets: Sequence[zmq.Socket[Any]]) -> None:
    """Close sockets with linger 0 (never block shutdown on unsent messages)."""
    for s in sockets:
        if not s.closed:
            s.close(linger=0)
