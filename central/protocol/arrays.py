"""Named numpy arrays <-> tensor descriptions plus raw frames.

Theory of operation: a numeric array travels as its C-contiguous bytes (no copy when it
already is contiguous) and a ``(name, dtype, shape)`` description. A byte-string tensor
(numpy ``object`` array of ``bytes``/``str``, or a ``S`` array) travels as dtype
``"BYTES"``: each element a 4-byte little-endian length then the bytes, exactly the
layout of KServe v2's binary tensor extension, so the HTTP frontend can pass it through.

``unpack`` validates everything the peer controls: names, the dtype whitelist, the rank,
non-negative dims, that the shape is one numpy can represent, that the frame length
equals what the shape implies, and for BYTES at most ``MAX_BYTES_ELEMENTS`` elements
(each element costs a Python object and a loop step, so an unbounded count would let a
few hundred megabytes of 5-byte elements stall the receiver's event loop for tens of
seconds and cost it gigabytes). Violations raise ``RemoteProtocolError`` and nothing
else: a peer's bytes never surface as a ``ValueError`` or ``TypeError`` from numpy.
Numeric arrays received are read-only views of the frames; nothing is allocated for a
size that is only claimed (the frame length is checked first).

This is the one protocol module that imports numpy (the SDK has numpy anyway).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from collections.abc import Sequence as SequenceABC
from typing import Any

import numpy as np

from .errors import LocalProtocolError, RemoteProtocolError
from .messages import TensorMeta

__all__ = [
    "pack",
    "unpack",
    "ALLOWED_DTYPES",
    "MAX_RANK",
    "MAX_BYTES_ELEMENTS",
    "encode_bytes",
    "decode_bytes",
]

ALLOWED_DTYPES = frozenset(
    {
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
        "BYTES",
    }
)
MAX_RANK = 8
MAX_NAME = 256
# BYTES elements in one tensor: decoding one costs ~0.5 us and a Python object, so this
# bounds a single tensor's decode to ~30 ms however the frame is cut.
MAX_BYTES_ELEMENTS = 1 << 16
_LEN = struct.Struct("<I")


def encode_bytes(arr: np.ndarray[Any, Any]) -> bytes:
    """KServe BYTES layout of a flat sequence of bytes/str elements."""
    parts: list[bytes] = []
    for item in arr.reshape(-1):
        if isinstance(item, str):
            item = item.encode("utf-8")
        elif isinstance(item, np.bytes_):
            item = bytes(item)
        if not isinstance(item, (bytes, bytearray)):
            raise LocalProtocolError(f"BYTES element must be bytes or str, got {type(item)}")
        parts.append(_LEN.pack(len(item)))
        parts.append(bytes(item))
    return b"".join(parts)


def decode_bytes(buf: bytes | bytearray | memoryview, count: int) -> list[bytes]:
    """Split a BYTES frame into exactly ``count`` elements, or raise."""
    view = memoryview(buf)
    out: list[bytes] = []
    pos = 0
    for _ in range(count):
        if pos + 4 > len(view):
            raise RemoteProtocolError("BYTES tensor truncated")
        (n,) = _LEN.unpack_from(view, pos)
        pos += 4
        if pos + n > len(view):
            raise RemoteProtocolError("BYTES element runs past the frame")
        out.append(bytes(view[pos : pos + n]))
        pos += n
    if pos != len(view):
        raise RemoteProtocolError("BYTES tensor has trailing bytes")
    return out


def pack(
    arrays: Mapping[str, np.ndarray[Any, Any]],
) -> tuple[tuple[TensorMeta, ...], list[memoryview | bytes]]:
    """Describe and serialise named arrays; returns ``(metas, buffers)``.

    Raises ``LocalProtocolError`` (the caller's inputs are unsendable) for an unsupported
    dtype or element; the SDK turns that into a bad-request error before sending.
    """
    metas: list[TensorMeta] = []
    buffers: list[memoryview | bytes] = []
    for name, value in arrays.items():
        if not isinstance(name, str) or not name or len(name) > MAX_NAME:
            raise LocalProtocolError(f"bad tensor name {name!r}: 1 to {MAX_NAME} characters")
        arr = np.asarray(value)
        if arr.ndim > MAX_RANK:
            raise LocalProtocolError(f"input {name!r}: rank {arr.ndim} > {MAX_RANK}")
        if arr.dtype == object or arr.dtype.kind in ("S", "U"):
            metas.append((name, "BYTES", tuple(int(d) for d in arr.shape)))
            buffers.append(encode_bytes(arr))
            continue
        dtype = arr.dtype.name
        if dtype not in ALLOWED_DTYPES:
            raise LocalProtocolError(f"input {name!r}: dtype {dtype} is not supported")
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        arr = np.ascontiguousarray(arr).reshape(arr.shape)  # keeps 0-d arrays 0-d
        metas.append((name, dtype, tuple(int(d) for d in arr.shape)))
        buffers.append(arr.data.cast("B") if arr.size else b"")
    return tuple(metas), buffers


def unpack(
    metas: Sequence[object],
    buffers: Sequence[bytes | bytearray | memoryview],
    *,
    max_bytes_elements: int = MAX_BYTES_ELEMENTS,
) -> dict[str, np.ndarray[Any, Any]]:
    """Rebuild named arrays from peer-supplied descriptions and frames, validating both.

    Raises ``RemoteProtocolError`` naming the first problem found, and no other error.
    """
    if (
        not isinstance(metas, SequenceABC)
        or isinstance(metas, (str, bytes))
        or not isinstance(buffers, SequenceABC)
    ):
        raise RemoteProtocolError("tensor descriptions and frames must be sequences")
    if len(metas) != len(buffers):
        raise RemoteProtocolError(f"{len(metas)} tensor descriptions, {len(buffers)} frames")
    out: dict[str, np.ndarray[Any, Any]] = {}
    for meta, buf in zip(metas, buffers):
        if not (isinstance(meta, tuple) and len(meta) == 3):
            raise RemoteProtocolError("tensor description must be (name, dtype, shape)")
        name, dtype, shape = meta
        if not isinstance(name, str) or not name or len(name) > MAX_NAME:
            raise RemoteProtocolError(f"bad tensor name {name!r}")
        if name in out:
            raise RemoteProtocolError(f"tensor {name!r} given twice")
        if type(dtype) is not str or dtype not in ALLOWED_DTYPES:  # a dict is unhashable
            raise RemoteProtocolError(f"tensor {name!r}: dtype {dtype!r} is not supported")
        if (
            not isinstance(shape, tuple)
            or len(shape) > MAX_RANK
            or not all(type(d) is int and d >= 0 for d in shape)
        ):
            raise RemoteProtocolError(f"tensor {name!r}: bad shape {shape!r}")
        count = 1
        for d in shape:
            count *= d
        if dtype == "BYTES":
            if count > len(buf) // 4:  # every element needs its 4-byte length at least
                raise RemoteProtocolError(
                    f"tensor {name!r}: {count} BYTES elements cannot fit in {len(buf)} bytes"
                )
            if count > max_bytes_elements:
                raise RemoteProtocolError(
                    f"tensor {name!r}: {count} BYTES elements > limit {max_bytes_elements}"
                )
            arr = np.empty(count, dtype=object)
            arr[:] = decode_bytes(buf, count)
            out[name] = _reshaped(arr, shape, name)
            out[name].flags.writeable = False
            continue
        np_dtype = np.dtype(dtype)
        if len(buf) != count * np_dtype.itemsize:
            raise RemoteProtocolError(f"tensor {name!r}: {len(buf)} bytes for shape {shape} of {dtype}")
        out[name] = _reshaped(np.frombuffer(buf, dtype=np_dtype), shape, name)
    return out


def _reshaped(flat: np.ndarray[Any, Any], shape: tuple[int, ...], name: str) -> np.ndarray[Any, Any]:
    # A zero-size tensor can still have a dimension numpy refuses (>= 2**63, or sizes
    # whose product overflows): the peer's fault, refused like any bad shape.
    try:
        return flat.reshape(shape)
    except (ValueError, OverflowError) as exc:
        raise RemoteProtocolError(f"tensor {name!r}: shape {shape} is not representable: {exc}") from None
