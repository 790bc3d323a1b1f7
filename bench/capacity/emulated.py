"""How the capacity rig's emulated GPUs answer an ``Execute``: from its plan.

A batch runs for exactly its plan's ``expected_ns`` from ``max(earliest, receipt)``; one
whose start would be past ``latest`` is refused ``TOO_LATE`` at once. The rule is
``workers.gpu_model.EmulatedGpu``'s (the one every emulated GPU in Baton follows), with
one difference kept on purpose: the rig never queues a batch behind another on a GPU
(its free time stays 0), so what it measures is the scheduler's plan, not a GPU's queue.
"""

from __future__ import annotations

from central.protocol import Done, Execute
from central.protocol.conventions import BatchStatus
from workers.gpu_model import EmulatedGpu

__all__ = ["answer_from_plan"]

_PLAN = EmulatedGpu()  # admit() only, never occupy(): its free time stays 0


def answer_from_plan(msg: Execute, received_ns: int) -> Done:
    """The ``Done`` of ``msg`` received at ``received_ns``: ``OK`` from ``max(earliest,
    received)`` for ``expected_ns``, or ``TOO_LATE`` with start == end == the refusal."""
    status, start = _PLAN.admit(msg.earliest_ns, msg.latest_ns, received_ns)
    end = start + msg.expected_ns if status == BatchStatus.OK else start
    return Done(msg.batch_id, msg.gpu, int(status), start, end, len(msg.request_ids))
