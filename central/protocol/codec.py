"""Header + raw-frame codec for ``messages``: never pickle, always bounded.

Theory of operation: ``encode(msg, buffers)`` returns the frames to send: one msgpack
header ``[VERSION, kind, *fields]`` then the raw tensor buffers, unchanged (zero copy:
memoryviews pass straight to ZeroMQ). ``decode(frames)`` checks, in order: the frame
count, the header size, msgpack with hard container/string limits, the version, the
kind, the field count and each field's top-level type, and that the number of tensor
frames matches the tensor descriptions in the header. Anything off raises
``RemoteProtocolError`` naming what was wrong; nothing is executed from the wire.

Decode limits are explicit (``Limits``) so that a frontend facing the internet can be
stricter than the scheduler facing its own workers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import msgpack

from .errors import LocalProtocolError, RemoteProtocolError
from .messages import MESSAGE_TYPES, VERSION, Infer, Message, Payloads, Reply, Results

__all__ = ["Limits", "DEFAULT_LIMITS", "encode", "decode", "Frame"]

Frame = bytes | memoryview | bytearray


@dataclass(frozen=True, slots=True)
class Limits:
    """Upper bounds enforced while decoding (a refusal names the one exceeded)."""

    max_header_bytes: int = 4 << 20
    max_frames: int = 8192
    max_frame_bytes: int = 256 << 20  # one tensor
    max_total_bytes: int = 1 << 30  # one message, all frames
    max_array_len: int = 1 << 20  # msgpack arrays (e.g. request ids in one Requests)
    max_str_len: int = 4 << 20  # names, errors, stats JSON


DEFAULT_LIMITS = Limits()

_TENSOR_KINDS = {Infer.KIND, Reply.KIND, Payloads.KIND, Results.KIND}


def _field_checkers(cls: type) -> tuple[tuple[str, type], ...]:
    # Annotations are strings (postponed evaluation); the top-level type is enough here:
    # deeper structure (tensor metas, shapes) is validated where it is used.
    out = []
    for f in dataclasses.fields(cls):
        ann = str(f.type)
        if ann == "int":
            out.append((f.name, int))
        elif ann == "str":
            out.append((f.name, str))
        elif ann.startswith("tuple") or ann.startswith("Tuple"):
            out.append((f.name, tuple))
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: unsupported wire type {ann}")
    return tuple(out)


_FIELDS: dict[int, tuple[tuple[str, type], ...]] = {
    kind: _field_checkers(cls) for kind, cls in MESSAGE_TYPES.items()
}


def _count_tensors(msg: Message) -> int:
    if isinstance(msg, (Infer, Reply)):
        return len(msg.tensors)
    if isinstance(msg, (Payloads, Results)):
        if len(msg.tensors) != len(msg.request_ids):
            raise TypeError("one tensor list per request id")
        for t in msg.tensors:
            if not isinstance(t, tuple):
                raise TypeError("per-request tensor descriptions must be arrays")
        return sum(len(t) for t in msg.tensors)
    return 0


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


def encode(msg: Message, buffers: Sequence[Frame] = ()) -> list[Frame]:
    """Frames for ``msg`` followed by its tensor ``buffers``.

    Raises ``LocalProtocolError`` if the buffers do not match the tensor descriptions.
    """
    kind = msg.KIND
    try:
        described = _count_tensors(msg)
    except TypeError as exc:
        raise LocalProtocolError(f"{type(msg).__name__}: {exc}") from None
    if described != len(buffers):
        raise LocalProtocolError(
            f"{type(msg).__name__}: {described} tensors described, {len(buffers)} buffers given"
        )
    fields = [getattr(msg, name) for name, _ in _FIELDS[kind]]
    header = msgpack.packb([VERSION, int(kind), *fields], use_bin_type=True)
    return [header, *buffers]


def decode(
    frames: Sequence[Frame], limits: Limits = DEFAULT_LIMITS
) -> tuple[Message, list[Frame]]:
    """Parse ``frames`` into a message and its raw tensor buffers.

    Returns ``(message, buffers)``. Raises ``RemoteProtocolError`` when the frames
    break the protocol or a limit.
    """
    if not frames:
        raise RemoteProtocolError("empty message")
    if len(frames) > limits.max_frames:
        raise RemoteProtocolError(f"{len(frames)} frames > limit {limits.max_frames}")
    header = frames[0]
    if len(header) > limits.max_header_bytes:
        raise RemoteProtocolError(
            f"header of {len(header)} bytes > limit {limits.max_header_bytes}"
        )
    total = 0
    for frame in frames[1:]:
        n = len(frame)
        if n > limits.max_frame_bytes:
            raise RemoteProtocolError(f"frame of {n} bytes > limit {limits.max_frame_bytes}")
        total += n
    if total > limits.max_total_bytes:
        raise RemoteProtocolError(f"message of {total} bytes > limit {limits.max_total_bytes}")
    try:
        obj: Any = msgpack.unpackb(
            header,
            use_list=False,
            raw=False,
            strict_map_key=True,
            max_str_len=limits.max_str_len,
            max_bin_len=limits.max_str_len,
            max_array_len=limits.max_array_len,
            max_map_len=64,
            max_ext_len=0,
            ext_hook=_refuse_ext,
        )
    except Exception as exc:  # msgpack raises several unrelated types
        raise RemoteProtocolError(f"undecodable header: {exc}") from None
    if not isinstance(obj, tuple) or len(obj) < 2:
        raise RemoteProtocolError("header is not [version, kind, ...]")
    version, kind = obj[0], obj[1]
    if type(version) is not int or version != VERSION:
        raise RemoteProtocolError(f"protocol version {version!r}, this side speaks {VERSION}")
    cls = MESSAGE_TYPES.get(kind) if type(kind) is int else None
    if cls is None:
        raise RemoteProtocolError(f"unknown message kind {kind!r}")
    checkers = _FIELDS[kind]
    values = obj[2:]
    if len(values) != len(checkers):
        raise RemoteProtocolError(
            f"{cls.__name__}: {len(values)} fields, expected {len(checkers)}"
        )
    for value, (name, typ) in zip(values, checkers):
        if type(value) is not typ:
            raise RemoteProtocolError(
                f"{cls.__name__}.{name}: expected {typ.__name__}, got {type(value).__name__}"
            )
    msg: Message = cls(*values)
    buffers = list(frames[1:])
    if kind in _TENSOR_KINDS:
        try:
            expected = _count_tensors(msg)
        except TypeError as exc:
            raise RemoteProtocolError(f"{cls.__name__}: malformed tensor descriptions: {exc}") from None
        if expected != len(buffers):
            raise RemoteProtocolError(
                f"{cls.__name__}: {expected} tensors described, {len(buffers)} frames sent"
            )
    elif buffers:
        raise RemoteProtocolError(f"{cls.__name__} carries no tensors, got {len(buffers)} frames")
    return msg, buffers
