"""What the scheduler measures about one model: its latency profile, margin and load.

Theory of operation. ``ProfileEstimator`` refits ``l(b) = k*b + c``: it starts from an
offline or configured ``Profile`` and learns from every successful batch the scheduler
hears about (``observe(b, duration)``).
It keeps the last ``window`` samples in a ring and, beside it, the integer sums
``n, Σb, Σd, Σb², Σb·d`` of exactly those samples, so each refit is an O(1) closed-form
least-squares solve in exact integer arithmetic (no float drift however long it runs).

* Until ``min_samples`` batches are in, it trusts the initial profile: one odd batch
  (a cold cache, a GC pause) must not swing the plan.
* With two or more distinct batch sizes in the window it fits both ``k`` and ``c``;
  ``k`` is clamped to at least 1 ns (latency must grow with the batch) and ``c`` is then
  the mean residual under that ``k``.
* With one distinct size it cannot tell ``k`` from ``c``: it keeps ``k`` and shifts ``c``.
* ``margin_ns`` is a high percentile of the positive residuals ``max(0, late + d - l(b))``
  over the window, ``late`` being how much later than it could have a batch started (a
  stalled worker or link; not a wait behind an overrunning batch, whose own residual
  already counts): the scheduler adds it so that only ``1 - percentile`` of batches end
  after their plan. ``late`` may count for only the last ``late_window`` samples: a stall
  is an event of the machine that hits every batch running at that moment, not a property
  of the model (``PolicyConfig.stall_window``; by default the whole window: docs/policy.md
  §11 has the live comparison, which did not favour a shorter one).
  Sorting the window is the only non-constant step, so the margin is recomputed on every
  ``margin_every``-th sample (and on each of the first ``2 * margin_every``).

With ``refit=False`` the profile stays fixed and only the margin is measured against it.

``LoadEstimator`` tracks the arrival rate as an exponentially decayed count (each arrival
adds 1, the sum decays with time constant ``window``; rate = sum / window, divided by
the time actually seen while the first window fills) and the typical deadline budget as
a per-request EWMA. Both are O(1) per arrival. Nothing here reads a clock: times are
handed in.
"""

from __future__ import annotations

import collections
import math

from central.policy.types import Profile

__all__ = ["LoadEstimator", "ProfileEstimator"]

_BUDGET_ALPHA = 1.0 / 32.0  # weight of one request in the typical-budget EWMA
_MIN_SEEN_PARTS = 64  # the rate counts at least window/64 of history: no early spikes


class ProfileEstimator:
    """Tracks ``k``, ``c`` and a conservative margin for one model from batch timings."""

    __slots__ = (
        "_profile",
        "_window",
        "_percentile",
        "_refit",
        "_margin_every",
        "_min_samples",
        "_samples",
        "_n",
        "_sx",
        "_sy",
        "_sxx",
        "_sxy",
        "_sizes",
        "_observed",
        "_margin_ns",
        "_initial",
        "_late_window",
    )

    def __init__(
        self,
        profile: Profile,
        *,
        window: int = 256,
        percentile: float = 0.99,
        refit: bool = True,
        margin_every: int = 16,
        min_samples: int = 8,
        late_window: int | None = None,
    ) -> None:
        """Start from ``profile``; raises ``ValueError`` on a bad profile or window.

        ``late_window``: how many of the latest samples count their start lateness in the
        margin (None: all of the window)."""
        if profile.k_ns <= 0:
            raise ValueError(f"profile needs k_ns > 0, got {profile.k_ns}")
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        if not 0.0 < percentile <= 1.0:
            raise ValueError(f"percentile must lie in (0, 1], got {percentile}")
        if margin_every < 1:
            raise ValueError(f"margin_every must be >= 1, got {margin_every}")
        if min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {min_samples}")
        if late_window is not None and late_window < 1:
            raise ValueError(f"late_window must be >= 1, got {late_window}")
        self._late_window = window if late_window is None else min(late_window, window)
        self._profile = profile
        self._initial = profile
        self._window = window
        self._percentile = percentile
        self._refit = refit
        self._margin_every = margin_every
        self._min_samples = min(min_samples, window)
        self._samples: collections.deque[tuple[int, int, int]] = collections.deque()
        self._n = 0
        self._sx = 0
        self._sy = 0
        self._sxx = 0
        self._sxy = 0
        self._sizes: dict[int, int] = {}  # batch size -> samples of it in the window
        self._observed = 0  # samples ever seen
        self._margin_ns = 0

    # ------------------------------------------------------------------ queries

    def current(self) -> Profile:
        """The profile to plan with now (the refit one, or the initial one)."""
        return self._profile

    @property
    def margin_ns(self) -> int:
        """The safety margin in ns: a high percentile of positive residuals (>= 0)."""
        return self._margin_ns

    @property
    def samples(self) -> int:
        """How many samples the window holds."""
        return self._n

    # ----------------------------------------------------------------- learning

    def reset(self) -> None:
        """Forget every sample: back to the initial profile with no margin.

        The scheduler calls it when the learned state has gone stale: a model that has
        run no batch for a long while although requests kept coming (see
        ``PolicyConfig.stale_after_ns``).
        """
        self._profile = self._initial
        self._samples.clear()
        self._n = self._sx = self._sy = self._sxx = self._sxy = 0
        self._sizes.clear()
        self._margin_ns = 0

    def observe(self, batch_size: int, duration_ns: int, late_ns: int = 0) -> None:
        """Learn from one successful batch; raises ``ValueError`` on impossible input.

        ``late_ns``: how much later than it could have the batch started (a stall of the
        worker or the links, not a queue behind an overrun): it counts in the margin, not
        in the fit of ``k`` and ``c``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if duration_ns < 0:
            raise ValueError(f"duration_ns must be >= 0, got {duration_ns}")
        if self._n == self._window:
            old_b, old_d, _ = self._samples.popleft()
            self._account(old_b, old_d, -1)
        self._samples.append((batch_size, duration_ns, max(0, late_ns)))
        self._account(batch_size, duration_ns, +1)
        if self._refit and self._n >= self._min_samples:
            self._fit()
        self._observed += 1
        if self._observed < 2 * self._margin_every or self._observed % self._margin_every == 0:
            self._recompute_margin()

    def _account(self, b: int, d: int, sign: int) -> None:
        self._n += sign
        self._sx += sign * b
        self._sy += sign * d
        self._sxx += sign * b * b
        self._sxy += sign * b * d
        left = self._sizes.get(b, 0) + sign
        if left:
            self._sizes[b] = left
        else:
            del self._sizes[b]

    def _fit(self) -> None:
        n, sx, sy = self._n, self._sx, self._sy
        k = self._profile.k_ns
        if len(self._sizes) >= 2:
            den = n * self._sxx - sx * sx  # > 0: at least two distinct sizes
            k = max(1, round((n * self._sxy - sx * sy) / den))
        c = round((sy - k * sx) / n)
        if k != self._profile.k_ns or c != self._profile.c_ns:
            self._profile = Profile(k_ns=k, c_ns=c, max_batch=self._profile.max_batch)

    def _recompute_margin(self) -> None:
        k, c = self._profile.k_ns, self._profile.c_ns  # latency_ns inlined: max(kb + c, k, 1)
        samples = self._samples
        old = len(samples) - self._late_window  # samples before this forget their lateness
        if k >= 1 and c >= 0:  # then k b + c >= k >= 1 for every b >= 1: no max needed
            residuals = [d + late - k * b - c for b, d, late in samples]
        else:
            residuals = [d + late - max(k * b + c, k, 1) for b, d, late in samples]
        for i in range(old):
            residuals[i] -= samples[i][2]
        residuals.sort()
        if not residuals:
            self._margin_ns = 0
            return
        rank = max(1, math.ceil(self._percentile * len(residuals)))
        self._margin_ns = max(0, residuals[rank - 1])  # a quantile of max(0, r)


class LoadEstimator:
    """Arrival rate and typical deadline budget of one model, from arrivals only."""

    __slots__ = ("_window", "_count", "_at", "_first", "_budget")

    def __init__(self, window_ns: int) -> None:
        """Raises ``ValueError`` when ``window_ns < 1``."""
        if window_ns < 1:
            raise ValueError(f"window_ns must be >= 1, got {window_ns}")
        self._window = window_ns
        self._count = 0.0  # decayed arrival count as of ``_at``
        self._at = 0
        self._first: int | None = None
        self._budget: float | None = None

    def arrived(self, now_ns: int, budget_ns: int) -> None:
        """Count one arrival at ``now_ns`` whose deadline is ``budget_ns`` away."""
        if self._first is None:
            self._first = self._at = now_ns
        elif now_ns > self._at:
            self._count *= math.exp((self._at - now_ns) / self._window)
            self._at = now_ns
        self._count += 1.0
        if self._budget is None:
            self._budget = float(budget_ns)
        else:
            self._budget += (budget_ns - self._budget) * _BUDGET_ALPHA

    def rate_per_ns(self, now_ns: int) -> float:
        """Arrivals per nanosecond around ``now_ns`` (0.0 before the first)."""
        if self._first is None:
            return 0.0
        window = self._window
        seen = max(now_ns - self._first, window // _MIN_SEEN_PARTS, 1)
        span = window * -math.expm1(-seen / window)  # the decayed time counted so far
        return self._count * math.exp(min(0, self._at - now_ns) / window) / span

    @property
    def budget_ns(self) -> float | None:
        """Typical ``deadline - arrival`` of recent requests; ``None`` before any."""
        return self._budget
