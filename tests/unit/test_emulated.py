"""workers.emulated: the profile parser and the emulated executor, on virtual time.

``run`` is driven with an injected clock and a sleeper that only records the instant it
was asked to sleep until, so no real time passes.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from workers.emulated import EmulatedExecutor, EmulatedModel, parse_emulated_model

MS = 1_000_000


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    "text, expected",
    [
        ("symphony:1.082:5.204", EmulatedModel("symphony", 1_082_000, 5_204_000, 64)),
        ("m:2:0:8", EmulatedModel("m", 2 * MS, 0, 8)),
        ("cnn:0.5:-0.25", EmulatedModel("cnn", 500_000, -250_000, 64)),  # c < 0 is allowed
        ("m:1e-3:1", EmulatedModel("m", 1_000, MS, 64)),
        ("m:1:2:1", EmulatedModel("m", MS, 2 * MS, 1)),
    ],
)
def test_parse_good_forms(text: str, expected: EmulatedModel) -> None:
    assert parse_emulated_model(text) == expected


@pytest.mark.parametrize(
    "text, match",
    [
        ("m", "expected NAME:K_MS:C_MS"),
        ("m:1", "expected NAME:K_MS:C_MS"),
        ("m:1:2:3:4", "expected NAME:K_MS:C_MS"),
        (":1:2", "expected NAME:K_MS:C_MS"),
        ("", "expected NAME:K_MS:C_MS"),
        ("m:x:2", "must be numbers"),
        ("m:1:y", "must be numbers"),
        ("m:1:2:z", "must be"),
        ("m:1:2:2.5", "must be"),
        ("m:0:2", "K_MS must be > 0"),
        ("m:-1:2", "K_MS must be > 0"),
        ("m:1:2:0", "MAX_BATCH >= 1"),
    ],
)
def test_parse_bad_forms(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        parse_emulated_model(text)
    assert repr(text) in str(info.value)  # the message quotes what was given


@pytest.mark.parametrize("text", ["m:inf:1", "m:1:inf", "m:nan:1"])
def test_parse_refuses_non_finite_numbers(text: str) -> None:
    with pytest.raises(ValueError, match="emulated model"):
        parse_emulated_model(text)


def test_latency_never_drops_below_one_item() -> None:
    m = EmulatedModel("cpu", k_ns=MS, c_ns=-5 * MS)
    assert m.latency_ns(1) == MS  # k*b + c < 0: floored at k
    assert m.latency_ns(10) == 5 * MS


# ----------------------------------------------------------------- executor

MODEL = EmulatedModel("m", k_ns=1_082_000, c_ns=5_204_000, max_batch=32)


def test_executor_refuses_bad_construction() -> None:
    with pytest.raises(ValueError, match="at least 1 GPU"):
        EmulatedExecutor(0, [MODEL])
    with pytest.raises(ValueError, match="at least one model"):
        EmulatedExecutor(1, [])
    with pytest.raises(ValueError, match="noise must be >= 0"):
        EmulatedExecutor(1, [MODEL], noise_cv=-0.1)


def test_gpu_specs_announce_every_model_on_every_gpu() -> None:
    other = EmulatedModel("n", 2, 3, 4)
    ex = EmulatedExecutor(3, [MODEL, other])
    profiles = (("m", 1_082_000, 5_204_000, 32), ("n", 2, 3, 4))
    assert ex.gpu_specs() == tuple((g, ("m", "n"), profiles) for g in range(3))


@pytest.mark.parametrize("b", [1, 2, 7, 32])
def test_duration_without_noise_is_the_profile(b: int) -> None:
    ex = EmulatedExecutor(1, [MODEL])
    assert ex.duration_ns("m", b) == 1_082_000 * b + 5_204_000


def test_duration_with_noise_is_reproducible_by_seed() -> None:
    def draws(seed: int) -> list[int]:
        ex = EmulatedExecutor(1, [MODEL], noise_cv=0.1, seed=seed)
        return [ex.duration_ns("m", 4) for _ in range(50)]

    a = draws(7)
    assert a == draws(7)
    assert a != draws(8)
    base = MODEL.latency_ns(4)
    assert len(set(a)) > 1  # it is noisy
    assert all(d >= int(base * 0.2) for d in a)  # multiplicative noise is floored
    assert abs(sum(a) / len(a) / base - 1.0) < 0.1


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int64, np.uint8, np.bool_])
def test_validate_accepts_numeric_inputs(dtype: type) -> None:
    ex = EmulatedExecutor(1, [MODEL])
    inputs = {"x": np.zeros(3, dtype), "i": np.arange(2)}
    assert ex.validate("m", inputs) is None  # accepted: no error, nothing returned
    # and it did look at every input: one non-numeric tensor beside them is refused
    with pytest.raises(ValueError, match=r"input 's'.*numeric"):
        ex.validate("m", {**inputs, "s": np.array([b"text"], dtype=object)})


@pytest.mark.parametrize(
    "model, inputs, match",
    [
        ("other", {"x": np.zeros(1)}, "model 'other' is not loaded"),
        ("m", {}, "at least one input"),
        ("m", {"s": np.array([b"text"], dtype=object)}, "input 's'.*numeric"),
    ],
)
def test_validate_refuses(model: str, inputs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EmulatedExecutor(1, [MODEL]).validate(model, inputs)


def test_run_returns_sums_and_counts_and_sleeps_for_the_profile() -> None:
    now = 1_000 * MS
    slept: list[int] = []

    async def record_sleep(t_ns: int) -> None:
        slept.append(t_ns)

    ex = EmulatedExecutor(2, [MODEL], clock=lambda: now)
    ex.use_sleeper(record_sleep)
    batch = [
        {"x": np.arange(4, dtype=np.float32)},  # 0+1+2+3
        {"a": np.ones((2, 2), np.int8), "b": np.full(3, 2.5)},  # 4 + 7.5
        {"z": np.zeros(0, np.float32)},
    ]
    out = asyncio.run(ex.run(1, "m", batch))
    assert slept == [now + 1_082_000 * 3 + 5_204_000]
    assert len(out) == 3
    sums = [float(o["sum"][0]) for o in out]  # type: ignore[index]
    counts = [int(o["count"][0]) for o in out]  # type: ignore[index]
    assert sums == [6.0, 11.5, 0.0]
    assert counts == [4, 7, 0]
    assert out[0]["sum"].dtype == np.float64 and out[0]["count"].dtype == np.int64  # type: ignore[index]


def test_run_uses_the_noisy_duration_of_the_same_seed() -> None:
    slept: list[int] = []

    async def record_sleep(t_ns: int) -> None:
        slept.append(t_ns)

    expected = EmulatedExecutor(1, [MODEL], noise_cv=0.2, seed=5).duration_ns("m", 2)
    ex = EmulatedExecutor(1, [MODEL], noise_cv=0.2, seed=5, clock=lambda: 0)
    ex.use_sleeper(record_sleep)
    asyncio.run(ex.run(0, "m", [{"x": np.ones(1)}, {"x": np.ones(1)}]))
    assert slept == [expected]
