"""Backbones: networks that map images to feature vectors, without a classifier.

Each backbone has ``forward_features(x) -> (N, num_features)`` (after global
average pooling) and ``num_features``; the classifier is a separate head, so
stage 2 swaps heads on a frozen backbone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..registry import Registry
from .init import init_resnet_weights
from .resnet import resnet10, resnet50, resnet152, resnext50_32x4d

BACKBONES: Registry[nn.Module] = Registry("backbone", "model.backbone")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (He et al. 2016)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR-style ResNet for small images (<= 32 px): a 3x3 stem, three stages, global pooling.

    Args:
        blocks_per_stage: residual blocks in each of the three stages (depth = 6n + 2).
        widths: channels of the three stages; stages 2 and 3 halve the resolution.
        in_channels: image channels (1 for grey, 3 for colour).

    Input (N, in_channels, H, W) of any size; features (N, widths[-1]).
    """

    def __init__(self, blocks_per_stage: int, widths: Sequence[int] = (16, 32, 64), in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        stages = []
        channels = widths[0]
        for stage, width in enumerate(widths):
            blocks = []
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                blocks.append(BasicBlock(channels, width, stride))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = channels
        init_resnet_weights(self)

    @property
    def last_stage(self) -> nn.Module:
        """The last residual stage (what ``last_stage`` fine-tuning re-trains)."""
        return self.stages[-1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, num_features) pooled features."""
        return self.pool(self.stages(self.stem(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


def _cifar_resnet(depth: int):
    def build(in_channels: int = 3) -> CifarResNet:
        return CifarResNet((depth - 2) // 6, (16, 32, 64), in_channels)

    build.__doc__ = f"CIFAR-style ResNet-{depth} (widths 16/32/64, {(depth - 2) // 6} blocks per stage)."
    return build


for _depth in (8, 14, 20, 32, 44, 56):
    BACKBONES.register(f"resnet{_depth}")(_cifar_resnet(_depth))

# ImageNet-style, for 224 px images (models/resnet.py).
for _build in (resnet10, resnet50, resnet152, resnext50_32x4d):
    BACKBONES.register(_build.__name__)(_build)


def create_backbone(name: str, in_channels: int = 3) -> nn.Module:
    """Build the backbone registered as ``name`` for images with ``in_channels`` channels."""
    return BACKBONES.create(name, in_channels=in_channels)
