"""The discrete-event simulator: any ``Policy`` on simulated workers, on virtual time.
Owns the driver and its result; imports the policy, the traces and workers.gpu_model,
never a shell, a socket or the wall clock for decisions.

Theory of operation: ``simulate(policy, trace, cluster, config)`` drives the policy
through the same contract as the live runtime (``handle(event, now)``, ``Tick`` at
``next_wakeup_ns()``, carry out ``Dispatch`` and ``Drop``) with workers that take the
true ``l(b)`` plus seeded noise, and returns a ``SimResult`` of plain numpy columns.
``engine.py`` says how events are ordered and what is checked; ``config.py`` holds the
cluster and the knobs; ``scale.py`` is the 1,000-GPU benchmark. It imports the policy
core and numpy, never I/O.
"""

from bench.sim.config import Cluster, Noise, SimConfig
from bench.sim.engine import (
    InvariantViolation,
    SimulationError,
    policy_config_for,
    simulate,
    simulate_policy,
)
from bench.sim.result import SimResult

__all__ = [
    "Cluster",
    "InvariantViolation",
    "Noise",
    "SimConfig",
    "SimResult",
    "SimulationError",
    "policy_config_for",
    "simulate",
    "simulate_policy",
]
