"""central.protocol.codec at its edges: limits, the structure pre-scan, salvaged tags and
the nested type checks.

These close the gaps a mutation campaign (``make mutation``, docs/testing.md) found in
test_protocol.py: each limit is inclusive, the pre-scan accepts every valid header and
refuses what it promises to refuse, a refusal names its request when it can, and the fast
nested check agrees with the slow one that names the fault. Frames are plain lists of
bytes; nothing here opens a socket.

The nested checkers and the scan's size table are built once, at import; the tests that
call ``_nested_checkers``, ``_field_checkers`` and ``_scalar_sizes`` build them afresh, so
a fault in the builders shows up here and not only as a wrong refusal somewhere later.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Tuple  # noqa: UP035 - the old spelling is tested on purpose

import msgpack
import pytest

from central.protocol import (
    DEFAULT_LIMITS,
    VERSION,
    Error,
    Heartbeat,
    Infer,
    Kind,
    Limits,
    LocalProtocolError,
    Payloads,
    RemoteProtocolError,
    Reply,
    Requests,
    StatsReply,
    codec,
    decode,
    encode,
)
from central.protocol.codec import DecodeError

F32x2 = ("x", "float32", (2,))


def _header(*items: object) -> bytes:
    return msgpack.packb(list(items), use_bin_type=True)


def _refusal(frames: list, limits: Limits = DEFAULT_LIMITS) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(frames, limits)
    return info.value


# ------------------------------------------------------------------ limits are inclusive


def test_exactly_max_frames_is_accepted() -> None:
    frames = encode(Reply(1, 0, "", (F32x2, F32x2)), [b"\x00" * 8, b"\x00" * 8])
    assert decode(frames, Limits(max_frames=3))[0].tag == 1
    assert "3 frames > limit 2" in str(_refusal(frames, Limits(max_frames=2)))


def test_a_header_of_exactly_max_header_bytes_is_accepted() -> None:
    frames = encode(Error(4, "x" * 100))
    size = len(frames[0])
    assert decode(frames, Limits(max_header_bytes=size))[0] == Error(4, "x" * 100)
    text = str(_refusal(frames, Limits(max_header_bytes=size - 1)))
    assert text == f"header of {size} bytes > limit {size - 1}"


def test_exactly_max_total_bytes_is_accepted() -> None:
    meta = ("x", "uint8", (16,))
    msg = Payloads(1, 0, (1, 2), ((meta,), (meta,)))
    frames = encode(msg, [b"\x00" * 16, b"\x00" * 16])
    assert decode(frames, Limits(max_total_bytes=32))[0] == msg
    assert str(_refusal(frames, Limits(max_total_bytes=31))) == "message of 32 bytes > limit 31"


def test_a_string_of_exactly_max_str_len_is_accepted() -> None:
    assert decode(encode(Error(4, "x" * 64)), Limits(max_str_len=64))[0].message == "x" * 64


def test_binary_longer_than_max_str_len_is_refused_by_msgpack() -> None:
    # bin is never a valid field, but it must not be read past the string limit either
    header = _header(VERSION, int(Kind.ERROR), 4, b"x" * 9)
    assert "undecodable header" in str(_refusal([header], Limits(max_str_len=8)))
    with pytest.raises(DecodeError, match=r"Error\.message: expected str, got bytes"):
        decode([header], Limits(max_str_len=9))


def test_header_may_be_any_buffer() -> None:
    msg = Requests((1, 2), ("m", "m"), (5, 6), (7, 8))
    header = encode(msg)[0]
    for frame in (bytearray(header), memoryview(header)):
        assert decode([frame])[0] == msg


# ------------------------------------------------------------------ type edges


def test_a_boolean_is_not_an_int() -> None:
    # msgpack true == 1 in Python: version 1, kind 1 (REGISTER_WORKER), field ints
    assert "protocol version True" in str(_refusal([_header(True, int(Kind.HEARTBEAT), 1)]))
    assert "unknown message kind True" in str(_refusal([_header(VERSION, True, "h", "a", ())]))
    err = _refusal([_header(VERSION, int(Kind.HEARTBEAT), True)])
    assert str(err) == "Heartbeat.sent_ns: expected int, got bool"


def test_nested_refusals_name_the_offending_element() -> None:
    cases = [
        (
            _header(VERSION, int(Kind.REQUESTS), (1, "2"), ("m", "m"), (1, 1), (1, 1)),
            "Requests.request_ids[1]: expected int, got str",
        ),
        (
            _header(VERSION, int(Kind.REQUESTS), (1,), ("m",), (1,), (True,)),
            "Requests.sizes[0]: expected int, got bool",
        ),
        (
            _header(VERSION, int(Kind.INFER), 1, "m", 0, (("x", "float32"),)),
            "Infer.tensors[0]: expected 3 elements, got 2",
        ),
        (_header(VERSION, int(Kind.INFER), 1, "m", 0, ("x",)), "Infer.tensors[0]: expected tuple, got str"),
        (
            _header(VERSION, int(Kind.INFER), 1, "m", 0, (("x", "float32", 2),)),
            "Infer.tensors[0][2]: expected tuple, got int",
        ),
    ]
    for header, text in cases:
        frames = [header, b"\x00" * 8] if text.startswith("Infer") else [header]
        assert str(_refusal(frames)) == text


def test_payloads_need_one_tensor_list_per_request() -> None:
    with pytest.raises(LocalProtocolError, match="Payloads: one tensor list per request id"):
        encode(Payloads(1, 0, (1, 2), ((F32x2,),)), [b"\x00" * 8])
    with pytest.raises(LocalProtocolError, match="Payloads: per-request tensor descriptions"):
        encode(Payloads(1, 0, (1,), ([F32x2],)), [b"\x00" * 8])  # type: ignore[arg-type]
    header = _header(VERSION, int(Kind.PAYLOADS), 1, 0, (1, 2), ((F32x2,),))
    err = _refusal([header, b"\x00" * 8])
    assert str(err) == "Payloads: malformed tensor descriptions: one tensor list per request id"


def test_extension_refusal_names_the_extension() -> None:
    header = _header(VERSION, int(Kind.ERROR), 4, msgpack.ExtType(7, b"payload"))
    assert "undecodable header" in str(_refusal([header]))
    # an empty extension gets past msgpack's length limit: the hook refuses it by name
    header = _header(VERSION, int(Kind.ERROR), 4, msgpack.ExtType(7, b""))
    assert "msgpack extension type 7 is not allowed" in str(_refusal([header]))


# ------------------------------------------------------------------ kind and tag of a refusal


def test_refusal_after_msgpack_carries_kind_and_tag() -> None:
    err = _refusal(encode(Infer(42, "m", 0, (F32x2,)), [b"\x00" * 8])[:1])
    assert (err.kind, err.tag) == (int(Kind.INFER), 42)
    assert isinstance(err, RemoteProtocolError)
    err = _refusal([_header(VERSION, int(Kind.INFER), "42", "m", 0, ())])  # tag not an int
    assert (err.kind, err.tag) == (int(Kind.INFER), None)
    err = _refusal([*encode(Heartbeat(9)), b"x"])  # untagged kind
    assert (err.kind, err.tag) == (int(Kind.HEARTBEAT), None)


def test_too_short_tagged_header_carries_what_it_has() -> None:
    err = _refusal([_header(VERSION, int(Kind.INFER))])
    assert str(err) == "Infer: 0 fields, expected 4"
    assert (err.kind, err.tag) == (int(Kind.INFER), None)
    err = _refusal([_header(VERSION, int(Kind.INFER), 42)])
    assert str(err) == "Infer: 1 fields, expected 4"
    assert (err.kind, err.tag) == (int(Kind.INFER), 42)
    # refused before msgpack: a header of just [version, kind] still names its kind
    err = _refusal([_header(VERSION, int(Kind.HEARTBEAT)), b"x"], Limits(max_frames=1))
    assert (err.kind, err.tag) == (int(Kind.HEARTBEAT), None)


def test_refusal_before_msgpack_salvages_kind_and_tag() -> None:
    frames = encode(Infer(42, "m", 0, (F32x2,)), [b"\x00" * 8])
    err = _refusal(frames, Limits(max_frame_bytes=4))
    assert (err.kind, err.tag) == (int(Kind.INFER), 42)
    err = _refusal(frames, Limits(max_frames=1))
    assert (err.kind, err.tag) == (int(Kind.INFER), 42)
    big = encode(Infer(2**64 - 1, "m", 0, (F32x2,)), [b"\x00" * 8])
    assert _refusal(big, Limits(max_frame_bytes=4)).tag == 2**64 - 1
    err = _refusal(encode(StatsReply(7, "{}")), Limits(max_header_bytes=4))
    assert (err.kind, err.tag) == (int(Kind.STATS_REPLY), 7)
    err = _refusal(encode(Heartbeat(7)), Limits(max_header_bytes=2))
    assert (err.kind, err.tag) == (int(Kind.HEARTBEAT), None)


def test_salvaged_tag_must_be_an_int() -> None:
    header = _header(VERSION, int(Kind.INFER), "tag", "m", 0, msgpack.ExtType(1, b"x"))
    err = _refusal([header])
    assert (err.kind, err.tag) == (int(Kind.INFER), None)


def test_every_refusal_after_msgpack_names_kind_and_tag() -> None:
    cases = [
        # a top-level field of the wrong type
        ([_header(VERSION, int(Kind.INFER), 42, 5, 0, ())], "Infer.model: expected str, got int"),
        # a nested field of the wrong type
        (
            [_header(VERSION, int(Kind.INFER), 42, "m", 0, (("x", "f", (1.5,)),)), b"x"],
            "Infer.tensors[0][2][0]: expected int, got float",
        ),
        # frames on a tagged kind that carries no tensors
        ([*encode(StatsReply(42, "{}")), b"x"], "StatsReply carries no tensors, got 1 frames"),
    ]
    for frames, text in cases:
        err = _refusal(frames)
        assert str(err) == text
        assert (err.kind, err.tag) == (frames[0][2], 42)
    # tensor descriptions that cannot be counted (only untagged kinds have nested lists)
    err = _refusal([_header(VERSION, int(Kind.PAYLOADS), 42, 0, (1,), (7,))])
    assert str(err) == (
        "Payloads: malformed tensor descriptions: per-request tensor descriptions must be arrays"
    )
    assert (err.kind, err.tag) == (int(Kind.PAYLOADS), None)


def test_a_header_that_is_not_an_array_is_named() -> None:
    for header in (msgpack.packb(5), _header(VERSION), msgpack.packb("x")):
        assert str(_refusal([header])) == "header is not [version, kind, ...]"


def test_maps_with_other_than_string_keys_are_refused_by_msgpack() -> None:
    err = _refusal([_header(VERSION, int(Kind.ERROR), 4, {1: "x"})])
    assert str(err).startswith("undecodable header: ")
    err = _refusal([_header(VERSION, int(Kind.ERROR), 4, {"k": "x"})])
    assert str(err) == "Error.message: expected str, got dict"


def test_unknown_kind_is_reported_without_a_tag() -> None:
    err = _refusal([_header(VERSION, 99, 42)])
    assert (err.kind, err.tag) == (99, None)


def test_nothing_is_salvaged_from_another_protocol_or_garbage() -> None:
    for header in (
        _header(VERSION + 1, int(Kind.INFER), 42, "m", 0, ()),  # another version
        _header(True, int(Kind.INFER), 42, "m", 0, ()),  # true is not version 1
        _header("1", int(Kind.INFER), 42, "m", 0, ()),
        _header(VERSION, "30", 42),  # a kind that is not an int
        _header(VERSION),  # a single element
        msgpack.packb(5),  # not an array
        b"\xc1",
    ):
        err = _refusal([header])
        assert (err.kind, err.tag) == (None, None), header
    err = _refusal([])
    assert (str(err), err.kind, err.tag) == ("empty message", None, None)


# ------------------------------------------------------------------ the structure pre-scan

# A fixarray of fifteen 220s (0xcc 0xdc each): fifteen bytes that could open an array16.
# More than 2 * max_depth of those and decode walks the header's structure before msgpack.
_PAD = b"\x9f" + b"\xcc\xdc" * 15
_SCAN = Limits(max_depth=4)
_PASSED = "Error.code: expected int, got tuple"  # the scan and msgpack let it through


def _raw(*fields: bytes) -> bytes:
    """The header ``[VERSION, ERROR, <_PAD>, *fields]``, fields given as raw msgpack."""
    return bytes([0x90 | (3 + len(fields)), VERSION, int(Kind.ERROR)]) + _PAD + b"".join(fields)


def _forced_scan_message() -> Requests:
    """A valid message that makes ``decode`` walk its structure with ``max_depth=2``.

    Its four arrays are array16s and some ids encode as 0xdc..0xdf bytes, so the header
    holds more than 2 * 2 bytes that could open a big container; the ids and budgets
    cover every integer width and the models every string width msgpack uses.
    """
    ints = [0, 127, 128, 220, 221, 222, 223, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]
    negatives = [-1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63)]
    ids = tuple(ints + [1] * (16 - len(ints)))
    budgets = tuple(negatives + [1] * (16 - len(negatives)))
    models = tuple(["", "m" * 31, "m" * 32, "m" * 255, "m" * 256, "\u0700" * 20] + ["m"] * 10)
    return Requests(ids, models, budgets, (1,) * 16)  # ends on 16 one-byte elements


def test_every_valid_header_passes_the_structure_scan() -> None:
    msg = _forced_scan_message()
    header = encode(msg)[0]
    assert sum(header.count(b) for b in b"\xdc\xdd\xde\xdf") > 4
    assert decode([header], Limits(max_depth=2))[0] == msg
    # the last array's 16 one-byte elements end the header: claimed == bytes left
    assert header.endswith(b"\xdc\x00\x10" + b"\x01" * 16)


def test_every_element_kind_passes_the_structure_scan() -> None:
    values = [
        1.5,
        None,
        True,
        False,
        2**64 - 1,
        -(2**63),
        "x" * 40,
        "y" * 300,
        b"b" * 3,
        b"c" * 300,
        {"k": [1]},
        [[1, 2], []],
    ]
    # the twelve values and, appended by hand, a float32 (packb writes float64)
    items = msgpack.packb(values, use_bin_type=True)[1:]
    items += msgpack.packb(2.5, use_single_float=True)
    header = bytes([0x94, VERSION, int(Kind.ERROR)]) + _PAD + bytes([0x90 | 13]) + items
    assert str(_refusal([header], _SCAN)) == _PASSED


def test_maps_are_walked_as_key_value_pairs() -> None:
    assert str(_refusal([_raw(b"\x81\xa1k\x00")], _SCAN)) == _PASSED
    assert str(_refusal([_raw(b"\xde\x00\x01\xa1k\x00")], _SCAN)) == _PASSED
    # fifteen pairs are thirty elements: twenty bytes are too few although 15 would fit
    text = str(_refusal([_raw(b"\x8f" + b"\x00" * 20)], _SCAN))
    assert text.endswith("claims more elements than the 20 bytes left")
    text = str(_refusal([_raw(b"\xde\x00\x03" + b"\x00" * 5)], _SCAN))
    assert text.endswith("claims more elements than the 5 bytes left")
    text = str(_refusal([_raw(b"\xdf\x00\x00\x00\x03" + b"\x00" * 5)], _SCAN))
    assert text.endswith("claims more elements than the 5 bytes left")


def test_nesting_deeper_than_max_depth_is_refused_by_the_scan() -> None:
    # the header array is level 1: three more fixarrays inside a field reach level 4
    assert str(_refusal([_raw(b"\x91" * 3 + b"\x00")], _SCAN)) == _PASSED
    assert str(_refusal([_raw(b"\x91" * 4 + b"\x00")], _SCAN)) == ("undecodable header: nested deeper than 4")
    assert str(_refusal([_raw(b"\xdc\x00\x01" * 4 + b"\x00")], _SCAN)) == (
        "undecodable header: nested deeper than 4"
    )


def test_siblings_do_not_count_as_nesting() -> None:
    # the padding and the field are two arrays side by side at level 2
    assert str(_refusal([_raw(b"\x91\x00")], Limits(max_depth=2))) == _PASSED
    assert str(_refusal([_raw(b"\x91\x91\x00")], Limits(max_depth=2))).endswith("nested deeper than 2")
    msg = _forced_scan_message()  # four sibling arrays
    assert decode(encode(msg), Limits(max_depth=2))[0] == msg
    assert "nested deeper than 1" in str(_refusal(encode(msg), Limits(max_depth=1)))


@pytest.mark.parametrize(
    "marker, claim",
    [
        (b"\xdc", b"\xff\xff"),
        (b"\xdc", b"\x01\x00"),
        (b"\xdd", b"\x00\x10\x00\x00"),
        (b"\xdd", b"\x01\x00\x00\x00"),
        (b"\xde", b"\xff\xff"),
        (b"\xde", b"\x01\x00"),
        (b"\xdf", b"\x00\x10\x00\x00"),
        (b"\xdf", b"\x01\x00\x00\x00"),
    ],
    ids=["array16", "array16-high", "array32", "array32-high", "map16", "map16-high", "map32", "map32-high"],
)
def test_a_container_claiming_more_than_the_bytes_left_is_refused(marker: bytes, claim: bytes) -> None:
    header = _raw(marker + claim + b"\x00" * 3)
    at = len(header) - 3
    assert str(_refusal([header], _SCAN)) == (
        f"undecodable header: a container at byte {at} claims more elements than the 3 bytes left"
    )


@pytest.mark.parametrize(
    "tail",
    [
        b"\xdc\x01",
        b"\xdd\x00\x00\x01",
        b"\xde\x01",
        b"\xdf\x00\x00\x01",
        b"\xd9",
        b"\xda\x00",
        b"\xdb\x00\x00\x00",
        b"\xc4",
        b"\xc7",
        b"\xd9\x05ab",
        b"\xc9\x00\x00\x00\x05\x01ab",
        b"\xc7\x01",
        b"\xcd\x00",
        b"\xa5ab",
        b"",
    ],
    ids=[
        "array16",
        "array32",
        "map16",
        "map32",
        "str8",
        "str16",
        "str32",
        "bin8",
        "ext8",
        "str8-body",
        "ext32-body",
        "ext8-type",
        "uint16-body",
        "fixstr-body",
        "missing",
    ],
)
def test_a_truncated_header_is_refused_by_the_scan(tail: bytes) -> None:
    assert str(_refusal([_raw(tail)], _SCAN)) == "undecodable header: truncated"


def test_the_scan_runs_only_above_twice_max_depth_big_container_bytes() -> None:
    # Below that, msgpack's preallocation for claimed sizes is bounded and the Python
    # loop is skipped; the nesting is then refused by the type check instead.
    deep = b"\x91" * 4 + b"\x00"
    pad8 = b"\x98" + b"\xcc\xdc" * 8
    header = bytes([0x94, VERSION, int(Kind.ERROR)]) + pad8 + deep
    assert str(_refusal([header], _SCAN)) == _PASSED
    pad9 = b"\x99" + b"\xcc\xdc" * 9
    header = bytes([0x94, VERSION, int(Kind.ERROR)]) + pad9 + deep
    assert str(_refusal([header], _SCAN)) == "undecodable header: nested deeper than 4"


def test_empty_and_exactly_filled_containers_pass_the_scan() -> None:
    for field in (
        b"\x80",  # {}
        b"\xc4\x00",  # an empty bin8 ends the header
        b"\xdc\x00\x00",  # an empty array16 ends the header
        b"\xdd\x00\x00\x00\x00",  # an empty array32
        b"\xdd\x00\x00\x00\x01\x00",  # an array32 whose one element ends the header
        b"\xde\x00\x01\xa0\x00",  # {"": 0} as map16: two elements, two bytes
        b"\xdf\x00\x00\x00\x01\xa0\x00",  # the same as map32
    ):
        assert str(_refusal([_raw(field)], _SCAN)) == _PASSED, field


def test_the_scan_goes_on_after_a_sized_element() -> None:
    header = _raw(b"\xd9\x01x", b"\x91" * 4 + b"\x00")
    assert str(_refusal([header], _SCAN)) == "undecodable header: nested deeper than 4"


def test_sized_elements_are_skipped_whole() -> None:
    # each holds bytes that would open big containers: the scan must step over them
    for field in (
        b"\xd9\x02\xdd\x80",
        b"\xda\x00\x02\xdd\x80",
        b"\xdb\x00\x00\x00\x02\xdd\x80",
        b"\xc4\x03\xdd\xdd\xdd",
        b"\xc5\x00\x03\xdd\xdd\xdd",
        b"\xc6\x00\x00\x00\x03\xdd\xdd\xdd",
    ):
        assert str(_refusal([_raw(field)], _SCAN)) == _PASSED, field
    for field in (
        b"\xc7\x03\x01\xdd\xdd\xdd",
        b"\xc8\x00\x03\x01\xdd\xdd\xdd",
        b"\xc9\x00\x00\x00\x03\x01\xdd\xdd\xdd",
    ):
        text = str(_refusal([_raw(field)], _SCAN))
        assert text.startswith("undecodable header: ") and "truncated" not in text, field


def test_the_never_used_byte_is_named_by_the_scan() -> None:
    header = _raw(b"\xc1")
    assert str(_refusal([header], _SCAN)) == (f"undecodable header: byte 0xc1 at {len(header) - 1}")


def test_the_scan_size_table_agrees_with_msgpack() -> None:
    sizes = codec._scalar_sizes()
    scalars: list[object] = [
        *range(-32, 128),
        128,
        255,
        256,
        65535,
        65536,
        2**32 - 1,
        2**32,
        2**64 - 1,
        -33,
        -128,
        -129,
        -32768,
        -32769,
        -(2**31),
        -(2**31) - 1,
        -(2**63),
        None,
        True,
        False,
        1.5,
        *("s" * n for n in range(32)),
        *(msgpack.ExtType(1, b"x" * n) for n in (1, 2, 4, 8, 16)),
    ]
    packed = [msgpack.packb(v) for v in scalars] + [msgpack.packb(1.5, use_single_float=True)]
    for p in packed:
        assert sizes[p[0]] == len(p), p
    # everything else has a length or element count after its first byte (or is 0xc1)
    other = set(range(256)) - {p[0] for p in packed}
    assert other == {
        0xC1,
        *range(0x80, 0xA0),
        0xC4,
        0xC5,
        0xC6,
        0xC7,
        0xC8,
        0xC9,
        0xD9,
        0xDA,
        0xDB,
        0xDC,
        0xDD,
        0xDE,
        0xDF,
    }
    assert [sizes[b] for b in sorted(other)] == [0] * len(other)


# ------------------------------------------------------------------ the nested type checks


@dataclass(frozen=True)
class _Shapes:
    """Every annotation shape the wire types use, plus one the checks do not know."""

    n: int
    s: str
    ids: tuple[int, ...]
    names: tuple[str, ...]
    pairs: tuple[tuple[int, str], ...]
    meta: tuple[str, str, tuple[int, ...]]
    grid: tuple[tuple[tuple[int, str], ...], ...]
    sig: tuple[str, tuple[tuple[int, str], ...]]
    other: float  # not a wire type: accepted as is


_GOOD = (
    1,
    "a",
    (1, 2),
    ("a", "b"),
    ((1, "a"), (2, "b")),
    ("x", "f", (2, 3)),
    (((1, "a"),), ()),
    ("s", ((1, "a"),)),
    "anything",
)

# (field index, bad value, the slow check's complaint)
_BAD = [
    (0, True, "n: expected int, got bool"),
    (0, "1", "n: expected int, got str"),
    (1, b"a", "s: expected str, got bytes"),
    (2, [1], "ids: expected tuple, got list"),
    (2, (1, "x"), "ids[1]: expected int, got str"),
    (2, (1, True), "ids[1]: expected int, got bool"),
    (3, ("a", 1), "names[1]: expected str, got int"),
    (3, "ab", "names: expected tuple, got str"),
    (4, 7, "pairs: expected tuple, got int"),
    (4, (5,), "pairs[0]: expected tuple, got int"),
    (4, ((1, "a"), (1,)), "pairs[1]: expected 2 elements, got 1"),
    (4, ((1, 2),), "pairs[0][1]: expected str, got int"),
    (4, (("1", "a"),), "pairs[0][0]: expected int, got str"),
    (5, ["x", "f", (2,)], "meta: expected tuple, got list"),
    (5, ("x", "f", (2,), 4), "meta: expected 3 elements, got 4"),
    (5, ("x", "f", (2.0,)), "meta[2][0]: expected int, got float"),
    (5, ("x", 1, (2,)), "meta[1]: expected str, got int"),
    (6, (((1, "a"),), ((1, 1),)), "grid[1][0][1]: expected str, got int"),
    (6, ((1,),), "grid[0][0]: expected tuple, got int"),
    (7, ("s", ((1, "a"), ("b", "a"))), "sig[1][1][0]: expected int, got str"),
    (7, ("s",), "sig: expected 2 elements, got 1"),
]


def _fresh_checkers() -> tuple[typing.Callable[[tuple], bool], dict[str, typing.Callable]]:
    fast, slow = codec._nested_checkers(_Shapes)
    assert [name for name, _ in slow] == [f.name for f in dataclasses.fields(_Shapes)]
    return fast, dict(slow)


def test_conforming_values_pass_both_checks() -> None:
    fast, slow = _fresh_checkers()
    assert fast(_GOOD)
    assert all(check(v) is None for check, v in zip(slow.values(), _GOOD))
    empty = (0, "", (), (), (), ("", "", ()), (), ("", ()), 0.5)
    assert fast(empty)
    assert all(check(v) is None for check, v in zip(slow.values(), empty))


@pytest.mark.parametrize("index, bad, complaint", _BAD, ids=[c for _, _, c in _BAD])
def test_the_fast_check_refuses_what_the_slow_one_names(index: int, bad: object, complaint: str) -> None:
    fast, slow = _fresh_checkers()
    values = list(_GOOD)
    values[index] = bad
    assert not fast(tuple(values))
    name = dataclasses.fields(_Shapes)[index].name
    assert name + (slow[name](bad) or "") == complaint
    others = [check(v) for (n, check), v in zip(slow.items(), values) if n != name]
    assert others == [None] * len(others)


def test_a_message_without_fields_has_nothing_to_check() -> None:
    @dataclass
    class Nothing:
        pass

    fast, slow = codec._nested_checkers(Nothing)
    assert fast(()) and slow == ()


def test_unknown_annotations_accept_anything() -> None:
    fast, slow = _fresh_checkers()
    for other in (None, 1, {"a": 1}, (1, "x")):
        assert fast((*_GOOD[:-1], other))
        assert slow["other"](other) is None


def test_every_message_field_has_a_wire_type() -> None:
    @dataclass
    class Wire:
        a: int
        b: str
        c: tuple[int, ...]
        d: Tuple[int, ...]  # noqa: UP006 - the old spelling is accepted too

    assert codec._field_checkers(Wire) == (("a", int), ("b", str), ("c", tuple), ("d", tuple))

    @dataclass
    class NotWire:
        a: int
        f: float

    with pytest.raises(TypeError, match=r"NotWire\.f: unsupported wire type float"):
        codec._field_checkers(NotWire)
