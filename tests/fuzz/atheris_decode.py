"""Coverage-guided fuzzing of ``central.protocol.decode`` with atheris (libFuzzer).

Theory of operation: libFuzzer hands ``test_one_input`` byte strings and keeps those that
reach new branches of the (instrumented) protocol package. One input is one multipart
message: the first byte picks the limits (odd: tight ``Limits``, even: the defaults) and
the rest is split into frames at ``DELIMITER``. ``seed_inputs()`` writes every message
kind of ``MESSAGE_TYPES`` in that layout, so the fuzzer starts from real messages and
mutates them rather than searching for msgpack from scratch.

The oracle is the decoder's contract: a valid message (which must re-encode and decode to
itself, and whose tensor descriptions ``arrays.unpack`` must accept or refuse with
``RemoteProtocolError``) or a ``RemoteProtocolError``. Any other exception is a crash and
libFuzzer stops with the input that caused it (saved as ``crash-<sha1>``).

Run a campaign (docs/fuzzing.md)::

    .venv/bin/python tests/fuzz/atheris_decode.py --write-seeds /tmp/corpus
    .venv/bin/python tests/fuzz/atheris_decode.py /tmp/corpus -max_total_time=600

``-runs=N``, ``-seed=S``, ``-max_len=B`` and every other libFuzzer flag pass through.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports(include=["central.protocol"]):
    from central.protocol import (
        DEFAULT_LIMITS,
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

DELIMITER = b"\xfe\xed\xfa\xce"
TIGHT = Limits(
    max_header_bytes=512,
    max_frames=6,
    max_frame_bytes=64,
    max_total_bytes=160,
    max_array_len=8,
    max_str_len=32,
    max_depth=4,
)


def frames_of(data: bytes) -> tuple[list[bytes], Limits]:
    """One fuzz input -> (frames, limits)."""
    if not data:
        return [], DEFAULT_LIMITS
    limits = TIGHT if data[0] & 1 else DEFAULT_LIMITS
    return data[1:].split(DELIMITER), limits


def test_one_input(data: bytes) -> None:
    frames, limits = frames_of(data)
    try:
        msg, buffers = decode(frames, limits)
    except RemoteProtocolError:
        return
    again, _ = decode(encode(msg, buffers), limits)
    if again != msg:
        raise AssertionError(f"{msg!r} re-decoded as {again!r}")
    groups: list[tuple[Any, list[Any]]] = []
    if isinstance(msg, (Infer, Reply)):
        groups.append((msg.tensors, buffers))
    elif isinstance(msg, (Payloads, Results)):
        pos = 0
        for metas in msg.tensors:
            groups.append((metas, buffers[pos : pos + len(metas)]))
            pos += len(metas)
    for metas, bufs in groups:
        with contextlib.suppress(RemoteProtocolError):
            arrays.unpack(metas, bufs)


def seed_inputs() -> list[bytes]:
    """Every message kind, encoded, in the harness's input layout (both limits)."""
    from central.protocol import MESSAGE_TYPES

    x = bytes(8)
    meta = ("x", "float32", (2,))
    samples: list[tuple[Any, list[bytes]]] = []
    for cls in MESSAGE_TYPES.values():
        if cls is Infer:
            samples.append((Infer(7, "m", 0, (meta,)), [x]))
        elif cls is Reply:
            reply = Reply(7, 0, "", (meta, ("t", "BYTES", (1,))))
            samples.append((reply, [x, b"\x01\x00\x00\x00a"]))
        elif cls is Payloads:
            samples.append((Payloads(3, 0, (1, 2), ((meta,), ())), [x]))
        elif cls is Results:
            samples.append((Results(3, (1,), (0,), ("",), ((meta,),)), [x]))
        else:
            samples.append((_plausible(cls), []))
    out = []
    for msg, buffers in samples:
        body = DELIMITER.join(bytes(f) for f in encode(msg, buffers))
        out += [b"\x00" + body, b"\x01" + body]
    return out


def _plausible(cls: type) -> Any:
    """An instance of ``cls`` with a small valid value for every field."""
    import dataclasses
    import typing

    import central.protocol.messages as messages

    def value(tp: Any) -> Any:
        if tp is int:
            return 1
        if tp is str:
            return "m"
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return (value(args[0]),)
        return tuple(value(a) for a in args)

    hints = typing.get_type_hints(cls, globalns=vars(messages))
    return cls(*(value(hints[f.name]) for f in dataclasses.fields(cls)))


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[1] == "--write-seeds":
        target = Path(argv[2])
        target.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(seed_inputs()):
            (target / f"seed-{i:03d}").write_bytes(seed)
        return
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
