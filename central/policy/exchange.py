"""The messages of the multicore split: model shards and one matcher (DESIGN §5).

Theory of operation. The default policy's state falls into two parts that touch each
other only once per batch:

* a **model shard** owns a disjoint set of models: their deadline queues, profile and load
  estimators, candidates, deferral timers and drops. Request metadata goes straight to
  the shard that owns the model and never leaves it;
* the **matcher** owns every worker: the pools (workers serving the same model set), the
  predicted ``free_at`` of each worker, the in-flight batches, and the choice of which
  ready candidate gets which worker.

They exchange these messages, each a frozen slotted dataclass so that the same values can
be passed as method arguments (``ShardedPolicy``, all roles in one process) or encoded
onto a wire between processes:

=================  ================  ==========================================================
message            direction         when
=================  ================  ==========================================================
``Offer``          shard -> matcher  a model's candidate became ready, or its latest start moved
``Withdraw``       shard -> matcher  a ready candidate stopped being ready (sent, dropped...)
``Grant``          matcher -> shard  a worker is the candidate's: dispatch it now
``Booked``         shard -> matcher  answer to a Grant: the batch's expected duration, margin
``PoolState``      matcher -> shards a pool's earliest ``free_at`` or size changed
``Wake``           matcher -> shard  a worker is about to be free: refresh this waiting model
``Finished``       matcher -> shard  a batch of the shard's model ended (refit its profile)
``Orphaned``       matcher -> shard  a model lost its last worker (drop its queue)
=================  ================  ==========================================================

An ``Offer`` carries no requests and no batch size: the matcher orders candidates by
latest start only, and learns the batch's duration from ``Booked``. So the traffic between
the roles is a few messages per batch, never per request. Nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Booked", "Finished", "Grant", "Offer", "Orphaned", "PoolState", "Wake", "Withdraw"]


@dataclass(frozen=True, slots=True)
class Offer:
    """Shard -> matcher: ``model``'s candidate is ready; it must start by ``latest_ns``.

    ``expected_ns``/``margin_ns`` are what the batch would book if granted now: the
    matcher orders by ``latest_ns`` only, but a matcher in another process books them
    at once, before the shard's answer (``Booked``) corrects them."""

    model: str
    version: int  # tells a re-offer from a stale heap entry inside the matcher
    latest_ns: int
    expected_ns: int = 0
    margin_ns: int = 0
    # When the model became dirty (the shard's stamp): shards of one process share the
    # stamps, so their offers merge into the order one process would have made them in.
    stamp: int = 0


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Shard -> matcher: ``model`` has no ready candidate any more."""

    model: str


@dataclass(frozen=True, slots=True)
class Grant:
    """Matcher -> shard: dispatch ``model``'s current candidate to ``worker_id``."""

    model: str
    batch_id: int
    worker_id: int
    earliest_ns: int


@dataclass(frozen=True, slots=True)
class Booked:
    """Shard -> matcher: the granted batch runs ``expected_ns`` (margin ``margin_ns``)."""

    batch_id: int
    expected_ns: int
    margin_ns: int


@dataclass(frozen=True, slots=True)
class PoolState:
    """Matcher -> shards: the pool serving ``models`` now frees up first at ``free_at_ns``.

    ``busy`` says whether that worker still has batches in flight (a start on it is
    planned a margin late); ``size`` is the number of live workers (0: the pool is gone).
    """

    models: tuple[str, ...]
    free_at_ns: int
    busy: bool
    size: int


@dataclass(frozen=True, slots=True)
class Wake:
    """Matcher -> shard: a worker of ``model``'s pools is about to be free."""

    model: str


@dataclass(frozen=True, slots=True)
class Finished:
    """Matcher -> shard: a batch of ``model`` ended; ``ok`` batches refit the profile."""

    model: str
    ok: bool
    batch_size: int
    duration_ns: int
    # How much later than it could have the batch started: after its window opened and
    # its worker was free (a stall of the worker's machine). The margin learns from it
    # exactly as the single-process policy's does (``ProfileEstimator.observe``).
    late_ns: int = 0


@dataclass(frozen=True, slots=True)
class Orphaned:
    """Matcher -> shard: every worker serving ``model`` is gone."""

    model: str
