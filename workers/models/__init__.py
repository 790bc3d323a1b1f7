"""Baton's model zoo: plain-torch MobileNetV2 (ImageNet classification) and all-MiniLM-L6-v2
(sentence embeddings) with their preprocessing, served through ``zoo.ServedModel``.
Imports torch, numpy and the weights' readers only; never the protocol, a policy or a shell.
Importing this package loads no weights and sets no torch thread counts."""

from .minilm import MiniLM, load_minilm
from .mobilenet_v2 import MobileNetV2, load_mobilenet_v2
from .zoo import MODEL_NAMES, ServedModel, load_served_model

__all__ = [
    "MODEL_NAMES",
    "ServedModel",
    "load_served_model",
    "MobileNetV2",
    "load_mobilenet_v2",
    "MiniLM",
    "load_minilm",
]
