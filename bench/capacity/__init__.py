"""Scheduler capacity: the highest request rate the scheduler alone sustains on time.
Owns the capacity rig (ramp, hot path, role costs); may import any of Baton's packages.

Theory of operation. The scheduler runs as in production (``central.runtime``, one
process per role, its own ROUTER on loopback), but nothing else is real:

* **feeder** processes register as frontends (``RegisterFrontend``) and send ``Requests``
  metadata for an open-loop Poisson arrival process, coalesced into one message every
  ``--interval-us`` (a frontend's loop turn); each request's budget is the SLO less the
  time it has already waited in the feeder. They consume ``Route`` and ``DropRequests``
  (counting answered requests and drops by reason) and, every 5 ms, time a
  ``Heartbeat`` round trip through the scheduler's socket (the *input lag* probe: it
  queues behind every message the scheduler has not read yet). No payload exists.
* **emulated worker** processes register many GPUs each (``RegisterWorker``) and answer
  every ``Execute`` from the plan: the batch runs from ``max(earliest, receipt)`` for
  exactly ``expected_ns`` and ``Done`` is sent at its end; an Execute received after its
  ``latest`` is refused (``TOO_LATE``) at once. Every process shares the host's
  CLOCK_MONOTONIC, so worker and scheduler clocks agree without an offset.

**Decision lag** (per batch, measured by the worker that receives it):
``lag = t_received(Execute) - (earliest_ns - D)``, with ``D`` the policy's dispatch cost.
The policy grants a worker only when ``free_at <= now + D``, so it always sets
``earliest = now + D``: ``earliest - D`` is the instant the policy *planned* the decision
at (the ``now_ns`` it was handed). The lag is therefore everything between that instant
and the Execute being in the worker's hands: the rest of the scheduler's turn (its clock
is read once per turn, so a long turn makes every decision in it late), encoding and
sending, and the worker's own read. It does not include the lateness of the scheduler's
timer (a deferred batch fires late), which the scheduler reports itself
(``timer_lateness_us``, shown beside it), nor the time a message waits unread in the
scheduler's socket, which the input-lag probe shows.

A rate is **sustained** when, over the step: decision lag p99 <= ``--max-lag-ms`` (1 ms),
input-lag p99 <= ``--max-input-lag-ms`` (5 ms: a round trip through two busy processes on a
small machine is noisy, and a scheduler that falls behind grows its backlog without bound,
so the exact threshold barely moves the rate found), no drop the policy did not choose (worker refusals, requests
never answered within the SLO plus a drain period, ``UNKNOWN_MODEL``/``NO_WORKER``), and
the feeders kept to their schedule (at most 5% of their sends more than one period late;
else the load generator, not the scheduler, was the limit and the step is marked
``feeder-bound``). Policy drops
(``DEADLINE``, ``SHED``) are reported, not judged: they are the policy's choices. The
rate starts at ``--start-rps`` and is multiplied by ``--factor`` until a step fails; the
highest sustained rate is reported per shard count, with the scheduler's CPU time per
request (from ``/proc``, the hot path's cost).

Two more modes isolate the cost: ``--hot-path RPS`` drives the same ``Scheduler`` object
in-process on virtual time without sockets and counts only its own CPU time per request
(``hot_path``); ``--roles RPS --shards K...`` runs the split policy (model shards and a
matcher, ``central.policy.sharded``) in the simulator and charges each role its CPU time
(``role_costs``). docs/capacity.md has the figures and what they mean.

Run: ``python -m bench.capacity --help``; ``--quick`` finishes in well under a minute.

The package, by tool: ``experiment`` (``Setup``: the synthetic cluster and load shape),
``emulated`` (how the rig's emulated GPUs answer an ``Execute``: ``workers.gpu_model``'s
rule on the plan), ``processes`` (the live ramp's child processes: scheduler, emulated
workers, feeders), ``ramp`` (the live ramp: ``run_capacity``), ``hot_path`` (``hot_path``,
``split_hot_path``), ``roles`` (``role_costs``) and ``cli`` (``main``, the command line).
"""

from bench.capacity.cli import main
from bench.capacity.experiment import Setup
from bench.capacity.hot_path import hot_path, split_hot_path
from bench.capacity.ramp import run_capacity
from bench.capacity.roles import role_costs

__all__ = ["Setup", "hot_path", "main", "role_costs", "run_capacity", "split_hot_path"]
