"""SGD with a per-step cosine schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def sgd(params: Iterable[torch.nn.Parameter], *, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    """SGD with momentum and weight decay on ``params``."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def cosine_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine from the base lr toward 0, stepped once per optimisation step.

    Step ``s`` of ``total_steps`` uses ``0.5 * (1 + cos(pi * s / total_steps))``
    of the base lr after warm-up, so every step trains with a non-zero lr (the
    official code steps per epoch, starting the epoch, and spends its last epoch at lr 0).
    """
    total_steps = max(total_steps, 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
