"""Policy actions to messages: ``Dispatch`` -> ``Execute`` + ``Route``s, ``Drop`` ->
``DropRequests``; and which batches are in flight with which requests.

A part of the scheduler's shell (``Scheduler`` and ``SplitScheduler`` both hold one). It
keeps each queued request's metadata from arrival to dispatch or drop (``arrivals``:
the queue-time histogram and the per-model drop counts need it), each dispatched batch
until its ``Done`` (``dispatched``) and the requests of each batch in flight
(``inflight``: given back to the policy if its worker is lost).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from central.policy.types import Action, Dispatch, Drop, Request

from .accounting import Accounting
from .registry import Registry
from .translate import dispatch_to_messages, drop_to_messages

__all__ = ["Dispatcher"]

Send = Callable[[bytes, Any], None]


class Dispatcher:
    """Carry out a policy's actions through ``send(identity, message)``."""

    def __init__(self, send: Send, registry: Registry, accounting: Accounting) -> None:
        self._send = send
        self._registry = registry
        self._accounting = accounting
        self.arrivals: dict[int, Request] = {}  # queued request id -> its metadata
        self.dispatched: dict[int, tuple[Dispatch, int]] = {}  # batch -> (action, sent_ns)
        self.inflight: dict[int, list[Request]] = {}  # batch -> its requests

    def carry_out(self, action: Action, now: int) -> None:
        if isinstance(action, Dispatch):
            self.execute(action, now)
        elif isinstance(action, Drop):
            self.drop(action)

    def execute(self, action: Dispatch, now: int) -> None:
        """``Execute`` to the worker, ``Route`` to each frontend holding a payload."""
        registry, send = self._registry, self._send
        proc, index = registry.gpu[action.worker_id]
        execute, routes = dispatch_to_messages(action, index, proc.process_id)
        send(proc.identity, execute)
        for fe, route in routes.items():
            identity = registry.frontends.get(fe)
            if identity is not None:
                send(identity, route)
        self.dispatched[action.batch_id] = (action, now)
        observe = self._accounting.dispatched(action).observe
        pop = self.arrivals.pop
        inflight = self.inflight[action.batch_id] = []
        for rid in action.request_ids:
            request = pop(rid, None)
            if request is not None:
                observe(max(0, now - request.arrival_ns) / 1e9)
                inflight.append(request)  # given back to the policy if its worker is lost

    def drop(self, action: Drop) -> None:
        """``DropRequests`` to each frontend of the dropped requests."""
        pop = self.arrivals.pop
        models = []
        for rid in action.request_ids:
            request = pop(rid, None)
            models.append(request.model if request is not None else "")
        self._accounting.dropped(action.reason.name, models)
        frontends = self._registry.frontends
        for fe, drop in drop_to_messages(action).items():
            identity = frontends.get(fe)
            if identity is not None:
                self._send(identity, drop)

    def finished(self, batch_id: int) -> tuple[Dispatch, int] | None:
        """A batch's ``Done`` came: forget it; its dispatch and send time if it was in
        flight."""
        self.inflight.pop(batch_id, None)
        return self.dispatched.pop(batch_id, None)

    def orphans(self, gids: set[int]) -> list[tuple[int, Dispatch, list[Request]]]:
        """Forget the batches in flight on the workers ``gids``: (batch, dispatch, its
        requests) for each, in dispatch order."""
        out = []
        for bid, (action, _) in list(self.dispatched.items()):
            if action.worker_id in gids:
                del self.dispatched[bid]
                out.append((bid, action, self.inflight.pop(bid, [])))
        return out
