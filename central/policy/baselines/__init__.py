"""Baseline policies behind the same sans-I/O interface as the default (DESIGN §3).
Owns the uncoordinated, eager and Nexus-style policies; imports only the policy package
and the standard library.

Theory of operation: each baseline is a complete policy (``handle``, ``next_wakeup_ns``,
``snapshot``) built on ``common.BaselinePolicy``, which shares the profile refit, the
worker timelines and the event plumbing with the default policy's rules, so that a
side-by-side run differs only in how batches are formed, routed and timed:

* ``uncoordinated`` (``UncoordinatedPolicy``): per-worker queues, max-batch-or-timeout,
  round-robin or least-loaded routing: Triton's dynamic batcher, Ray Serve's batching;
* ``eager`` (``EagerPolicy``): one queue per model, work-conserving, most urgent first,
  largest batch that meets the head's deadline: Clockwork-like;
* ``nexus`` (``NexusPolicy``): squishy bin packing with duty cycles (``packing.py``).

They import only the standard library and ``central.policy``; none reads a clock.
"""

from central.policy.baselines.eager import EagerPolicy
from central.policy.baselines.nexus import NexusConfig, NexusPolicy
from central.policy.baselines.uncoordinated import UncoordinatedConfig, UncoordinatedPolicy

__all__ = [
    "EagerPolicy",
    "NexusConfig",
    "NexusPolicy",
    "UncoordinatedConfig",
    "UncoordinatedPolicy",
]
