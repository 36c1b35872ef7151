"""Instance-balanced sampling (q = 1): plain shuffling, the paper's default stage-1 strategy."""

from __future__ import annotations

from typing import Any

import torch

from .base import EpochSampler, Labels, SamplerSpec, epoch_generator, power_law, register_sampler


class InstanceSampler(EpochSampler):
    """q = 1 as plain shuffling: a fresh permutation of the dataset per epoch (no replacement)."""

    def global_indices(self) -> torch.Tensor:
        generator = epoch_generator(self.seed, self.epoch)
        n = len(self.labels)
        rounds = -(-self.num_samples // n)
        return torch.cat([torch.randperm(n, generator=generator) for _ in range(rounds)])[: self.num_samples]


def create(labels: Labels, section: Any, epochs: int | None, **common: Any) -> EpochSampler:
    return InstanceSampler(labels, **common)


SPEC = register_sampler(
    SamplerSpec(
        name="instance",
        label="Instance-balanced",
        law="plain shuffling (q = 1)",
        create=create,
        class_shares=lambda counts, section: power_law(counts, 1.0),
        in_paper=True,
    )
)
