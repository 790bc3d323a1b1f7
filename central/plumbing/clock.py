"""Clocks that read and sleep, and precise wake-ups, for the asyncio shells.

Theory of operation (trio's model): a ``Clock`` is one object for reading time and for
sleeping until a time: ``now_ns()`` (also ``clock()``: a clock is a time reader),
``await sleep_until(t_ns)``, ``await sleep(seconds)``. Every shell takes one (a plain
callable returning integer nanoseconds still works: ``as_clock`` wraps it), reads time
through its ``reader`` on the hot paths and runs every periodic loop (liveness, sweeps,
heartbeats, drains) on its ``sleep``. Two implementations:

* ``SystemClock`` (``SYSTEM``): today's behaviour. ``time.monotonic_ns``; ``sleep`` is
  ``asyncio.sleep`` (coarse, fine for periodic loops); ``wakeups()`` gives the
  timerfd-precise ``Wakeups`` where precision matters (the scheduler's dispatch timer, a
  worker's batch start, an emulated batch's end).
* ``VirtualClock``: time that jumps. Sleepers wait in a heap of virtual instants; time
  moves only when a test calls ``advance()``/``jump_to()`` or, under ``clock.run(main)``
  (an event loop whose own time is the virtual clock), when every task is asleep: when
  the loop would block, the clock jumps to the earliest sleeper or loop timer (trio's
  ``MockClock(autojump_threshold=0)``). A test that waits 30 virtual seconds takes
  milliseconds. ``asyncio.sleep`` and ``wait_for`` on that loop are virtual too. It is
  for code without real I/O: a loop blocked on a real socket with no sleeper left blocks.

``Wakeups`` runs
callbacks at precise instants: the event loop's own timers have millisecond granularity
(uvloop's land up to 0.4 ms early and 0.6 ms late, measured here), and the scheduler's
dispatch and a worker's batch start are instants that matter. On Linux a timerfd, armed
at the earliest pending instant in nanoseconds, wakes the loop on time without spinning;
elsewhere the loop's timer is armed early and the rest is spun. How late each wake-up
actually ran is recorded in ``lateness`` so that shells can report it.

``OffsetEstimator`` turns heartbeat round trips into an estimate of the offset between
this process's clock and the scheduler's (Clockwork's approach): it keeps the sample with
the smallest round trip among recent ones, whose midpoint error is at most RTT/2.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import heapq
import math
import os
import selectors
import sys
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = [
    "Clock",
    "SystemClock",
    "CallableClock",
    "VirtualClock",
    "SYSTEM",
    "ClockLike",
    "as_clock",
    "Wakeups",
    "PreciseTimer",
    "OffsetEstimator",
    "LatenessLog",
]

T = TypeVar("T")
TimeReader = Callable[[], int]


def _resolve(fut: asyncio.Future[None]) -> None:
    """Wake a sleeper (unless it was cancelled meanwhile)."""
    if not fut.done():
        fut.set_result(None)


class _Handle:
    """What ``Clock.call_at`` returns: ``cancel()`` it to drop the call."""

    __slots__ = ("callback", "cancelled", "timer")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False
        self.timer: asyncio.TimerHandle | None = None  # the loop's, for a real clock

    def cancel(self) -> None:
        self.cancelled = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def run(self) -> None:
        if not self.cancelled:
            self.cancelled = True  # once
            self.callback()


class Clock(ABC):
    """Reading time and sleeping until a time, in integer nanoseconds.

    Subclasses give ``reader`` (a zero-argument callable: the fastest way to read, for
    hot paths), ``sleep_until`` and ``call_at``. A clock is itself a reader:
    ``clock()`` is ``clock.now_ns()``.
    """

    reader: TimeReader
    # True: Wakeups on this clock arm early and spin the rest (a real clock without a
    # kernel timer); False: the clock's own wake-up is exact (virtual time).
    spins = True
    # True: Wakeups may use the Linux timerfd (CLOCK_MONOTONIC is this clock's time).
    kernel_timer = False

    def now_ns(self) -> int:
        return self.reader()

    def __call__(self) -> int:
        return self.reader()

    @abstractmethod
    async def sleep_until(self, t_ns: int) -> None:
        """Return at ``t_ns`` or later (at once, after one yield, if it has passed)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` from now (0 or less: one yield to the loop)."""
        await self.sleep_until(self.reader() + max(0, round(seconds * 1e9)))

    @abstractmethod
    def call_at(self, t_ns: int, callback: Callable[[], None]) -> _Handle:
        """Run ``callback`` on the running loop at about ``t_ns`` (coarse: the loop's
        timer for a real clock). Returns a handle to ``cancel``."""
        ...

    async def sleep_until_spinning(self, t_ns: int, spin_ns: int) -> None:
        """Return at ``t_ns`` precisely without a kernel timer: a coarse sleep to
        ``spin_ns`` before it, then a spin on the reader. A virtual clock just sleeps."""
        read = self.reader
        delay = (t_ns - spin_ns - read()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        while read() < t_ns:
            pass

    def wakeups(self, *, spin_ns: int = 1_000_000, lateness: LatenessLog | None = None) -> Wakeups:
        """Precise wake-ups on this clock (the running loop's): a timerfd for the system
        clock on Linux, exact virtual ones for a ``VirtualClock``."""
        return Wakeups(clock=self, spin_ns=spin_ns, lateness=lateness)


class CallableClock(Clock):
    """Any time reader (a test's lambda, a benchmark's counter) as a ``Clock``: it reads
    ``fn``; sleeping waits on the loop's own timer for the distance ``fn`` gives."""

    def __init__(self, fn: TimeReader) -> None:
        self.reader = fn

    async def sleep_until(self, t_ns: int) -> None:
        await asyncio.sleep(max(0.0, (t_ns - self.reader()) / 1e9))

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))  # a frozen reader must not stall a loop

    def call_at(self, t_ns: int, callback: Callable[[], None]) -> _Handle:
        loop = asyncio.get_running_loop()
        handle = _Handle(callback)
        delay_s = (t_ns - self.reader()) / 1e9
        handle.timer = loop.call_at(loop.time() + max(0.0, delay_s), handle.run)
        return handle


class SystemClock(CallableClock):
    """``time.monotonic_ns``; coarse sleeps on ``asyncio.sleep``, precise ones through
    ``wakeups()`` (the kernel timer on Linux)."""

    kernel_timer = True

    def __init__(self) -> None:
        super().__init__(time.monotonic_ns)

    def __repr__(self) -> str:
        return "SYSTEM"


SYSTEM = SystemClock()

ClockLike = Clock | TimeReader


def as_clock(clock: ClockLike | None) -> Clock:
    """``clock`` as a ``Clock``: a Clock as it is, ``time.monotonic_ns`` (or None) as
    ``SYSTEM``, any other reader wrapped (``CallableClock``)."""
    if clock is None or clock is time.monotonic_ns:
        return SYSTEM
    if isinstance(clock, Clock):
        return clock
    if callable(clock):
        return CallableClock(clock)
    raise TypeError(f"not a clock: {clock!r}")


class VirtualClock(Clock):
    """Virtual nanoseconds that jump (trio's ``MockClock``); see the module comment.

    ``advance(seconds)`` / ``jump_to(t_ns)`` move time and wake every sleeper due, in
    (instant, arrival) order. Under ``run(main)`` the clock also jumps by itself when
    every task is asleep (``autojump``): to the earliest sleeper or loop timer, one
    instant at a time, so that a task woken at t runs before anything due after t.
    """

    spins = False

    def __init__(self, start_ns: int = 0, *, autojump: bool = True) -> None:
        self._now = start_ns
        self.autojump = autojump
        self._heap: list[tuple[int, int, _Handle]] = []
        self._seq = 0
        self.jumps = 0  # how many times time moved (autojump or advance)
        self.reader = self.now_ns

    def __repr__(self) -> str:
        return f"VirtualClock(now_ns={self._now})"

    def now_ns(self) -> int:
        return self._now

    def __call__(self) -> int:
        return self._now

    def call_at(self, t_ns: int, callback: Callable[[], None]) -> _Handle:
        handle = _Handle(callback)
        self._seq += 1
        heapq.heappush(self._heap, (t_ns, self._seq, handle))
        return handle

    async def sleep_until(self, t_ns: int) -> None:
        if t_ns <= self._now:
            await asyncio.sleep(0)
            return
        fut = asyncio.get_running_loop().create_future()
        handle = self.call_at(t_ns, functools.partial(_resolve, fut))
        try:
            await fut
        finally:
            handle.cancel()

    async def sleep_until_spinning(self, t_ns: int, spin_ns: int) -> None:
        await self.sleep_until(t_ns)

    def next_deadline_ns(self) -> int | None:
        """The earliest pending sleeper's instant, None when nobody sleeps."""
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    @property
    def sleepers(self) -> int:
        return sum(1 for _, _, h in self._heap if not h.cancelled)

    def advance(self, seconds: float) -> None:
        """Move time ``seconds`` forward; wake every sleeper due."""
        self.jump_to(self._now + round(seconds * 1e9))

    def jump_to(self, t_ns: int) -> None:
        """Move time to ``t_ns`` (never back); wake every sleeper due, in order."""
        if t_ns < self._now:
            raise ValueError(f"virtual time runs forward: {t_ns} < {self._now}")
        if t_ns > self._now:
            self.jumps += 1
        self._now = t_ns
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        heap = self._heap
        while heap and heap[0][0] <= t_ns:
            _, _, handle = heapq.heappop(heap)
            if handle.cancelled:
                continue
            if loop is not None:
                loop.call_soon(handle.run)  # in order, after the caller's turn
            else:
                handle.run()

    def _idle(self, timeout_s: float | None) -> bool:
        """The loop would block for ``timeout_s`` (None: no loop timer): jump to the
        earliest sleeper or loop timer. True when time moved (poll, don't block)."""
        if not self.autojump:
            return False
        target = self.next_deadline_ns()
        if timeout_s is not None:
            timer = self._now + max(1, math.ceil(timeout_s * 1e9))
            target = timer if target is None else min(target, timer)
        if target is None:
            return False
        self.jump_to(max(target, self._now))
        return True

    def run(self, main: Awaitable[T] | Callable[[], Awaitable[T]]) -> T:
        """Run ``main`` (a coroutine, or a function returning one) to completion on a
        fresh event loop whose time is this clock; returns its result."""
        loop = _VirtualLoop(self)
        try:
            asyncio.set_event_loop(loop)
            coro = main() if callable(main) else main
            return loop.run_until_complete(_as_coroutine(coro))
        finally:
            try:
                _cancel_all(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()


async def _as_coroutine(aw: Awaitable[T]) -> T:
    return await aw


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


class _JumpingSelector(selectors.DefaultSelector):
    """The virtual loop's selector: where the loop would block, the clock jumps."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._vclock = clock

    def select(self, timeout: float | None = None) -> list[Any]:
        if (timeout is None or timeout > 0) and self._vclock._idle(timeout):
            timeout = 0
        return super().select(timeout)


class _VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is a ``VirtualClock`` (seconds, as asyncio's)."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(_JumpingSelector(clock))
        self._vclock = clock

    def time(self) -> float:
        return self._vclock._now / 1e9


class LatenessLog:
    """A bounded record of how late wake-ups were, in nanoseconds."""

    def __init__(self, capacity: int = 20000) -> None:
        self.samples: deque[int] = deque(maxlen=capacity)

    def add(self, late_ns: int) -> None:
        self.samples.append(late_ns)

    def percentile(self, q: float) -> int:
        """The ``q`` quantile (0..1) of recorded lateness; 0 when empty."""
        if not self.samples:
            return 0
        data = sorted(self.samples)
        return data[min(len(data) - 1, int(q * len(data)))]


class _TimerFd:
    """A Linux timerfd on CLOCK_MONOTONIC, armed with absolute nanosecond times.

    The kernel's high-resolution timer makes the descriptor readable at the instant, so
    the event loop wakes on time (tens of microseconds) instead of at its own millisecond
    timer granularity: no spinning needed. ``available()`` is False off Linux.
    """

    _libc: Any = None

    class _Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    @classmethod
    def available(cls) -> bool:
        if not sys.platform.startswith("linux"):
            return False
        if cls._libc is None:
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                libc.timerfd_create  # noqa: B018  (raises AttributeError if absent)
                cls._libc = libc
            except (OSError, AttributeError):
                cls._libc = False
        return bool(cls._libc)

    def __init__(self) -> None:
        fd = self._libc.timerfd_create(1, 0o4000 | 0o2000000)  # MONOTONIC, NONBLOCK|CLOEXEC
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd = fd
        self._spec = _Itimerspec()

    def set(self, t_ns: int | None) -> None:
        """Fire at absolute monotonic ``t_ns``; None disarms."""
        spec = self._spec
        if t_ns is None:
            spec.it_value.tv_sec = 0
            spec.it_value.tv_nsec = 0
        else:
            t_ns = max(t_ns, 1)
            spec.it_value.tv_sec = t_ns // 1_000_000_000
            spec.it_value.tv_nsec = t_ns % 1_000_000_000
        if self._libc.timerfd_settime(self.fd, 1, ctypes.byref(spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)

    def close(self) -> None:
        os.close(self.fd)


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _TimerFd._Timespec), ("it_value", _TimerFd._Timespec)]


class Wakeups:
    """Precise wake-ups for many callbacks on one event loop.

    On Linux with the system clock, one timerfd armed at the earliest pending time; on a
    ``VirtualClock``, the clock's own exact wake-up; elsewhere (or with another injected
    clock) asyncio's timer armed ``spin_ns`` early, then a bounded spin. ``lateness``
    records how late each callback actually ran.
    """

    def __init__(
        self,
        *,
        clock: ClockLike = time.monotonic_ns,
        spin_ns: int = 1_000_000,
        lateness: LatenessLog | None = None,
    ) -> None:
        self._time = as_clock(clock)
        self._clock = self._time.reader
        self._spins = self._time.spins
        self._spin_ns = spin_ns if self._spins else 0
        self._loop = asyncio.get_running_loop()
        self._heap: list[tuple[int, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._seq = 0
        self._armed: int | None = None
        self._handle: _Handle | None = None
        self.lateness = lateness if lateness is not None else LatenessLog()
        self._fd: _TimerFd | None = None
        if self._time.kernel_timer and _TimerFd.available():
            self._fd = _TimerFd()
            self._loop.add_reader(self._fd.fd, self._on_fd)

    @property
    def precise(self) -> bool:
        """True when backed by a kernel timer (no spinning)."""
        return self._fd is not None

    def call_at(self, t_ns: int, callback: Callable[[], None]) -> int:
        """Run ``callback`` at ``t_ns``; returns a handle for ``cancel``."""
        self._seq += 1
        heapq.heappush(self._heap, (t_ns, self._seq, callback))
        if self._armed is None or t_ns < self._armed:
            self._arm(t_ns)
        return self._seq

    def cancel(self, handle: int) -> None:
        self._cancelled.add(handle)

    async def sleep_until(self, t_ns: int) -> None:
        """Return at ``t_ns`` (or at once if it has passed)."""
        if t_ns <= self._clock():
            return
        fut = self._loop.create_future()
        self.call_at(t_ns, functools.partial(_resolve, fut))
        await fut

    def _arm(self, t_ns: int | None) -> None:
        self._armed = t_ns
        if self._fd is not None:
            self._fd.set(t_ns)
            return
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if t_ns is not None:
            self._handle = self._time.call_at(t_ns - self._spin_ns, self._run_due)

    def _on_fd(self) -> None:
        assert self._fd is not None
        self._fd.clear()
        self._run_due()

    def _run_due(self) -> None:
        self._handle = None
        self._armed = None
        heap = self._heap
        if heap and self._fd is None and self._spins:
            now = self._clock()
            while now < heap[0][0] <= now + self._spin_ns + 2_000_000:
                now = self._clock()  # bounded spin (fallback path only)
        now = self._clock()
        while heap and heap[0][0] <= now:
            t_ns, seq, callback = heapq.heappop(heap)
            if seq in self._cancelled:
                self._cancelled.discard(seq)
                continue
            self.lateness.add(now - t_ns)
            callback()
            now = self._clock()
        while heap and heap[0][1] in self._cancelled:
            self._cancelled.discard(heapq.heappop(heap)[1])
        if heap:
            self._arm(heap[0][0])

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self._fd is not None:
            self._loop.remove_reader(self._fd.fd)
            self._fd.close()
            self._fd = None


class PreciseTimer:
    """One re-armable wake-up on top of ``Wakeups``: ``arm(t)`` replaces the last one."""

    def __init__(self, callback: Callable[[], None], wakeups: Wakeups) -> None:
        self._callback = callback
        self._wakeups = wakeups
        self._handle: int | None = None
        self._target_ns: int | None = None

    @property
    def target_ns(self) -> int | None:
        return self._target_ns

    def arm(self, t_ns: int | None) -> None:
        """Wake at ``t_ns`` (None disarms). Re-arming to the same time is free."""
        if t_ns == self._target_ns:
            return
        if self._handle is not None:
            self._wakeups.cancel(self._handle)
            self._handle = None
        self._target_ns = t_ns
        if t_ns is not None:
            self._handle = self._wakeups.call_at(t_ns, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._target_ns = None
        self._callback()


class OffsetEstimator:
    """Estimate ``scheduler_clock - local_clock`` from heartbeat round trips."""

    def __init__(self, window: int = 16) -> None:
        self._samples: deque[tuple[int, int]] = deque(maxlen=window)  # (rtt, offset)
        self.offset_ns = 0
        self.rtt_ns: int | None = None

    def observe(self, sent_ns: int, remote_ns: int, received_ns: int) -> None:
        """One round trip: sent and received on the local clock, remote in between."""
        rtt = max(0, received_ns - sent_ns)
        offset = remote_ns - (sent_ns + received_ns) // 2
        self._samples.append((rtt, offset))
        self.rtt_ns, self.offset_ns = min(self._samples)

    def to_local(self, remote_ns: int) -> int:
        return remote_ns - self.offset_ns

    def to_remote(self, local_ns: int) -> int:
        return local_ns + self.offset_ns
