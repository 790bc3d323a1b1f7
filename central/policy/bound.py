"""The analytic goodput bound for one model on N identical workers (DESIGN §1).

Theory of operation: with ``l(b) = k*b + c`` and N workers whose batches are staggered
evenly, a request waits at most ``l(b)/N`` for the next dispatch slot and then ``l(b)``
for its batch, so the largest safe batch ``b*`` obeys ``(1/N + 1) * l(b) <= budget``
with ``budget = SLO - overheads``. Workers that batch on their own can make a request
wait a whole batch and then its own: ``2 * l(b) <= budget``. Goodput is then
``N * b* / l(b*)``. Everything is solved in exact integer arithmetic (the coordinated
rule is ``(N + 1) * l(b) <= N * budget``), so the bound is reproducible to the request.
``l`` here is ``Profile.latency_ns``, which never drops below ``k`` (nor 1 ns).

The live policy uses the same rule with measured quantities (``target_batch``): with
arrival rate ``r`` a batch of ``b`` fills in ``b/r`` and ``n = r*l(b)/b`` workers are busy,
so the next slot comes ``l(b)/n = b/r`` after the last (never less than ``l(b)/N`` with N
workers): the target is the largest ``b`` with ``l(b) + max(l(b)/N, b/r) <= budget``,
which is ``(1 + 1/n) * l(b) <= budget`` and, for ``n <= 1``, Nexus's ``l(b) + b/r``.
``shed_floor`` turns a target into the smallest batch still worth running: the one whose
throughput ``b/l(b)`` is a given fraction of the target's.
"""

from __future__ import annotations

from dataclasses import dataclass

from central.policy.types import Profile

__all__ = ["Bound", "analytic_bound", "carrying_batch", "shed_floor", "target_batch"]

_NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Bound:
    """The best steady state one model can reach under its SLO."""

    batch: int  # b*: the largest safe batch (0: not even one request fits)
    latency_ns: int  # l(b*) (0 when batch is 0)
    goodput_rps: float  # N * b* / l(b*) requests per second over all workers
    per_worker_rps: float  # b* / l(b*): the same per worker


def analytic_bound(
    n_workers: int,
    k_ns: int,
    c_ns: int,
    slo_ns: int,
    *,
    coordinated: bool = True,
    overhead_ns: int = 0,
    max_batch: int | None = None,
) -> Bound:
    """Return the bound for ``n_workers`` serving ``l(b) = k_ns*b + c_ns`` under ``slo_ns``.

    ``overhead_ns`` (dispatch, transfer, reply, timer slack) is taken off the SLO first;
    ``max_batch`` caps ``b*``. Raises ``ValueError`` when ``n_workers < 1``,
    ``k_ns < 1``, ``overhead_ns < 0`` or ``max_batch < 1``.
    """
    if n_workers < 1:
        raise ValueError(f"n_workers must be >= 1, got {n_workers}")
    if k_ns < 1:
        raise ValueError(f"k_ns must be >= 1, got {k_ns}")
    if overhead_ns < 0:
        raise ValueError(f"overhead_ns must be >= 0, got {overhead_ns}")
    if max_batch is not None and max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    budget = slo_ns - overhead_ns
    # The rule as ``num * l(b) <= den * budget``: (N+1)/N coordinated, 2/1 otherwise.
    num, den = (n_workers + 1, n_workers) if coordinated else (2, 1)
    cap = den * budget // num  # the largest l(b) allowed, floored to a whole ns
    profile = Profile(k_ns=k_ns, c_ns=c_ns, max_batch=max_batch or 1)
    if profile.latency_ns(1) > cap:
        return Bound(batch=0, latency_ns=0, goodput_rps=0.0, per_worker_rps=0.0)
    batch = (cap - c_ns) // k_ns  # k*b + c <= cap; the floors of latency_ns only help
    if max_batch is not None:
        batch = min(batch, max_batch)
    batch = max(batch, 1)
    latency = profile.latency_ns(batch)
    per_worker = batch * _NS_PER_S / latency
    return Bound(
        batch=batch,
        latency_ns=latency,
        goodput_rps=n_workers * per_worker,
        per_worker_rps=per_worker,
    )


def target_batch(profile: Profile, *, rate_per_ns: float, n_workers: int, budget_ns: float) -> int:
    """The largest ``b <= max_batch`` with ``l(b) + max(l(b)/N, b/rate) <= budget_ns``.

    Returns 0 when not even ``l(1)`` fits the budget (or there are no workers) and 1
    when a single request fits but the rate is too low to fill any larger batch.
    """
    if n_workers < 1 or profile.latency_ns(1) > budget_ns:
        return 0
    if rate_per_ns <= 0.0:
        return 1

    def fits(b: int) -> bool:
        lat = profile.latency_ns(b)
        return lat + max(lat / n_workers, b / rate_per_ns) <= budget_ns

    lo, hi = 1, profile.max_batch  # the left side grows with b: binary search
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def carrying_batch(profile: Profile, *, rate_per_ns: float, share: float, headroom: float) -> int | None:
    """The smallest ``b <= max_batch`` whose batches carry ``headroom`` x the arrival rate
    on ``share`` workers (``headroom * rate * l(b) <= share * b``): below capacity the
    default policy starts a batch at once as soon as it holds this many requests
    (``CandidateRules._worth_waiting``); None when no batch does (near capacity, where
    the policy defers to grow its batches). 1 at no load.
    """
    if headroom <= 0.0 or share <= 0.0:
        return None
    if rate_per_ns <= 0.0:
        return 1
    for b in range(1, profile.max_batch + 1):
        if headroom * rate_per_ns * profile.latency_ns(b) <= share * b:
            return b
    return None


def shed_floor(profile: Profile, target: int, fraction: float) -> int:
    """The smallest ``b`` whose throughput ``b/l(b)`` is ``fraction`` of the target's.

    Returns 1 (nothing is worth shedding for) when ``target <= 1``, ``fraction`` is 0
    or the profile has no fixed cost (``c <= 0``: small batches are as efficient).
    """
    if target <= 1 or fraction <= 0.0 or profile.c_ns <= 0:
        return 1
    want = fraction * target / profile.latency_ns(target)
    lo, hi = 1, target  # with c > 0, b/l(b) grows with b and the target qualifies
    while lo < hi:
        mid = (lo + hi) // 2
        if mid / profile.latency_ns(mid) >= want:
            hi = mid
        else:
            lo = mid + 1
    return lo
