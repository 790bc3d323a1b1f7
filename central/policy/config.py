"""Configuration of the policy core: one small frozen dataclass.

Theory of operation: a driver builds one ``PolicyConfig`` (from a TOML file, CLI flags
or a test) and hands it to ``make_policy``. Every field is validated here, once, so the
hot path never re-checks it. Times are integer nanoseconds; fractions are floats in
[0, 1]. Nothing here reads the environment or a clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from central.policy.types import Profile

__all__ = ["PolicyConfig"]


def _check_int(name: str, value: object, lowest: int) -> None:
    # bool is an int subclass; a stray True where a duration belongs is a config bug.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < lowest:
        raise ValueError(f"{name} must be >= {lowest}, got {value}")


def _check_fraction(name: str, value: object, *, open_low: bool) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    low_ok = value > 0.0 if open_low else value >= 0.0
    if not (low_ok and value <= 1.0):
        bound = "(0, 1]" if open_low else "[0, 1]"
        raise ValueError(f"{name} must lie in {bound}, got {value}")


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Knobs of the default (Symphony-style) policy; see ``docs/policy.md``.

    Raises ``ValueError`` on construction when a field is out of range.
    """

    # Configured latency profiles by model name. Empty: take each model's profile from
    # the first ``WorkerJoined`` that brings one. Stored as a read-only copy.
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    # From the decision to the worker being able to start: send + payload transfer.
    dispatch_cost_ns: int = 500_000
    # From the end of a batch to the result being back at the client.
    reply_cost_ns: int = 300_000
    # Budgeted lateness of the driver's timers: deferred batches go out this much early.
    timer_slack_ns: int = 200_000
    # Refit k and c online from ``BatchDone`` timings (the margin is measured either way).
    refit: bool = True
    # How many recent batches the refit and the margin look at.
    refit_window: int = 256
    # Which percentile of the positive residuals becomes the safety margin.
    margin_percentile: float = 0.99
    # A batch's unexplained start lateness (a stall of the machine, which hits every batch
    # running at that moment) counts in the margin for this many recent batches only;
    # duration overruns count for the whole ``refit_window`` (the default: the same).
    stall_window: int = 256
    # Shedding, on by default (0.95). The shed floor is the smallest batch whose throughput
    # b / l(b) is at least this fraction of the target batch's; when the heads whose
    # deadlines would hold a batch below the floor are followed by at least a floor's worth
    # of requests, those heads are dropped (SHED) so the batch keeps its size. Without it
    # a queue that falls behind never recovers: its old heads force small batches, small
    # batches lower capacity, and every head after them is late too (docs/policy.md §4.4
    # has the measurements). 0 turns shedding off.
    shed_fraction: float = 0.95
    # The measured margin is capped at this fraction of the model's typical budget, so an
    # overloaded stretch cannot inflate it past what any request affords (a deadlock:
    # everything dropped, nothing measured, the margin never relearnt).
    max_margin_fraction: float = 0.2
    # A model that has run no batch for this long while its requests were being dropped
    # as doomed has a stale profile (learnt while overloaded, say): it is reset to the
    # initial profile so that batches run and the profile is relearnt from fresh timings.
    stale_after_ns: int = 500_000_000
    # A candidate that could grow is deferred only when batches of its current size could
    # not carry this many times the measured arrival rate on its fair share of workers;
    # lighter load goes at once, not at the last moment. 0: always defer (pure Symphony).
    defer_headroom: float = 2.0
    # The first batch id this policy hands out. A restarted scheduler must not reuse its
    # predecessor's ids (workers remember recent ones): the runtime starts from the wall
    # clock in ms x 1e6.
    first_batch_id: int = 1
    # Time constant of the exponentially decayed arrival-rate estimate.
    rate_window_ns: int = 1_000_000_000

    def __post_init__(self) -> None:
        if not isinstance(self.profiles, Mapping):
            raise ValueError(f"profiles must be a mapping, got {type(self.profiles).__name__}")
        copied: dict[str, Profile] = {}
        for model, profile in self.profiles.items():
            if not isinstance(model, str) or not model:
                raise ValueError(f"profile keys must be non-empty model names, got {model!r}")
            if not isinstance(profile, Profile):
                raise ValueError(f"profile for {model!r} must be a Profile, got {profile!r}")
            if profile.k_ns <= 0:
                raise ValueError(f"profile for {model!r} needs k_ns > 0, got {profile.k_ns}")
            if profile.max_batch < 1:
                raise ValueError(f"profile for {model!r} needs max_batch >= 1, got {profile.max_batch}")
            copied[model] = profile
        object.__setattr__(self, "profiles", MappingProxyType(copied))
        _check_int("dispatch_cost_ns", self.dispatch_cost_ns, 0)
        _check_int("reply_cost_ns", self.reply_cost_ns, 0)
        _check_int("timer_slack_ns", self.timer_slack_ns, 0)
        _check_int("refit_window", self.refit_window, 2)
        _check_int("stall_window", self.stall_window, 1)
        _check_int("rate_window_ns", self.rate_window_ns, 1)
        _check_int("first_batch_id", self.first_batch_id, 1)
        _check_int("stale_after_ns", self.stale_after_ns, 1)
        if (
            not isinstance(self.defer_headroom, (int, float))
            or isinstance(self.defer_headroom, bool)
            or not 0.0 <= self.defer_headroom < float("inf")
        ):
            raise ValueError(f"defer_headroom must be a finite number >= 0, got {self.defer_headroom!r}")
        if not isinstance(self.refit, bool):
            raise ValueError(f"refit must be a bool, got {self.refit!r}")
        _check_fraction("margin_percentile", self.margin_percentile, open_low=True)
        _check_fraction("shed_fraction", self.shed_fraction, open_low=False)
        _check_fraction("max_margin_fraction", self.max_margin_fraction, open_low=False)
