"""What a worker needs from an executor, whatever runs the batches.

Theory of operation: an executor owns one or more GPUs (real or emulated) and the models
loaded on them. The worker process asks it three things: which models and profiles each
GPU has (for registration), whether one request's inputs are valid for a model (so that
a bad request is answered BAD_REQUEST alone, not with its whole batch), and to run a
batch on a GPU. ``run`` returns one entry per request: a dict of output arrays, or an
error string for that request. The worker measures start and end around ``run`` and
enforces the window; executors never see the scheduler.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from central.protocol.messages import GpuSpec, ModelSignature

__all__ = ["Executor", "Inputs", "Outcome"]

Inputs = Mapping[str, "np.ndarray[Any, Any]"]
Outcome = dict[str, "np.ndarray[Any, Any]"] | str


class Executor(Protocol):
    """An executor of batches on ``gpu_count`` GPUs."""

    gpu_count: int

    def gpu_specs(self) -> tuple[GpuSpec, ...]:
        """Per GPU: (index, models, profiles as (model, k_ns, c_ns, max_batch))."""
        ...

    def signatures(self) -> tuple[ModelSignature, ...]:
        """Per model: (name, max_batch, inputs, outputs) as TensorMetas, -1 = variable."""
        ...

    def validate(self, model: str, inputs: Inputs) -> None:
        """Raise ``ValueError`` with a user-facing message if ``inputs`` are unusable."""
        ...

    async def run(self, gpu: int, model: str, batch: Sequence[Inputs]) -> list[Outcome]:
        """Run one batch on ``gpu``; one outcome per request, in order."""
        ...

    def close(self) -> None:
        """Release threads and devices."""
        ...
