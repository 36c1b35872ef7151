"""Samplers of the q-family (Kang et al. 2020, eq. 1): ``p_j = n_j^q / sum_i n_i^q``.

A class is drawn with probability ``p_j``, then an instance uniformly inside it.
q = 1 is instance-balanced (plain shuffling), q = 0 class-balanced, q = 1/2
square-root. Every epoch has ``len(labels)`` draws by default (the official
definition: all strategies see the same number of images), and its order
depends only on ``(seed, epoch)``: call ``set_epoch`` before iterating.
Epochs are built with vectorised tensor ops; the per-class grouping is done
once at construction.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from .errors import ConfigError, DataError

SAMPLER_Q = {"instance": 1.0, "sqrt": 0.5, "class": 0.0}
STRATEGIES = (*SAMPLER_Q, "power")


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator determined by ``(seed, epoch)`` alone."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _as_label_tensor(labels: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if labels.dim() != 1 or len(labels) == 0:
        raise DataError(f"labels: expected a non-empty 1-D sequence of class indices, got shape {tuple(labels.shape)}")
    if int(labels.min()) < 0:
        raise DataError(f"labels: class indices must be >= 0, found {int(labels.min())}")
    return labels


class _EpochSampler(Sampler[int]):
    """Base: an epoch is a tensor of indices drawn from ``(seed, epoch)``."""

    def __init__(
        self, labels: Sequence[int] | np.ndarray | torch.Tensor, *, num_samples: int | None, seed: int
    ) -> None:
        self.labels = _as_label_tensor(labels)
        if num_samples is not None and num_samples < 1:
            raise ConfigError(f"num_samples={num_samples!r}: expected an integer >= 1")
        self.num_samples = len(self.labels) if num_samples is None else num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next ``__iter__`` yields."""
        self.epoch = epoch

    def epoch_indices(self) -> torch.Tensor:
        """(num_samples,) int64 dataset indices of the current epoch."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices().tolist())

    def __len__(self) -> int:
        return self.num_samples


class InstanceSampler(_EpochSampler):
    """q = 1 as plain shuffling: a fresh permutation of the dataset per epoch (no replacement)."""

    def epoch_indices(self) -> torch.Tensor:
        generator = epoch_generator(self.seed, self.epoch)
        n = len(self.labels)
        rounds = -(-self.num_samples // n)
        return torch.cat([torch.randperm(n, generator=generator) for _ in range(rounds)])[: self.num_samples]


class ClassPowerSampler(_EpochSampler):
    """i.i.d. draws: class ``j`` with probability ``n_j^q / sum_i n_i^q``, then a uniform instance of it.

    Args:
        labels: (N,) class index per dataset item.
        q: exponent in [0, 1]; 0 is class-balanced, 1/2 square-root, 1 instance-balanced.
        num_samples: draws per epoch; ``len(labels)`` by default.
        seed: with the epoch, fixes the draw.

    Raises:
        DataError: for q = 0 when a class below the largest label has no item
            (it could never be drawn), naming the class.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        q: float,
        *,
        num_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(labels, num_samples=num_samples, seed=seed)
        if not 0.0 <= q <= 1.0:
            raise ConfigError(f"q={q!r}: expected a number in [0, 1]")
        self.q = q
        counts = torch.bincount(self.labels)
        empty = (counts == 0).nonzero().flatten()
        if q == 0.0 and len(empty):
            raise DataError(
                f"class {int(empty[0])} has no training images: class-balanced sampling needs at least one per class"
            )
        self.class_counts = counts
        # Items grouped by class, once: class j owns order[starts[j] : starts[j] + counts[j]].
        self.order = torch.argsort(self.labels, stable=True)
        self.starts = torch.cumsum(counts, 0) - counts
        weights = counts.to(torch.float64).pow(q)
        weights[counts == 0] = 0.0
        self.class_probs = weights / weights.sum()

    def epoch_indices(self) -> torch.Tensor:
        generator = epoch_generator(self.seed, self.epoch)
        classes = torch.multinomial(self.class_probs, self.num_samples, replacement=True, generator=generator)
        within = (
            torch.rand(self.num_samples, generator=generator, dtype=torch.float64) * self.class_counts[classes]
        ).long()
        return self.order[self.starts[classes] + within]


def make_sampler(
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    strategy: str,
    *,
    seed: int = 0,
    q: float | None = None,
    num_samples: int | None = None,
) -> _EpochSampler:
    """The sampler named ``strategy``: ``instance``, ``class``, ``sqrt`` or ``power`` (with ``q``)."""
    if strategy == "instance":
        return InstanceSampler(labels, num_samples=num_samples, seed=seed)
    if strategy == "power":
        if q is None:
            raise ConfigError("sampler 'power' needs q in [0, 1]")
        return ClassPowerSampler(labels, q, num_samples=num_samples, seed=seed)
    if strategy in SAMPLER_Q:
        return ClassPowerSampler(labels, SAMPLER_Q[strategy], num_samples=num_samples, seed=seed)
    raise ConfigError(f"sampler {strategy!r}: expected one of {', '.join(STRATEGIES)}")
