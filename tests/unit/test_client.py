"""central.client without sockets: typed errors, request building, input helpers, load.

``_build`` is the one function between the user's arguments and the wire, so the SDK's
promise (bad input is refused with ``BadRequest`` before anything is sent) is tested on
it directly. Load generation is tested on its pure parts: arrival times and summaries.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from central.client import (
    BadRequest,
    BatonError,
    DeadlineExceeded,
    InferenceFailed,
    Rejected,
    Unauthorized,
    Unavailable,
    cosine,
    image_bytes,
    image_file,
    text,
)
from central.client.client import _build, _zmq_address
from central.client.errors import error_for
from central.client.load import poisson_times, summarize
from central.protocol import Infer, Status, decode
from central.protocol.arrays import unpack

# ------------------------------------------------------------------------ errors

EXPECTED = {
    Status.REJECTED: Rejected,
    Status.DEADLINE_EXCEEDED: DeadlineExceeded,
    Status.UNAVAILABLE: Unavailable,
    Status.BAD_REQUEST: BadRequest,
    Status.FAILED: InferenceFailed,
    Status.UNAUTHORIZED: Unauthorized,
}


def test_every_non_ok_status_has_an_error_class() -> None:
    assert set(EXPECTED) == set(Status) - {Status.OK}


@pytest.mark.parametrize("status", list(EXPECTED))
def test_error_for_maps_each_status_to_its_class(status: Status) -> None:
    err = error_for(int(status), "why it failed")
    assert type(err) is EXPECTED[status]
    assert isinstance(err, BatonError)
    assert err.status is status
    assert str(err) == "why it failed"


@pytest.mark.parametrize("status", [99, -1])
def test_error_for_unknown_status_is_a_failure(status: int) -> None:
    err = error_for(status, "odd")
    assert type(err) is InferenceFailed and str(err) == "odd"


# ---------------------------------------------------------------- request build


def built(
    model: str = "m", inputs: dict | None = None, slo_ms: float | None = None, tag: int = 7
) -> tuple[Infer, dict[str, np.ndarray]]:
    inputs = {"x": np.arange(4, dtype=np.float32)} if inputs is None else inputs
    msg, buffers = decode(_build(tag, model, inputs, slo_ms))
    assert isinstance(msg, Infer)
    return msg, unpack(msg.tensors, [bytes(b) for b in buffers])


def test_build_makes_an_infer_with_the_inputs() -> None:
    x = np.arange(6, dtype=np.int16).reshape(2, 3)
    msg, arrays = built("resnet", {"x": x, "s": np.array([b"hi"], dtype=object)}, 25, tag=3)
    assert (msg.tag, msg.model, msg.slo_ns) == (3, "resnet", 25_000_000)
    np.testing.assert_array_equal(arrays["x"], x)
    assert arrays["s"].tolist() == [b"hi"]


def test_build_without_slo_asks_for_the_frontend_default() -> None:
    assert built(slo_ms=None)[0].slo_ns == 0


def test_build_converts_fractional_milliseconds() -> None:
    assert built(slo_ms=2.5)[0].slo_ns == 2_500_000


@pytest.mark.parametrize("model", ["", None, 3, b"m"])
def test_build_refuses_a_bad_model_name(model: object) -> None:
    with pytest.raises(BadRequest, match="model must be a non-empty string"):
        _build(1, model, {"x": np.zeros(1)}, None)  # type: ignore[arg-type]


def test_build_refuses_empty_inputs() -> None:
    with pytest.raises(BadRequest, match="at least one array"):
        _build(1, "m", {}, None)


@pytest.mark.parametrize("slo_ms", [0, 0.0, -1, -0.5, math.nan])
def test_build_refuses_a_non_positive_slo(slo_ms: float) -> None:
    with pytest.raises(BadRequest, match="slo_ms must be > 0"):
        _build(1, "m", {"x": np.zeros(1)}, slo_ms)


@pytest.mark.parametrize(
    "value",
    [np.zeros(2, np.complex128), np.array([1, 2], dtype=object), np.zeros(1, "datetime64[s]")],
    ids=["complex", "object-int", "datetime"],
)
def test_build_refuses_unsendable_arrays(value: np.ndarray) -> None:
    with pytest.raises(BadRequest):
        _build(1, "m", {"x": value}, None)


def test_bad_request_is_raised_before_anything_is_encoded() -> None:
    # BadRequest is a BatonError with the BAD_REQUEST status, like the frontend's answer
    with pytest.raises(BatonError) as info:
        _build(1, "m", {"x": np.zeros(1, np.complex64)}, None)
    assert info.value.status is Status.BAD_REQUEST


def test_build_never_turns_a_positive_slo_into_the_default() -> None:
    try:
        msg, _ = built(slo_ms=1e-7)
    except BadRequest:
        return  # refusing is fine too
    assert msg.slo_ns > 0


def test_build_refuses_an_empty_input_name() -> None:
    with pytest.raises(BadRequest):
        _build(1, "m", {"": np.zeros(1, np.float32)}, None)


@pytest.mark.parametrize(
    "given, expected",
    [
        ("tcp://10.0.0.1:5560", "tcp://10.0.0.1:5560"),
        ("zmq://10.0.0.1:5560", "tcp://10.0.0.1:5560"),
        ("10.0.0.1:5560", "tcp://10.0.0.1:5560"),
        ("ipc:///tmp/baton", "ipc:///tmp/baton"),
        ("inproc://fe", "inproc://fe"),
    ],
)
def test_addresses_are_normalised(given: str, expected: str) -> None:
    assert _zmq_address(given) == expected


def test_unsupported_address_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="use tcp://host:port"):
        _zmq_address("http://10.0.0.1:8000")


# ---------------------------------------------------------------------- inputs


def test_image_bytes_sends_the_encoded_file_untouched() -> None:
    data = b"\xff\xd8\xff\xe0fake-jpeg"
    arr = image_bytes(data)["image"]
    assert arr.dtype == np.uint8 and arr.tobytes() == data


def test_image_file_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\nrest")
    assert image_file(path)["image"].tobytes() == path.read_bytes()
    assert image_file(str(path))["image"].tobytes() == path.read_bytes()


def test_text_is_one_utf8_bytes_element() -> None:
    arr = text("héllo wörld")["text"]
    assert arr.dtype == object and arr.shape == (1,)
    assert arr[0] == "héllo wörld".encode()
    msg, _arrays = built(inputs=text("hi"))
    assert msg.tensors == (("text", "BYTES", (1,)),)


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([1.0, 0.0], [2.0, 0.0], 1.0),
        ([1.0, 0.0], [0.0, 3.0], 0.0),
        ([1.0, 2.0], [-1.0, -2.0], -1.0),
        ([0.0, 0.0], [1.0, 1.0], 0.0),  # a zero vector does not divide by zero
        ([[3.0, 4.0]], [3.0, 4.0], 1.0),  # shapes are flattened
    ],
)
def test_cosine(a: list, b: list, expected: float) -> None:
    assert cosine(np.array(a, np.float32), np.array(b)) == pytest.approx(expected, abs=1e-9)


# ------------------------------------------------------------------------ load


def test_poisson_times_are_reproducible_by_seed() -> None:
    a = poisson_times(500.0, 2.0, seed=3)
    assert np.array_equal(a, poisson_times(500.0, 2.0, seed=3))
    assert not np.array_equal(a, poisson_times(500.0, 2.0, seed=4))


def test_poisson_times_are_sorted_ns_offsets_inside_the_duration() -> None:
    t = poisson_times(1000.0, 1.5, seed=1)
    assert t.dtype == np.int64
    assert np.all(np.diff(t) >= 0)
    assert t[0] >= 0 and t[-1] < 1_500_000_000


@pytest.mark.parametrize("rate, duration", [(2000.0, 5.0), (50.0, 40.0)])
def test_poisson_times_have_the_requested_mean_rate(rate: float, duration: float) -> None:
    t = poisson_times(rate, duration, seed=11)
    expected = rate * duration  # 10000 and 2000 arrivals: sd 1 % and 2.2 %
    assert abs(len(t) - expected) < 4 * math.sqrt(expected)
    gaps = np.diff(t) / 1e9
    assert gaps.mean() == pytest.approx(1.0 / rate, rel=0.1)
    # exponential gaps: the coefficient of variation is 1
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.1)


MS = 1_000_000


def record(planned_ms: float, sent_ms: float, done_ms: float, status: int) -> list[int]:
    return [int(planned_ms * MS), int(sent_ms * MS), int(done_ms * MS), status]


def test_summarize_counts_outcomes_and_slo_attainment() -> None:
    ok, dl, failed = int(Status.OK), int(Status.DEADLINE_EXCEEDED), int(Status.FAILED)
    rec = np.array(
        [
            record(0, 1, 11, ok),  # 10 ms: within the 20 ms SLO
            record(10, 10, 30, ok),  # exactly 20 ms: within
            record(20, 22, 52, ok),  # 30 ms: OK but late
            record(30, 30, 35, dl),
            record(40, 41, 50, failed),
            record(50, 50, 0, -1),  # never answered
            record(60, 61, 62, int(Status.REJECTED)),
            record(70, 73, 74, int(Status.UNAVAILABLE)),
        ],
        dtype=np.int64,
    )
    s = summarize(rec, slo_ms=20.0, duration_s=2.0)
    assert s["requests"] == 8
    assert s["outcomes"] == {
        "ok": 3,
        "rejected": 1,
        "deadline_exceeded": 1,
        "unavailable": 1,
        "bad_request": 0,
        "failed": 1,
        "unauthorized": 0,
        "no_answer": 1,
    }
    assert s["slo_attainment"] == pytest.approx(2 / 8)
    assert s["goodput_rps"] == pytest.approx(2 / 2.0)
    assert s["offered_rps"] == pytest.approx(8 / 2.0)
    assert s["latency_ms"]["p50"] == pytest.approx(20.0)  # of OK requests only
    assert s["latency_ms"]["p99"] == pytest.approx(29.8)
    late = np.array([1, 0, 2, 0, 1, 0, 1, 3], dtype=float)
    assert s["send_lateness_ms"]["p50"] == pytest.approx(np.percentile(late, 50))
    assert s["send_lateness_ms"]["p99"] == pytest.approx(np.percentile(late, 99))


def test_summarize_without_ok_answers_has_no_latency() -> None:
    rec = np.array([record(0, 0, 5, int(Status.FAILED))], dtype=np.int64)
    s = summarize(rec, 20.0, 1.0)
    assert s["slo_attainment"] == 0.0 and s["goodput_rps"] == 0.0
    assert s["latency_ms"] == {"p50": None, "p99": None}


def test_summarize_of_no_records() -> None:
    s = summarize(np.zeros((0, 4), dtype=np.int64), 20.0, 1.0)
    assert s["requests"] == 0 and s["slo_attainment"] == 0.0
    assert s["send_lateness_ms"] == {"p50": 0.0, "p99": 0.0}
    assert sum(s["outcomes"].values()) == 0


# ------------------------------------------------- duplicates and own timeouts


def test_reply_book_tells_a_duplicate_from_a_late_reply() -> None:
    from central.client.client import _ReplyBook

    book = _ReplyBook(keep=2)
    book.settled(1, answered=True)
    book.settled(2, answered=False)  # the call gave up: ClientTimeout
    book.unexpected(1)
    assert (book.duplicates, book.late_replies) == (1, 0)
    book.unexpected(2)  # the timed-out call's answer, late
    assert (book.duplicates, book.late_replies) == (1, 1)
    book.unexpected(2)  # and once more: now a duplicate
    assert (book.duplicates, book.late_replies) == (2, 1)
    book.settled(3, answered=True)  # keep=2: tag 1 is forgotten
    book.unexpected(1)
    assert (book.duplicates, book.late_replies) == (2, 1)


def test_a_client_side_timeout_is_not_the_servers_unavailable() -> None:
    from central.client import ClientTimeout

    err = ClientTimeout("no answer from the frontend within 1.0 s")
    assert isinstance(err, Unavailable)  # `except Unavailable` still catches it
    assert type(err) is not Unavailable
    assert type(error_for(int(Status.UNAVAILABLE), "no worker")) is Unavailable


def test_summarize_counts_never_answered_and_answered_twice() -> None:
    ok, dx = int(Status.OK), int(Status.DEADLINE_EXCEEDED)
    rec = np.array([[0, 1, 5, ok, 1], [0, 2, 6, ok, 2], [0, 3, 0, -1, 0], [0, 4, 9, dx, 3]], dtype=np.int64)
    s = summarize(rec, 1e-6 * 10, 1.0)
    assert (s["never_answered"], s["answered_twice"]) == (1, 2)
    assert s["outcomes"]["no_answer"] == 1 and s["outcomes"]["ok"] == 2


def test_ledger_run_names_lost_and_doubled_answers() -> None:
    from central.client.ledger import LedgerRun

    ok, un = int(Status.OK), int(Status.UNAVAILABLE)
    run = LedgerRun(
        ["m", "m", "n", "m"],
        np.array([10, 20, 30, 40]),
        np.array([11, 21, 31, 0]),
        100.0,
        0,
        [[(15, ok, "")], [(25, ok, ""), (27, un, "again")], [], []],
    )
    # request 3 was never sent (the run was cut short): not counted as lost
    assert run.never_answered() == [2] and run.answered_twice() == [1]
    assert not run.one_answer_each()
    assert "1 of 4 never answered" in run.report() and "1 answered more than once" in run.report()
    assert run.statuses() == {"OK": 2, "NO_ANSWER": 2}
    rec = run.records("m")
    assert rec.tolist() == [[10, 11, 15, ok, 1], [20, 21, 25, ok, 2], [40, 0, 0, -1, 0]]
    assert run.first_answer_latency_ns().tolist() == [4, 4, -1, -1]
    clean = LedgerRun(["m"], np.array([1]), np.array([2]), 100.0, 0, [[(3, ok, "")]])
    assert clean.one_answer_each() and clean.report() == ""
    clean.stray = 1
    assert not clean.one_answer_each() and "tag no request had" in clean.report()
