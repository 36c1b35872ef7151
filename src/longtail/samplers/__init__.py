"""Every sampling strategy of Kang et al. (2020), as real ``torch.utils.data.Sampler`` objects: one file each,
one spec each, one registry (:data:`~longtail.registry.SAMPLERS`).

- q-family (eq. 1, :mod:`.power` and :mod:`.instance`): class ``j`` is drawn with
  ``p_j = n_j^q / sum_i n_i^q``, then an instance uniformly inside it;
- ``progressive`` (:mod:`.progressive`): from instance- to class-balanced over the epochs;
- ``class_aware`` (:mod:`.class_aware`): the official blocked round-robin.

The rules every strategy follows (epoch length, ``(seed, epoch)`` order, DDP
shares) are :class:`~longtail.samplers.base.EpochSampler`'s. Adding a strategy is
adding a file to this package.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any

from ..config.validate import check_section
from ..errors import ConfigError
from ..registry import SAMPLERS
from .base import EpochSampler, Labels, SamplerSpec, epoch_generator, power_law, register_sampler, unregister_sampler


def make_sampler(
    labels: Labels,
    strategy: str,
    *,
    seed: int = 0,
    epochs: int | None = None,
    num_replicas: int | None = None,
    rank: int | None = None,
    num_samples: int | None = None,
    num_classes: int | None = None,
    **options: Any,
) -> EpochSampler:
    """The sampler named ``strategy``.

    Args:
        labels: (N,) class indices (sequence, NumPy array or tensor).
        strategy: a registered strategy (``instance``, ``class``, ``sqrt``, ``power``, ``progressive``,
            ``class_aware``, ...).
        seed: with the epoch given to ``set_epoch``, fixes the order.
        epochs: T of a strategy that changes over the epochs (``progressive``).
        num_replicas, rank: the DDP share; from ``torch.distributed`` when not given.
        num_samples: draws per epoch (all ranks); ``len(labels)`` by default.
        num_classes: C, so that class-balanced, progressive and class-aware
            sampling refuse an empty class above the largest label too (naming it).
        options: the keys of the strategy's section (``q=`` for ``power``, ``num_samples_cls=`` for
            ``class_aware``); the others keep their defaults.

    Raises:
        ConfigError: an unknown strategy or option, an invalid option value.
        DataError: for a class-balanced law (``class``, ``power`` with q = 0, ``progressive``,
            ``class_aware``) when a class has no item; ``instance``, ``sqrt`` and ``power`` with q > 0 give
            such a class probability n^q = 0 and run.
    """
    spec: SamplerSpec = SAMPLERS.get(strategy)
    known = {f.name for spec_ in SAMPLERS.values() if spec_.config for f in dataclasses.fields(spec_.config)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(
            f"sampler {strategy!r}: unknown option {unknown[0]!r}; expected some of {', '.join(sorted(known))}"
        )
    section = None
    if spec.config is not None:  # the options of other strategies are ignored, as the config's sections are
        own = {f.name for f in dataclasses.fields(spec.config)}
        section = spec.config(**{k: v for k, v in options.items() if k in own})
        check_section(section, f"{strategy}.")
    common = {"seed": seed, "num_samples": num_samples, "num_replicas": num_replicas, "rank": rank}
    return spec.create(labels, section, epochs, num_classes=num_classes, **common)


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
    """The sampler a config section names (its ``sampler``, with that strategy's own section) over ``epochs``.

    ``section`` is ``train`` or ``decouple``. ``num_replicas``/``rank``: this
    process's share of each epoch under DDP (taken from a running process group
    when not given). ``num_classes``: so that a class-balanced law names an
    empty class above the largest label too.
    """
    spec: SamplerSpec = SAMPLERS.get(section.sampler)
    options = getattr(section, spec.name) if spec.config is not None else None
    common = {"seed": seed, "num_replicas": num_replicas, "rank": rank, "num_classes": num_classes}
    return spec.create(labels, options, epochs, **common)


def _import_sampler_files() -> None:
    """Import every module of this package: each registers its strategies."""
    for module in sorted(info.name for info in pkgutil.iter_modules(__path__)):
        if module != "base":
            importlib.import_module(f"{__name__}.{module}")


_import_sampler_files()

from .class_aware import ClassAwareSampler  # noqa: E402
from .instance import InstanceSampler  # noqa: E402
from .power import ClassPowerSampler  # noqa: E402
from .progressive import ProgressiveSampler  # noqa: E402

__all__ = [
    "SAMPLERS",
    "ClassAwareSampler",
    "ClassPowerSampler",
    "EpochSampler",
    "InstanceSampler",
    "ProgressiveSampler",
    "SamplerSpec",
    "epoch_generator",
    "make_sampler",
    "power_law",
    "register_sampler",
    "section_sampler",
    "unregister_sampler",
]
