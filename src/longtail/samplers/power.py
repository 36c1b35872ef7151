"""The q-family of Kang et al. (2020), eq. 1: class ``j`` is drawn with ``p_j = n_j^q / sum_i n_i^q``, then
an instance uniformly inside it. q = 0 is class-balanced (``class``), q = 1/2 square-root (``sqrt``), any q in
[0, 1] with ``power`` (its key ``q``); q = 1 is ``instance`` (plain shuffling, :mod:`.instance`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..config import Interval, option
from ..errors import ConfigError
from .base import EpochSampler, Labels, SamplerSpec, epoch_generator, power_law, register_sampler


class ClassPowerSampler(EpochSampler):
    """i.i.d. draws: class ``j`` with probability ``n_j^q / sum_i n_i^q``, then a uniform instance of it.

    Args:
        labels: (N,) class index per dataset item.
        q: exponent in [0, 1]; 0 is class-balanced, 1/2 square-root, 1 instance-balanced.
        **kwargs: ``num_samples``, ``seed``, ``num_replicas``, ``rank`` of :class:`EpochSampler`.

    Raises:
        DataError: for q = 0 when a class below the largest label has no item,
            naming the class.
    """

    def __init__(self, labels: Labels, q: float, **kwargs) -> None:
        super().__init__(labels, **kwargs)
        if not 0.0 <= q <= 1.0:
            raise ConfigError(f"q={q!r}: expected a number in [0, 1]")
        if q == 0.0:
            self._require_every_class("class-balanced")
        self.q = q
        self.class_probs = power_law(self.class_counts, q)

    def global_indices(self) -> torch.Tensor:
        generator = epoch_generator(self.seed, self.epoch)
        return self._draw_within(self._draw_classes(self.class_probs, generator), generator)


@dataclass
class PowerConfig:
    """<train|decouple>.power: the exponent of the law."""

    q: float = option(
        0.5, "exponent q: p_j = n_j^q / sum_i n_i^q (0: class-balanced, 1: instance-balanced)", Interval(0, 1)
    )


def _fixed(q: float) -> Any:
    def create(labels: Labels, section: Any, epochs: int | None, **common: Any) -> EpochSampler:
        return ClassPowerSampler(labels, q, **common)

    return create


def _create_power(labels: Labels, section: Any, epochs: int | None, **common: Any) -> EpochSampler:
    return ClassPowerSampler(labels, section.q, **common)


CLASS = register_sampler(
    SamplerSpec(
        name="class",
        label="Class-balanced",
        law="class j with p_j = 1/C, then a uniform image of it (q = 0)",
        create=_fixed(0.0),
        class_shares=lambda counts, section: power_law(counts, 0.0),
        in_paper=True,
    )
)
SQRT = register_sampler(
    SamplerSpec(
        name="sqrt",
        label="Square-root",
        law="p_j ∝ √n_j (q = 1/2)",
        create=_fixed(0.5),
        class_shares=lambda counts, section: power_law(counts, 0.5),
        in_paper=True,
    )
)
POWER = register_sampler(
    SamplerSpec(
        name="power",
        label="Power",
        law="p_j ∝ n_j^q, q = <train|decouple>.power.q",
        create=_create_power,
        config=PowerConfig,
        class_shares=lambda counts, section: power_law(counts, section.q),
        renamed={"sampler_q": "q"},
    )
)
