"""The scheduler process's knobs (``SchedulerConfig``), apart so that every part of the
scheduler's shell can name them; ``central.runtime.scheduler`` re-exports them.
All times are integer nanoseconds (the CLI converts its ms/s flags at the edge)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from central.policy import PolicyConfig

__all__ = ["SchedulerConfig"]


@dataclass(frozen=True)
class SchedulerConfig:
    """Knobs of the scheduler process (the policy has its own ``PolicyConfig``)."""

    address: str = "tcp://127.0.0.1:5550"  # ROUTER bind address
    policy: str = "symphony"
    # > 0: run the default policy split into this many model shards and a matcher
    # (``central.policy.sharded``), all in this process; 0: the policy named above
    inprocess_shards: int = 0
    # >= 2: this process is the matcher of that many model-shard processes
    # (``central.runtime.matcher``, built by ``make_scheduler``); 0: one process
    shard_processes: int = 0
    placement: tuple[tuple[str, int], ...] = ()  # (model, shard) to start with; else CRC-32
    rebalance_interval_ns: int = 2_000_000_000  # how often shard loads are compared; 0: never
    rebalance_ratio: float = 1.5  # move models when the busiest shard exceeds this x mean
    policy_config: PolicyConfig = field(default_factory=PolicyConfig)
    # A baseline policy's own knobs (``make_policy``'s ``options``: ``UncoordinatedConfig``
    # for "uncoordinated"); None: its defaults.
    policy_options: Any = None
    one_way_ns: int = 50_000  # expected frontend -> scheduler delay, taken off budgets
    heartbeat_interval_ns: int = 200_000_000
    # A worker process silent this long is lost (its heartbeats come from its serving
    # loop every heartbeat_interval_ns): declared within this plus one check interval.
    worker_timeout_ns: int = 900_000_000
    liveness_check_ns: int = 100_000_000
    # CURVE keys (``baton keys DIR``): encrypt, authenticate, authorize peers on their
    # key; None: off (then bind to loopback only).
    keys_dir: str | None = None
    spin_ns: int = 1_000_000  # timer spin window where no kernel timer is available
    batch_log: int = 20_000  # recent batch records kept for Gantt charts
    metrics_host: str = "127.0.0.1"  # where GET /metrics listens
    metrics_port: int | None = None  # None: no /metrics endpoint; 0: any free port
    stats_pub: str | None = None  # PUB bind address for [b"stats", json]; None: off
    stats_interval_ns: int = 250_000_000  # how often the PUB socket publishes
    busy_window_ns: int = 10_000_000_000  # window of the busy-ratio gauge
