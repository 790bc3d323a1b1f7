"""Raw inputs for the bundled models, built without torch.

``image_file`` sends the encoded file bytes as they are: the worker decodes, resizes and
normalises (so clients need no imaging stack). ``text`` sends one UTF-8 sentence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["image_file", "image_bytes", "text", "cosine"]


def image_bytes(data: bytes) -> dict[str, np.ndarray[Any, Any]]:
    """Inputs for ``mobilenet_v2`` from encoded JPEG/PNG bytes."""
    return {"image": np.frombuffer(data, dtype=np.uint8)}


def image_file(path: str | Path) -> dict[str, np.ndarray[Any, Any]]:
    """Inputs for ``mobilenet_v2`` from an image file (JPEG, PNG, ...)."""
    return image_bytes(Path(path).read_bytes())


def text(sentence: str) -> dict[str, np.ndarray[Any, Any]]:
    """Inputs for ``minilm`` from one sentence."""
    return {"text": np.array([sentence.encode("utf-8")], dtype=object)}


def cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    """Cosine similarity of two embeddings."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
