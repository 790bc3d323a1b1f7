"""What a simulation runs on: the cluster (true profiles, SLOs, workers) and the knobs.

Theory of operation: ``Cluster`` is the ground truth the policy does not see directly:
how long batches of each model really take (``profiles``, including the largest batch
each executor accepts), each model's SLO and which models every worker serves.
``SimConfig`` holds the driver's overheads (dispatch delay, reply cost, timer lateness),
the seeded noise on batch durations and whether invariant breaches raise. All are
frozen dataclasses validated on construction; times are integer nanoseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from central.policy.types import Profile

__all__ = ["Cluster", "Noise", "SimConfig"]


@dataclass(frozen=True, slots=True)
class Noise:
    """Seeded noise on true batch durations: ``l(b) * factor + jitter``.

    Raises ``ValueError`` on construction when a field is out of range.
    """

    cv: float = 0.0  # CV of the multiplicative factor (lognormal, mean 1); 0: none
    jitter_ns: int = 0  # additive, uniform in [0, jitter_ns]
    outlier_prob: float = 0.0  # chance that a batch is an outlier
    outlier_factor: float = 3.0  # an outlier takes this many times as long

    def __post_init__(self) -> None:
        if not self.cv >= 0:
            raise ValueError(f"cv must be >= 0, got {self.cv}")
        if self.jitter_ns < 0:
            raise ValueError(f"jitter_ns must be >= 0, got {self.jitter_ns}")
        if not 0.0 <= self.outlier_prob <= 1.0:
            raise ValueError(f"outlier_prob must lie in [0, 1], got {self.outlier_prob}")
        if not self.outlier_factor >= 1.0:
            raise ValueError(f"outlier_factor must be >= 1, got {self.outlier_factor}")

    @property
    def silent(self) -> bool:
        """True when durations are exactly the true profile's."""
        return self.cv == 0 and self.jitter_ns == 0 and self.outlier_prob == 0


@dataclass(frozen=True, slots=True)
class SimConfig:
    """The simulated driver's overheads, noise, seed and strictness.

    Raises ``ValueError`` on construction when a time is negative.
    """

    # From the policy's decision to the Execute command and the payloads being at the
    # worker: the worker cannot start before ``decided + dispatch_delay_ns``.
    dispatch_delay_ns: int = 500_000
    # From a batch's end to the results being back at the clients.
    reply_cost_ns: int = 300_000
    # Each Tick lands uniformly in [0, tick_lateness_ns] after the time asked for.
    tick_lateness_ns: int = 0
    noise: Noise = field(default_factory=Noise)
    seed: int = 0
    # Raise ``InvariantViolation`` at the first breach (else count them in the result).
    strict: bool = True
    # Stop a run whose arrivals are over when this much virtual time passes with
    # requests still unanswered and nothing happening but Ticks (a stalled policy).
    stall_ns: int = 60_000_000_000
    # Spans ``(from_ns, to_ns)`` in which the whole machine stood still (measured live by
    # ``central.client.canary``): nothing that falls inside one (an arrival seen, a Tick,
    # a batch's start or end, a reply) happens before its end. Sorted and merged on
    # construction.
    pauses: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        for name in ("dispatch_delay_ns", "reply_cost_ns", "tick_lateness_ns"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.stall_ns <= 0:
            raise ValueError(f"stall_ns must be > 0, got {self.stall_ns}")
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted((int(a), int(b)) for a, b in self.pauses):
            if hi <= lo:
                raise ValueError(f"a pause must end after it starts, got ({lo}, {hi})")
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
            else:
                merged.append((lo, hi))
        object.__setattr__(self, "pauses", tuple(merged))


@dataclass(frozen=True, slots=True)
class Cluster:
    """True batch latencies, SLOs and worker placement.

    ``workers[i]`` is the tuple of models worker ``i`` serves (its worker id is ``i``).
    Raises ``ValueError`` when a worker serves a model with no profile or no SLO, a
    profile is degenerate (``k_ns < 1`` or ``max_batch < 1``) or an SLO is not positive.
    """

    profiles: Mapping[str, Profile]  # the truth: l(b) and max batch per model
    slo_ns: Mapping[str, int]  # per model: deadline = arrival + SLO
    workers: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        profiles = MappingProxyType(dict(self.profiles))
        slo = MappingProxyType({m: int(v) for m, v in self.slo_ns.items()})
        workers = tuple(tuple(w) for w in self.workers)
        for m, p in profiles.items():
            if p.k_ns < 1 or p.max_batch < 1:
                raise ValueError(f"profile of {m!r} needs k_ns >= 1 and max_batch >= 1: {p}")
        for m, v in slo.items():
            if v <= 0:
                raise ValueError(f"SLO of {m!r} must be > 0, got {v}")
        for i, models in enumerate(workers):
            for m in models:
                if m not in profiles:
                    raise ValueError(f"worker {i} serves {m!r}, which has no profile")
                if m not in slo:
                    raise ValueError(f"worker {i} serves {m!r}, which has no SLO")
        object.__setattr__(self, "profiles", profiles)
        object.__setattr__(self, "slo_ns", slo)
        object.__setattr__(self, "workers", workers)

    @property
    def n_workers(self) -> int:
        """How many workers the cluster has (ids ``0 .. n_workers - 1``)."""
        return len(self.workers)

    @classmethod
    def shared(
        cls, profiles: Mapping[str, Profile], slo_ns: int | Mapping[str, int], n_workers: int
    ) -> Cluster:
        """``n_workers`` workers that each serve every model in ``profiles``."""
        models = tuple(profiles)
        return cls(profiles, _slos(models, slo_ns), tuple(models for _ in range(n_workers)))

    @classmethod
    def partitioned(
        cls,
        profiles: Mapping[str, Profile],
        slo_ns: int | Mapping[str, int],
        workers_per_model: int,
    ) -> Cluster:
        """Each model on its own ``workers_per_model`` workers (model i: a block of ids)."""
        models = tuple(profiles)
        workers = tuple((m,) for m in models for _ in range(workers_per_model))
        return cls(profiles, _slos(models, slo_ns), workers)


def _slos(models: Iterable[str], slo_ns: int | Mapping[str, int]) -> dict[str, int]:
    if isinstance(slo_ns, Mapping):
        return dict(slo_ns)
    return {m: int(slo_ns) for m in models}
