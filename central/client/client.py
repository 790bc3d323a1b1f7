"""``Client`` and ``AsyncClient``: named numpy arrays in, named numpy arrays out.

Theory of operation: one DEALER socket to a frontend. ``infer`` packs the inputs as
tensor frames (``protocol.arrays``), tags the request, and waits for the ``Reply`` with
that tag; a non-OK status becomes its typed error. ``AsyncClient`` keeps many requests in
flight over one socket: a single receive task resolves each tag's future. If no reply
comes within the SLO plus ``grace_s``, the call raises ``ClientTimeout`` (a subclass of
``Unavailable``: the frontend answers every request it accepted, so this means it is
unreachable, or a bug lost the request), never to be confused with the frontend's own
UNAVAILABLE answer. Each call gets one answer; a second reply for a tag that was already
answered is dropped and counted in ``duplicates`` (it would be a server bug; the wire
ledger, ``central.client.ledger``, is what tests use to see every reply), one for a call
that had already timed out in ``late_replies``.

Imports only zmq, numpy and Baton's protocol: never torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq
import zmq.asyncio

from central.protocol import (
    DEFAULT_LIMITS,
    Error,
    Infer,
    RemoteProtocolError,
    Reply,
    StatsQuery,
    StatsReply,
    Status,
    arrays,
    decode,
    encode,
)
from central.protocol.conventions import stats_tag

from .errors import BatonError, ClientTimeout, Unavailable, error_for
from .request import check_request

if TYPE_CHECKING:  # imported for real only for a grpc:// address
    from .grpc_client import GrpcTransport

__all__ = ["Client", "AsyncClient", "query_stats", "secure_socket", "DEFAULT_ADDRESS"]

DEFAULT_ADDRESS = "tcp://127.0.0.1:5560"


class _ReplyBook:
    """Which recent tags were answered or gave up on, to tell a duplicate reply from a
    late one; bounded (the oldest ``keep`` tags are forgotten)."""

    def __init__(self, keep: int = 65_536) -> None:
        self._done: OrderedDict[int, bool] = OrderedDict()  # tag -> answered (else timed out)
        self._keep = keep
        self.duplicates = 0  # replies to a tag that already had its answer
        self.late_replies = 0  # replies to a call that had already timed out

    def settled(self, tag: int, answered: bool) -> None:
        self._done[tag] = answered
        if len(self._done) > self._keep:
            self._done.popitem(last=False)

    def unexpected(self, tag: int) -> None:
        """A reply for a tag nobody waits for."""
        answered = self._done.get(tag)
        if answered:
            self.duplicates += 1
        elif answered is not None:
            self.late_replies += 1
            self._done[tag] = True  # a further reply is a duplicate


class _Counted:
    """What both clients report about replies they dropped (``_book`` is set in
    ``__init__``)."""

    _book: _ReplyBook

    @property
    def duplicates(self) -> int:
        """Replies dropped because their request already had its answer (a server bug)."""
        return self._book.duplicates

    @property
    def late_replies(self) -> int:
        """Replies dropped because their call had already raised ``ClientTimeout``."""
        return self._book.late_replies


def _zmq_address(address: str) -> str:
    if address.startswith("zmq://"):
        return "tcp://" + address[len("zmq://") :]
    if "://" not in address:
        return "tcp://" + address
    if not address.startswith(("tcp://", "ipc://", "inproc://")):
        raise ValueError(f"unsupported address {address!r}: use tcp://host:port")
    return address


def secure_socket(sock: zmq.Socket[Any], keys: str | None, server_role: str, token: str | None) -> None:
    """CURVE client keys from a ``baton keys`` directory, and the frontend's token."""
    if keys is not None:
        from zmq.auth import load_certificate

        public, secret = load_certificate(f"{keys}/client.key_secret")
        server, _ = load_certificate(f"{keys}/{server_role}.key")
        sock.curve_secretkey, sock.curve_publickey, sock.curve_serverkey = secret, public, server
    if token is not None:
        sock.setsockopt(zmq.METADATA, b"X-Token:" + token.encode())


def _build(tag: int, model: str, inputs: Mapping[str, Any], slo_ms: float | None) -> list[Any]:
    metas, buffers = check_request(model, inputs, slo_ms)
    slo_ns = 0 if slo_ms is None else max(1, int(slo_ms * 1e6))  # 0 means "the default"
    return encode(Infer(tag, model, slo_ns, metas), buffers)


def _parse(frames: list[Any]) -> tuple[int, dict[str, np.ndarray[Any, Any]] | BatonError]:
    body = [frames[0].bytes, *(f.buffer for f in frames[1:])]
    try:
        msg, buffers = decode(body, DEFAULT_LIMITS)
    except RemoteProtocolError as exc:
        return -1, Unavailable(f"malformed reply from the frontend: {exc}")
    if isinstance(msg, Error):
        return -1, error_for(msg.code, msg.message)
    if isinstance(msg, StatsReply):
        return msg.tag, {"__stats__": np.array([msg.json], dtype=object)}
    if not isinstance(msg, Reply):
        return -1, Unavailable(f"unexpected {type(msg).__name__} from the frontend")
    if msg.status != Status.OK:
        return msg.tag, error_for(msg.status, msg.error)
    try:
        return msg.tag, arrays.unpack(msg.tensors, buffers)
    except RemoteProtocolError as exc:
        return msg.tag, Unavailable(f"malformed outputs: {exc}")


class Client(_Counted):
    """A blocking client: ``Client("tcp://127.0.0.1:5560").infer(model, inputs)``.

    ``Client("grpc://host:port")`` speaks KServe v2 over gRPC to a frontend started with
    ``--grpc-port`` instead (needs the ``grpc`` extra); ``infer`` and its errors are the
    same, ``stats`` is ZMQ only.

    ``keys`` (a ``baton keys`` directory) turns on CURVE encryption with the ``client``
    key pair; ``token`` is presented to a frontend that requires one.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        grace_s: float = 5.0,
        keys: str | None = None,
        token: str | None = None,
    ) -> None:
        self._tags = itertools.count(1)
        self._grace_s = grace_s
        self._grpc: GrpcTransport | None = None
        self._book = _ReplyBook()  # gRPC pairs each answer with its call: stays at zero
        if address.startswith("grpc://"):
            try:
                from .grpc_client import GrpcTransport
            except ImportError as exc:
                raise ImportError(
                    f"grpc:// addresses need grpcio and tritonclient ({exc}); pip install 'baton-serve[grpc]'"
                ) from None
            self._grpc = GrpcTransport(address[len("grpc://") :], grace_s=grace_s, token=token)
            return
        self._ctx: zmq.Context[Any] = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        secure_socket(self._sock, keys, "frontend", token)
        self._sock.connect(_zmq_address(address))

    def infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        slo_ms: float | None = None,
        *,
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Run one request; returns its named outputs.

        Raises ``BadRequest``, ``Rejected``, ``DeadlineExceeded``, ``Unavailable`` or
        ``InferenceFailed`` (all ``BatonError``); ``ClientTimeout`` (an ``Unavailable``)
        when no reply came within ``timeout_s`` (default: the SLO plus ``grace_s``).
        """
        if self._grpc is not None:
            return self._grpc.infer(model, inputs, slo_ms, timeout_s)
        tag = next(self._tags)
        self._sock.send_multipart(_build(tag, model, inputs, slo_ms), copy=False)
        wait_s = timeout_s if timeout_s is not None else (slo_ms or 1000.0) / 1e3 + self._grace_s
        return self._wait(tag, wait_s)

    def stats(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """The frontend's statistics snapshot."""
        if self._grpc is not None:
            raise ValueError("stats() needs the frontend's ZMQ address (tcp://...), not grpc://")
        tag = next(self._tags)
        self._sock.send_multipart(encode(StatsQuery(tag)))
        out = self._wait(tag, timeout_s)
        stats: dict[str, Any] = json.loads(out["__stats__"][0])
        return stats

    def _wait(self, tag: int, wait_s: float) -> dict[str, np.ndarray[Any, Any]]:
        deadline = time.monotonic() + wait_s
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or not self._sock.poll(left_ms):
                self._book.settled(tag, answered=False)
                raise ClientTimeout(f"no answer from the frontend within {wait_s:.1f} s")
            got_tag, result = _parse(self._sock.recv_multipart(copy=False))
            if got_tag not in (tag, -1):
                self._book.unexpected(got_tag)  # a duplicate, or a timed-out call's answer
                continue
            self._book.settled(tag, answered=True)
            if isinstance(result, BatonError):
                raise result
            return result

    def close(self) -> None:
        if self._grpc is not None:
            self._grpc.close()
        else:
            self._sock.close(linger=0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Counted):
    """An asyncio client with any number of requests in flight on one socket."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        grace_s: float = 5.0,
        keys: str | None = None,
        token: str | None = None,
    ) -> None:
        self._ctx = zmq.asyncio.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, 0)
        self._sock.setsockopt(zmq.RCVHWM, 0)
        secure_socket(self._sock, keys, "frontend", token)
        self._sock.connect(_zmq_address(address))
        self._tags = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, np.ndarray[Any, Any]]]] = {}
        self._grace_s = grace_s
        self._receiver: asyncio.Task[None] | None = None
        self._timed: dict[int, int] = {}  # tag -> reply receive time, for infer_timed
        self._book = _ReplyBook()

    def _ensure_receiver(self) -> None:
        if self._receiver is None or self._receiver.done():
            self._receiver = asyncio.ensure_future(self._receive())

    async def _receive(self) -> None:
        while True:
            frames = await self._sock.recv_multipart(copy=False)
            received = time.monotonic_ns()
            tag, result = _parse(frames)
            fut = self._waiting.pop(tag, None)
            if fut is None or fut.done():
                self._book.unexpected(tag)
                continue
            if tag in self._timed:
                self._timed[tag] = received
            self._book.settled(tag, answered=True)
            if isinstance(result, BatonError):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        slo_ms: float | None = None,
        *,
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Run one request; same contract and errors as ``Client.infer``."""
        self._ensure_receiver()
        tag = next(self._tags)
        frames = _build(tag, model, inputs, slo_ms)
        fut: asyncio.Future[dict[str, np.ndarray[Any, Any]]] = asyncio.get_running_loop().create_future()
        self._waiting[tag] = fut
        await self._sock.send_multipart(frames, copy=False)
        wait_s = timeout_s if timeout_s is not None else (slo_ms or 1000.0) / 1e3 + self._grace_s
        try:
            return await asyncio.wait_for(fut, wait_s)
        except TimeoutError:
            self._book.settled(tag, answered=False)
            raise ClientTimeout(f"no answer from the frontend within {wait_s:.1f} s") from None
        finally:
            self._waiting.pop(tag, None)

    async def infer_timed(
        self, model: str, inputs: Mapping[str, Any], slo_ms: float | None = None
    ) -> tuple[dict[str, np.ndarray[Any, Any]] | BatonError, int, int]:
        """Like ``infer`` but never raises a ``BatonError``: returns ``(outputs or error,
        sent_ns, received_ns)``, both taken at this client's socket (monotonic clock), so
        a busy caller's own scheduling delay does not count as service latency. No reply
        in time gives a ``ClientTimeout`` error (and ``received_ns`` when it gave up)."""
        self._ensure_receiver()
        tag = next(self._tags)
        frames = _build(tag, model, inputs, slo_ms)
        fut: asyncio.Future[dict[str, np.ndarray[Any, Any]]] = asyncio.get_running_loop().create_future()
        self._waiting[tag] = fut
        self._timed[tag] = 0
        await self._sock.send_multipart(frames, copy=False)
        sent = time.monotonic_ns()
        wait_s = (slo_ms or 1000.0) / 1e3 + self._grace_s
        try:
            result: dict[str, np.ndarray[Any, Any]] | BatonError = await asyncio.wait_for(fut, wait_s)
        except TimeoutError:
            self._book.settled(tag, answered=False)
            result = ClientTimeout(f"no answer from the frontend within {wait_s:.1f} s")
        except BatonError as exc:
            result = exc
        finally:
            self._waiting.pop(tag, None)
        received = self._timed.pop(tag, 0) or time.monotonic_ns()
        return result, sent, received

    async def stats(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """The frontend's statistics snapshot."""
        self._ensure_receiver()
        tag = next(self._tags)
        fut: asyncio.Future[dict[str, np.ndarray[Any, Any]]] = asyncio.get_running_loop().create_future()
        self._waiting[tag] = fut
        await self._sock.send_multipart(encode(StatsQuery(tag)))
        out = await asyncio.wait_for(fut, timeout_s)
        stats: dict[str, Any] = json.loads(out["__stats__"][0])
        return stats

    async def close(self) -> None:
        if self._receiver is not None:
            self._receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._receiver
        self._sock.close(linger=0)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def query_stats(
    address: str,
    *,
    with_batches: bool = False,
    timeout_s: float = 5.0,
    keys: str | None = None,
    server: str = "scheduler",
    token: str | None = None,
) -> dict[str, Any]:
    """Ask a scheduler (or frontend, ``server="frontend"``) for its statistics snapshot.

    ``keys``/``token`` as for ``Client``. Raises ``Unavailable`` if nothing answers within
    ``timeout_s``.
    """
    ctx: zmq.Context[Any] = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    secure_socket(sock, keys, server, token)
    try:
        sock.connect(_zmq_address(address))
        sock.send_multipart(encode(StatsQuery(stats_tag(0, with_batches))))
        if not sock.poll(int(timeout_s * 1000)):
            raise Unavailable(f"no statistics from {address} within {timeout_s} s")
        _tag, out = _parse(sock.recv_multipart(copy=False))
        if isinstance(out, BatonError):
            raise out
        stats: dict[str, Any] = json.loads(out["__stats__"][0])
        return stats
    finally:
        sock.close(linger=0)
