"""Backbones: networks that map images to feature vectors, without a classifier.

Each backbone has ``forward_features(x) -> (N, num_features)`` (after global
average pooling) and ``num_features``; the classifier is a separate head, so
stage 2 swaps heads on a frozen backbone.

The CIFAR-style ResNets use He et al.'s option-A shortcuts, as Cao et al.'s
``resnet_cifar.py`` (the ResNet-32 every CIFAR-LT number is quoted on): where a
block changes shape, the shortcut subsamples space and zero-pads channels and
has no parameters, so ResNet-32 has 464,154 parameters with a 10-class head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..registry import BACKBONES
from .external import create_external, is_external
from .identity import identity
from .init import init_resnet_weights
from .resnet import resnet10, resnet50, resnet152, resnext50_32x4d


class SubsampleShortcut(nn.Module):
    """Parameter-free "option A" shortcut (He et al. 2016): subsample space, zero-pad channels.

    ``x[:, :, ::stride, ::stride]`` with ``out_channels - in_channels`` zero
    channels, half before and half after the input's (``out_channels // 4`` on
    each side when the width doubles, as Cao et al.'s ``resnet_cifar.py``).
    (N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride)),
    the shape of a 3x3 / padding-1 convolution with that stride. The output keeps
    the input's memory format (channels-last in, channels-last out).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"an option-A shortcut cannot narrow {in_channels} channels to {out_channels}")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.pad_before = (out_channels - in_channels) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sub = x[:, :, :: self.stride, :: self.stride]
        n, _, h, w = sub.shape
        # F.pad would return a contiguous (NCHW) tensor; writing into zeros of the input's layout
        # keeps the residual sum channels-last.
        layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        out = torch.empty((n, self.out_channels, h, w), dtype=x.dtype, device=x.device, memory_format=layout)
        out.zero_()
        out[:, self.pad_before : self.pad_before + self.in_channels] = sub
        return out

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (He et al. 2016).

    The shortcut is the identity, or a :class:`SubsampleShortcut` (option A, no
    parameters) where the stride or the channel count changes.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = SubsampleShortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR-style ResNet for small images (<= 32 px): a 3x3 stem, three stages, global pooling.

    Args:
        blocks_per_stage: residual blocks in each of the three stages (depth = 6n + 2).
        widths: channels of the three stages, non-decreasing (the option-A shortcuts
            only pad channels); stages 2 and 3 halve the resolution.
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

# Precomputed features (data.name=features): the representation is the data; ``in_channels`` is then d.
BACKBONES.register("identity")(identity)


def create_backbone(name: str, in_channels: int = 3) -> nn.Module:
    """Build the backbone registered as ``name`` for images with ``in_channels`` channels, or load the
    frozen program that ``export:PATH`` names (:mod:`longtail.models.external`)."""
    if is_external(name):
        return create_external(name)
    return BACKBONES.create(name, in_channels=in_channels)
