"""central.protocol: every message round-trips; every malformed frame set is refused.

Decoding is the boundary where a peer's bytes become our objects, so each refusal is
checked to be a ``RemoteProtocolError`` whose message names what was wrong. Nothing here
opens a socket: frames are plain lists of bytes.
"""

from __future__ import annotations

import pickle

import msgpack
import pytest

from central.protocol import (
    DEFAULT_LIMITS,
    MESSAGE_TYPES,
    VERSION,
    AttachFrontend,
    DescribeModels,
    Dispatched,
    Done,
    DropRequests,
    Error,
    Execute,
    FrontendRegistered,
    GrantBatch,
    Heartbeat,
    HeartbeatAck,
    Infer,
    Kind,
    Leaving,
    Limits,
    LocalProtocolError,
    ModelsDescribed,
    ModelState,
    MoveModel,
    Offers,
    Payloads,
    PoolStates,
    ProtocolError,
    RegisterFrontend,
    RegisterShard,
    RegisterWorker,
    RemoteProtocolError,
    Reply,
    Requests,
    Requeue,
    Results,
    Route,
    ShardDirectory,
    ShardModels,
    ShardNotes,
    ShardStats,
    StatsQuery,
    StatsReply,
    Status,
    WorkerDirectory,
    WorkerRegistered,
    decode,
    encode,
)

F32x2 = ("x", "float32", (2,))

# One plausible instance of every message kind, with the raw tensor frames it carries.
SAMPLES: list[tuple[object, list[bytes]]] = [
    (
        RegisterWorker(
            "gpu-host:4242",
            "tcp://127.0.0.1:6001",
            (
                (0, ("resnet",), (("resnet", 1_082_000, 5_204_000, 64),)),
                (
                    1,
                    ("resnet", "bert"),
                    (("resnet", 1_082_000, 5_204_000, 64), ("bert", 2_000_000, -300_000, 32)),
                ),
            ),
        ),
        [],
    ),
    (WorkerRegistered(3, (7, 8), 250_000_000), []),
    (RegisterFrontend("fe-1"), []),
    (FrontendRegistered(2, ("resnet", "bert")), []),
    (WorkerDirectory(((1, "tcp://127.0.0.1:6001"), (2, "tcp://127.0.0.1:6002")), ("resnet",)), []),
    (Heartbeat(123_456_789), []),
    (HeartbeatAck(123_456_789, 987_654_321), []),
    (HeartbeatAck(123_456_789, 987_654_321, 0), []),
    (Leaving("w-host:1234"), []),
    (Requests(((2 << 40) | 1, (2 << 40) | 2), ("resnet", "bert"), (24_000_000, 9_000_000), (64, 1024)), []),
    (Execute(9, 1, "resnet", (1, 2, 3), 1_000_000, 2_000_000, 8_450_000), []),
    (Route(9, 4, 1, (1, 3)), []),
    (DropRequests((5, 6), 0, "the request can no longer finish within its SLO"), []),
    (Done(9, 1, 0, 1_000_500, 9_000_000, 3), []),
    (
        Payloads(9, 1, (1, 3), ((F32x2,), (F32x2, ("mask", "bool", (2,))))),
        [b"\x00\x00\x80?\x00\x00\x00@", b"\x00\x00\x80?\x00\x00@@", b"\x01\x00"],
    ),
    (
        Results(
            9, (1, 3), (int(Status.OK), int(Status.FAILED)), ("", "boom"), ((("sum", "float64", (1,)),), ())
        ),
        [b"\x00" * 8],
    ),
    (DescribeModels(3), []),
    (
        ModelsDescribed(
            3, (("minilm", 64, (("text", "BYTES", (1,)),), (("embedding", "float32", (384,)),)),)
        ),
        [],
    ),
    (Infer(7, "resnet", 25_000_000, (("image", "uint8", (2, 2)),)), [b"\x01\x02\x03\x04"]),
    (Reply(7, int(Status.OK), "", (("labels", "BYTES", (1,)),)), [b"\x03\x00\x00\x00cat"]),
    (Error(int(Status.BAD_REQUEST), "Infer.model: expected str, got int"), []),
    (StatsQuery(1), []),
    (StatsReply(1, '{"pending": 0, "counters": {"ok": 3}}'), []),
    (RegisterShard(1, "tcp://127.0.0.1:5571", "shard1"), []),
    (ShardModels((("resnet", 1_082_000, 5_204_000, 64), ("minilm", 0, 0, 0))), []),
    (PoolStates(((("minilm", "resnet"), 123_000_000, 1, 4), (("resnet",), 0, 0, 0))), []),
    (ShardNotes(("resnet",), ((7, "resnet", 1, 4, 9_532_000, 120_000),), ("minilm",), (8, 9)), []),
    (GrantBatch("resnet", 7, 3, 125_000_000), []),
    (Offers((("resnet", 12, 140_000_000, 9_532_000, 300_000),), ("minilm",)), []),
    (Dispatched(7, "resnet", 3, (1 << 40, (1 << 40) + 1), 125_000_000, 140_000_000, 9_532_000, 300_000), []),
    (ShardDirectory(2, ((0, "tcp://127.0.0.1:5571"), (1, "tcp://127.0.0.1:5572")), (("resnet", 1),)), []),
    (AttachFrontend(1), []),
    (MoveModel("resnet", 0), []),
    (
        ModelState(
            "resnet", 0, (1_082_000, 5_204_000, 64), (1 << 40,), (150_000_000,), (100_000_000,), (602_112,)
        ),
        [],
    ),
    (Requeue((1 << 40,), ("resnet",), (150_000_000,), (100_000_000,), (602_112,)), []),
    (ShardStats(1, '{"requests_in": 5}'), []),
]


def _header(*items: object) -> bytes:
    return msgpack.packb(list(items), use_bin_type=True)


def _refused(frames: list, match: str, limits: Limits = DEFAULT_LIMITS) -> str:
    with pytest.raises(RemoteProtocolError, match=match) as info:
        decode(frames, limits)
    return str(info.value)


# ------------------------------------------------------------------ round trips


def test_samples_cover_every_message_kind() -> None:
    assert {type(m).KIND for m, _ in SAMPLES} == set(MESSAGE_TYPES) == set(Kind)


@pytest.mark.parametrize("msg, buffers", SAMPLES, ids=[type(m).__name__ for m, _ in SAMPLES])
def test_every_message_round_trips(msg: object, buffers: list[bytes]) -> None:
    frames = encode(msg, buffers)  # type: ignore[arg-type]
    assert len(frames) == 1 + len(buffers)
    decoded, got = decode(frames)
    assert decoded == msg
    assert type(decoded) is type(msg)
    assert [bytes(b) for b in got] == buffers


def test_header_is_positional_msgpack_with_version_and_kind() -> None:
    header = encode(Heartbeat(42))[0]
    assert msgpack.unpackb(header) == [VERSION, int(Kind.HEARTBEAT), 42]


def test_tensor_frames_pass_through_without_copies() -> None:
    buf = bytearray(b"\x00" * 8)
    view = memoryview(buf)
    frames = encode(Infer(1, "m", 0, (F32x2,)), [view])
    assert frames[1] is view
    _, got = decode(frames)
    assert got[0] is view


def test_extreme_integers_round_trip() -> None:
    # request ids use the high bits (frontend index << 40); profiles may have c_ns < 0
    msg = Requests((2**64 - 1, 0), ("m", "m"), (-1, 2**63 - 1), (0, 1))
    assert decode(encode(msg))[0] == msg


def test_error_classes_say_who_is_at_fault() -> None:
    assert issubclass(RemoteProtocolError, ProtocolError)
    assert issubclass(LocalProtocolError, ProtocolError)
    assert not issubclass(RemoteProtocolError, LocalProtocolError)


# --------------------------------------------------------------- encode refusals


def test_encode_refuses_fewer_buffers_than_tensors() -> None:
    with pytest.raises(LocalProtocolError, match="1 tensors described, 0 buffers"):
        encode(Infer(1, "m", 0, (F32x2,)), [])


def test_encode_refuses_buffers_on_a_message_without_tensors() -> None:
    with pytest.raises(LocalProtocolError, match="Error: 0 tensors described, 1 buffers"):
        encode(Error(4, "x"), [b"stray"])


def test_encode_counts_payload_tensors_across_requests() -> None:
    msg = Payloads(1, 0, (1, 2), ((F32x2,), (F32x2, F32x2)))
    with pytest.raises(LocalProtocolError, match="3 tensors described, 2 buffers"):
        encode(msg, [b"a" * 8, b"b" * 8])


# --------------------------------------------------------------- decode refusals


def test_empty_message_is_refused() -> None:
    _refused([], "empty message")


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_wrong_version_is_refused(version: object) -> None:
    text = _refused([_header(version, int(Kind.HEARTBEAT), 1)], "protocol version")
    assert f"this side speaks {VERSION}" in text


@pytest.mark.parametrize("kind", [0, 99, 255, "ERROR", None])
def test_unknown_kind_is_refused(kind: object) -> None:
    _refused([_header(VERSION, kind, 1)], "unknown message kind")


@pytest.mark.parametrize("header", [_header(VERSION), msgpack.packb(5), msgpack.packb({"v": 1})])
def test_header_that_is_not_version_kind_array_is_refused(header: bytes) -> None:
    _refused([header], r"header is not \[version, kind, ...\]")


@pytest.mark.parametrize("fields", [(), (4,), (4, "x", "extra")])
def test_wrong_field_count_is_refused(fields: tuple) -> None:
    _refused([_header(VERSION, int(Kind.ERROR), *fields)], f"Error: {len(fields)} fields, expected 2")


@pytest.mark.parametrize(
    "kind, fields, match",
    [
        (Kind.ERROR, ("4", "x"), r"Error\.code: expected int, got str"),
        (Kind.ERROR, (4, b"x"), r"Error\.message: expected str, got bytes"),
        (Kind.ERROR, (4.0, "x"), r"Error\.code: expected int, got float"),
        (Kind.REQUESTS, (1, (), (), ()), r"Requests\.request_ids: expected tuple, got int"),
        (Kind.HEARTBEAT, (None,), r"Heartbeat\.sent_ns: expected int, got NoneType"),
        (Kind.INFER, (1, "m", 0, {"x": 1}), r"Infer\.tensors: expected tuple, got dict"),
    ],
)
def test_wrong_field_type_is_refused(kind: Kind, fields: tuple, match: str) -> None:
    _refused([_header(VERSION, int(kind), *fields)], match)


def test_missing_tensor_frame_is_refused() -> None:
    frames = encode(Infer(1, "m", 0, (F32x2,)), [b"\x00" * 8])
    _refused(frames[:1], "Infer: 1 tensors described, 0 frames sent")


def test_surplus_tensor_frame_is_refused() -> None:
    frames = encode(Reply(1, 0, "", (F32x2,)), [b"\x00" * 8])
    _refused([*frames, b"\x00" * 8], "Reply: 1 tensors described, 2 frames sent")


def test_payload_tensor_count_is_summed_over_requests() -> None:
    msg = Payloads(1, 0, (1, 2), ((F32x2,), (F32x2,)))
    frames = encode(msg, [b"\x00" * 8, b"\x00" * 8])
    _refused(frames[:2], "Payloads: 2 tensors described, 1 frames sent")


def test_malformed_tensor_descriptions_are_refused() -> None:
    # Payloads.tensors must be a tuple of tuples; ints have no length
    header = _header(VERSION, int(Kind.PAYLOADS), 1, 0, (1,), (7,))
    _refused([header], "Payloads: malformed tensor descriptions")


def test_extra_frames_on_a_message_without_tensors_are_refused() -> None:
    frames = encode(Heartbeat(1))
    _refused([*frames, b"sneaky"], "Heartbeat carries no tensors, got 1 frames")


def test_oversized_header_is_refused() -> None:
    frames = encode(Error(4, "x" * 100))
    _refused(frames, r"header of \d+ bytes > limit 64", Limits(max_header_bytes=64))


def test_oversized_frame_is_refused() -> None:
    frames = encode(Infer(1, "m", 0, (("x", "uint8", (32,)),)), [b"\x00" * 32])
    _refused(frames, "frame of 32 bytes > limit 16", Limits(max_frame_bytes=16))
    # one byte more room and it passes: the limit is inclusive
    assert decode(frames, Limits(max_frame_bytes=32))[0].model == "m"


def test_oversized_total_is_refused() -> None:
    meta = ("x", "uint8", (16,))
    frames = encode(Payloads(1, 0, (1, 2), ((meta,), (meta,))), [b"\x00" * 16, b"\x00" * 16])
    _refused(frames, "message of 32 bytes > limit 20", Limits(max_frame_bytes=16, max_total_bytes=20))


def test_too_many_frames_are_refused() -> None:
    frames = encode(Reply(1, 0, "", (F32x2, F32x2)), [b"\x00" * 8, b"\x00" * 8])
    _refused(frames, "3 frames > limit 2", Limits(max_frames=2))


def test_long_strings_are_refused_inside_msgpack() -> None:
    frames = encode(Error(4, "x" * 65))
    _refused(frames, "undecodable header", Limits(max_str_len=64))


def test_long_arrays_are_refused_inside_msgpack() -> None:
    msg = Requests(tuple(range(5)), ("m",) * 5, (1,) * 5, (1,) * 5)
    _refused(encode(msg), "undecodable header", Limits(max_array_len=4))


@pytest.mark.parametrize(
    "header",
    [
        b"",  # nothing at all
        b"\xc1",  # the one byte msgpack never uses
        encode(Heartbeat(1))[0][:-1],  # truncated
        encode(Heartbeat(1))[0] + b"\x00",  # trailing bytes after the array
        b"\xff" * 16,
    ],
    ids=["empty", "never-used-byte", "truncated", "trailing", "noise"],
)
def test_msgpack_garbage_is_refused(header: bytes) -> None:
    _refused([header], "undecodable header")


@pytest.mark.parametrize(
    "ext", [msgpack.ExtType(1, b"payload"), msgpack.Timestamp(1, 0)], ids=["ext", "timestamp"]
)
def test_msgpack_extension_types_are_refused(ext: object) -> None:
    _refused([_header(VERSION, int(Kind.ERROR), 4, ext)], "undecodable header")


def test_empty_msgpack_extension_nested_in_a_field_is_refused() -> None:
    header = _header(VERSION, int(Kind.FRONTEND_REGISTERED), 1, (msgpack.ExtType(5, b""),))
    with pytest.raises(RemoteProtocolError):
        decode([header])


class _Boom:
    def __reduce__(self):
        return (pytest.fail, ("pickle was loaded",))


def test_pickled_objects_are_never_loaded() -> None:
    _refused([pickle.dumps(_Boom())], "undecodable header")
    _refused([pickle.dumps([VERSION, int(Kind.HEARTBEAT), 1])], "undecodable header")


def test_refusal_leaves_no_state_behind() -> None:
    # a refused message must not affect decoding the next, valid one
    with pytest.raises(RemoteProtocolError):
        decode([b"\xc1"])
    assert decode(encode(Heartbeat(5)))[0] == Heartbeat(5)
