"""Progressively-balanced sampling: from instance- to class-balanced over the epochs (Kang et al. 2020)."""

from __future__ import annotations

from numbers import Integral
from typing import Any

import torch

from ..errors import ConfigError
from .base import EpochSampler, Labels, SamplerSpec, epoch_generator, power_law, register_sampler


class ProgressiveSampler(EpochSampler):
    """Progressively-balanced: ``p_j(t) = (1 - λ_t) p_j^IB + λ_t p_j^CB``, ``λ_t = t / (T - 1)``.

    ``t`` is the 0-based epoch, ``T`` = ``epochs``. The paper writes ``λ = t/T``;
    this follows the official ``ClassPrioritySampler`` (``np.linspace(0, 1, T)``):
    epoch 0 is instance-balanced, the law moves linearly toward class-balanced
    and the last epoch ``T - 1`` is fully class-balanced. With ``T = 1`` the single
    epoch is class-balanced (the official linspace would give λ = 0 there; here
    the last epoch is class-balanced for every T). Epochs past the end stay
    class-balanced.
    """

    def __init__(self, labels: Labels, epochs: int | None, **kwargs) -> None:
        super().__init__(labels, **kwargs)
        if isinstance(epochs, bool) or not isinstance(epochs, Integral) or epochs < 1:
            raise ConfigError(f"epochs={epochs!r}: the progressive sampler needs the number of epochs (>= 1)")
        self._require_every_class("progressive")
        self.epochs = epochs
        self.instance_probs = power_law(self.class_counts, 1.0)
        self.balanced_probs = power_law(self.class_counts, 0.0)

    def lambda_at(self, epoch: int) -> float:
        """λ of ``epoch``: ``t / (T - 1)`` with ``t`` clamped to [0, T - 1]; 1 when T = 1."""
        last = self.epochs - 1
        if last == 0:
            return 1.0
        return min(max(epoch, 0), last) / last

    def probs_at(self, epoch: int) -> torch.Tensor:
        """(C,) float64 class probabilities of ``epoch``: ``(1 - λ) p^IB + λ p^CB``."""
        mix = self.lambda_at(epoch)
        return (1.0 - mix) * self.instance_probs + mix * self.balanced_probs

    def global_indices(self) -> torch.Tensor:
        generator = epoch_generator(self.seed, self.epoch)
        return self._draw_within(self._draw_classes(self.probs_at(self.epoch), generator), generator)


def create(labels: Labels, section: Any, epochs: int | None, **common: Any) -> EpochSampler:
    return ProgressiveSampler(labels, epochs, **common)


SPEC = register_sampler(
    SamplerSpec(
        name="progressive",
        label="Progressively-balanced",
        law="p_j(t) = (1 − λ_t) p_j^IB + λ_t p_j^CB, λ_t = t/(T − 1) for 0-based epoch t of T (the official "
        "schedule): first epoch instance-balanced, last class-balanced (T = 1: class-balanced)",
        create=create,
        # λ grows linearly from 0 to 1 over the epochs: over a whole training, half of each law.
        class_shares=lambda counts, section: 0.5 * power_law(counts, 1.0) + 0.5 * power_law(counts, 0.0),
        in_paper=True,
    )
)
