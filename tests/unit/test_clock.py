"""central.plumbing.clock: offset estimation, lateness percentiles, and wake-ups.

``Wakeups`` is driven on a virtual clock: with an injected clock it takes its fallback
path (loop timer armed ``spin_ns`` early, then a bounded spin that reads the clock), so a
huge ``spin_ns`` and a clock that advances on every read make every wait virtual. The
event loop never sleeps for real.
"""

from __future__ import annotations

import asyncio

import pytest

from central.plumbing.clock import LatenessLog, OffsetEstimator, PreciseTimer, Wakeups

# ------------------------------------------------------------------ offsets


def test_offset_starts_at_zero_without_samples() -> None:
    est = OffsetEstimator()
    assert est.offset_ns == 0 and est.rtt_ns is None
    assert est.to_local(123) == 123 == est.to_remote(123)


def test_one_round_trip_uses_the_midpoint() -> None:
    est = OffsetEstimator()
    # local sends at 1000, scheduler stamps 50_600, local receives at 1200
    est.observe(sent_ns=1_000, remote_ns=50_600, received_ns=1_200)
    assert est.rtt_ns == 200
    assert est.offset_ns == 50_600 - 1_100


def test_the_minimum_rtt_sample_wins() -> None:
    est = OffsetEstimator()
    est.observe(0, 10_500, 1_000)  # rtt 1000, offset 10_000
    est.observe(2_000, 12_060, 2_100)  # rtt 100, offset 10_010
    est.observe(3_000, 13_600, 3_400)  # rtt 400, offset 10_400
    assert (est.rtt_ns, est.offset_ns) == (100, 10_010)


def test_conversion_both_ways_is_consistent() -> None:
    est = OffsetEstimator()
    est.observe(1_000, 5_000_050, 1_100)  # offset 4_999_000
    assert est.offset_ns == 4_999_000
    assert est.to_remote(7_000) == 5_006_000
    assert est.to_local(5_006_000) == 7_000
    assert est.to_local(est.to_remote(7_000)) == 7_000
    assert est.to_remote(est.to_local(9_999_999)) == 9_999_999


def test_old_samples_leave_the_window() -> None:
    est = OffsetEstimator(window=2)
    est.observe(0, 1_005, 10)  # rtt 10: the best, until it is evicted
    est.observe(100, 1_150, 200)  # rtt 100
    assert est.rtt_ns == 10
    est.observe(300, 1_360, 420)  # rtt 120; the rtt-10 sample is gone
    assert (est.rtt_ns, est.offset_ns) == (100, 1_000)


def test_negative_round_trip_is_clamped_to_zero() -> None:
    est = OffsetEstimator()
    est.observe(sent_ns=500, remote_ns=2_000, received_ns=400)
    assert est.rtt_ns == 0


# ----------------------------------------------------------------- lateness


def test_lateness_log_empty_is_zero() -> None:
    assert LatenessLog().percentile(0.99) == 0


def test_lateness_log_percentiles() -> None:
    log = LatenessLog()
    for v in reversed(range(1, 101)):  # insertion order must not matter
        log.add(v)
    assert log.percentile(0.0) == 1
    assert log.percentile(0.5) == 51
    assert log.percentile(0.99) == 100
    assert log.percentile(1.0) == 100


def test_lateness_log_is_bounded_and_keeps_the_newest() -> None:
    log = LatenessLog(capacity=3)
    for v in (1000, 1, 2, 3):
        log.add(v)
    assert list(log.samples) == [1, 2, 3]
    assert log.percentile(1.0) == 3


# ------------------------------------------------------------------ wake-ups


class TickingClock:
    """Virtual nanoseconds that advance by ``step`` on every read."""

    def __init__(self, step: int = 10_000) -> None:
        self.now = 0
        self.step = step

    def __call__(self) -> int:
        self.now += self.step
        return self.now


MS = 1_000_000


def test_wakeups_fire_in_time_order_and_cancel_works() -> None:
    clock = TickingClock()
    fired: list[tuple[str, int]] = []

    async def main() -> None:
        w = Wakeups(clock=clock, spin_ns=10**12)  # virtual: never wait on the loop timer
        assert not w.precise  # an injected clock cannot use the kernel timer
        note = lambda name: lambda: fired.append((name, clock.now))  # noqa: E731
        w.call_at(3 * MS, note("c"))
        w.call_at(1 * MS, note("a"))
        dropped = w.call_at(int(1.5 * MS), note("cancelled"))
        w.call_at(2 * MS, note("b"))
        w.cancel(dropped)
        await w.sleep_until(4 * MS)
        assert clock.now >= 4 * MS
        await w.sleep_until(0)  # in the past: returns at once
        timer = PreciseTimer(lambda: fired.append(("timer", clock.now)), w)
        timer.arm(9 * MS)
        timer.arm(6 * MS)  # re-arming replaces the earlier target
        assert timer.target_ns == 6 * MS
        off = PreciseTimer(lambda: fired.append(("disarmed", clock.now)), w)
        off.arm(5 * MS)
        off.arm(None)
        await w.sleep_until(10 * MS)
        assert timer.target_ns is None  # fired, so no longer armed
        w.close()

        # one callback per entry, none of them early, and lateness recorded for each run
        assert [name for name, _ in fired] == ["a", "b", "c", "timer"]
        targets = {"a": 1 * MS, "b": 2 * MS, "c": 3 * MS, "timer": 6 * MS}
        assert all(t >= targets[name] for name, t in fired)
        samples = list(w.lateness.samples)
        assert len(samples) == 6  # a, b, c, timer and the two sleep_until wake-ups
        assert all(0 <= s < 100 * clock.step for s in samples)

    asyncio.run(main())


def test_shared_lateness_log_is_used() -> None:
    log = LatenessLog()

    async def main() -> None:
        w = Wakeups(clock=TickingClock(), spin_ns=10**12, lateness=log)
        assert w.lateness is log
        await w.sleep_until(MS)
        w.close()

    asyncio.run(main())
    assert len(log.samples) == 1


@pytest.mark.parametrize("target", [None, 5])
def test_precise_timer_same_target_is_free(target: int | None) -> None:
    class CountingWakeups:
        calls = 0

        def call_at(self, t_ns: int, cb: object) -> int:
            self.calls += 1
            return self.calls

        def cancel(self, handle: int) -> None:
            raise AssertionError("nothing to cancel")

    w = CountingWakeups()
    timer = PreciseTimer(lambda: None, w)  # type: ignore[arg-type]
    timer.arm(target)
    calls = w.calls
    timer.arm(target)
    assert w.calls == calls
