"""Nexus's squishy bin packing (Shen et al., SOSP'19, §6.1), as pure functions.

Theory of operation. Each model is a *demand*: a rate ``r``, a profile ``l(b)`` and a
budget ``B`` (its SLO less the fixed overheads). A GPU runs a *duty cycle* of length
``d``: once per cycle it runs one batch of every model assigned to it, back to back. A
request can arrive just after its model's slot went by, so it waits up to ``d`` and then
runs for ``l(b)``: the rule is ``l(b) + d <= B``.

* **Saturated share.** A GPU given to one model alone runs back to back, ``d = l(b)``, so
  ``2 l(b) <= B``: ``b_sat`` is the largest such ``b`` (``<= max_batch``) and one GPU
  serves ``T = b_sat / l(b_sat)``. The demand gets ``floor(r / T)`` such GPUs.
* **Residual share.** The rest ``r' = r - n T`` gets a share whose batch fills in one
  cycle, ``d = b / r'``: ``b`` is the largest with ``l(b) + b / r' <= B`` (at least 1;
  with so little load that even ``b = 1`` takes longer to fill than the budget allows,
  ``d = B - l(1)`` and the slot often runs a partial batch). Its occupancy is
  ``l(b) / d``; one at or above 1 becomes a saturated share of its own.
* **Packing.** Residual shares are placed best-fit-decreasing by occupancy. Merging a
  share into a GPU shortens its cycle to the smallest ``d`` of its shares, and every
  share's batch shrinks to what arrives in that cycle, ``ceil(r d)`` (that is the
  *squishy* part); the merge fits when the batches still run within one cycle,
  ``sum l_i(b_i) <= d``. Latency still holds: ``d`` and every ``b_i`` only shrank.

The number of GPUs a plan needs is the saturated count plus the residual bins
(``gpus_needed``). Nothing here knows about workers, queues or time; ``nexus.py`` binds
bins to workers. Pure, deterministic, standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from central.policy.types import Profile

__all__ = [
    "Bin",
    "Demand",
    "Share",
    "Split",
    "batch_for_duty",
    "count_bins",
    "gpus_needed",
    "saturated_batch",
    "split_demand",
]

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Demand:
    """One model's load as the planner sees it."""

    model: str
    profile: Profile
    rate_per_ns: float  # arrivals per ns the plan must carry (already scaled)
    budget_ns: int  # SLO less dispatch, reply, timer slack and margin


@dataclass(frozen=True, slots=True)
class Share:
    """Part of one model's load on one GPU, at its own (unsquished) duty cycle."""

    model: str
    profile: Profile
    rate_per_ns: float  # the load this share carries (also its routing weight)
    batch: int  # planned batch at ``duty_ns``
    duty_ns: int  # its cycle if alone on the GPU

    @property
    def occupancy(self) -> float:
        """Fraction of the cycle its batch keeps the GPU busy."""
        return self.profile.latency_ns(self.batch) / self.duty_ns

    @property
    def saturated(self) -> bool:
        """True when it fills a GPU on its own (never merged)."""
        return self.profile.latency_ns(self.batch) >= self.duty_ns


@dataclass(frozen=True, slots=True)
class Split:
    """A demand cut into ``n_saturated`` copies of ``saturated`` and one ``residual``."""

    saturated: Share | None
    n_saturated: int
    residual: Share | None


def saturated_batch(profile: Profile, budget_ns: int) -> int:
    """The largest ``b <= max_batch`` with ``2 l(b) <= budget_ns``; 0 when none."""
    half = budget_ns // 2
    if profile.latency_ns(1) > half:
        return 0
    return min(profile.max_batch, max(1, (half - profile.c_ns) // profile.k_ns))


def _residual(model: str, profile: Profile, rate: float, budget: int, b_sat: int) -> Share:
    """The share for the load ``rate`` that no saturated GPU carries (see module doc)."""

    def fits(b: int) -> bool:
        return profile.latency_ns(b) + b / rate <= budget

    if not fits(1):
        lat = profile.latency_ns(1)
        return Share(model, profile, rate, 1, max(budget - lat, lat))
    lo, hi = 1, profile.max_batch  # l(b) + b/r grows with b: binary search
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    duty = int(lo / rate)
    if duty <= profile.latency_ns(lo):  # more than one GPU's worth at this batch
        batch = max(lo, b_sat)
        return Share(model, profile, rate, batch, profile.latency_ns(batch))
    return Share(model, profile, rate, lo, duty)


def split_demand(demand: Demand) -> Split:
    """Cut ``demand`` into saturated GPUs and a residual share (both may be absent).

    A demand with no rate, or whose budget cannot fit even ``l(1)``, gets nothing.
    """
    prof, rate, budget = demand.profile, demand.rate_per_ns, demand.budget_ns
    if rate <= 0.0 or prof.latency_ns(1) > budget:
        return Split(None, 0, None)
    b_sat = saturated_batch(prof, budget)
    sat: Share | None = None
    n_sat = 0
    rest = rate
    if b_sat:
        l_sat = prof.latency_ns(b_sat)
        per_gpu = b_sat / l_sat
        n_sat = math.floor(rate / per_gpu + _EPS)
        rest = rate - n_sat * per_gpu
        sat = Share(demand.model, prof, per_gpu, b_sat, l_sat)
        if rest <= 1e-3 * per_gpu:  # a rounding crumb, not a share
            return Split(sat if n_sat else None, n_sat, None)
    residual = _residual(demand.model, prof, rest, budget, b_sat)
    return Split(sat if n_sat else None, n_sat, residual)


def batch_for_duty(share: Share, duty_ns: int) -> int:
    """The batch ``share`` runs in a cycle of ``duty_ns``: what arrives in it, at most its own."""
    if duty_ns >= share.duty_ns:
        return share.batch
    return max(1, min(share.batch, math.ceil(share.rate_per_ns * duty_ns - _EPS)))


class Bin:
    """One GPU's duty cycle: its shares, the cycle length and the busy time per cycle."""

    __slots__ = ("shares", "duty_ns", "busy_ns")

    def __init__(self, share: Share) -> None:
        self.shares = [share]
        self.duty_ns = share.duty_ns
        self.busy_ns = share.profile.latency_ns(share.batch)

    def merged(self, share: Share) -> tuple[int, int]:
        """``(duty, busy)`` of this bin with ``share`` added (it fits when busy <= duty)."""
        duty = min(self.duty_ns, share.duty_ns)
        if duty == self.duty_ns:
            busy = self.busy_ns
        else:
            busy = sum(s.profile.latency_ns(batch_for_duty(s, duty)) for s in self.shares)
        return duty, busy + share.profile.latency_ns(batch_for_duty(share, duty))

    def add(self, share: Share, duty_ns: int, busy_ns: int) -> None:
        """Add ``share`` with the ``(duty, busy)`` that ``merged`` returned."""
        self.shares.append(share)
        self.duty_ns = duty_ns
        self.busy_ns = busy_ns

    @property
    def full(self) -> bool:
        """True when nothing more can ever fit (saturated, or overcommitted)."""
        return self.busy_ns >= self.duty_ns

    def slots(self) -> list[tuple[str, int]]:
        """``(model, batch)`` per share at this bin's cycle, in placement order."""
        return [(s.model, batch_for_duty(s, self.duty_ns)) for s in self.shares]


def _order(shares: Iterable[Share]) -> list[Share]:
    # Decreasing occupancy; ties by model name so plans repeat exactly.
    return sorted(shares, key=lambda s: (-s.occupancy, s.model))


def count_bins(residuals: Iterable[Share]) -> int:
    """How many GPUs best-fit-decreasing packing needs for ``residuals``."""
    bins: list[Bin] = []
    for share in _order(residuals):
        best: tuple[float, int, int, Bin] | None = None
        for b in bins:
            if b.full:
                continue
            duty, busy = b.merged(share)
            if busy <= duty and (best is None or busy / duty > best[0]):
                best = (busy / duty, duty, busy, b)
        if best is None:
            bins.append(Bin(share))
        else:
            best[3].add(share, best[1], best[2])
    return len(bins)


def gpus_needed(demands: Iterable[Demand]) -> int:
    """GPUs a plan for ``demands`` needs: saturated ones plus packed residual bins."""
    n_sat = 0
    residuals: list[Share] = []
    for demand in demands:
        split = split_demand(demand)
        n_sat += split.n_saturated
        if split.residual is not None:
            if split.residual.saturated:
                n_sat += 1
            else:
                residuals.append(split.residual)
    return n_sat + count_bins(residuals)
