"""What a policy's ``snapshot()`` returns: typed, frozen stats shared by every policy.

Theory of operation. Every policy (``SymphonyPolicy``, ``ShardedPolicy`` and the
baselines) describes its state in one ``PolicySnapshot``: per model a ``ModelStats``
(queue length, profile ``k``/``c``/``max_batch``, margin, arrival rate, typical budget),
per worker a ``WorkerStats`` (its timeline), and the few things only one policy has as
typed optional fields, ``None`` where a policy has no such thing: the default policy's
candidate (``target_batch``, ``candidate_batch``, ``ready``, ``waiting``), the split's
``shards`` and ``moves``, Eager's ``pools``, Nexus's ``plan`` and per-model/per-worker
plan, Uncoordinated's ``routing`` and batch limits. In-process readers (tests, the
simulator) use the attributes.

``as_dict()`` turns a snapshot into plain data (str/int/float/bool/None, lists, dicts;
worker ids stay int keys, as ``json.dumps`` writes them as strings), the shape the
scheduler's stats, the dashboard, ``baton top`` and docs/metrics.md know: the always-present
keys in a fixed order, then each optional field that is not ``None``, so every policy
gives exactly the keys it gave when snapshots were hand-built dicts. ``snapshot_dict``
does the same for a driver that may also hold a runtime shell's own dict snapshot.

The records are frozen; the mappings inside them are the policy's fresh dicts, handed
over and never touched again. Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ModelStats",
    "NexusPlan",
    "PolicySnapshot",
    "ShardModelStats",
    "ShardStats",
    "WorkerStats",
    "snapshot_dict",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelStats:
    """One model: queue, profile, margin, load; optional fields are one policy's own."""

    queue: int  # requests of it the policy holds
    workers: int  # live workers serving it
    k_ns: int | None  # profile slope; None: no profile yet
    c_ns: int | None  # profile intercept
    max_batch: int | None
    margin_ns: int  # the safety margin M (capped); 0 without a profile
    rate_rps: float  # measured arrival rate, requests per second
    budget_ns: int | None  # typical deadline - arrival; None before the first arrival
    # the default policy (symphony; the split has candidate_batch and ready only)
    target_batch: int | None = None
    candidate_batch: int | None = None
    ready: bool | None = None
    waiting: bool | None = None
    # nexus
    planned: bool | None = None  # considered by the last plan
    gpus: int | None = None  # workers its plan shares it over
    # uncoordinated
    max_batch_used: int | None = None
    max_queue_delay_ns: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data: the always-present keys, then the optional ones that are set."""
        out: dict[str, Any] = {
            "queue": self.queue,
            "workers": self.workers,
            "k_ns": self.k_ns,
            "c_ns": self.c_ns,
            "max_batch": self.max_batch,
            "margin_ns": self.margin_ns,
            "rate_rps": self.rate_rps,
            "budget_ns": self.budget_ns,
        }
        for name in _MODEL_OPTIONAL:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


_MODEL_OPTIONAL = (
    "target_batch",
    "candidate_batch",
    "ready",
    "waiting",
    "planned",
    "gpus",
    "max_batch_used",
    "max_queue_delay_ns",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerStats:
    """One worker's timeline; optional fields are one policy's own."""

    alive: bool
    models: tuple[str, ...]  # sorted
    free_at_ns: int  # predicted end of its last dispatched batch
    busy: bool | None = None  # alive and free_at > now; None: not said (the split)
    inflight: int  # batches dispatched to it and not reported yet
    # nexus
    duty_ns: int | None = None  # its cycle; 0: no plan for it
    slots: tuple[tuple[str, int], ...] | None = None  # (model, batch) per cycle
    # nexus and uncoordinated
    queued: int | None = None  # requests waiting in its own queue

    def as_dict(self) -> dict[str, Any]:
        """Plain data: the always-present keys, then the optional ones that are set."""
        out: dict[str, Any] = {
            "alive": self.alive,
            "models": list(self.models),
            "free_at_ns": self.free_at_ns,
        }
        if self.busy is not None:
            out["busy"] = self.busy
        out["inflight"] = self.inflight
        if self.duty_ns is not None:
            out["duty_ns"] = self.duty_ns
        if self.slots is not None:
            out["slots"] = [[name, batch] for name, batch in self.slots]
        if self.queued is not None:
            out["queued"] = self.queued
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardModelStats:
    """One model as its shard of the split sees it."""

    queue: int
    ready: bool
    batch: int  # the candidate's batch size

    def as_dict(self) -> dict[str, Any]:
        return {"queue": self.queue, "ready": self.ready, "batch": self.batch}


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardStats:
    """One model shard of the split: its models."""

    models: Mapping[str, ShardModelStats]

    def as_dict(self) -> dict[str, Any]:
        return {"models": {name: m.as_dict() for name, m in self.models.items()}}


@dataclass(frozen=True, slots=True, kw_only=True)
class NexusPlan:
    """Nexus's plan: how often it was made, its rate headroom, when it is made again."""

    replans: int
    headroom: float
    replan_at_ns: int | None  # None: never planned

    def as_dict(self) -> dict[str, Any]:
        return {"replans": self.replans, "headroom": self.headroom, "replan_at_ns": self.replan_at_ns}


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicySnapshot:
    """A policy's state for stats (see the module docstring)."""

    now_ns: int | None  # the last handle's now; None before the first event
    models: Mapping[str, ModelStats]
    workers: Mapping[int, WorkerStats]
    inflight_batches: int
    next_wakeup_ns: int | None
    # the split (ShardedPolicy)
    shards: tuple[ShardStats, ...] | None = None
    moves: int | None = None  # models handed to another shard
    # eager
    pools: int | None = None  # non-empty pools
    # nexus
    plan: NexusPlan | None = None
    # uncoordinated
    routing: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data, JSON-able: what the scheduler's stats carry under ``policy``."""
        out: dict[str, Any] = {
            "now_ns": self.now_ns,
            "models": {name: m.as_dict() for name, m in self.models.items()},
        }
        if self.shards is not None:
            out["shards"] = [s.as_dict() for s in self.shards]
        out["workers"] = {wid: w.as_dict() for wid, w in self.workers.items()}
        out["inflight_batches"] = self.inflight_batches
        if self.moves is not None:
            out["moves"] = self.moves
        out["next_wakeup_ns"] = self.next_wakeup_ns
        if self.pools is not None:
            out["pools"] = self.pools
        if self.plan is not None:
            out["plan"] = self.plan.as_dict()
        if self.routing is not None:
            out["routing"] = self.routing
        return out


def snapshot_dict(snapshot: PolicySnapshot | Mapping[str, Any]) -> dict[str, Any]:
    """Plain data of ``snapshot``: ``as_dict()`` of a ``PolicySnapshot``; a mapping (a
    runtime shell's own snapshot, already plain) is returned as a dict, unchanged."""
    if isinstance(snapshot, PolicySnapshot):
        return snapshot.as_dict()
    return dict(snapshot)
