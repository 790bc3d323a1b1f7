"""The sans-I/O policy core: events in, actions out (DESIGN §3). Owns every scheduling
rule; imports only the standard library and ``central.protocol.conventions``.

Theory of operation: ``make_policy(name, PolicyConfig(...))`` builds a policy; a driver
calls ``handle(event, now_ns)`` and ``next_wakeup_ns()``; ``snapshot()`` gives a
``PolicySnapshot`` (``stats.py``). This package imports only the
standard library and never reads a clock, sleeps, does I/O or draws randomness.
"""

from central.policy.base import Policy, make_policy, policy_names
from central.policy.bound import Bound, analytic_bound, carrying_batch, shed_floor, target_batch
from central.policy.config import PolicyConfig
from central.policy.profile import LoadEstimator, ProfileEstimator
from central.policy.queues import DeadlineQueue
from central.policy.scheduler import SymphonyPolicy
from central.policy.stats import (
    ModelStats,
    NexusPlan,
    PolicySnapshot,
    ShardModelStats,
    ShardStats,
    WorkerStats,
    snapshot_dict,
)
from central.policy.types import (
    Action,
    BatchDone,
    BatchStatus,
    Dispatch,
    Drop,
    DropReason,
    Event,
    Profile,
    Request,
    RequestsArrived,
    Tick,
    WorkerJoined,
    WorkerLost,
)

__all__ = [
    "Action",
    "BatchDone",
    "BatchStatus",
    "Bound",
    "DeadlineQueue",
    "Dispatch",
    "Drop",
    "DropReason",
    "Event",
    "LoadEstimator",
    "ModelStats",
    "NexusPlan",
    "Policy",
    "PolicyConfig",
    "PolicySnapshot",
    "Profile",
    "ProfileEstimator",
    "Request",
    "RequestsArrived",
    "ShardModelStats",
    "ShardStats",
    "SymphonyPolicy",
    "Tick",
    "WorkerJoined",
    "WorkerLost",
    "WorkerStats",
    "analytic_bound",
    "make_policy",
    "policy_names",
    "shed_floor",
    "snapshot_dict",
    "target_batch",
    "carrying_batch",
]
