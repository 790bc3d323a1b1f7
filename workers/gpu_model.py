"""The emulated GPU's timing, once: when a batch starts, whether it is refused, how long it runs.

Theory of operation: every stand-in for an accelerator in Baton (the emulated executor,
the simulator's workers, the capacity rig's workers, the unit tests' virtual-time loop)
obeys one rule, written here as a small pure object. It reads no clock and does no I/O:
every time is an argument, in integer nanoseconds on one clock.

* A batch handed to the GPU at ``ready_ns`` (its Execute and payloads are there) with the
  window ``[earliest_ns, latest_ns]`` starts at ``max(earliest, ready, the GPU's free
  time)``; ``hold`` (optional) moves an instant that falls while the machine stood still
  to the end of that stall.
* It is refused ``TOO_EARLY`` when the window opens more than ``max_lead_ns`` after the GPU
  could take it (the clocks disagree), at that moment; ``TOO_LATE`` when the start is past
  ``latest + late_tolerance_ns``, at the start. A refusal leaves the free time alone.
* Otherwise it runs for its duration, ``l(b) = k*b + c`` (``linear_latency_ns``, never
  below ``k`` or 1 ns) times an optional seeded noise (``GaussNoise``: the live executor's;
  ``LognormalNoise``: the simulator's), and the GPU is busy until the end.

``EmulatedGpu.admit`` decides the start (or the refusal) without changing anything;
``EmulatedGpu.occupy`` runs the batch and moves the free time. The window rule matches
``workers.window.check_window``, which the live worker applies to the real clock.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np

from central.protocol.conventions import BatchStatus

__all__ = ["EmulatedGpu", "GaussNoise", "LognormalNoise", "linear_latency_ns"]

_OK, _TOO_EARLY, _TOO_LATE = BatchStatus.OK, BatchStatus.TOO_EARLY, BatchStatus.TOO_LATE


def linear_latency_ns(k_ns: int, c_ns: int, b: int) -> int:
    """``k*b + c``, never below ``k`` nor 1 ns (``c`` may be negative, DESIGN §6)."""
    return max(k_ns * b + c_ns, k_ns, 1)


class EmulatedGpu:
    """One emulated GPU: a free time and the window rule (module docstring)."""

    __slots__ = ("free_ns", "hold", "late_tolerance_ns", "max_lead_ns")

    def __init__(
        self,
        free_ns: int = 0,
        *,
        max_lead_ns: int | None = None,
        late_tolerance_ns: int = 0,
        hold: Callable[[int], int] | None = None,
    ) -> None:
        self.free_ns = free_ns  # busy with the batches it accepted until then
        self.max_lead_ns = max_lead_ns  # None: never TOO_EARLY
        self.late_tolerance_ns = late_tolerance_ns
        self.hold = hold  # t -> t, or the end of the stall that holds t

    def admit(self, earliest_ns: int, latest_ns: int, ready_ns: int) -> tuple[BatchStatus, int]:
        """``(OK, start)``, or ``(TOO_EARLY | TOO_LATE, the moment of refusal)``."""
        t = max(ready_ns, self.free_ns)
        if self.max_lead_ns is not None and earliest_ns - t > self.max_lead_ns:
            return _TOO_EARLY, t
        start = max(earliest_ns, t)
        if self.hold is not None:
            start = self.hold(start)
        if start > latest_ns + self.late_tolerance_ns:
            return _TOO_LATE, start
        return _OK, start

    def occupy(self, start_ns: int, duration_ns: int) -> int:
        """Run a batch admitted at ``start_ns`` for ``duration_ns``; return its end."""
        end = start_ns + duration_ns
        if self.hold is not None:
            end = self.hold(end)
        self.free_ns = end
        return end


class GaussNoise:
    """The emulated executor's noise: ``int(l * max(0.2, N(1, cv)))`` from ``random.Random(seed)``;
    ``cv == 0`` draws nothing and returns ``l``."""

    __slots__ = ("_cv", "_rng")

    def __init__(self, cv: float, seed: int) -> None:
        self._cv = cv
        self._rng = random.Random(seed)

    def duration(self, latency_ns: int) -> int:
        if self._cv:
            return int(latency_ns * max(0.2, self._rng.gauss(1.0, self._cv)))
        return latency_ns


class LognormalNoise:
    """The simulator's noise: ``max(1, int(l * factor) + jitter)``, drawn ``chunk`` at a time
    from ``numpy.random.default_rng(seed)``. The factor is lognormal with mean 1 and CV
    ``cv`` (1 when ``cv`` is 0), times ``outlier_factor`` with chance ``outlier_prob``;
    the jitter is uniform in ``[0, jitter_ns]``."""

    __slots__ = ("_chunk", "_cv", "_f", "_i", "_j", "_jitter", "_out_f", "_out_p", "_rng")

    def __init__(
        self,
        cv: float,
        jitter_ns: int,
        outlier_prob: float,
        outlier_factor: float,
        seed: int | list[int],
        chunk: int = 8192,
    ) -> None:
        self._cv, self._jitter = cv, jitter_ns
        self._out_p, self._out_f = outlier_prob, outlier_factor
        self._rng = np.random.default_rng(seed)
        self._chunk = chunk
        self._f: list[float] = []
        self._j: list[int] = []
        self._i = chunk

    def duration(self, latency_ns: int) -> int:
        if self._i == self._chunk:
            self._refill()
        i = self._i
        self._i = i + 1
        return max(1, int(latency_ns * self._f[i]) + self._j[i])

    def _refill(self) -> None:
        rng, n = self._rng, self._chunk
        if self._cv > 0:
            sigma2 = math.log1p(self._cv * self._cv)
            f = rng.lognormal(-sigma2 / 2, math.sqrt(sigma2), n)
        else:
            f = np.ones(n)
        if self._out_p > 0:
            f = np.where(rng.random(n) < self._out_p, f * self._out_f, f)
        j = rng.integers(0, self._jitter + 1, n) if self._jitter else np.zeros(n, int)
        self._f, self._j, self._i = f.tolist(), j.tolist(), 0
