"""Clocks and precise wake-ups for the asyncio shells.

Theory of operation: every shell reads time through an injected ``Clock`` (a callable
returning integer nanoseconds, ``time.monotonic_ns`` by default). ``Wakeups`` runs
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
import ctypes
import ctypes.util
import heapq
import os
import sys
import time
from collections import deque
from typing import Any, Callable

__all__ = ["Clock", "Wakeups", "PreciseTimer", "OffsetEstimator", "LatenessLog"]

Clock = Callable[[], int]


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
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _TimerFd._Timespec), ("it_value", _TimerFd._Timespec)]


class Wakeups:
    """Precise wake-ups for many callbacks on one event loop.

    On Linux with the real monotonic clock, one timerfd armed at the earliest pending
    time; elsewhere (or with an injected clock) asyncio's timer armed ``spin_ns`` early,
    then a bounded spin. ``lateness`` records how late each callback actually ran.
    """

    def __init__(
        self,
        *,
        clock: Clock = time.monotonic_ns,
        spin_ns: int = 1_000_000,
        lateness: LatenessLog | None = None,
    ) -> None:
        self._clock = clock
        self._spin_ns = spin_ns
        self._loop = asyncio.get_running_loop()
        self._heap: list[tuple[int, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._seq = 0
        self._armed: int | None = None
        self._handle: asyncio.TimerHandle | None = None
        self.lateness = lateness if lateness is not None else LatenessLog()
        self._fd: _TimerFd | None = None
        if clock is time.monotonic_ns and _TimerFd.available():
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
        self.call_at(t_ns, lambda: fut.done() or fut.set_result(None))
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
            delay_s = (t_ns - self._spin_ns - self._clock()) / 1e9
            self._handle = self._loop.call_at(self._loop.time() + max(0.0, delay_s), self._run_due)

    def _on_fd(self) -> None:
        assert self._fd is not None
        self._fd.clear()
        self._run_due()

    def _run_due(self) -> None:
        self._handle = None
        self._armed = None
        heap = self._heap
        if heap and self._fd is None:
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
