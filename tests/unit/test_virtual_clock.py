"""central.plumbing.clock: the Clock interface and the VirtualClock that jumps.

Every test runs on virtual time (``VirtualClock.run``: an event loop whose own time is
the clock, which jumps when every task is asleep) or advances it by hand; none waits for
real, so the whole file takes well under a second of wall time.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from central.plumbing.clock import (
    SYSTEM,
    CallableClock,
    Clock,
    PreciseTimer,
    SystemClock,
    VirtualClock,
    as_clock,
)

MS = 1_000_000
S = 1_000_000_000


def test_sleepers_wake_in_instant_then_arrival_order_each_at_its_instant() -> None:
    clock = VirtualClock()
    woke: list[tuple[str, int]] = []

    async def sleeper(name: str, t_ns: int) -> None:
        await clock.sleep_until(t_ns)
        woke.append((name, clock.now_ns()))

    async def main() -> None:
        plan = [("c", 3 * MS), ("a1", 1 * MS), ("b", 2 * MS), ("a2", 1 * MS), ("z", 3 * MS)]
        await asyncio.gather(*(sleeper(n, t) for n, t in plan))

    clock.run(main())
    assert woke == [("a1", 1 * MS), ("a2", 1 * MS), ("b", 2 * MS), ("c", 3 * MS), ("z", 3 * MS)]


def test_autojump_goes_one_instant_at_a_time() -> None:
    # a task woken at 1 s that sleeps 0.5 s more runs before the one due at 2 s
    clock = VirtualClock()
    order: list[tuple[str, int]] = []

    async def early() -> None:
        await clock.sleep_until(1 * S)
        await clock.sleep(0.5)
        order.append(("early", clock.now_ns()))

    async def late() -> None:
        await clock.sleep_until(2 * S)
        order.append(("late", clock.now_ns()))

    async def main() -> None:
        await asyncio.gather(late(), early())

    clock.run(main())
    assert order == [("early", 1_500 * MS), ("late", 2 * S)]
    assert clock.jumps == 3  # 1 s, 1.5 s, 2 s: no jump past a sleeper


def test_time_stands_still_while_any_task_can_run() -> None:
    clock = VirtualClock()
    seen: list[int] = []

    async def busy() -> None:
        for _ in range(200):  # runnable all along: no jump may happen meanwhile
            seen.append(clock.now_ns())
            await asyncio.sleep(0)

    async def sleeper() -> int:
        await clock.sleep_until(5 * S)
        return clock.now_ns()

    async def main() -> int:
        s = asyncio.ensure_future(sleeper())
        await busy()
        return await s

    assert clock.run(main()) == 5 * S
    assert set(seen) == {0}


def test_thirty_virtual_seconds_take_no_real_time() -> None:
    clock = VirtualClock()
    ticks = 0

    async def periodic() -> None:  # a 10 ms loop, as the shells run theirs
        nonlocal ticks
        while True:
            await clock.sleep(0.01)
            ticks += 1

    async def main() -> None:
        task = asyncio.ensure_future(periodic())
        await clock.sleep(30)
        await asyncio.sleep(0)  # the loop's own timers are virtual too
        task.cancel()

    t0 = time.perf_counter()
    clock.run(main())
    wall = time.perf_counter() - t0
    assert clock.now_ns() == 30 * S
    assert ticks == 3000
    assert wall < 1.0, f"30 virtual seconds took {wall:.2f} s of wall time"


def test_asyncio_timers_on_the_virtual_loop_are_virtual() -> None:
    clock = VirtualClock(start_ns=7 * S)

    async def main() -> tuple[int, int]:
        await asyncio.sleep(2.5)
        after_sleep = clock.now_ns()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), 1.25)
        return after_sleep, clock.now_ns()

    t0 = time.perf_counter()
    assert clock.run(main()) == (9_500 * MS, 10_750 * MS)
    assert time.perf_counter() - t0 < 0.5


def test_autojump_stops_at_the_earlier_of_a_sleeper_and_a_loop_timer() -> None:
    clock = VirtualClock()
    woke: list[tuple[str, int]] = []

    async def on_clock() -> None:
        await clock.sleep_until(2 * S)
        woke.append(("clock", clock.now_ns()))

    async def on_loop() -> None:
        await asyncio.sleep(1.0)
        woke.append(("loop", clock.now_ns()))
        await asyncio.sleep(1.5)
        woke.append(("loop", clock.now_ns()))

    async def main() -> None:
        await asyncio.gather(on_clock(), on_loop())

    clock.run(main())
    assert woke == [("loop", 1 * S), ("clock", 2 * S), ("loop", 2_500 * MS)]


def test_without_autojump_time_under_run_waits_for_advance() -> None:
    # nothing jumps by itself: the loop really blocks until another thread advances
    clock = VirtualClock(autojump=False)

    async def main() -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        threading.Timer(0.05, lambda: loop.call_soon_threadsafe(clock.advance, 4)).start()
        await clock.sleep_until(3 * S)
        return clock.now_ns(), time.perf_counter() - t0

    now, wall = clock.run(main())
    assert now == 4 * S and clock.jumps == 1
    assert wall >= 0.04


def test_without_autojump_only_advance_moves_time() -> None:
    clock = VirtualClock(autojump=False)
    woke: list[tuple[str, int]] = []

    async def sleeper(name: str, t_ns: int) -> None:
        await clock.sleep_until(t_ns)
        woke.append((name, clock.now_ns()))

    async def main() -> None:
        tasks = [asyncio.ensure_future(sleeper("one", 1 * S)), asyncio.ensure_future(sleeper("two", 2 * S))]
        for _ in range(5):
            await asyncio.sleep(0)
        assert woke == [] and clock.sleepers == 2
        clock.advance(1.5)  # wakes "one" only, at the time advanced to
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert woke == [("one", 1_500 * MS)] and clock.next_deadline_ns() == 2 * S
        clock.advance(0.5)
        await asyncio.gather(*tasks)

    asyncio.run(main())  # a plain loop: nothing jumps by itself
    assert woke == [("one", 1_500 * MS), ("two", 2 * S)]


def test_time_never_runs_back() -> None:
    clock = VirtualClock(start_ns=5)
    with pytest.raises(ValueError):
        clock.jump_to(4)
    clock.jump_to(5)  # standing still is allowed
    assert clock() == clock.now_ns() == clock.reader() == 5


def test_a_sleep_into_the_past_still_yields_once() -> None:
    clock = VirtualClock(start_ns=S)
    order: list[str] = []

    async def other() -> None:
        order.append("other")

    async def main() -> None:
        task = asyncio.ensure_future(other())
        await clock.sleep_until(0)  # past: no jump, but the other task runs first
        order.append("main")
        await clock.sleep(0)
        await task

    clock.run(main())
    assert order == ["other", "main"] and clock.now_ns() == S and clock.jumps == 0


def test_a_cancelled_sleeper_leaves_no_wakeup_behind() -> None:
    clock = VirtualClock()

    async def main() -> None:
        task = asyncio.ensure_future(clock.sleep_until(10 * S))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert clock.next_deadline_ns() is None
        await clock.sleep(1)

    clock.run(main())
    assert clock.now_ns() == S  # never jumped to the cancelled 10 s


def test_precise_wakeups_on_a_virtual_clock_are_exact() -> None:
    clock = VirtualClock()
    fired: list[tuple[str, int]] = []

    async def main() -> None:
        w = clock.wakeups(spin_ns=10 * MS)
        assert not w.precise  # no kernel timer: the clock's own exact wake-up
        w.call_at(3 * MS, lambda: fired.append(("c", clock.now_ns())))
        dropped = w.call_at(2 * MS, lambda: fired.append(("dropped", clock.now_ns())))
        w.call_at(1 * MS, lambda: fired.append(("a", clock.now_ns())))
        w.cancel(dropped)
        timer = PreciseTimer(lambda: fired.append(("timer", clock.now_ns())), w)
        timer.arm(9 * MS)
        timer.arm(5 * MS)
        await w.sleep_until(10 * MS)
        assert clock.now_ns() == 10 * MS
        w.close()
        assert list(w.lateness.samples) == [0, 0, 0, 0]  # a, c, timer, the sleep

    clock.run(main())
    assert fired == [("a", 1 * MS), ("c", 3 * MS), ("timer", 5 * MS)]


def test_sleep_until_spinning_does_not_spin_on_virtual_time() -> None:
    clock = VirtualClock()
    clock.run(clock.sleep_until_spinning(4 * MS, spin_ns=10 * MS))
    assert clock.now_ns() == 4 * MS


# ------------------------------------------------------------- the other clocks


def test_as_clock_keeps_old_readers_working() -> None:
    assert as_clock(None) is SYSTEM and as_clock(time.monotonic_ns) is SYSTEM
    assert isinstance(SYSTEM, SystemClock) and SYSTEM.reader is time.monotonic_ns
    virtual = VirtualClock()
    assert as_clock(virtual) is virtual
    wrapped = as_clock(lambda: 42)
    assert isinstance(wrapped, CallableClock) and isinstance(wrapped, Clock)
    assert wrapped() == wrapped.now_ns() == 42
    with pytest.raises(TypeError):
        as_clock(3)  # type: ignore[arg-type]


def test_a_frozen_reader_does_not_stall_a_periodic_sleep() -> None:
    clock = as_clock(lambda: 5 * MS)  # tests and benchmarks freeze time like this

    async def main() -> None:
        await asyncio.wait_for(clock.sleep(0.001), 1.0)
        await asyncio.wait_for(clock.sleep_until(5 * MS), 1.0)

    asyncio.run(main())


def test_the_system_clock_sleeps_for_real() -> None:
    async def main() -> float:
        t0 = time.monotonic()
        await SYSTEM.sleep(0.02)
        await SYSTEM.sleep_until(SYSTEM.now_ns() + 10 * MS)
        return time.monotonic() - t0

    assert 0.028 <= asyncio.run(main()) < 1.0
