"""Real torch models on one device (CUDA when present, else CPU).

Theory of operation: models come from ``workers.models`` (plain-torch MobileNetV2 and
MiniLM with their real weights, or a user's checkpoint). At start-up each model is
profiled offline on this device (``profiler``) and the fitted ``k`` and ``c`` go to the
scheduler with the registration. A batch runs on one dedicated thread (torch releases the
interpreter lock while it computes), so the worker's event loop keeps receiving payloads
and heartbeats meanwhile. One device is one schedulable "GPU".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from central.protocol.messages import GpuSpec, ModelSignature

from .executor import Inputs, Outcome
from .profiler import fit_linear, profile_batches

__all__ = ["TorchExecutor", "sample_inputs"]

log = logging.getLogger("baton.worker.torch")


def sample_inputs(model: str) -> dict[str, np.ndarray[Any, Any]]:
    """A representative request for profiling ``model`` (synthetic, deterministic)."""
    if model == "mobilenet_v2":
        rng = np.random.default_rng(0)
        return {"image": rng.integers(0, 255, size=(256, 320, 3), dtype=np.uint8)}
    text = "A quick brown fox jumps over the lazy dog near the river bank today."
    return {"text": np.array([text.encode()], dtype=object)}


class TorchExecutor:
    """Serve ``models`` (names from the zoo, optional checkpoints) on one torch device."""

    gpu_count = 1

    def __init__(
        self,
        models: Sequence[tuple[str, str | None]],
        *,
        device: str | None = None,
        threads: int = 1,
        profile: bool = True,
        max_batch: int | None = None,
    ) -> None:
        import torch

        from workers.models.zoo import load_served_model

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        if device == "cpu":
            torch.set_num_threads(threads)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="torch")
        self.models: dict[str, Any] = {}
        self.profiles: dict[str, tuple[int, int, int]] = {}
        for name, checkpoint in models:
            served = load_served_model(name, checkpoint, device=device)
            if max_batch is not None:
                served.max_batch = min(served.max_batch, max_batch)
            self.models[name] = served
            if profile:
                self.profiles[name] = self._profile(name, served)
            log.info("loaded %s on %s, profile %s", name, device, self.profiles.get(name))

    def _profile(self, name: str, served: Any) -> tuple[int, int, int]:
        sample = sample_inputs(name)
        sizes = [b for b in (1, 2, 4, 8) if b <= served.max_batch]
        points = profile_batches(lambda b: served.run([sample] * b), sizes, repeats=3, warmup=1)
        k, c = fit_linear(points)
        k = max(k, 1.0)
        return int(k), int(c), int(served.max_batch)

    def gpu_specs(self) -> tuple[GpuSpec, ...]:
        profiles = tuple((m, k, c, mb) for m, (k, c, mb) in self.profiles.items())
        return ((0, tuple(self.models), profiles),)

    def signatures(self) -> tuple[ModelSignature, ...]:
        return tuple(
            (name, int(m.max_batch), tuple(m.inputs), tuple(m.outputs)) for name, m in self.models.items()
        )

    def validate(self, model: str, inputs: Inputs) -> None:
        served = self.models.get(model)
        if served is None:
            raise ValueError(f"model {model!r} is not loaded on this worker")
        served.validate(dict(inputs))

    async def run(self, gpu: int, model: str, batch: Sequence[Inputs]) -> list[Outcome]:
        served = self.models[model]
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self._pool, served.run, [dict(x) for x in batch])
        except Exception as exc:  # the model raised: every request gets the reason
            log.exception("batch of %s failed", model)
            return [f"{type(exc).__name__}: {exc}"] * len(batch)
        return list(outputs)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
