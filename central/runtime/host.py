"""What the one-process scheduler and the split scheduler's matcher share around their
parts: building them, driving the shell (``attach``, ``receive``, ``tick``), the
liveness loop and the policy feed.

Theory of operation: a scheduler process is a ``Shell`` (socket, loop turn, timer,
dispatch table) plus ``Registry``, ``Dispatcher``, ``Accounting`` and ``Control`` around
a policy. ``SchedulerHost.__init__`` builds those parts the same way for both kinds; a
subclass supplies the policy, its dispatch table (``table()``), what happens at the end
of a loop turn (``_end_turn``), what to do with a lost worker's batches (``orphaned``)
and its stats. Nothing here overrides another class's private methods: the two
schedulers are siblings, each composed of the same parts.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import zmq

from central.plumbing.clock import ClockLike, LatenessLog, as_clock
from central.policy.base import Policy
from central.policy.types import Dispatch, Event, Request, Tick

from .accounting import Accounting
from .config import SchedulerConfig
from .control import Control
from .dispatch import Dispatcher
from .registry import Registry, WorkerProc
from .shell import Handler, Shell

__all__ = ["SchedulerHost"]


class SchedulerHost(ABC):
    """The parts of a scheduler process and the code that drives them."""

    policy: Any  # a ``Policy``, or the split's ``MatcherPolicy``

    def __init__(
        self,
        config: SchedulerConfig,
        policy: Policy | Any,
        *,
        clock: ClockLike = time.monotonic_ns,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.config = config
        # reads and sleeps (liveness, publishing, precise timers); ``_clock`` is its
        # plain reader, for the hot paths
        self._time = as_clock(clock)
        self._clock = self._time.reader
        self.policy = policy
        self.accounting = Accounting(config.batch_log, self._clock())
        self.registry = Registry()
        self.shell = Shell(
            config, self._time, context, self.accounting, on_timer=self.tick, end_turn=self._end_turn
        )
        self.dispatcher = Dispatcher(self.shell.send, self.registry, self.accounting)
        self.control = Control(config, self, self.shell, self.registry, self.accounting, self.dispatcher)
        self.counters = self.accounting.counters  # the same dict, for readers
        self.batches = self.accounting.batches
        self.lateness: LatenessLog = self.shell.lateness

    def table(self) -> dict[type, Handler]:
        """The dispatch table: message type -> handler (the shared ``Control`` one)."""
        return self.control.table()

    # ------------------------------------------------------------------ driving

    def attach(self, sock: Any, timer: Any) -> None:
        """Drive this scheduler without a socket or loop: ``sock`` needs only
        ``send_multipart(frames, flags)``, ``timer`` only ``arm(t_ns | None)``; feed it
        with ``receive`` and ``tick``. For in-process drivers (the capacity benchmark's
        hot-path replay); ``serve`` does the same with real ones."""
        self.shell.attach(sock, timer)

    def receive(self, batch: Sequence[Sequence[bytes]]) -> None:
        """One loop turn's messages, each ``[identity, *frames]``."""
        self.shell.receive(batch)

    def tick(self) -> None:
        """The timer armed through ``timer.arm`` fired."""
        self.feed(Tick(), self._clock())
        self.after_turn()

    @property
    def bound_address(self) -> str:
        return self.shell.bound_address

    def feed(self, event: Event, now: int) -> None:
        """Give the policy an event and carry out what it decides."""
        carry_out = self.dispatcher.carry_out
        for action in self.policy.handle(event, now):
            carry_out(action, now)

    def after_turn(self) -> None:
        """The timer at the policy's next wake-up."""
        self.shell.arm(self.policy.next_wakeup_ns())

    @abstractmethod
    def _end_turn(self, now: int) -> None:
        """After a loop turn's messages (the subclass feeds what the turn gathered)."""
        ...

    @abstractmethod
    def orphaned(
        self, proc: WorkerProc, batches: list[tuple[int, Dispatch, list[Request]]], now: int
    ) -> None:
        """``proc`` is gone; these were its batches in flight (``Control`` calls it)."""
        ...

    @abstractmethod
    def stats(self, with_batches: bool = False) -> dict[str, Any]:
        """The JSON-able snapshot a ``StatsQuery`` gets."""
        ...

    # ---------------------------------------------------------------- liveness

    async def liveness_loop(self) -> None:
        interval = self.config.liveness_check_ns / 1e9
        while True:
            await self._time.sleep(interval)
            self.check_liveness(self._clock())

    def check_liveness(self, now: int) -> list[WorkerProc]:
        """One liveness check at ``now``: workers silent longer than
        ``worker_timeout_ns`` (``is_silent``) are lost; returns them."""
        lost = self.control.check_liveness(now)
        if lost:
            self.after_turn()
        return lost
