"""ImageNet-style ResNets and ResNeXts for 224 px images (He et al. 2016; Xie et al. 2017).

A 7x7 stride-2 stem and a 3x3 max-pool, then four stages of residual blocks at
64, 128, 256 and 512 base channels (x4 for bottleneck blocks), the first block
of stages 2-4 halving the resolution on its 3x3 convolution; global average
pooling gives ``num_features`` (512 for ResNet-10, 2048 for the others). The
backbones of the paper: ResNet-10 and ResNeXt-50 (32x4d) for ImageNet-LT,
ResNet-50 for iNaturalist 2018, ResNet-152 for Places-LT.

Module names follow the widespread ``conv1``, ``bn1``, ``layer1``..``layer4``,
``downsample`` layout, so that state dicts of that layout (e.g. ImageNet
weights saved from torchvision) load with ``model.pretrained``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .init import init_resnet_weights


def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1):
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False)
    return conv, nn.BatchNorm2d(out_channels)


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """The projection shortcut (1x1 convolution + BatchNorm) where the shape changes, else None (identity)."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(*_conv_bn(in_channels, out_channels, 1, stride))


class ResNetBasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut (ResNet-10/18/34). Output channels: ``planes``."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, groups: int = 1, base_width: int = 64) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("basic blocks have no grouped (ResNeXt) variant")
        self.conv1, self.bn1 = _conv_bn(in_channels, planes, 3, stride)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3)
        self.downsample = _downsample(in_channels, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut, inplace=True)


class ResNetBottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped for ResNeXt, carrying the stride), 1x1 expand. Output: ``4 * planes``.

    The 3x3 convolution has ``groups * int(planes * base_width / 64)`` channels:
    ``planes`` for ResNet (groups 1, width 64), ``2 * planes`` for ResNeXt 32x4d.
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, groups: int = 1, base_width: int = 64) -> None:
        super().__init__()
        width = groups * int(planes * base_width / 64)
        out_channels = planes * self.expansion
        self.conv1, self.bn1 = _conv_bn(in_channels, width, 1)
        self.conv2, self.bn2 = _conv_bn(width, width, 3, stride, groups)
        self.conv3, self.bn3 = _conv_bn(width, out_channels, 1)
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut, inplace=True)


class ResNet(nn.Module):
    """ImageNet-style ResNet / ResNeXt backbone without classifier.

    Args:
        block: :class:`ResNetBasicBlock` or :class:`ResNetBottleneck`.
        layers: blocks in each of the four stages, e.g. (3, 4, 6, 3) for ResNet-50.
        groups, base_width: ResNeXt cardinality and width per group (1 and 64: plain ResNet).
        in_channels: image channels.

    Input (N, in_channels, H, W), any size (224 in the recipes; 32 still works,
    the stages then run at 8, 4, 2 and 1 pixels); features (N, num_features).
    """

    def __init__(
        self,
        block: type[ResNetBasicBlock] | type[ResNetBottleneck],
        layers: Sequence[int],
        *,
        groups: int = 1,
        base_width: int = 64,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        channels = 64
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stride = 1 if index == 0 else 2
            stage = []
            for b in range(blocks):
                stage.append(block(channels, planes, stride if b == 0 else 1, groups, base_width))
                channels = planes * block.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = channels
        init_resnet_weights(self)

    @property
    def stages(self) -> list[nn.Module]:
        """The four residual stages, in order."""
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    @property
    def last_stage(self) -> nn.Module:
        """The last residual stage (what ``model.trainable=last_stage`` trains)."""
        return self.layer4

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, num_features) pooled features."""
        x = self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


def resnet10(in_channels: int = 3) -> ResNet:
    """ResNet-10: one basic block per stage, 512 features (the paper's small ImageNet-LT backbone)."""
    return ResNet(ResNetBasicBlock, (1, 1, 1, 1), in_channels=in_channels)


def resnet50(in_channels: int = 3) -> ResNet:
    """ResNet-50: bottleneck blocks (3, 4, 6, 3), 2048 features."""
    return ResNet(ResNetBottleneck, (3, 4, 6, 3), in_channels=in_channels)


def resnet152(in_channels: int = 3) -> ResNet:
    """ResNet-152: bottleneck blocks (3, 8, 36, 3), 2048 features."""
    return ResNet(ResNetBottleneck, (3, 8, 36, 3), in_channels=in_channels)


def resnext50_32x4d(in_channels: int = 3) -> ResNet:
    """ResNeXt-50 (32x4d): ResNet-50's layout with 32 groups of 4 channels per 64, 2048 features."""
    return ResNet(ResNetBottleneck, (3, 4, 6, 3), groups=32, base_width=4, in_channels=in_channels)
