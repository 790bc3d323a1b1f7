"""Online refit of one model's latency profile ``l(b) = k*b + c`` and its safety margin.

Theory of operation: the estimator starts from an offline or configured ``Profile`` and
learns from every successful batch the scheduler hears about (``observe(b, duration)``).
It keeps the last ``window`` samples in a ring and, beside it, the integer sums
``n, Σb, Σd, Σb², Σb·d`` of exactly those samples, so each refit is an O(1) closed-form
least-squares solve in exact integer arithmetic (no float drift however long it runs).

* With two or more distinct batch sizes in the window it fits both ``k`` and ``c``;
  ``k`` is clamped to at least 1 ns (latency must grow with the batch) and ``c`` is then
  the mean residual under that ``k``.
* With one distinct size it cannot tell ``k`` from ``c``: it keeps ``k`` and shifts ``c``.
* ``margin_ns`` is a high percentile of the positive residuals ``max(0, d - l(b))`` over
  the window: the scheduler adds it so that only ``1 - percentile`` of batches overrun.
  Sorting the window is the only non-constant step, so the margin is recomputed every
  ``margin_every`` samples (and on every one while the window is still small).

With ``refit=False`` the profile stays fixed and only the margin is measured against it.
It never reads a clock; it is fed durations, not times.
"""

from __future__ import annotations

import collections
import math

from central.policy.types import Profile

__all__ = ["ProfileEstimator"]


class ProfileEstimator:
    """Tracks ``k``, ``c`` and a conservative margin for one model from batch timings."""

    __slots__ = (
        "_profile",
        "_window",
        "_percentile",
        "_refit",
        "_margin_every",
        "_samples",
        "_n",
        "_sx",
        "_sy",
        "_sxx",
        "_sxy",
        "_sizes",
        "_since_margin",
        "_margin_ns",
    )

    def __init__(
        self,
        profile: Profile,
        *,
        window: int = 256,
        percentile: float = 0.99,
        refit: bool = True,
        margin_every: int = 16,
    ) -> None:
        """Start from ``profile``; raises ``ValueError`` on a bad profile or window."""
        if profile.k_ns <= 0:
            raise ValueError(f"profile needs k_ns > 0, got {profile.k_ns}")
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        if not 0.0 < percentile <= 1.0:
            raise ValueError(f"percentile must lie in (0, 1], got {percentile}")
        if margin_every < 1:
            raise ValueError(f"margin_every must be >= 1, got {margin_every}")
        self._profile = profile
        self._window = window
        self._percentile = percentile
        self._refit = refit
        self._margin_every = margin_every
        self._samples: collections.deque[tuple[int, int]] = collections.deque()
        self._n = 0
        self._sx = 0
        self._sy = 0
        self._sxx = 0
        self._sxy = 0
        self._sizes: dict[int, int] = {}  # batch size -> samples of it in the window
        self._since_margin = 0
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

    def observe(self, batch_size: int, duration_ns: int) -> None:
        """Learn from one successful batch; raises ``ValueError`` on impossible input."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if duration_ns < 0:
            raise ValueError(f"duration_ns must be >= 0, got {duration_ns}")
        if self._n == self._window:
            old_b, old_d = self._samples.popleft()
            self._account(old_b, old_d, -1)
        self._samples.append((batch_size, duration_ns))
        self._account(batch_size, duration_ns, +1)
        if self._refit:
            self._fit()
        self._since_margin += 1
        if self._n < 2 * self._margin_every or self._since_margin >= self._margin_every:
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
        self._since_margin = 0
        profile = self._profile
        residuals = sorted(max(0, d - profile.latency_ns(b)) for b, d in self._samples)
        if not residuals:
            self._margin_ns = 0
            return
        rank = max(1, math.ceil(self._percentile * len(residuals)))
        self._margin_ns = residuals[rank - 1]
