"""``baton top``'s arithmetic and layout on synthetic snapshots: no sockets, no sleeps."""

from __future__ import annotations

from typing import Any

from central.dashboard.source import Tracker
from central.dashboard.view import (
    MODEL_COLUMNS,
    WORKER_COLUMNS,
    Sort,
    busy_fraction,
    model_rows,
    render,
    timeline,
    unreachable_message,
    worker_rows,
)
from central.protocol.records import BatchRecord

MS = 1_000_000
S = 1_000_000_000


def snap(
    uptime_s: float,
    requests_in: int,
    dropped: int = 0,
    batches: list[list[Any]] | None = None,
    now_ns: int | None = None,
    models: tuple[str, ...] = ("m",),
) -> dict[str, Any]:
    """A scheduler ``stats()`` snapshot as the PUB socket sends it."""
    return {
        "uptime_s": uptime_s,
        "counters": {
            "requests_in": requests_in,
            "batched_requests": requests_in - dropped,
            "dropped": dropped,
        },
        "drops_by_reason": {"DOOMED": dropped},
        "timer_lateness_us": {"p50": 50.0, "p99": 120.0, "max": 300.0},
        "workers": {"0": {"process": "w0", "gpu": 0}, "1": {"process": "w0", "gpu": 1}},
        "frontends": 1,
        "policy": {
            "now_ns": now_ns,
            "models": {
                name: {"queue": 3, "k_ns": 1_082_000, "c_ns": 5_204_000, "rate_rps": 123.0} for name in models
            },
            "workers": {
                "0": {"alive": True, "models": [models[0]], "inflight": 1},
                "1": {"alive": True, "models": [models[-1]], "inflight": 0},
            },
        },
        "recent_batches": batches or [],
    }


def batch(bid: int, worker: int, model: str, size: int, start: int, end: int, status: int = 0) -> list[Any]:
    return [bid, worker, model, size, start - MS, start - MS, start + MS, start, end, status]


def test_rates_come_from_counter_deltas_and_batch_records() -> None:
    t = Tracker("tcp://x", started_ns=0)
    t.update(snap(1.0, requests_in=100, now_ns=10 * S), local_ns=1 * S)
    # one second later: 200 more arrivals, 20 dropped, 150 served OK and 30 in a failed batch
    done = [
        batch(1, 0, "m", 150, 10 * S, 10 * S + 50 * MS),
        batch(2, 1, "m", 30, 10 * S, 10 * S + 50 * MS, status=2),
    ]
    t.update(snap(2.0, requests_in=300, dropped=20, batches=done, now_ns=11 * S), local_ns=2 * S)
    r = t.reading(2 * S)
    assert r.totals["offered_rps"] == 200.0
    assert r.totals["dropped_rps"] == 20.0
    m = r.models["m"]
    assert m.offered_rps == 200.0 and m.offered_exact  # one model: the counter is its own
    assert m.goodput_rps == 150.0
    assert m.slo_fraction == 150 / (180 + 20)
    assert m.mean_batch == 90.0
    assert m.drops == 20
    assert not r.unreachable


def test_several_models_use_the_policy_estimate_and_no_drop_attribution() -> None:
    t = Tracker("tcp://x", started_ns=0)
    t.update(snap(1.0, 0, models=("a", "b")), local_ns=S)
    t.update(
        snap(2.0, 50, dropped=5, models=("a", "b"), batches=[batch(1, 0, "a", 10, 0, MS)]), local_ns=2 * S
    )
    r = t.reading(2 * S)
    assert r.models["a"].offered_rps == 123.0 and not r.models["a"].offered_exact
    assert r.models["a"].drops is None and r.models["a"].slo_fraction == 1.0
    assert r.models["b"].goodput_rps == 0.0 and r.models["b"].slo_fraction is None
    cells = {c[0]: c for c, _ in model_rows(r)}
    assert cells["a"][1] == "~123.0" and cells["a"][7] == "-"


def test_polled_logs_are_not_counted_twice() -> None:
    t = Tracker("tcp://x", started_ns=0, mode="poll")
    log = [batch(1, 0, "m", 4, 0, 10 * MS)]
    s1 = snap(1.0, 4, now_ns=20 * MS)
    s1.pop("recent_batches")
    s1["batches"] = log
    t.update(s1, S)
    log = [*log, batch(2, 1, "m", 6, 10 * MS, 30 * MS)]
    s2 = dict(s1, uptime_s=2.0, batches=log)
    t.update(s2, 2 * S)
    r = t.reading(2 * S)
    assert r.models["m"].goodput_rps == 6.0  # only batch 2 is new in the window
    assert [b.batch_id for b in r.batches[0]] == [1] and [b.batch_id for b in r.batches[1]] == [2]


def test_timeline_and_busy_fraction() -> None:
    now = 1000 * MS
    recs = [
        BatchRecord.of(batch(1, 0, "m", 8, 600 * MS, 700 * MS)),
        BatchRecord.of(batch(2, 0, "m", 8, 900 * MS, 950 * MS, 5)),
    ]
    line = timeline(recs, now)
    assert len(line) == 40
    assert line == "█" * 10 + "·" * 20 + "x" * 5 + "·" * 5
    assert busy_fraction(recs, now) == 0.15


def test_timeline_shows_staggered_workers() -> None:
    t = Tracker("tcp://x", started_ns=0)
    recs = [batch(i, i, "m", 4, (100 * i) * MS, (100 * i + 100) * MS) for i in range(4)]
    t.update(snap(1.0, 16, batches=recs, now_ns=400 * MS), local_ns=S)
    r = t.reading(S)  # scheduler clock: 400 ms now
    lines = {c[0]: c[4] for c, _ in worker_rows(r)}
    assert lines["0"].startswith("█" * 10 + "·")
    assert lines["1"] == "·" * 10 + "█" * 10 + "·" * 20


def test_sorting_cycles_columns_and_reverses() -> None:
    t = Tracker("tcp://x", started_ns=0)
    t.update(snap(1.0, 0, models=("a", "b")), local_ns=S)
    t.update(
        snap(2.0, 0, models=("a", "b"), batches=[batch(1, 0, "b", 10, 0, MS), batch(2, 1, "a", 2, 0, MS)]),
        local_ns=2 * S,
    )
    r = t.reading(2 * S)
    names = lambda lines: [ln.split()[0] for ln in lines[3:5]]  # noqa: E731
    assert names(render(r, Sort())) == ["a", "b"]
    assert names(render(r, Sort().flipped())) == ["b", "a"]
    good = Sort(2)  # good/s, ascending
    assert names(render(r, good)) == ["a", "b"]
    assert names(render(r, good.flipped())) == ["b", "a"]
    s = Sort()
    for _ in range(len(MODEL_COLUMNS) + len(WORKER_COLUMNS)):
        s = s.next()
    assert s == Sort()
    assert Sort(len(MODEL_COLUMNS)).title == "workers.gpu"


def test_screen_fits_80x24_even_with_many_workers() -> None:
    t = Tracker("tcp://x", started_ns=0)
    s = snap(1.0, 10, now_ns=S, models=("a_long_model_name_indeed", "b"))
    s["workers"] = {str(i): {"process": "w", "gpu": i} for i in range(40)}
    t.update(s, S)
    t.update(dict(s, uptime_s=2.0), 2 * S)
    lines = render(t.reading(2 * S))
    assert len(lines) == 24
    assert all(len(ln) <= 80 for ln in lines), [ln for ln in lines if len(ln) > 80]
    assert "more workers" in lines[-2]
    assert lines[-1].startswith("q quit")


def test_unreachable_is_said_plainly() -> None:
    t = Tracker("tcp://127.0.0.1:5551", started_ns=0)
    r = t.reading(3 * S)
    assert r.unreachable
    assert render(r)[0] == "scheduler unreachable at tcp://127.0.0.1:5551 (no stats for 3 s)"
    t.update(snap(1.0, 0), local_ns=4 * S)
    assert not t.reading(5 * S).unreachable
    late = t.reading(9 * S)
    assert late.unreachable
    assert unreachable_message(late) == "scheduler unreachable at tcp://127.0.0.1:5551 (no stats for 5 s)"
    assert len(render(late)) == 24  # the last tables stay on screen under the message


def test_scheduler_restart_starts_over() -> None:
    t = Tracker("tcp://x", started_ns=0)
    t.update(snap(100.0, 1000, batches=[batch(1, 0, "m", 4, 0, MS)]), S)
    t.update(snap(1.0, 5), 2 * S)
    t.update(snap(2.0, 15), 3 * S)
    assert t.reading(3 * S).totals["offered_rps"] == 10.0


def test_frontend_latency_fills_the_p50_p99_columns() -> None:
    import time as _time

    from central.dashboard.source import FrontendLatency

    class Fixed:
        closed = False

        def __init__(self, reading: Any) -> None:
            self.reading = reading

        def poll(self) -> Any:
            return self.reading

        def close(self) -> None:
            self.closed = True

    answers = [{"model_latency_ms": {"m": {"p50": 12.5, "p99": 40.25, "n": 9}}}]

    def query(address: str, timeout_s: float) -> dict[str, Any]:
        assert address == "tcp://fe:1"
        if not answers:
            raise OSError("unreachable")
        return answers.pop()

    tracker = Tracker("tcp://sched:1", 0, mode="pub")
    tracker.update(snap(1.0, 10, batches=[batch(1, 0, "m", 4, 10 * MS, 20 * MS)], now_ns=30 * MS), S)
    inner = Fixed(tracker.reading(S))
    src = FrontendLatency(inner, "tcp://fe:1", interval_s=0.01, query=query)
    try:
        deadline = _time.monotonic() + 2.0
        got = src.poll()
        while got.latency.get("m") != (12.5, 40.25) and _time.monotonic() < deadline:
            _time.sleep(0.01)
            got = src.poll()
        assert got.latency["m"] == (12.5, 40.25)
        row = next(cells for cells, _ in model_rows(got) if cells[0] == "m")
        assert row[4] == "12.5" and row[5] in ("40.2", "40.3")  # formatted to 0.1 ms
        deadline = _time.monotonic() + 2.0
        while src.poll().latency and _time.monotonic() < deadline:  # the frontend went away
            _time.sleep(0.01)
        assert src.poll().latency == {}
        assert next(c for c, _ in model_rows(src.poll()) if c[0] == "m")[4:6] == ["-", "-"]
    finally:
        src.close()
    assert inner.closed
