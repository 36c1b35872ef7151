"""The paper's weight initialisation of ResNets, shared by every backbone."""

from __future__ import annotations

from torch import nn


def init_resnet_weights(network: nn.Module) -> None:
    """He (fan-out) normal convolutions and BatchNorm at identity, as in the paper's (and torchvision's) ResNets."""
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
