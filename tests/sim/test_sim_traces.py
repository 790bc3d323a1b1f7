"""Trace generators, replay of a real log, merging, and Baton's trace file format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.traces import (
    MAGIC,
    Trace,
    TraceFormatError,
    gamma,
    load,
    mix,
    piecewise,
    poisson,
    read_csv_times,
    replay_csv,
    replay_csv_window,
    save,
)

S = 1_000_000_000


# ------------------------------------------------------------------- the Trace value


def test_trace_validates_its_columns() -> None:
    ok = Trace(np.array([0, 5, 5, 9]), np.array([0, 1, 0, 1]), ("a", "b"))
    assert len(ok) == 4 and ok.span_ns == 9 and ok.counts() == {"a": 2, "b": 2}
    with pytest.raises(ValueError, match="sorted"):
        Trace(np.array([0, 5, 4]), np.zeros(3, int), ("a",))
    with pytest.raises(ValueError, match=">= 0"):
        Trace(np.array([-1, 5]), np.zeros(2, int), ("a",))
    with pytest.raises(ValueError, match="shape"):
        Trace(np.array([0, 5]), np.zeros(3, int), ("a",))
    with pytest.raises(ValueError, match="model_ids"):
        Trace(np.array([0, 5]), np.array([0, 1]), ("a",))
    with pytest.raises(ValueError, match="repeat"):
        Trace(np.array([0]), np.array([0]), ("a", "a"))
    with pytest.raises(ValueError, match="integers"):
        Trace(np.array([0.5]), np.array([0]), ("a",))
    with pytest.raises(ValueError, match="sizes"):
        Trace(np.array([0]), np.array([0]), ("a",), sizes=np.array([0]))
    with pytest.raises(ValueError, match="duration_ns"):
        Trace(np.array([0, 10]), np.array([0, 0]), ("a",), duration_ns=5)
    with pytest.raises(ValueError):  # read-only: a Trace is a value
        ok.times_ns[0] = 3


def test_rescaled_keeps_the_shape_and_hits_the_rate() -> None:
    tr = gamma(1000, 3.0, 20, seed=1)
    fast = tr.rescaled(50_000)
    assert fast.mean_rate_rps == pytest.approx(50_000, rel=1e-3)
    assert fast.interarrival_cv() == pytest.approx(tr.interarrival_cv(), rel=0.01)
    assert np.array_equal(fast.model_ids, tr.model_ids)


# ---------------------------------------------------------------------- generators


@pytest.mark.parametrize("rate", [50.0, 2_000.0, 300_000.0])
def test_poisson_has_the_rate_and_cv_one(rate: float) -> None:
    duration = 100_000 / rate
    tr = poisson(rate, duration, seed=7)
    assert tr.span_ns == round(duration * S)
    assert len(tr) == pytest.approx(100_000, rel=0.02)
    assert tr.mean_rate_rps == pytest.approx(rate, rel=0.02)
    assert tr.interarrival_cv() == pytest.approx(1.0, abs=0.03)
    assert tr.times_ns[-1] < tr.span_ns


@pytest.mark.parametrize("cv", [0.5, 1.0, 3.0])
def test_gamma_has_the_rate_and_the_cv(cv: float) -> None:
    tr = gamma(5_000, cv, 60, seed=3)
    assert tr.mean_rate_rps == pytest.approx(5_000, rel=0.03)
    assert tr.interarrival_cv() == pytest.approx(cv, rel=0.05)


def test_generators_are_seeded() -> None:
    assert poisson(1000, 2, seed=4, model=("a", "b")).same_as(poisson(1000, 2, seed=4, model=("a", "b")))
    assert not poisson(1000, 2, seed=4).same_as(poisson(1000, 2, seed=5))
    assert gamma(1000, 3, 2, seed=4).same_as(gamma(1000, 3, 2, seed=4))
    assert piecewise([(1, 100)], seed=4, bursts=2).same_as(piecewise([(1, 100)], seed=4, bursts=2))


def test_models_split_by_weight() -> None:
    tr = poisson(20_000, 5, seed=2, model=("a", "b", "c"), weights=[1, 2, 1])
    counts = tr.counts()
    total = sum(counts.values())
    assert counts["b"] / total == pytest.approx(0.5, abs=0.01)
    assert counts["a"] / total == pytest.approx(0.25, abs=0.01)
    with pytest.raises(ValueError, match="weights"):
        poisson(10, 1, seed=1, model=("a", "b"), weights=[1])


def test_generators_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rate"):
        poisson(0, 1, seed=1)
    with pytest.raises(ValueError, match="duration"):
        poisson(10, 0, seed=1)
    with pytest.raises(ValueError, match="cv"):
        gamma(10, 0, 1, seed=1)
    with pytest.raises(ValueError, match="segment"):
        piecewise([], seed=1)
    with pytest.raises(ValueError, match="outside"):
        piecewise([(1, 10)], seed=1, bursts=[(0.9, 0.5, 100)])


def test_piecewise_follows_its_segments_and_bursts() -> None:
    segments = [(2.0, 1_000.0), (2.0, 4_000.0), (1.0, 0.0)]
    tr = piecewise(segments, seed=5, bursts=[(1.0, 0.1, 20_000.0)])
    t = tr.times_ns

    def count(a: float, b: float) -> int:
        return int(np.searchsorted(t, b * S) - np.searchsorted(t, a * S))

    assert count(0, 1) == pytest.approx(1_000, rel=0.1)
    assert count(1.0, 1.1) == pytest.approx(100 + 2_000, rel=0.1)  # the burst on top
    assert count(2, 4) == pytest.approx(8_000, rel=0.05)
    assert count(4, 5) == 0
    assert tr.span_ns == 5 * S
    # random bursts raise the local rate burst_factor times for burst_s
    calm = piecewise([(10.0, 1_000.0)], seed=6)
    bursty = piecewise([(10.0, 1_000.0)], seed=6, bursts=10, burst_s=0.1, burst_factor=5.0)
    assert len(bursty) - len(calm) == pytest.approx(10 * 0.1 * 4_000, rel=0.15)
    assert bursty.interarrival_cv() > calm.interarrival_cv()


def test_mix_merges_models_in_time_order() -> None:
    a = poisson(1_000, 1, seed=1, model="a")
    b = poisson(500, 2, seed=2, model=("b", "a"))
    m = mix([a, b])
    assert m.models == ("a", "b")
    assert len(m) == len(a) + len(b)
    assert np.all(np.diff(m.times_ns) >= 0)
    assert m.counts()["a"] == len(a) + b.counts()["a"]
    assert m.span_ns == 2 * S
    with pytest.raises(ValueError):
        mix([])
    sized = Trace(np.array([3]), np.array([0]), ("c",), sizes=np.array([7]))
    assert mix([a, sized]).sizes is not None


# -------------------------------------------------------------------------- replay


def test_replay_parses_wall_clock_timestamps(tmp_path: Path) -> None:
    f = tmp_path / "log.csv"
    f.write_text(
        "TIMESTAMP,ContextTokens\n"
        "2023-11-16 18:15:46.6805900,374\n"
        "2023-11-16 18:15:46.6805901,10\n"  # 100 ns later
        "2023-11-16 18:15:45.6805900,5\n"  # unsorted: one second earlier
        "2023-11-16 18:15:48.6805900,0\n"
    )
    times, sizes = read_csv_times(f, size_column="ContextTokens")
    assert times.tolist() == [0, S, S + 100, 3 * S]
    assert sizes is not None and sizes.tolist() == [5, 374, 10, 1]  # sorted with times; >= 1
    tr = replay_csv(f, 1.0)  # 3 gaps over 3 s: already 1 req/s
    assert tr.times_ns.tolist() == [0, S, S + 100, 3 * S]
    assert tr.mean_rate_rps == pytest.approx(1.0)


def test_replay_reports_bad_input(tmp_path: Path) -> None:
    f = tmp_path / "log.csv"
    f.write_text("TIMESTAMP\n2023-11-16 18:15:46.68\nyesterday\n")
    with pytest.raises(ValueError, match=r"log.csv:3: cannot parse timestamp 'yesterday'"):
        read_csv_times(f)
    with pytest.raises(ValueError, match="no column 'WHEN'"):
        read_csv_times(f, column="WHEN")
    one = tmp_path / "one.csv"
    one.write_text("TIMESTAMP\n2023-11-16 18:15:46.68\n")
    with pytest.raises(ValueError, match="two distinct"):
        replay_csv(one, 10)
    with pytest.raises(FileNotFoundError):
        read_csv_times(tmp_path / "missing.csv")


def test_replay_of_the_azure_trace_keeps_its_shape(azure_trace: Path) -> None:
    times, _ = read_csv_times(azure_trace)
    assert times.size == 19_366
    gaps = np.diff(times).astype(float)
    cv = gaps.std() / gaps.mean()
    for rate in (550.0, 5_500.0):
        tr = replay_csv(azure_trace, rate)
        assert len(tr) == times.size
        assert tr.mean_rate_rps == pytest.approx(rate, rel=1e-6)
        assert tr.interarrival_cv() == pytest.approx(cv, rel=0.002)
        # the normalised arrival curve is the same: only the clock ran faster
        shape = tr.times_ns / tr.times_ns[-1]
        assert np.max(np.abs(shape - times / times[-1])) < 1e-6
    # longer than the log: it repeats, with the same rate and (nearly) the same CV
    long = replay_csv(azure_trace, 5_500.0, duration_s=10.0, size_column="ContextTokens")
    assert long.span_ns == 10 * S and long.sizes is not None
    assert long.mean_rate_rps == pytest.approx(5_500, rel=0.03)  # a partial last copy
    assert long.interarrival_cv() == pytest.approx(cv, rel=0.02)
    short = replay_csv(azure_trace, 5_500.0, duration_s=1.0)
    assert len(short) == pytest.approx(5_500, rel=0.2) and short.span_ns == S


# ----------------------------------------------------------------- the file format


def test_file_round_trips(tmp_path: Path) -> None:
    cases = [
        poisson(2_000, 1, seed=1, model=("a", "b")),
        Trace(
            np.array([0, 0, 7]),
            np.array([1, 1, 1]),
            ("idle", "busy"),
            sizes=np.array([1, 9, 3]),
            duration_ns=100,
        ),
        Trace(np.array([], dtype=np.int64), np.array([], dtype=np.int32), ("none",)),
    ]
    for i, tr in enumerate(cases):
        path = tmp_path / f"t{i}.trace"
        save(tr, path)
        assert path.read_text().splitlines()[0] == MAGIC
        back = load(path)
        assert back.same_as(tr), i
        assert back.models == tr.models


def test_file_without_directives_takes_models_in_order_of_appearance(tmp_path: Path) -> None:
    path = tmp_path / "hand.trace"
    path.write_text(f"{MAGIC}\n# written by hand\n\ntime_ns,model\n5,b\n# a comment\n9,a\n11,b\n")
    tr = load(path)
    assert tr.models == ("b", "a")
    assert tr.model_ids.tolist() == [0, 1, 0]
    assert tr.times_ns.tolist() == [5, 9, 11] and tr.span_ns == 11 and tr.sizes is None


BAD_FILES = [
    ("", "not a Baton trace"),
    ("time_ns,model\n0,a\n", "not a Baton trace"),
    ("# baton-trace v2\ntime_ns,model\n", "unsupported trace format version '2'"),
    (f"{MAGIC}\n", "no header"),
    (f"{MAGIC}\ntime,model\n0,a\n", ":2: header must be"),
    (f"{MAGIC}\ntime_ns,model\n0,a,3\n", ":3: expected 2 fields"),
    (f"{MAGIC}\ntime_ns,model,size\n0,a\n", ":3: expected 3 fields"),
    (f"{MAGIC}\ntime_ns,model\n-5,a\n", ":3: time_ns must be a non-negative integer, got '-5'"),
    (f"{MAGIC}\ntime_ns,model\n1.5,a\n", "time_ns must be a non-negative integer"),
    (f"{MAGIC}\ntime_ns,model\n 1,a\n", "time_ns must be a non-negative integer"),
    (f"{MAGIC}\ntime_ns,model\n9,a\n8,a\n", ":4: time_ns 8 is before the previous row's 9"),
    (f"{MAGIC}\n# models=a\ntime_ns,model\n0,b\n", ":4: model 'b' is not in the models line"),
    (f"{MAGIC}\ntime_ns,model\n0,\n", ":3: model name ''"),
    (f"{MAGIC}\ntime_ns,model,size\n0,a,0\n", ":3: size must be >= 1"),
    (f"{MAGIC}\ntime_ns,model,size\n0,a,big\n", ":3: size must be a non-negative integer"),
    (f"{MAGIC}\n# duration_ns=5\ntime_ns,model\n9,a\n", "duration_ns 5 is before the last"),
    (f"{MAGIC}\n# duration_ns=soon\ntime_ns,model\n", ":2: duration_ns must be"),
    (f"{MAGIC}\n# models=a\n# models=b\ntime_ns,model\n", ":3: models declared twice"),
    (f"{MAGIC}\n# models=a,,b\ntime_ns,model\n", ":2: model name ''"),
    (f"{MAGIC}\n# models=a,a\ntime_ns,model\n", "declared twice"),
    (f"{MAGIC}\ntime_ns,model\n", "no models"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_load_rejects_malformed_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.trace"
    path.write_text(text)
    with pytest.raises(TraceFormatError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load(path)


def test_load_rejects_binary_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "bin.trace"
    path.write_bytes(MAGIC.encode() + b"\n\xff\xfe\n")
    with pytest.raises(TraceFormatError, match="not UTF-8"):
        load(path)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nowhere.trace")


def test_save_refuses_names_the_format_cannot_hold(tmp_path: Path) -> None:
    for name in ("a,b", " a", "#a", "a\nb"):
        tr = Trace(np.array([0]), np.array([0]), (name,))
        with pytest.raises(ValueError, match="cannot be written"):
            save(tr, tmp_path / "x.trace")


def test_a_replay_window_offers_its_nominal_rate_with_the_logs_shape(azure_trace: Path) -> None:
    times, _ = read_csv_times(azure_trace)
    for rate, dur in ((500.0, 6.0), (80.0, 6.0), (5_000.0, 10.0)):  # the last repeats the log
        whole = replay_csv(azure_trace, rate, duration_s=dur)
        win = replay_csv_window(azure_trace, rate, dur)
        assert len(win) == round(rate * dur) and win.span_ns == int(dur * S)
        assert win.mean_rate_rps == pytest.approx(rate, rel=1e-9)
        if rate * dur < times.size:  # a window shorter than the log
            assert len(whole) < len(win)  # the log opens sparser than its mean: the reason
            # the same opening arrivals, on a uniformly scaled clock
            n = len(win)
            ratio = win.times_ns[1:n] / times[1:n].astype(float)
            assert np.allclose(ratio, ratio[0], rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="duration_s"):
        replay_csv_window(azure_trace, 100.0, 0.0)
