"""Each role's CPU per request of the split policy (model shards and a matcher), in the
simulator: ``role_costs``."""

from __future__ import annotations

import time
from typing import Any

from bench.capacity.experiment import Setup

__all__ = ["role_costs"]


def role_costs(
    setup: Setup, rate_rps: float, seconds: float, shards: int, *, seed: int = 1
) -> dict[str, Any]:
    """CPU per request of each role of the split policy, in the simulator.

    ``ShardedPolicy`` (K model shards and a matcher, ``central.policy.sharded``) runs the
    setup's cluster on a Poisson trace in virtual time, its arrivals delivered once per
    ``setup.interval_ns`` as the runtime's loop turns deliver them; every call into a shard and into
    the matcher is timed (thread CPU time) and charged to that role. The result is the
    policy work each process of a K-shard scheduler would do, without its socket and
    codec work (which ``hot_path`` measures for the single process): a projection, not a
    live measurement.
    """
    from bench.sim import Cluster, SimConfig, policy_config_for, simulate
    from bench.traces.generators import poisson
    from bench.traces.trace import Trace
    from central.policy.sharded import ShardedPolicy, ShardOptions
    from central.policy.types import Profile

    names = setup.model_names()
    prof = Profile(setup.k_ns, setup.c_ns, setup.max_batch)
    cluster = Cluster(
        dict.fromkeys(names, prof), dict.fromkeys(names, setup.slo_ns), tuple(setup.gpu_models())
    )
    config = SimConfig(dispatch_delay_ns=setup.dispatch_cost_ns, reply_cost_ns=setup.reply_cost_ns, seed=seed)
    policy = ShardedPolicy(
        policy_config_for(cluster, config, timer_slack_ns=setup.timer_slack_ns), ShardOptions(shards)
    )
    spent = [0.0] * (shards + 1)  # per shard, then the matcher
    clock = time.thread_time

    def timed(obj: Any, method: str, slot: int) -> None:
        inner = getattr(obj, method)

        def call(*args: Any) -> Any:
            t0 = clock()
            try:
                return inner(*args)
            finally:
                spent[slot] += clock() - t0

        setattr(obj, method, call)

    for i, shard in enumerate(policy.shards):
        for method in (
            "arrive",
            "advance",
            "grant",
            "pool_state",
            "finished",
            "wake",
            "take_drops",
            "next_wakeup_ns",
        ):
            timed(shard, method, i)
    for method in ("receive", "step", "booked", "done", "joined", "next_wakeup_ns"):
        timed(policy.matcher, method, shards)
    raw = poisson(rate_rps, seconds, seed, model=names)
    # arrivals reach the policy once per loop turn, as in the runtime: quantize to turns
    turns = raw.times_ns // setup.interval_ns * setup.interval_ns
    trace = Trace(turns, raw.model_ids, raw.models, None, raw.duration_ns)
    result = simulate(policy, trace, cluster, config)
    n = len(trace)
    return {
        "shards": shards,
        "rate_rps": rate_rps,
        "requests": n,
        "batches": len(result.batch_id),
        "on_time": float((result.outcome == 0).mean()),
        "shard_us_per_request": [t * 1e6 / n for t in spent[:shards]],
        "matcher_us_per_request": spent[shards] * 1e6 / n,
        "messages_per_batch": sum(policy.messages.values()) / max(1, len(result.batch_id)),
    }
