"""Fuzz the protocol decoders: random and mutated frames, nothing but refusals.

Theory of operation: every byte a peer controls first meets ``central.protocol.decode``
and, for tensor-carrying messages, ``central.protocol.arrays.unpack``. Their contract is
narrow: return a valid message (or dict of arrays), or raise ``RemoteProtocolError``.
Any other exception escapes into a socket callback and loses the rest of that loop
turn's messages; a hang stalls the whole process; an allocation sized by a *claimed*
length (a msgpack container header, a tensor shape) lets a five-byte message cost
megabytes. Each test here throws one family of bad input and checks all three.

Inputs come from three sources, all built from ``MESSAGE_TYPES`` and the dataclass
annotations so that a message kind added to ``messages.py`` is fuzzed without edits:

* *random*: arbitrary bytes as the header, arbitrary frame lists;
* *mutated*: a valid encoded message of every kind, then byte flips, truncation,
  extension, inserted bytes, dropped/duplicated/swapped frames, or a structural edit
  of the decoded msgpack tree (a node replaced by an extreme int, float, bool, None,
  bytes, map, ext type, deep nesting; version, kind and field counts changed);
* *crafted*: headers whose containers and strings claim far more than they hold,
  nested to msgpack's stack limit, and tensor descriptions claiming huge shapes.

Decoded messages are re-encoded and must round-trip; tensor descriptions that decode are
fed to ``arrays.unpack``. Every decode is timed (a hang shows as a slow example), and the
crafted inputs are measured with ``tracemalloc``: the peak must stay within a fixed
allowance plus a small multiple of the bytes actually sent.

Hypothesis settings are explicit (example counts, no deadline, no database) so the file
runs in well under 30 s on two cores; raise ``BATON_FUZZ_EXAMPLES`` for a longer
campaign (docs/fuzzing.md).
"""

from __future__ import annotations

import dataclasses
import os
import time
import tracemalloc
import typing
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import central.protocol.messages as messages
from central.protocol import (
    DEFAULT_LIMITS,
    MESSAGE_TYPES,
    VERSION,
    Infer,
    Limits,
    Payloads,
    RemoteProtocolError,
    Reply,
    Results,
    arrays,
    decode,
    encode,
)
from central.protocol.codec import DecodeError

pytestmark = pytest.mark.fuzz

SCALE = int(os.environ.get("BATON_FUZZ_EXAMPLES", "1"))
TIGHT = Limits(
    max_header_bytes=512,
    max_frames=6,
    max_frame_bytes=64,
    max_total_bytes=160,
    max_array_len=8,
    max_str_len=32,
    max_depth=4,
)
LIMITS = [DEFAULT_LIMITS, TIGHT]
SLOW_S = 1.0  # one decode of a fuzz input taking this long is a hang

FUZZ = settings(
    max_examples=150 * SCALE,
    deadline=None,
    database=None,
    derandomize=SCALE == 1,  # a fixed walk in CI; a fresh one for longer campaigns
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ------------------------------------------------------------------ strategies

_INTS = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([0, 1, -1, 2**31, 2**32, 2**40, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]),
)
_NAMES = st.sampled_from(["x", "image", "text", "emb", "labels"])
_DTYPES = st.sampled_from(sorted(arrays.ALLOWED_DTYPES))


def _strategy_for(tp: Any, field: str = "") -> st.SearchStrategy[Any]:
    """Valid values for one annotation (int, str, tuple[...]), small and varied."""
    if tp is int:
        return _INTS
    if tp is str:
        return st.text(max_size=12)
    args = typing.get_args(tp)
    if tp == messages.TensorMeta:
        shape = st.lists(st.integers(0, 5), max_size=3).map(tuple)
        return st.tuples(_NAMES, _DTYPES, shape)
    if len(args) == 2 and args[1] is Ellipsis:
        return st.lists(_strategy_for(args[0]), max_size=4).map(tuple)
    return st.tuples(*(_strategy_for(a) for a in args))


def _message_strategy(cls: type) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls, globalns=vars(messages))
    fields = dataclasses.fields(cls)
    if cls in (Payloads, Results):
        # one tensor list per request id: draw the per-request lists, then matching ids
        def build(draw: Callable[[Any], Any]) -> Any:
            per = draw(st.lists(_strategy_for(hints["tensors"].__args__[0]), max_size=3))
            n = len(per)
            values = {}
            for f in fields:
                if f.name == "tensors":
                    values[f.name] = tuple(per)
                elif f.name in ("request_ids", "statuses"):
                    values[f.name] = tuple(draw(st.lists(_INTS, min_size=n, max_size=n)))
                elif f.name == "errors":
                    values[f.name] = tuple(draw(st.lists(st.text(max_size=8), min_size=n, max_size=n)))
                else:
                    values[f.name] = draw(_strategy_for(hints[f.name]))
            return cls(**values)

        return st.composite(lambda draw: build(draw))()
    return st.builds(cls, **{f.name: _strategy_for(hints[f.name]) for f in fields})


MESSAGES = st.one_of(*(_message_strategy(cls) for cls in MESSAGE_TYPES.values()))


def _tensor_count(msg: Any) -> int:
    if isinstance(msg, (Infer, Reply)):
        return len(msg.tensors)
    if isinstance(msg, (Payloads, Results)):
        return sum(len(t) for t in msg.tensors)
    return 0


@st.composite
def encoded_messages(draw: st.DrawFn) -> tuple[Any, list[bytes]]:
    msg = draw(MESSAGES)
    buffers = [draw(st.binary(max_size=24)) for _ in range(_tensor_count(msg))]
    return msg, [bytes(f) for f in encode(msg, buffers)]


# msgpack values a mutation can put anywhere in a header tree
_ODD = st.one_of(
    _INTS,
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
    st.binary(max_size=8),
    st.text(max_size=8),
    st.dictionaries(st.text(max_size=3), _INTS, max_size=3),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4)),
    st.integers(1, 40).map(lambda d: _nest(d)),
    st.lists(_INTS, max_size=6).map(tuple),
)


def _nest(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = (value,)
    return value


def _paths(tree: Any, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    out = [prefix]
    if isinstance(tree, (list, tuple)):
        for i, child in enumerate(tree):
            out.extend(_paths(child, (*prefix, i)))
    return out


def _replace(tree: Any, path: tuple[int, ...], value: Any) -> Any:
    if not path:
        return value
    items = list(tree)
    items[path[0]] = _replace(items[path[0]], path[1:], value)
    return items


@st.composite
def mutated_frames(draw: st.DrawFn) -> list[bytes]:
    """A valid encoded message of some kind, then one to three mutations."""
    _, frames = draw(encoded_messages())
    for _ in range(draw(st.integers(1, 3))):
        op = draw(
            st.sampled_from(
                [
                    "flip",
                    "truncate",
                    "extend",
                    "insert",
                    "drop_frame",
                    "dup_frame",
                    "swap_frames",
                    "add_frame",
                    "tree",
                    "tree_append",
                    "tree_pop",
                    "version",
                    "kind",
                ]
            )
        )
        header = frames[0] if frames else b""
        if op == "flip" and header:
            i = draw(st.integers(0, len(header) - 1))
            b = bytearray(header)
            b[i] ^= draw(st.integers(1, 255))
            frames = [bytes(b), *frames[1:]]
        elif op == "truncate" and header:
            frames = [header[: draw(st.integers(0, len(header) - 1))], *frames[1:]]
        elif op == "extend":
            frames = [header + draw(st.binary(min_size=1, max_size=16)), *frames[1:]]
        elif op == "insert" and header:
            i = draw(st.integers(0, len(header)))
            frames = [header[:i] + draw(st.binary(min_size=1, max_size=8)) + header[i:], *frames[1:]]
        elif op == "drop_frame" and frames:
            del frames[draw(st.integers(0, len(frames) - 1))]
        elif op == "dup_frame" and frames:
            frames.insert(0, frames[draw(st.integers(0, len(frames) - 1))])
        elif op == "swap_frames" and len(frames) > 1:
            i, j = draw(st.permutations(range(len(frames))))[:2]
            frames[i], frames[j] = frames[j], frames[i]
        elif op == "add_frame":
            frames.append(draw(st.binary(max_size=80)))
        elif op in ("tree", "tree_append", "tree_pop", "version", "kind"):
            try:
                tree = msgpack.unpackb(header, use_list=True, strict_map_key=False)
            except Exception:
                continue  # an earlier mutation broke it already
            if not isinstance(tree, list) or len(tree) < 2:
                continue
            if op == "version":
                tree[0] = draw(st.one_of(st.integers(-2, 5), _ODD))
            elif op == "kind":
                tree[1] = draw(st.one_of(st.sampled_from(sorted(MESSAGE_TYPES)), _INTS, _ODD))
            elif op == "tree_append":
                tree.append(draw(_ODD))
            elif op == "tree_pop" and len(tree) > 2:
                tree.pop(draw(st.integers(2, len(tree) - 1)))
            else:
                path = draw(st.sampled_from(_paths(tree)[1:]))
                tree = _replace(tree, path, draw(_ODD))
            frames = [msgpack.packb(tree, use_bin_type=True), *frames[1:]]
    return frames


# ------------------------------------------------------------------- the oracle


def _decode_checked(frames: list[bytes], limits: Limits) -> Any:
    """decode() must return a valid message or raise RemoteProtocolError, quickly."""
    start = time.perf_counter()
    try:
        msg, buffers = decode(frames, limits)
    except DecodeError as exc:
        assert str(exc), "a refusal must say what was wrong"
        assert exc.tag is None or exc.kind in MESSAGE_TYPES
        return None
    finally:
        assert time.perf_counter() - start < SLOW_S, "decode took too long"
    assert type(msg) in MESSAGE_TYPES.values()
    assert len(buffers) == _tensor_count(msg) == len(frames) - 1
    # what decoded re-encodes to the same message (every field was a wire type)
    again, _ = decode(encode(msg, buffers), limits)
    assert again == msg
    if isinstance(msg, (Infer, Reply)):
        _unpack_checked(msg.tensors, buffers)
    elif isinstance(msg, (Payloads, Results)):
        pos = 0
        for metas in msg.tensors:
            _unpack_checked(metas, buffers[pos : pos + len(metas)])
            pos += len(metas)
    return msg


def _unpack_checked(metas: Any, buffers: list[Any]) -> None:
    try:
        out = arrays.unpack(metas, buffers)
    except RemoteProtocolError as exc:
        assert str(exc)
        return
    assert list(out) == [m[0] for m in metas]
    for (_, dtype, shape), arr in zip(metas, out.values()):
        assert arr.shape == tuple(shape)
        assert dtype == "BYTES" or arr.dtype == np.dtype(dtype)


# ------------------------------------------------------------------------ tests


@FUZZ
@given(encoded_messages())
def test_every_valid_message_round_trips(case: tuple[Any, list[bytes]]) -> None:
    msg, frames = case
    decoded, buffers = decode(frames)
    assert decoded == msg and type(decoded) is type(msg)
    assert [bytes(b) for b in buffers] == frames[1:]


@pytest.mark.parametrize("limits", LIMITS, ids=["default", "tight"])
@FUZZ
@given(header=st.binary(max_size=600), rest=st.lists(st.binary(max_size=100), max_size=8))
def test_random_bytes_are_refused_or_valid(limits: Limits, header: bytes, rest: list) -> None:
    _decode_checked([header, *rest], limits)


@pytest.mark.parametrize("limits", LIMITS, ids=["default", "tight"])
@FUZZ
@given(frames=mutated_frames())
def test_mutated_messages_are_refused_or_valid(limits: Limits, frames: list[bytes]) -> None:
    _decode_checked(frames, limits)


@FUZZ
@given(
    version=st.integers(-1, 3),
    kind=st.one_of(st.sampled_from(sorted(MESSAGE_TYPES)), st.integers(0, 300)),
    fields=st.lists(_ODD, max_size=8),
    nframes=st.integers(0, 4),
)
def test_random_fields_of_every_kind(version: int, kind: int, fields: list, nframes: int) -> None:
    header = msgpack.packb([version, kind, *fields], use_bin_type=True)
    _decode_checked([header, *([b"\x00" * 4] * nframes)], DEFAULT_LIMITS)


def test_refusal_of_a_tagged_request_carries_its_tag() -> None:
    # the frontend can then answer Reply(tag, BAD_REQUEST) instead of an untagged Error
    frames = encode(Infer(42, "m", 0, (("x", "float32", (2,)),)), [b"\x00" * 8])
    with pytest.raises(DecodeError) as info:
        decode(frames[:1])  # the tensor frame is missing
    assert (info.value.kind, info.value.tag) == (int(Infer.KIND), 42)
    with pytest.raises(DecodeError) as info:  # refused before msgpack even runs
        decode(frames, Limits(max_frame_bytes=4))
    assert (info.value.kind, info.value.tag) == (int(Infer.KIND), 42)
    bad_version = msgpack.packb([VERSION + 1, int(Infer.KIND), 42, "m", 0, ()])
    with pytest.raises(DecodeError) as info:  # another protocol: its tag means nothing
        decode([bad_version])
    assert info.value.tag is None


def test_nested_types_are_checked_below_the_top_level() -> None:
    # a map where a dtype belongs once reached arrays.unpack as "unhashable type: dict"
    header = msgpack.packb([VERSION, int(Infer.KIND), 1, "m", 0, [["x", {"a": 1}, [2]]]])
    with pytest.raises(DecodeError, match=r"Infer\.tensors\[0\]\[1\]: expected str, got dict"):
        decode([header, b"\x00" * 8])
    header = msgpack.packb([VERSION, int(Infer.KIND), 1, "m", 0, [["x", "float32", [2.0]]]])
    with pytest.raises(DecodeError, match=r"tensors\[0\]\[2\]\[0\]: expected int, got float"):
        decode([header, b"\x00" * 8])


# ---------------------------------------------------------- claimed-size allocation

# Headers whose containers or strings claim much more than they hold, and deep nesting.
CRAFTED: dict[str, bytes] = {
    "array32 claims 1M": b"\xdd\x00\x10\x00\x00",
    "map32 claims 1M": b"\xdf\x00\x10\x00\x00",
    "str32 claims 4G": b"\x93\x01\x28\xdb\xff\xff\xff\xff",
    "bin32 claims 4G": b"\x93\x01\x28\xc6\xff\xff\xff\xff",
    "ext32 claims 4G": b"\x93\x01\x28\xc9\xff\xff\xff\xff\x01",
    "nested array32 x1000": b"\x95\x01\x1e\x07" + b"\xdd\x00\x00\x0f\xa0" * 1000,
    "nested array16 x1000": b"\xdc\x0f\xa0" * 1000,
    "nested fixarray x1100": b"\x9f" * 1100,
    "nested map16 x1000": b"\xde\x07\xd0\x00" * 1000,
    "requests claiming 1M ids": b"\x96\x01\x0a\xdd\x00\x10\x00\x00",
}


def _peak_bytes(fn: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        fn()
    except RemoteProtocolError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


ALLOWANCE = 512 << 10  # interpreter noise, the exception, msgpack's fixed buffers


@pytest.mark.parametrize("header", list(CRAFTED.values()), ids=list(CRAFTED))
def test_claimed_sizes_are_not_allocated(header: bytes) -> None:
    start = time.perf_counter()
    peak = _peak_bytes(lambda: decode([header]))
    assert peak < ALLOWANCE + 64 * len(header), f"peak {peak} bytes for {len(header)} sent"
    assert time.perf_counter() - start < SLOW_S
    with pytest.raises(RemoteProtocolError):
        decode([header])


@FUZZ
@given(
    claims=st.lists(
        st.tuples(st.sampled_from([b"\xdc", b"\xdd", b"\xde", b"\xdf"]), st.integers(0, 2**32 - 1)),
        min_size=1,
        max_size=300,
    ),
    tail=st.binary(max_size=64),
)
def test_random_container_claims_allocate_little(claims: list, tail: bytes) -> None:
    def claim(marker: bytes, n: int) -> bytes:
        width = 2 if marker in (b"\xdc", b"\xde") else 4
        return marker + (n % (1 << (8 * width))).to_bytes(width, "big")

    header = b"".join(claim(marker, n) for marker, n in claims) + tail
    peak = _peak_bytes(lambda: decode([header]))
    assert peak < ALLOWANCE + 64 * len(header)


@pytest.mark.parametrize(
    "meta, buf",
    [
        (("x", "float32", (2**40, 2**40)), b"\x00" * 16),
        (("x", "float64", (0, 2**63)), b""),
        (("x", "uint8", (0, 2**40, 2**40)), b""),
        (("x", "BYTES", (0, 2**64 - 1)), b""),
        (("x", "BYTES", (2**30,)), b"\x00" * 64),
        (("x", "BYTES", (arrays.MAX_BYTES_ELEMENTS + 1,)), b"\x00" * 4 * (arrays.MAX_BYTES_ELEMENTS + 1)),
        (("x", "BYTES", (2,)), b"\xff\xff\xff\xff"),
        (("x", {"a": 1}, (1,)), b"\x00"),
        (("x", "float32", (1.5,)), b"\x00" * 4),
        (("x", "float32", (-1,)), b""),
        (("x", "float32", (1,) * 9), b"\x00" * 4),
        (("", "float32", (1,)), b"\x00" * 4),
    ],
    ids=[
        "huge-shape",
        "zero-size-2^63",
        "zero-size-overflow",
        "bytes-zero-size-2^64",
        "bytes-claims-2^30",
        "bytes-over-element-limit",
        "bytes-length-past-end",
        "dict-dtype",
        "float-dim",
        "negative-dim",
        "rank-9",
        "empty-name",
    ],
)
def test_bad_tensor_descriptions_are_refused_cheaply(meta: Any, buf: bytes) -> None:
    start = time.perf_counter()
    peak = _peak_bytes(lambda: arrays.unpack((meta,), [buf]))
    assert peak < ALLOWANCE + 64 * len(buf)
    assert time.perf_counter() - start < SLOW_S
    with pytest.raises(RemoteProtocolError):
        arrays.unpack((meta,), [buf])


# ----------------------------------------------------------------- arrays helpers


_META = st.one_of(
    st.tuples(_NAMES, _DTYPES, st.lists(st.integers(0, 4), max_size=3).map(tuple)),
    st.tuples(
        st.one_of(_NAMES, _ODD),
        st.one_of(_DTYPES, _ODD),
        st.one_of(st.lists(_INTS, max_size=4).map(tuple), _ODD),
    ),
    _ODD,
)


@FUZZ
@given(data=st.data(), metas=st.lists(_META, max_size=4))
def test_unpack_of_random_descriptions(data: st.DataObject, metas: list) -> None:
    # as many frames as descriptions (else the count check refuses everything at once),
    # each sized right for its description half of the time
    buffers = []
    for meta in metas:
        right = b""
        if (
            isinstance(meta, tuple)
            and len(meta) == 3
            and type(meta[1]) is str
            and meta[1] in arrays.ALLOWED_DTYPES
            and meta[1] != "BYTES"
            and isinstance(meta[2], tuple)
            and all(type(d) is int and 0 <= d < 8 for d in meta[2])
        ):
            right = b"\x01" * (int(np.prod(meta[2])) * np.dtype(meta[1]).itemsize)
        buffers.append(data.draw(st.one_of(st.just(right), st.binary(max_size=64))))
    start = time.perf_counter()
    _unpack_checked(tuple(metas), buffers)
    assert time.perf_counter() - start < SLOW_S


@FUZZ
@given(buf=st.binary(max_size=200), count=st.integers(0, 100))
def test_decode_bytes_of_random_frames(buf: bytes, count: int) -> None:
    try:
        items = arrays.decode_bytes(buf, count)
    except RemoteProtocolError:
        return
    assert len(items) == count
    assert sum(4 + len(i) for i in items) == len(buf)


@FUZZ
@given(
    numeric=st.lists(
        st.tuples(_DTYPES.filter(lambda d: d != "BYTES"), st.lists(st.integers(0, 4), max_size=3)), max_size=3
    ),
    texts=st.lists(st.binary(max_size=10), max_size=6),
)
def test_pack_unpack_round_trip(numeric: list, texts: list) -> None:
    inputs: dict[str, np.ndarray] = {}
    for i, (dtype, shape) in enumerate(numeric):
        size = int(np.prod(shape)) if shape else 1
        inputs[f"t{i}"] = (np.arange(size) % 2).astype(dtype).reshape(shape)
    inputs["s"] = np.array([*texts, b""], dtype=object)
    metas, buffers = arrays.pack(inputs)
    out = arrays.unpack(metas, [bytes(b) for b in buffers])
    assert list(out) == list(inputs)
    for name, arr in inputs.items():
        np.testing.assert_array_equal(out[name], arr)
