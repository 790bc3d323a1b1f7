"""The scheduler process: one ROUTER, one policy, one precise timer. Metadata only.

Theory of operation: frontends and workers connect DEALER sockets to the scheduler's
ROUTER. ``Scheduler`` is composed of small parts, each in its own module:

* ``Shell`` (``shell``): the socket, the loop turn, the timer, the stats PUB and
  ``/metrics``; each turn it decodes every queued message and calls the handler its
  dispatch table names for the message's type;
* ``Control`` (``control``): the table's handlers for what workers and frontends send
  (``Requests``, ``Done``, ``Heartbeat``, ``RegisterWorker``, ``Leaving``,
  ``RegisterFrontend``, ``StatsQuery``) and the liveness check;
* ``Registry`` (``registry``): worker processes, GPUs, frontends, ids, last heard;
* ``Dispatcher`` (``dispatch``): the policy's actions as messages (``Execute`` to the
  worker and ``Route`` to the frontends of a ``Dispatch``, ``DropRequests`` for a
  ``Drop``), the batches in flight;
* ``Accounting`` (``accounting``): counters, the batch log (``BatchRecord``s), metrics.

``Scheduler`` itself is the ``Core`` that ``Control`` reports to: it feeds the policy
(worker events at once; every ``Requests`` message of one turn, from every frontend, as
a single ``RequestsArrived`` after the turn's other messages, so a model's candidate is
recomputed once per turn rather than once per message), carries out the returned
actions, then arms the timer at ``next_wakeup_ns``; when it fires, the policy gets a
``Tick``. Per request the hot path allocates only the policy's ``Request`` (the metrics
keep that object rather than a tuple of their own). Payload bytes never come here: the
frontends ship them to workers directly; ``bytes_in`` in the stats lets tests prove it.
The split scheduler (``central.runtime.matcher.SplitScheduler``) composes the same parts
with another core and a table that adds the shard messages.

Liveness: workers and frontends send heartbeats; a worker silent for
``worker_timeout_ns`` is reported to the policy as lost (its GPUs get no more batches),
and the requests of its batches in flight are given back to the policy.

Observability (docs/metrics.md): ``metric_families`` turns the counters into Prometheus
families for the optional ``/metrics`` endpoint, and an optional PUB socket publishes
``stats()`` plus the batches finished since the last publish every ``stats_interval_ns``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import zmq

from central.plumbing.clock import ClockLike
from central.plumbing.metrics import Family, render
from central.policy import make_policy
from central.policy.base import Policy
from central.policy.sharded import ShardedPolicy, ShardOptions
from central.policy.stats import snapshot_dict
from central.policy.types import Dispatch, Request, RequestsArrived

from .accounting import Accounting, percentiles_us
from .config import SchedulerConfig
from .host import SchedulerHost
from .registry import Registry, WorkerProc, is_silent
from .shell import Shell

__all__ = ["SchedulerConfig", "Scheduler", "WorkerProc", "is_silent", "scheduler_stats"]

log = logging.getLogger("baton.scheduler")


class Scheduler(SchedulerHost):
    """Serve until ``stop`` is set; see the module comment for the parts."""

    def __init__(
        self,
        config: SchedulerConfig,
        *,
        clock: ClockLike = time.monotonic_ns,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        policy: Policy = (
            ShardedPolicy(config.policy_config, ShardOptions(config.inprocess_shards))
            if config.inprocess_shards
            else make_policy(config.policy, config.policy_config, options=config.policy_options)
        )
        super().__init__(config, policy, clock=clock, context=context)
        self.shell.table = self.table()

    async def serve(self, stop: asyncio.Event) -> None:
        """Bind, serve until ``stop`` is set, then close every socket."""
        await self.shell.serve(stop, tasks=[self.liveness_loop], stats=self.stats, render=self.render_metrics)

    def orphaned(
        self, proc: WorkerProc, batches: list[tuple[int, Dispatch, list[Request]]], now: int
    ) -> None:
        """A lost worker's batches in flight: their requests go back to the policy with
        their original deadlines. It re-dispatches those that can still make it (the
        frontend ships the payload again, and takes the answer only from the new
        worker: the lost one is fenced) and drops the rest early."""
        again = [r for _, _, requests in batches for r in requests]
        if again:
            self.accounting.bump("redispatched", len(again))
            self.dispatcher.arrivals.update((r.request_id, r) for r in again)
            self.feed(RequestsArrived(tuple(again)), now)
            log.warning(
                "worker %s lost: %d requests of %d in-flight batches given back",
                proc.name,
                len(again),
                len(batches),
            )

    def _end_turn(self, now: int) -> None:
        turn = self.control.take_turn()
        if turn:
            self.feed(RequestsArrived(tuple(turn)), now)
        self.after_turn()

    # ------------------------------------------------------------------ stats

    def stats(self, with_batches: bool = False) -> dict[str, Any]:
        """A JSON-able snapshot: counters, drops, batch sizes, policy state, lateness."""
        return scheduler_stats(
            self.accounting, self.registry, self.shell, snapshot_dict(self.policy.snapshot()), with_batches
        )

    def recent_batches(self, count: int) -> list[list[Any]]:
        """The last ``count`` batch records (fewer if the log holds fewer), oldest first."""
        return self.accounting.recent_batches(count)

    def metric_families(self) -> list[Family]:
        """The scheduler's Prometheus families (docs/metrics.md lists each)."""
        return self.accounting.metric_families(
            self._clock(),
            self.registry,
            snapshot_dict(self.policy.snapshot()),
            self.lateness,
            self.config.busy_window_ns,
        )

    def render_metrics(self) -> str:
        """The Prometheus text (format 0.0.4) that ``GET /metrics`` returns."""
        return render(self.metric_families())


def scheduler_stats(
    accounting: Accounting, registry: Registry, shell: Shell, policy: dict[str, Any], with_batches: bool
) -> dict[str, Any]:
    """The stats snapshot of a scheduler's parts (docs/protocol.md, StatsReply), with the
    policy's snapshot ``policy`` as plain data."""
    out = accounting.snapshot(shell.clock.reader())
    out["timer_lateness_us"] = percentiles_us(shell.lateness)
    out["workers"] = {
        str(gid): {"process": proc.name, "gpu": index} for gid, (proc, index) in registry.gpu.items()
    }
    out["frontends"] = len(registry.frontends)
    out["policy"] = policy
    if with_batches:
        out["batches"] = accounting.batch_log()
    return out
