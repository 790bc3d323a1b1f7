"""The torch executor on a real CUDA device. Skipped where torch sees no CUDA device."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
    ),
]


def test_torch_executor_serves_both_models_on_cuda() -> None:
    from PIL import Image
    from skimage import data

    from workers.torch_executor import TorchExecutor

    ex = TorchExecutor([("mobilenet_v2", None), ("minilm", None)], device="cuda")
    try:
        assert ex.device == "cuda"
        (gpu,) = ex.gpu_specs()
        profiles = {m: (k, c) for m, k, c, _ in gpu[2]}
        assert set(profiles) == {"mobilenet_v2", "minilm"}
        assert all(k > 0 for k, _ in profiles.values())
        buf = io.BytesIO()
        Image.fromarray(data.chelsea()).save(buf, format="PNG")
        image = {"image": np.frombuffer(buf.getvalue(), np.uint8)}
        outs = asyncio.run(ex.run(0, "mobilenet_v2", [image] * 4))
        assert all(int(o["class_ids"][0]) in range(281, 286) for o in outs)
        texts = [
            {"text": np.array([s.encode()], dtype=object)}
            for s in ("A man plays guitar.", "Someone is playing a guitar.", "Stocks fell today.")
        ]
        a, b, c = (o["embedding"] for o in asyncio.run(ex.run(0, "minilm", texts)))
        assert float(a @ b) > float(a @ c)
    finally:
        ex.close()
