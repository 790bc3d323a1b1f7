"""One capacity experiment's shape: the synthetic cluster (models, pools, emulated GPUs, the
profile and SLO) and the load (feeders, their send period), and the policy knobs every
scheduler process of the experiment plans with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Setup"]


@dataclass(frozen=True)
class Setup:
    """One capacity experiment: the synthetic cluster and the load shape."""

    models: int = 64
    gpus: int = 256
    worker_procs: int = 2  # processes the emulated GPUs are spread over
    pools: int = 16  # GPUs and models are split into this many groups (a GPU serves its group)
    feeders: int = 2
    k_ns: int = 1_082_000  # Symphony's benchmark profile l(b) = 1.082 ms b + 5.204 ms
    c_ns: int = 5_204_000
    max_batch: int = 64
    slo_ns: int = 50_000_000
    dispatch_cost_ns: int = 2_000_000
    reply_cost_ns: int = 1_500_000
    timer_slack_ns: int = 1_000_000
    interval_ns: int = 1_000_000  # feeder send period (one Requests message per turn)
    split: bool = False  # the scheduler runs the split policy (shards + matcher, 1 process)
    shards: int = 1  # >= 2: a matcher process and this many shard processes (live ramp)

    def model_names(self) -> list[str]:
        return [f"m{i:03d}" for i in range(self.models)]

    def pool_of_model(self, i: int) -> int:
        return i % self.pools

    def pool_of_gpu(self, g: int) -> int:
        return g % self.pools

    def gpu_models(self) -> list[tuple[str, ...]]:
        """Per emulated GPU, the models it serves (its pool's)."""
        names = self.model_names()
        groups = [
            tuple(m for i, m in enumerate(names) if self.pool_of_model(i) == p) for p in range(self.pools)
        ]
        return [groups[self.pool_of_gpu(g)] for g in range(self.gpus)]

    def policy_config(self) -> Any:
        """The policy knobs every scheduler process of the experiment plans with."""
        from central.policy import PolicyConfig
        from central.policy.types import Profile

        prof = Profile(self.k_ns, self.c_ns, self.max_batch)
        return PolicyConfig(
            profiles=dict.fromkeys(self.model_names(), prof),
            dispatch_cost_ns=self.dispatch_cost_ns,
            reply_cost_ns=self.reply_cost_ns,
            timer_slack_ns=self.timer_slack_ns,
        )
