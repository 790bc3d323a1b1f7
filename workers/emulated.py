"""N emulated GPUs in one process: each busy for ``l(b)`` from its model's profile.

Theory of operation: a stand-in for an accelerator, as in Clockwork's emulated worker and
Symphony's fake backends, so that schedules can be tested on machines without GPUs. A
batch "runs" by sleeping precisely (coarse asyncio sleep, then a short spin) for
``k*b + c`` nanoseconds, scaled by seeded multiplicative noise when configured. Each
request's output is real and cheap: the sum and element count of its inputs, so tests can
check that every payload reached the batch it was routed to. It is not a model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from central.plumbing.clock import ClockLike, as_clock
from central.protocol.messages import GpuSpec, ModelSignature

from .executor import Inputs, Outcome
from .gpu_model import GaussNoise, linear_latency_ns

__all__ = ["EmulatedModel", "EmulatedExecutor", "parse_emulated_model"]


@dataclass(frozen=True)
class EmulatedModel:
    """An emulated model: its name and profile ``l(b) = k_ns*b + c_ns``."""

    name: str
    k_ns: int
    c_ns: int
    max_batch: int = 64

    def latency_ns(self, b: int) -> int:
        return linear_latency_ns(self.k_ns, self.c_ns, b)


def parse_emulated_model(text: str) -> EmulatedModel:
    """Parse ``NAME:K_MS:C_MS[:MAX_BATCH]``, e.g. ``symphony:1.082:5.204``.

    Raises ``ValueError`` with the expected form on bad input.
    """
    parts = text.split(":")
    if len(parts) not in (3, 4) or not parts[0]:
        raise ValueError(f"emulated model {text!r}: expected NAME:K_MS:C_MS[:MAX_BATCH]")
    try:
        k_ms, c_ms = float(parts[1]), float(parts[2])
        max_batch = int(parts[3]) if len(parts) == 4 else 64
    except ValueError:
        raise ValueError(f"emulated model {text!r}: K_MS and C_MS must be numbers") from None
    if not (math.isfinite(k_ms) and math.isfinite(c_ms)) or k_ms <= 0 or max_batch < 1:
        raise ValueError(f"emulated model {text!r}: K_MS must be > 0 and MAX_BATCH >= 1")
    return EmulatedModel(parts[0], round(k_ms * 1e6), round(c_ms * 1e6), max_batch)


class EmulatedExecutor:
    """``gpu_count`` virtual GPUs, each serving every model in ``models``."""

    def __init__(
        self,
        gpu_count: int,
        models: Sequence[EmulatedModel],
        *,
        noise_cv: float = 0.0,
        seed: int = 0,
        clock: ClockLike = time.monotonic_ns,
        spin_ns: int = 300_000,
    ) -> None:
        if gpu_count < 1:
            raise ValueError("--emulate needs at least 1 GPU")
        if not models:
            raise ValueError("an emulated worker needs at least one model")
        if noise_cv < 0:
            raise ValueError("noise must be >= 0")
        self.gpu_count = gpu_count
        self.models = {m.name: m for m in models}
        self._noise = GaussNoise(noise_cv, seed)  # workers.gpu_model: l(b) times noise
        self._time = as_clock(clock)
        self._clock = self._time.reader
        self._spin_ns = spin_ns
        self._sleep: Callable[[int], Awaitable[None]] | None = None

    def use_sleeper(self, sleep_until: Callable[[int], Awaitable[None]]) -> None:
        """Time batches with the worker's precise wake-ups instead of spinning."""
        self._sleep = sleep_until

    def gpu_specs(self) -> tuple[GpuSpec, ...]:
        profiles = tuple((m.name, m.k_ns, m.c_ns, m.max_batch) for m in self.models.values())
        names = tuple(self.models)
        return tuple((g, names, profiles) for g in range(self.gpu_count))

    def signatures(self) -> tuple[ModelSignature, ...]:
        # Any numeric tensors are accepted; "x" is the advertised one (KServe metadata).
        return tuple(
            (
                m.name,
                m.max_batch,
                (("x", "float32", (-1,)),),
                (("sum", "float64", (1,)), ("count", "int64", (1,))),
            )
            for m in self.models.values()
        )

    def validate(self, model: str, inputs: Inputs) -> None:
        if model not in self.models:
            raise ValueError(f"model {model!r} is not loaded on this worker")
        if not inputs:
            raise ValueError("at least one input tensor is required")
        for name, arr in inputs.items():
            if arr.dtype == object:
                raise ValueError(f"input {name!r}: the emulated model takes numeric tensors")

    def duration_ns(self, model: str, b: int) -> int:
        """How long a batch of ``b`` keeps the emulated GPU busy (noise included)."""
        return self._noise.duration(self.models[model].latency_ns(b))

    async def run(self, gpu: int, model: str, batch: Sequence[Inputs]) -> list[Outcome]:
        end = self._clock() + self.duration_ns(model, len(batch))
        outcomes: list[Outcome] = []
        for inputs in batch:
            total = 0.0
            count = 0
            for arr in inputs.values():
                total += float(np.sum(arr, dtype=np.float64))
                count += int(arr.size)
            outcomes.append(
                {"sum": np.array([total], dtype=np.float64), "count": np.array([count], np.int64)}
            )
        if self._sleep is not None:
            await self._sleep(end)
        else:
            await self._time.sleep_until_spinning(end, self._spin_ns)
        return outcomes

    def close(self) -> None:
        pass


async def sleep_until(t_ns: int, clock: ClockLike, spin_ns: int) -> None:
    """Sleep until ``t_ns`` on ``clock``: coarse sleep, then spin the last ``spin_ns``
    (a virtual clock just sleeps: ``Clock.sleep_until_spinning``)."""
    await as_clock(clock).sleep_until_spinning(t_ns, spin_ns)
