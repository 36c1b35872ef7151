"""Every sampling strategy of Kang et al. (2020), as real ``torch.utils.data.Sampler`` objects.

- q-family (eq. 1): class ``j`` is drawn with ``p_j = n_j^q / sum_i n_i^q``, then an
  instance uniformly inside it. q = 1 is instance-balanced (``instance``: plain
  shuffling), q = 0 class-balanced (``class``), q = 1/2 square-root (``sqrt``),
  any q in [0, 1] with ``power``.
- ``progressive``: ``p_j(t) = (1 - λ_t) p_j^IB + λ_t p_j^CB`` at 0-based epoch ``t``
  of ``T``, ``λ_t = t / (T - 1)`` as the official ``ClassPrioritySampler``: the
  first epoch is instance-balanced, the last class-balanced.
- ``class_aware``: the official blocked round-robin: ``num_samples_cls``
  consecutive images of one class, classes visited in a cycle reshuffled at
  every pass, images of a class in a cycle reshuffled at every pass.

Common rules:
- an epoch has ``len(labels)`` draws by default (the official definition, so
  every strategy sees the same number of images); ``num_samples`` overrides it;
- the order depends only on ``(seed, epoch)``: call ``set_epoch`` before iterating;
- under DDP each of ``num_replicas`` ranks takes every ``num_replicas``-th draw
  of the one global stream of that ``(seed, epoch)``, starting at its ``rank``,
  after the stream is padded (by repeating its first draws) to a multiple of
  ``num_replicas``: the shares are equal-length and disjoint, and together
  they are the single-process epoch plus fewer than ``num_replicas`` draws;
- epochs are built with vectorised tensor ops; the per-class grouping is done
  once at construction.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from .errors import ConfigError, DataError

SAMPLER_Q = {"instance": 1.0, "sqrt": 0.5, "class": 0.0}
STRATEGIES = (*SAMPLER_Q, "power", "progressive", "class_aware")
Labels = Sequence[int] | np.ndarray | torch.Tensor


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator determined by ``(seed, epoch)`` alone."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _as_label_tensor(labels: Labels) -> torch.Tensor:
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if labels.dim() != 1 or len(labels) == 0:
        raise DataError(f"labels: expected a non-empty 1-D sequence of class indices, got shape {tuple(labels.shape)}")
    if int(labels.min()) < 0:
        raise DataError(f"labels: class indices must be >= 0, found {int(labels.min())}")
    return labels


def _replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """``(num_replicas, rank)``: as given, else from an initialised process group, else (1, 0)."""
    initialised = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if num_replicas < 1:
        raise ConfigError(f"num_replicas={num_replicas!r}: expected an integer >= 1")
    if not 0 <= rank < num_replicas:
        raise ConfigError(f"rank={rank!r}: expected an integer in [0, {num_replicas})")
    return num_replicas, rank


def power_law(class_counts: torch.Tensor, q: float) -> torch.Tensor:
    """(C,) float64 ``n_j^q / sum_i n_i^q``; classes without items get 0."""
    weights = class_counts.to(torch.float64).pow(q)
    weights[class_counts == 0] = 0.0
    return weights / weights.sum()


class EpochSampler(Sampler[int]):
    """Base of every strategy: an epoch is a tensor of dataset indices drawn from ``(seed, epoch)``.

    Subclasses implement :meth:`global_indices`; this class cuts the rank's share.

    Args:
        labels: (N,) class index per dataset item.
        num_samples: draws per epoch over all ranks; ``len(labels)`` by default.
        seed: with the epoch, fixes the draw.
        num_replicas, rank: the DDP share; from ``torch.distributed`` when not given.
        num_classes: the number of classes C, so that a class above the largest
            label without items is seen too; the largest label + 1 when not given.
    """

    def __init__(
        self,
        labels: Labels,
        *,
        num_samples: int | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        num_classes: int | None = None,
    ) -> None:
        self.labels = _as_label_tensor(labels)
        if num_classes is not None and int(self.labels.max()) >= num_classes:
            raise DataError(f"labels: class index {int(self.labels.max())}, expected below num_classes={num_classes}")
        if num_samples is not None and num_samples < 1:
            raise ConfigError(f"num_samples={num_samples!r}: expected an integer >= 1")
        self.num_samples = len(self.labels) if num_samples is None else num_samples
        self.seed = seed
        self.epoch = 0
        self.num_replicas, self.rank = _replicas(num_replicas, rank)
        self.class_counts = torch.bincount(self.labels, minlength=num_classes or 0)
        # Items grouped by class, once: class j owns order[starts[j] : starts[j] + class_counts[j]].
        self.order = torch.argsort(self.labels, stable=True)
        self.starts = torch.cumsum(self.class_counts, 0) - self.class_counts

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next ``__iter__`` yields."""
        self.epoch = epoch

    def global_indices(self) -> torch.Tensor:
        """(num_samples,) int64 dataset indices of the current epoch, all ranks together."""
        raise NotImplementedError

    def epoch_indices(self) -> torch.Tensor:
        """(len(self),) int64 dataset indices of this rank for the current epoch."""
        stream = self.global_indices()
        if self.num_replicas == 1:
            return stream
        padding = len(self) * self.num_replicas - len(stream)
        if padding:
            stream = torch.cat([stream, stream[:padding]])
        return stream[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices().tolist())

    def __len__(self) -> int:
        return -(-self.num_samples // self.num_replicas)

    def _require_every_class(self, strategy: str) -> None:
        """Refuse a law that gives a class without items a positive probability (it could never be drawn)."""
        empty = (self.class_counts == 0).nonzero().flatten()
        if len(empty):
            raise DataError(
                f"class {int(empty[0])} has no training images: {strategy} sampling needs at least one per class"
            )

    def _draw_classes(self, probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(num_samples,) i.i.d. classes with (C,) probabilities ``probs``, by inverting the CDF."""
        cdf = torch.cumsum(probs, 0)
        uniform = torch.rand(self.num_samples, generator=generator, dtype=torch.float64) * cdf[-1]
        # right=True skips classes of probability 0; the clamp guards the top end against rounding.
        return torch.searchsorted(cdf, uniform, right=True).clamp_(max=len(probs) - 1)

    def _draw_within(self, classes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(M,) class per draw -> (M,) dataset index, uniform inside each class."""
        uniform = torch.rand(len(classes), generator=generator, dtype=torch.float64)
        within = (uniform * self.class_counts[classes]).long()
        return self.order[self.starts[classes] + within]


class InstanceSampler(EpochSampler):
    """q = 1 as plain shuffling: a fresh permutation of the dataset per epoch (no replacement)."""

    def global_indices(self) -> torch.Tensor:
        generator = epoch_generator(self.seed, self.epoch)
        n = len(self.labels)
        rounds = -(-self.num_samples // n)
        return torch.cat([torch.randperm(n, generator=generator) for _ in range(rounds)])[: self.num_samples]


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
        if epochs is None or epochs < 1:
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


class ClassAwareSampler(EpochSampler):
    """The official blocked round-robin (``ClassAwareSampler`` of Kang et al.), vectorised.

    The epoch is a sequence of blocks of ``num_samples_cls`` images of one
    class. Blocks visit the classes in a cycle over a random permutation of
    them, reshuffled at every pass; inside a class, images come from a cycle
    over a random permutation of its images, reshuffled at every pass. Unlike
    the official iterators, whose state runs on across epochs, every epoch is
    drawn afresh from ``(seed, epoch)``, so epochs can be reproduced one by one.
    """

    def __init__(self, labels: Labels, num_samples_cls: int = 4, **kwargs) -> None:
        super().__init__(labels, **kwargs)
        if num_samples_cls < 1:
            raise ConfigError(f"num_samples_cls={num_samples_cls!r}: expected an integer >= 1")
        self._require_every_class("class-aware")
        self.num_samples_cls = num_samples_cls

    def global_indices(self) -> torch.Tensor:
        generator = epoch_generator(self.seed, self.epoch)
        k, num_classes = self.num_samples_cls, len(self.class_counts)
        blocks = -(-self.num_samples // k)
        # Class of each block: passes over the classes, each pass a fresh permutation.
        passes = -(-blocks // num_classes)
        block_class = torch.rand(passes, num_classes, generator=generator).argsort(1).flatten()[:blocks]
        # How often the block's class was visited before it (0, 1, 2, ... per class).
        by_class = torch.argsort(block_class, stable=True)
        visits = torch.bincount(block_class, minlength=num_classes)
        first_visit = torch.repeat_interleave(torch.cumsum(visits, 0) - visits, visits)
        rank_in_class = torch.empty(blocks, dtype=torch.int64)
        rank_in_class[by_class] = torch.arange(blocks) - first_visit
        # Position of every draw in its class's stream of images.
        draw_class = block_class.repeat_interleave(k)[: self.num_samples]
        position = (rank_in_class.unsqueeze(1) * k + torch.arange(k)).flatten()[: self.num_samples]
        return self._cycled_images(draw_class, position, visits * k, generator)

    def _cycled_images(
        self, draw_class: torch.Tensor, position: torch.Tensor, needed: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Image at ``position`` of each class's stream: passes over the class, each a fresh permutation.

        Args:
            draw_class, position: (M,) class and stream position of each draw.
            needed: (C,) stream length used per class this epoch.

        Returns:
            (M,) dataset indices.
        """
        counts = self.class_counts
        rounds = -(-needed // counts)  # passes over each class
        # One group per (class, pass), laid out class by class: group g holds counts[class] slots.
        group_class = torch.repeat_interleave(torch.arange(len(counts)), rounds)
        group_size = counts[group_class]
        group_start = torch.cumsum(group_size, 0) - group_size
        slot_group = torch.repeat_interleave(torch.arange(len(group_class)), group_size)
        slot_rank = torch.arange(len(slot_group)) - group_start[slot_group]
        slot_image = self.order[self.starts[group_class[slot_group]] + slot_rank]
        # Shuffle inside every group at once: one integer sort on (group, random 31-bit key).
        keys = slot_group * (1 << 31) + torch.randint(0, 1 << 31, (len(slot_group),), generator=generator)
        slot_image = slot_image[torch.sort(keys, stable=True).indices]
        first_group = torch.cumsum(rounds, 0) - rounds
        counts_of_draw = counts[draw_class]
        group = first_group[draw_class] + position // counts_of_draw
        return slot_image[group_start[group] + position % counts_of_draw]


def make_sampler(
    labels: Labels,
    strategy: str,
    *,
    seed: int = 0,
    epochs: int | None = None,
    num_samples_cls: int = 4,
    num_replicas: int | None = None,
    rank: int | None = None,
    q: float | None = None,
    num_samples: int | None = None,
    num_classes: int | None = None,
) -> EpochSampler:
    """The sampler named ``strategy``.

    Args:
        labels: (N,) class indices (sequence, NumPy array or tensor).
        strategy: ``instance``, ``class``, ``sqrt``, ``power`` (needs ``q``),
            ``progressive`` (needs ``epochs``) or ``class_aware``.
        seed: with the epoch given to ``set_epoch``, fixes the order.
        epochs: T of the progressive sampler.
        num_samples_cls: block length of ``class_aware`` (official: 4).
        num_replicas, rank: the DDP share; from ``torch.distributed`` when not given.
        q: exponent of ``power`` (ignored by the other strategies).
        num_samples: draws per epoch (all ranks); ``len(labels)`` by default.
        num_classes: C, so that class-balanced, progressive and class-aware
            sampling refuse an empty class above the largest label too (naming it).

    Raises:
        DataError: for ``class``, ``power`` with q = 0, ``progressive`` and
            ``class_aware`` when a class has no item; ``instance``, ``sqrt`` and
            ``power`` with q > 0 give such a class probability n^q = 0 and run.
    """
    common = {
        "seed": seed,
        "num_samples": num_samples,
        "num_replicas": num_replicas,
        "rank": rank,
        "num_classes": num_classes,
    }
    if strategy == "instance":
        return InstanceSampler(labels, **common)
    if strategy == "power":
        if q is None:
            raise ConfigError("sampler 'power' needs q in [0, 1]")
        return ClassPowerSampler(labels, q, **common)
    if strategy in SAMPLER_Q:
        return ClassPowerSampler(labels, SAMPLER_Q[strategy], **common)
    if strategy == "progressive":
        return ProgressiveSampler(labels, epochs, **common)
    if strategy == "class_aware":
        return ClassAwareSampler(labels, num_samples_cls, **common)
    raise ConfigError(f"sampler {strategy!r}: expected one of {', '.join(STRATEGIES)}")


def section_sampler(
    labels: Labels,
    section: Any,
    *,
    epochs: int,
    seed: int,
    num_replicas: int | None = None,
    rank: int | None = None,
    num_classes: int | None = None,
) -> EpochSampler:
    """The sampler a config section names (its ``sampler``, ``sampler_q``, ``num_samples_cls``) over ``epochs``.

    ``section`` is ``train`` or ``decouple``. ``num_replicas``/``rank``: this
    process's share of each epoch under DDP (taken from a running process group
    when not given). ``num_classes``: so that a class-balanced law names an
    empty class above the largest label too.
    """
    return make_sampler(
        labels,
        section.sampler,
        seed=seed,
        epochs=epochs,
        q=section.sampler_q,
        num_samples_cls=section.num_samples_cls,
        num_replicas=num_replicas,
        rank=rank,
        num_classes=num_classes,
    )
