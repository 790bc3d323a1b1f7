"""central.protocol.arrays: named numpy arrays <-> (metas, raw frames), and refusals.

``pack`` is ours (refusals are ``LocalProtocolError``), ``unpack`` reads what a peer sent
(refusals are ``RemoteProtocolError`` naming the tensor). BYTES tensors must match
KServe v2's binary layout byte for byte: a 4-byte little-endian length, then the bytes.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from central.protocol import LocalProtocolError, RemoteProtocolError
from central.protocol.arrays import (
    ALLOWED_DTYPES,
    MAX_RANK,
    decode_bytes,
    encode_bytes,
    pack,
    unpack,
)

NUMERIC = sorted(ALLOWED_DTYPES - {"BYTES"})


def roundtrip(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    metas, buffers = pack(arrays)
    # what crosses the wire: immutable bytes, as a ZeroMQ frame would be
    return unpack(metas, [bytes(b) for b in buffers])


def kserve_bytes(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(x)) + x for x in items)


# ------------------------------------------------------------------ round trips


def test_every_numeric_dtype_is_allowed_and_bytes_is_the_only_other() -> None:
    assert set(NUMERIC) == {
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
    }


@pytest.mark.parametrize("dtype", NUMERIC)
def test_each_numeric_dtype_round_trips(dtype: str) -> None:
    arr = (np.arange(12) % 3).astype(dtype).reshape(3, 4)
    (meta,), (buf,) = pack({"x": arr})
    assert meta == ("x", dtype, (3, 4))
    assert len(buf) == arr.nbytes
    out = roundtrip({"x": arr})["x"]
    assert out.dtype == np.dtype(dtype)
    assert out.shape == (3, 4)
    np.testing.assert_array_equal(out, arr)


def test_float_special_values_round_trip_bit_for_bit() -> None:
    arr = np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45], dtype=np.float32)
    out = roundtrip({"x": arr})["x"]
    assert out.tobytes() == arr.tobytes()


def test_several_named_arrays_keep_names_and_order() -> None:
    arrays = {"b": np.ones(2, np.int8), "a": np.zeros((1, 1), np.float16), "c": np.array([True])}
    metas, _ = pack(arrays)
    assert [m[0] for m in metas] == ["b", "a", "c"]
    out = roundtrip(arrays)
    assert list(out) == ["b", "a", "c"]
    for name, arr in arrays.items():
        np.testing.assert_array_equal(out[name], arr)


@pytest.mark.parametrize("order", [">", "<"])
def test_explicit_byte_order_input_is_sent_native(order: str) -> None:
    arr = np.arange(6, dtype=f"{order}i4").reshape(2, 3)
    (meta,), (buf,) = pack({"x": arr})
    assert meta == ("x", "int32", (2, 3))
    assert bytes(buf) == np.arange(6, dtype="=i4").tobytes()
    np.testing.assert_array_equal(roundtrip({"x": arr})["x"], arr)


def test_non_contiguous_inputs_round_trip() -> None:
    base = np.arange(48, dtype=np.float64).reshape(6, 8)
    for view in (base[:, ::3], base.T, base[::-2, 1:5], np.asfortranarray(base)):
        out = roundtrip({"x": view})["x"]
        assert out.shape == view.shape
        np.testing.assert_array_equal(out, view)


def test_contiguous_inputs_are_not_copied() -> None:
    arr = np.arange(8, dtype=np.float32)
    _, (buf,) = pack({"x": arr})
    assert np.shares_memory(np.frombuffer(buf, dtype=np.float32), arr)


@pytest.mark.parametrize("shape", [(0,), (0, 3), (4, 0, 2)])
@pytest.mark.parametrize("dtype", ["float32", "bool", "BYTES"])
def test_zero_size_arrays_round_trip(shape: tuple[int, ...], dtype: str) -> None:
    arr = np.empty(shape, dtype=object if dtype == "BYTES" else dtype)
    (meta,), (buf,) = pack({"x": arr})
    assert meta == ("x", dtype, shape)
    assert bytes(buf) == b""
    out = roundtrip({"x": arr})["x"]
    assert out.shape == shape


def test_received_numeric_arrays_are_read_only_views() -> None:
    out = roundtrip({"x": np.ones(3, np.float32)})["x"]
    assert not out.flags.writeable


def test_zero_dimensional_numeric_array_keeps_its_shape() -> None:
    (meta,), _ = pack({"x": np.array(3.5, dtype=np.float32)})
    assert meta == ("x", "float32", ())


def test_zero_dimensional_bytes_array_keeps_its_shape() -> None:
    out = roundtrip({"x": np.array(b"ab", dtype=object)})["x"]
    assert out.shape == () and out[()] == b"ab"


@settings(max_examples=150, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from(NUMERIC).flatmap(
            lambda name: st.sampled_from(["<", ">"]).map(lambda order: np.dtype(name).newbyteorder(order))
        ),
        shape=hnp.array_shapes(min_dims=1, max_dims=MAX_RANK, min_side=0, max_side=3),
    ),
    st.booleans(),
)
def test_random_numeric_arrays_round_trip(arr: np.ndarray, transpose: bool) -> None:
    if transpose:
        arr = arr.T  # non-contiguous whenever rank > 1
    out = roundtrip({"t": arr})["t"]
    assert out.dtype == arr.dtype.newbyteorder("=")
    assert out.shape == arr.shape
    assert out.tobytes() == arr.astype(out.dtype).tobytes()  # bit-exact, NaNs included


# --------------------------------------------------------------------- BYTES


def test_bytes_layout_is_kserve_length_prefixed_little_endian() -> None:
    arr = np.array([b"ab", b"", b"\x00\xff" * 200], dtype=object)
    (meta,), (buf,) = pack({"s": arr})
    assert meta == ("s", "BYTES", (3,))
    assert bytes(buf) == kserve_bytes(b"ab", b"", b"\x00\xff" * 200)
    assert bytes(buf)[-404:-400] == b"\x90\x01\x00\x00"  # 400, little-endian


def test_str_elements_are_sent_as_utf8() -> None:
    arr = np.array(["héllo", "猫"], dtype=object)
    _, (buf,) = pack({"s": arr})
    assert bytes(buf) == kserve_bytes("héllo".encode(), "猫".encode())


def test_numpy_fixed_width_bytes_and_str_arrays_are_bytes_tensors() -> None:
    s_arr = np.array([b"ab", b"c"])  # dtype S2
    u_arr = np.array(["ab", "é"])  # dtype <U2
    metas, buffers = pack({"s": s_arr, "u": u_arr})
    assert metas == (("s", "BYTES", (2,)), ("u", "BYTES", (2,)))
    assert bytes(buffers[0]) == kserve_bytes(b"ab", b"c")
    assert bytes(buffers[1]) == kserve_bytes(b"ab", "é".encode())


def test_bytes_round_trip_keeps_shape_and_returns_bytes() -> None:
    arr = np.array([[b"a", "b"], [b"", b"dd"]], dtype=object)
    out = roundtrip({"s": arr})["s"]
    assert out.dtype == object and out.shape == (2, 2)
    assert out.tolist() == [[b"a", b"b"], [b"", b"dd"]]


def test_decode_bytes_splits_exactly_count_elements() -> None:
    assert decode_bytes(kserve_bytes(b"x", b"yz"), 2) == [b"x", b"yz"]
    assert decode_bytes(b"", 0) == []
    assert encode_bytes(np.array([], dtype=object)) == b""


# ------------------------------------------------------------------ pack refusals


@pytest.mark.parametrize(
    "value",
    [
        np.zeros(2, np.complex64),
        np.zeros(2, "datetime64[ns]"),
        np.zeros(2, np.float128) if hasattr(np, "float128") else np.zeros(2, np.clongdouble),
        np.array([1, 2], dtype=object),  # an object array of ints is not BYTES
        np.array([b"ok", 3], dtype=object),
    ],
    ids=["complex", "datetime", "longdouble", "object-int", "object-mixed"],
)
def test_pack_refuses_unsendable_arrays(value: np.ndarray) -> None:
    with pytest.raises(LocalProtocolError, match=r"'x'|BYTES element"):
        pack({"x": value})


@pytest.mark.parametrize(
    "arrays",
    [
        {"": np.zeros(1, np.float32)},
        {"n" * 257: np.zeros(1, np.float32)},
        {7: np.zeros(1, np.float32)},
        {"x": np.zeros((1,) * (MAX_RANK + 1), np.float32)},
    ],
    ids=["empty-name", "long-name", "int-name", "rank-9"],
)
def test_pack_refuses_what_unpack_would_refuse(arrays: dict) -> None:
    with pytest.raises(LocalProtocolError):
        pack(arrays)


# ---------------------------------------------------------------- unpack refusals


def refused(metas: list, buffers: list, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        unpack(metas, buffers)


def test_unpack_refuses_description_and_frame_count_mismatch() -> None:
    refused([("x", "uint8", (1,))], [], "1 tensor descriptions, 0 frames")


@pytest.mark.parametrize("meta", [["x", "uint8", (1,)], ("x", "uint8"), ("x", "uint8", (1,), 0), "x"])
def test_unpack_refuses_malformed_descriptions(meta: object) -> None:
    refused([meta], [b"\x00"], r"must be \(name, dtype, shape\)")


@pytest.mark.parametrize("name", ["", 7, None, b"x", "n" * 257])
def test_unpack_refuses_bad_names(name: object) -> None:
    refused([(name, "uint8", (1,))], [b"\x00"], "bad tensor name")


def test_unpack_accepts_the_longest_name() -> None:
    assert list(unpack([("n" * 256, "uint8", (1,))], [b"\x00"])) == ["n" * 256]


def test_unpack_refuses_duplicate_names() -> None:
    refused([("x", "uint8", (1,)), ("x", "uint8", (1,))], [b"\x00", b"\x00"], "'x' given twice")


@pytest.mark.parametrize("dtype", ["complex64", "object", "<f4", "float", "O", "", 1, None])
def test_unpack_refuses_unknown_dtypes(dtype: object) -> None:
    refused([("x", dtype, (1,))], [b"\x00" * 8], "'x': dtype .* is not supported")


def test_unpack_refuses_rank_above_max() -> None:
    refused([("x", "uint8", (1,) * (MAX_RANK + 1))], [b"\x00"], "'x': bad shape")
    assert unpack([("x", "uint8", (1,) * MAX_RANK)], [b"\x00"])["x"].ndim == MAX_RANK


@pytest.mark.parametrize("shape", [(-1,), (2, -3), (1.0,), ("2",), (True,), (None,), [2], 2], ids=repr)
def test_unpack_refuses_bad_dims(shape: object) -> None:
    refused([("x", "uint8", shape)], [b"\x00\x00"], "'x': bad shape")


@pytest.mark.parametrize("nbytes", [0, 7, 9, 16])
def test_unpack_refuses_size_mismatch(nbytes: int) -> None:
    refused([("x", "float32", (2,))], [b"\x00" * nbytes], f"'x': {nbytes} bytes for shape")


@pytest.mark.parametrize(
    "frame, count, match",
    [
        (kserve_bytes(b"a"), 2, "BYTES tensor truncated|cannot fit"),
        (b"\x01\x00", 1, "BYTES tensor truncated|cannot fit"),  # a length prefix cut short
        (struct.pack("<I", 10) + b"abc", 1, "BYTES element runs past the frame"),
        (kserve_bytes(b"a", b"b"), 1, "BYTES tensor has trailing bytes"),
        (b"\x00", 0, "BYTES tensor has trailing bytes"),
    ],
    ids=["missing-element", "short-prefix", "short-element", "trailing", "trailing-empty"],
)
def test_unpack_refuses_malformed_bytes_tensors(frame: bytes, count: int, match: str) -> None:
    refused([("s", "BYTES", (count,))], [frame], match)


def test_unpack_refuses_bytes_count_the_frame_cannot_hold_before_allocating() -> None:
    # 2**62 elements: numpy refuses at once, so the test itself never allocates; a count
    # like 2**27 would instead allocate a 1 GiB object array for an empty frame
    refused([("s", "BYTES", (2**31, 2**31))], [b""], "BYTES")
