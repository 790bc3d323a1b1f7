"""The messages every scheduler takes from workers and frontends, and worker liveness.

A part of the scheduler's shell (``Scheduler`` and ``SplitScheduler`` both hold one):
``table()`` is the dispatch table's shared half, ``{message type: handler}`` for
``Requests``, ``Done``, ``Heartbeat``, ``RegisterWorker``, ``Leaving``,
``RegisterFrontend`` and ``StatsQuery``; a split scheduler adds its shard messages.
What a policy must hear goes to the ``Core`` (the scheduler that holds this part):
worker events through ``feed``, a lost worker's batches in flight through ``orphaned``;
request metadata is collected per turn (``take_turn``), for the core to feed or pass on.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from central.policy.types import Dispatch, Event, Request, WorkerJoined, WorkerLost
from central.protocol import (
    Done,
    FrontendRegistered,
    Heartbeat,
    HeartbeatAck,
    Leaving,
    RegisterFrontend,
    RegisterWorker,
    Requests,
    StatsQuery,
    StatsReply,
    WorkerRegistered,
)
from central.protocol.conventions import FRONTEND_SHIFT, wants_batch_log

from .accounting import Accounting
from .config import SchedulerConfig
from .dispatch import Dispatcher
from .registry import Registry, WorkerProc
from .shell import Handler, Shell
from .translate import done_to_event, gpu_profiles, requests_to_event

__all__ = ["Control", "Core"]

log = logging.getLogger("baton.scheduler")


class Core(Protocol):
    """What ``Control`` needs of the scheduler that holds it."""

    def feed(self, event: Event, now: int) -> None:
        """Give the policy an event and carry out its actions."""

    def orphaned(
        self, proc: WorkerProc, batches: list[tuple[int, Dispatch, list[Request]]], now: int
    ) -> None:
        """``proc`` is gone; these were its batches in flight (batch, dispatch, requests)."""

    def stats(self, with_batches: bool = False) -> dict[str, Any]:
        """The JSON-able snapshot a ``StatsQuery`` gets."""


class Control:
    """Handlers of the worker and frontend messages, and the liveness check."""

    def __init__(
        self,
        config: SchedulerConfig,
        core: Core,
        shell: Shell,
        registry: Registry,
        accounting: Accounting,
        dispatcher: Dispatcher,
    ) -> None:
        self.config = config
        self.core = core
        self.shell = shell
        self.registry = registry
        self.accounting = accounting
        self.dispatcher = dispatcher
        self._turn: list[Request] = []  # this turn's arrivals, fed at its end

    def table(self) -> dict[type, Handler]:
        return {
            Requests: self.on_requests,
            Done: self.on_done,
            Heartbeat: self.on_heartbeat,
            RegisterWorker: self.on_register_worker,
            Leaving: self.on_leaving,
            RegisterFrontend: self.on_register_frontend,
            StatsQuery: self.on_stats_query,
        }

    def take_turn(self) -> list[Request]:
        """The request metadata that arrived this turn (and forget it here)."""
        turn, self._turn = self._turn, []
        return turn

    # ----------------------------------------------------------------- handlers

    def on_requests(self, identity: bytes, msg: Requests, nbytes: int, now: int) -> None:
        counters = self.accounting.counters
        counters["request_messages"] += 1
        counters["request_bytes_in"] += nbytes
        counters["requests_in"] += len(msg.request_ids)
        if not len(msg.request_ids) == len(msg.models) == len(msg.budgets_ns) == len(msg.sizes):
            self.shell.refuse(identity, "Requests: ragged fields")
            return
        registry = self.registry
        index = registry.frontend_index.get(identity)
        if index is None:
            self.shell.refuse(identity, "Requests from an unregistered frontend")
            return
        ids = msg.request_ids
        # ids of one frontend form one interval of values: its ends are enough
        if ids and not (min(ids) >> FRONTEND_SHIFT == index == max(ids) >> FRONTEND_SHIFT):
            self.shell.refuse(identity, "request ids must carry your frontend index")
            return
        requests = requests_to_event(msg, now, self.config.one_way_ns).requests
        registry.frontend_seen[identity] = now
        self.accounting.model_requests.update(msg.models)
        self.dispatcher.arrivals.update(zip(ids, requests))
        self._turn.extend(requests)

    def on_done(self, identity: bytes, msg: Done, nbytes: int, now: int) -> None:
        proc = self.registry.procs.get(identity)
        if proc is None or not 0 <= msg.gpu < len(proc.gpu_ids):
            self.shell.refuse(identity, "Done from unknown worker")
            return
        proc.last_seen_ns = now
        worker_id = proc.gpu_ids[msg.gpu]
        entry = self.dispatcher.dispatched.get(msg.batch_id)
        if entry is None or entry[0].worker_id != worker_id:
            self.shell.refuse(identity, f"Done for batch {msg.batch_id}: not yours")
            return
        self.accounting.done(msg, worker_id, self.dispatcher.finished(msg.batch_id))
        self.core.feed(done_to_event(msg, worker_id), now)

    def on_heartbeat(self, identity: bytes, msg: Heartbeat, nbytes: int, now: int) -> None:
        known = self.registry.heard(identity, now)
        # registered=0 tells a sender this scheduler does not know it (a restart, or
        # it was declared lost): it registers again. Unknown senders leave no state.
        self.shell.send(identity, HeartbeatAck(msg.sent_ns, self.shell.clock.reader(), int(known)))

    def on_register_worker(self, identity: bytes, msg: RegisterWorker, nbytes: int, now: int) -> None:
        registry, send = self.registry, self.shell.send
        interval = self.config.heartbeat_interval_ns
        same = registry.procs.get(identity)
        if same is not None and same.register == msg:
            # The same registration again (a retry that crossed our answer): idempotent.
            same.last_seen_ns = now
            send(identity, WorkerRegistered(same.process_id, same.gpu_ids, interval))
            return
        old = registry.remove_worker(identity)
        if old is not None:  # re-registration: the old GPUs are gone
            self.lose(old, now)
        proc = registry.add_worker(identity, msg, now)
        for gid, models, spec in zip(proc.gpu_ids, proc.models, msg.gpus):
            self.core.feed(WorkerJoined(gid, models, gpu_profiles(spec)), now)
        send(identity, WorkerRegistered(proc.process_id, proc.gpu_ids, interval))
        self.broadcast_directory()
        log.info("worker %s registered: gpus %s", msg.name, proc.gpu_ids)

    def on_leaving(self, identity: bytes, msg: Leaving, nbytes: int, now: int) -> None:
        proc = self.registry.procs.get(identity)
        if proc is None:
            self.shell.refuse(identity, "Leaving from an unknown worker")
        elif not proc.leaving:
            # Plan nothing more on its GPUs; its batches in flight finish and report
            # Done as usual. It is forgotten once it falls silent (liveness check).
            proc.leaving = True
            for gid in proc.gpu_ids:
                self.core.feed(WorkerLost(gid), now)
            log.info("worker %s is draining", proc.name)

    def on_register_frontend(self, identity: bytes, msg: RegisterFrontend, nbytes: int, now: int) -> None:
        registry = self.registry
        index = registry.add_frontend(identity, now)
        self.shell.send(identity, FrontendRegistered(index, tuple(sorted(registry.models))))
        self.shell.send(identity, registry.directory())
        log.info("frontend %s registered as index %d", msg.name, index)

    def on_stats_query(self, identity: bytes, msg: StatsQuery, nbytes: int, now: int) -> None:
        stats = self.core.stats(wants_batch_log(msg.tag))
        self.shell.send(identity, StatsReply(msg.tag, json.dumps(stats)))

    # ---------------------------------------------------------------- liveness

    def check_liveness(self, now: int) -> list[WorkerProc]:
        """Workers silent longer than ``worker_timeout_ns`` (``is_silent``) are lost;
        returns them (the caller ends the turn)."""
        registry = self.registry
        lost = registry.silent(now, self.config.worker_timeout_ns)
        if lost:
            for proc in lost:
                log.warning("worker %s silent for %.2f s: lost", proc.name, (now - proc.last_seen_ns) / 1e9)
                self.accounting.bump("workers_lost")
                registry.remove_worker(proc.identity)
                self.lose(proc, now)
            registry.recount_models()
            self.broadcast_directory()
        return lost

    def lose(self, proc: WorkerProc, now: int) -> None:
        """``proc``'s GPUs are gone: the policy hears it (unless it was draining: it
        heard then), and the core gets its batches in flight."""
        gpu = self.registry.gpu
        for gid in proc.gpu_ids:  # one by one: the policy may still plan on the others
            gpu.pop(gid, None)
            if not proc.leaving:  # a draining worker's GPUs were taken off already
                self.core.feed(WorkerLost(gid), now)
        self.core.orphaned(proc, self.dispatcher.orphans(set(proc.gpu_ids)), now)

    def broadcast_directory(self) -> None:
        directory = self.registry.directory()
        for identity in self.registry.frontends.values():
            self.shell.send(identity, directory)
