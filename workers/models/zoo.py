# The serving interface between the worker's torch executor and the models.
#
# A ServedModel takes a batch as one dict of named numpy arrays per request
# and returns one dict of named numpy outputs per request. Each request is
# checked and preprocessed on its own (a bad one raises ValueError naming its
# index), the prepared requests are stacked into one tensor batch, run through
# the network under torch.inference_mode(), and the result is split back into
# per-request outputs. validate() runs the same per-request checks alone, so a
# caller can reject a bad request before it joins a batch.
#
#   "mobilenet_v2": {"image": uint8 encoded bytes [N] or RGB [H, W, 3]}
#       -> {"class_ids": int64 [5], "scores": float32 [5], "labels": object [5] of bytes}
#   "minilm":       {"text": object [1] holding bytes or str, or uint8 UTF-8 bytes [N]}
#       -> {"embedding": float32 [384], unit L2 norm}
#
# Thread counts are left to the caller (torch.set_num_threads is never called).
from __future__ import annotations

import abc
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
from tokenizers import Tokenizer

from .assets import imagenet_labels, minilm_dir
from .minilm import TOKENIZER_FILE, MiniLM, load_minilm
from .mobilenet_v2 import MobileNetV2, load_mobilenet_v2
from .preprocess import load_tokenizer, preprocess_image, tokenize

__all__ = [
    "ServedModel",
    "MobileNetV2Classifier",
    "MiniLMEmbedder",
    "MODEL_NAMES",
    "load_served_model",
]

Inputs = dict[str, "np.ndarray[Any, Any]"]
Outputs = dict[str, "np.ndarray[Any, Any]"]
Prepared = TypeVar("Prepared")
# (name, dtype, shape) per input or output; -1 marks a variable dimension
Signature = tuple[tuple[str, str, tuple[int, ...]], ...]


@runtime_checkable
class ServedModel(Protocol):
    name: str
    max_batch: int
    # (name, dtype, shape) per input and output; -1 marks a variable dimension
    inputs: tuple[tuple[str, str, tuple[int, ...]], ...]
    outputs: tuple[tuple[str, str, tuple[int, ...]], ...]

    def validate(self, inputs: Inputs) -> None:
        """Raise ValueError, saying what is wrong, if run() would reject this request."""
        ...

    def run(self, batch: list[Inputs]) -> list[Outputs]:
        """One output dict per input dict, in order."""
        ...


class _BatchedModel(abc.ABC, Generic[Prepared]):
    """Shared request checking, chunking to max_batch and inference_mode."""

    name: str
    input_name: str
    max_batch: int

    def __init__(self, device: str) -> None:
        self.device = torch.device(device)

    @abc.abstractmethod
    def _prepare(self, value: np.ndarray[Any, Any]) -> Prepared:
        """One request's checked, decoded input."""

    @abc.abstractmethod
    def _forward(self, items: list[Prepared]) -> list[Outputs]:
        """One batched forward pass: one output dict per item."""

    def _prepare_request(self, inputs: Inputs) -> Prepared:
        if not isinstance(inputs, dict):
            raise ValueError(
                f"{self.name}: a request must be a dict of named arrays, got {type(inputs).__name__}"
            )
        if set(inputs) != {self.input_name}:
            raise ValueError(
                f"{self.name}: expected exactly one input named {self.input_name!r}, got {sorted(inputs)}"
            )
        return self._prepare(inputs[self.input_name])

    def validate(self, inputs: Inputs) -> None:
        self._prepare_request(inputs)

    def run(self, batch: list[Inputs]) -> list[Outputs]:
        items: list[Prepared] = []
        for index, inputs in enumerate(batch):
            try:
                items.append(self._prepare_request(inputs))
            except ValueError as exc:
                raise ValueError(f"request {index}: {exc}") from exc
        outputs: list[Outputs] = []
        with torch.inference_mode():
            for start in range(0, len(items), self.max_batch):
                outputs += self._forward(items[start : start + self.max_batch])
        return outputs


class MobileNetV2Classifier(_BatchedModel["np.ndarray[Any, Any]"]):
    """ImageNet top-5 classification of one image per request."""

    name = "mobilenet_v2"
    input_name = "image"
    inputs: Signature = (("image", "uint8", (-1,)),)  # encoded image bytes (or an RGB [H, W, 3] array)
    outputs: Signature = (
        ("class_ids", "int64", (5,)),
        ("scores", "float32", (5,)),
        ("labels", "BYTES", (5,)),
    )
    top_k = 5

    def __init__(self, model: MobileNetV2, device: str = "cpu", max_batch: int = 32) -> None:
        super().__init__(device)
        # channels_last runs the convolutions ~1.5x faster on CPU (oneDNN).
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()  # type: ignore[call-overload]  # the stubs omit memory_format
        self.max_batch = max_batch
        self.labels = np.array([label.encode("utf-8") for label in imagenet_labels()], dtype=object)

    def _prepare(self, value: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        try:
            return preprocess_image(value)
        except ValueError as exc:
            raise ValueError(f"{self.name}: input 'image': {exc}") from exc

    def _forward(self, items: list[np.ndarray[Any, Any]]) -> list[Outputs]:
        pixels = torch.from_numpy(np.stack(items)).to(self.device, memory_format=torch.channels_last)
        probs = torch.softmax(self.model(pixels).float(), dim=-1)
        scores, ids = probs.topk(self.top_k, dim=-1)
        scores_np = scores.cpu().numpy().astype(np.float32)
        ids_np = ids.cpu().numpy().astype(np.int64)
        return [
            {"class_ids": ids_np[i], "scores": scores_np[i], "labels": self.labels[ids_np[i]]}
            for i in range(len(items))
        ]


def _sentence(value: Any) -> str:
    """One sentence from an object/bytes/str array of one element or a 1-D uint8 UTF-8 array."""
    if not isinstance(value, np.ndarray):
        raise ValueError(f"must be a numpy array, got {type(value).__name__}")
    if value.dtype == np.uint8:
        if value.ndim != 1:
            raise ValueError(f"uint8 text must be 1-D UTF-8 bytes, got shape {value.shape}")
        data: bytes = value.tobytes()
    elif value.dtype.kind in "OSU":
        if value.shape not in ((1,), ()):
            raise ValueError(f"must hold exactly one sentence (shape [1]), got shape {value.shape}")
        item = value.reshape(-1)[0]
        if isinstance(item, str):
            return str(item)
        if not isinstance(item, bytes):
            raise ValueError(f"element must be bytes or str, got {type(item).__name__}")
        data = bytes(item)
    else:
        raise ValueError(
            f"must be an object array of one bytes/str or uint8 UTF-8 bytes, got dtype {value.dtype}"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"is not valid UTF-8: {exc}") from exc


class MiniLMEmbedder(_BatchedModel[str]):
    """all-MiniLM-L6-v2 sentence embedding of one sentence per request."""

    name = "minilm"
    input_name = "text"
    inputs: Signature = (("text", "BYTES", (1,)),)
    outputs: Signature = (("embedding", "float32", (384,)),)

    def __init__(self, model: MiniLM, tokenizer: Tokenizer, device: str = "cpu", max_batch: int = 32) -> None:
        super().__init__(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.max_batch = max_batch

    def _prepare(self, value: np.ndarray[Any, Any]) -> str:
        try:
            return _sentence(value)
        except ValueError as exc:
            raise ValueError(f"{self.name}: input 'text' {exc}") from exc

    def _forward(self, items: list[str]) -> list[Outputs]:
        tensors = {k: torch.from_numpy(v).to(self.device) for k, v in tokenize(self.tokenizer, items).items()}
        embeddings = self.model(**tensors).float().cpu().numpy()
        return [{"embedding": embeddings[i]} for i in range(len(items))]


def _load_mobilenet_v2(checkpoint: str | None, device: str) -> ServedModel:
    return MobileNetV2Classifier(load_mobilenet_v2(checkpoint, device), device)


def _load_minilm(checkpoint: str | None, device: str) -> ServedModel:
    folder = Path(checkpoint) if checkpoint is not None else minilm_dir()
    tokenizer = load_tokenizer(folder / TOKENIZER_FILE)
    return MiniLMEmbedder(load_minilm(str(folder), device), tokenizer, device)


_LOADERS: dict[str, Callable[[str | None, str], ServedModel]] = {
    MobileNetV2Classifier.name: _load_mobilenet_v2,
    MiniLMEmbedder.name: _load_minilm,
}
MODEL_NAMES: tuple[str, ...] = tuple(_LOADERS)


def load_served_model(name: str, checkpoint: str | None = None, device: str = "cpu") -> ServedModel:
    """Load a model by name, ready to serve.

    checkpoint: None for the bundled pretrained weights; for "mobilenet_v2" a
    .pth state_dict path, for "minilm" a folder with model.safetensors and
    tokenizer.json. Raises ValueError for an unknown name or unfit weights,
    FileNotFoundError for missing files.
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    return _LOADERS[name](checkpoint, device)
