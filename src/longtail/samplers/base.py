"""What every sampling strategy shares: an epoch of dataset indices drawn from ``(seed, epoch)``, cut into
equal DDP shares, and the spec a strategy registers.

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

A strategy is one file of this package: its sampler, its config section (keys
``train.<name>.*`` and ``decouple.<name>.*``, if it has any) and a
:class:`SamplerSpec` registered with :func:`register_sampler`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ..config import Config, register_component_sections, unregister_component_sections
from ..data.longtail import FREE_CLASSES
from ..errors import ConfigError, DataError
from ..registry import SAMPLERS

Labels = Sequence[int] | np.ndarray | torch.Tensor
PARENTS = ("train", "decouple")  # a strategy's keys exist for stage 1 and for stage 2 alike


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator determined by ``(seed, epoch)`` alone."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int if it is an integer >= ``minimum`` (NumPy integers too); a one-line ConfigError
    otherwise, here rather than a TypeError of ``torch.rand`` or NumPy's seeding at the first iteration."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ConfigError(f"{name}={value!r}: expected an integer >= {minimum}")
    return int(value)


def as_label_tensor(labels: Labels, name: str = "labels") -> torch.Tensor:
    """(N,) int64 class indices >= 0 from any 1-D tensor, array or sequence of integers (integral floats too),
    or a one-line DataError naming ``name``: text, fractions, NaN, negatives and empty or 2-D input."""
    values = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if values.dtype.kind not in "biuf":  # text, objects: NumPy's or torch's own message would not say what is wrong
        raise DataError(f"{name}: expected integer class indices, got {values.dtype} values")
    if values.ndim != 1 or len(values) == 0:
        raise DataError(f"{name}: expected a non-empty 1-D sequence of class indices, got shape {values.shape}")
    if values.dtype.kind == "f":  # 1.0 is class 1; 0.5 or NaN would be truncated into some class silently
        fractional = ~np.isfinite(values) | (values != np.round(values))
        if fractional.any():
            raise DataError(f"{name}: expected integer class indices, found {values[fractional][0].item()!r}")
    labels = torch.as_tensor(values.astype(np.int64))
    if int(labels.min()) < 0:
        raise DataError(f"{name}: class indices must be >= 0, found {int(labels.min())}")
    return labels


def _replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """``(num_replicas, rank)``: as given, else from an initialised process group, else (1, 0)."""
    initialised = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    num_replicas = check_int("num_replicas", num_replicas, 1)
    if isinstance(rank, bool) or not isinstance(rank, Integral) or not 0 <= rank < num_replicas:
        raise ConfigError(f"rank={rank!r}: expected an integer in [0, {num_replicas})")
    return num_replicas, int(rank)


def power_law(class_counts: torch.Tensor, q: float) -> torch.Tensor:
    """(C,) float64 ``n_j^q / sum_i n_i^q``; classes without items get 0."""
    weights = class_counts.to(torch.float64).pow(q)
    weights[class_counts == 0] = 0.0
    return weights / weights.sum()


class EmptyClassError(DataError):
    """A sampling law that must draw every class met a class without training items.

    A class of its own so that the command that chose the sampler can name its key
    (``train.sampler``, ``decouple.sampler``): the sampler alone knows only its strategy.
    """


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
        self.labels = as_label_tensor(labels)
        if num_classes is not None:
            num_classes = check_int("num_classes", num_classes, 1)
            if int(self.labels.max()) >= num_classes:
                raise DataError(
                    f"labels: class index {int(self.labels.max())}, expected below num_classes={num_classes}"
                )
        # The per-class tables are as long as the classes: a stray label of 10**9 (or such a num_classes) would
        # allocate gigabytes. Classes may outnumber the items only as far as the data readers allow.
        classes, limit = max(num_classes or 0, int(self.labels.max()) + 1), max(len(self.labels), FREE_CLASSES)
        if classes > limit:
            raise DataError(
                f"labels: {classes:,} classes for {len(self.labels):,} items; expected class indices 0 to C-1 "
                f"(at most {limit:,} classes here)"
            )
        self.num_samples = len(self.labels) if num_samples is None else check_int("num_samples", num_samples, 1)
        self.seed = check_int("seed", seed, 0)  # NumPy's SeedSequence takes no negative seed
        self.epoch = 0
        self.num_replicas, self.rank = _replicas(num_replicas, rank)
        self.class_counts = torch.bincount(self.labels, minlength=num_classes or 0)
        # Items grouped by class, once: class j owns order[starts[j] : starts[j] + class_counts[j]].
        self.order = torch.argsort(self.labels, stable=True)
        self.starts = torch.cumsum(self.class_counts, 0) - self.class_counts

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (an integer >= 0) whose order the next ``__iter__`` yields."""
        self.epoch = check_int("epoch", epoch, 0)

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
            # Cycled: with more replicas than draws the padding is longer than the stream itself.
            stream = torch.cat([stream, stream[torch.arange(padding) % len(stream)]])
        return stream[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices().tolist())

    def __len__(self) -> int:
        return -(-self.num_samples // self.num_replicas)

    def _require_every_class(self, strategy: str) -> None:
        """Refuse a law that gives a class without items a positive probability (it could never be drawn)."""
        empty = (self.class_counts == 0).nonzero().flatten()
        if len(empty):
            raise EmptyClassError(
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


@dataclass(frozen=True)
class SamplerSpec:
    """A sampling strategy's registry entry (see :func:`register_sampler`).

    Attributes:
        name: ``train.sampler`` / ``decouple.sampler`` value, and the name of its sections.
        label: its row label in tables and the grid (``Square-root``).
        law: what it draws, in one line (``p_j ∝ √n_j``), for ``--help`` and the docs.
        create: ``(labels (N,), its section or None, epochs, **common) -> EpochSampler``; ``common`` holds
            ``seed``, ``num_samples``, ``num_replicas``, ``rank``, ``num_classes`` of :class:`EpochSampler`.
        config: its sections' dataclass, registered as ``train.<name>`` and ``decouple.<name>``; None: no keys.
        class_shares: ``(class counts (C,), its section) -> (C,)`` share of draws per class over a whole
            training (the scikit-learn estimator's exact solvers weight classes by it); None: unknown.
        in_paper: one of the four stage-1 strategies the paper compares (the grid's default rows).
        check: a rule across config keys (``check(config)``), when it is selected.
        renamed: its keys' names before they had a section (``{"sampler_q": "q"}``: ``train.sampler_q`` is read
            as ``train.power.q``), so older config files still load.
    """

    name: str
    label: str
    law: str
    create: Callable[..., EpochSampler]
    config: type | None = None
    class_shares: Callable[[torch.Tensor, Any], torch.Tensor] | None = None
    in_paper: bool = False
    check: Callable[[Config], None] | None = None
    renamed: dict[str, str] = field(default_factory=dict)


def register_sampler(spec: SamplerSpec) -> SamplerSpec:
    """Add ``spec`` to :data:`~longtail.registry.SAMPLERS`, with its sections under ``train`` and ``decouple``."""
    SAMPLERS.register(spec.name, spec)
    register_component_sections(PARENTS, spec.name, spec.config, spec.renamed)
    return spec


def unregister_sampler(name: str) -> None:
    """Remove a strategy added by :func:`register_sampler` (tests, plugins)."""
    if SAMPLERS.unregister(name) is not None:
        unregister_component_sections(PARENTS, name)
