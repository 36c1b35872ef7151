"""Stage-1 losses: one file each, one spec each, one registry (:data:`~longtail.registry.LOSSES`).

A loss file holds its ``nn.Module``, its config section (``train.<name>.*``) and
a :class:`~longtail.losses.base.LossSpec` registered with
:func:`~longtail.losses.base.register_loss`; the files of this package are
imported when it is, so adding a loss is adding a file. ``create_loss`` builds
one by name (config key ``train.loss``).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Sequence
from numbers import Integral
from typing import Any

from ..config import Config
from ..config.validate import check_section
from ..errors import ConfigError
from ..registry import LOSSES
from .base import (
    ZERO_COUNT,
    CountsLike,
    Loss,
    LossSpec,
    as_counts,
    class_balanced_weights,
    ldam_margins,
    log_prior,
    register_loss,
    unregister_loss,
)


def create_loss(name: str, class_counts: CountsLike, *, epochs: int = 1, **options: Any) -> Loss:
    """Build the loss registered as ``name`` for these class counts.

    ``options`` are keys of the losses' sections (``gamma=`` for ``focal``, ``beta=`` for
    ``class_balanced``, ``drw_epoch=`` for ``ldam_drw``, ...): the chosen loss takes its
    own, the others keep their defaults. ``epochs``: the length of the training (LDAM's DRW starts at 80 % of it
    by default).

    Raises:
        ConfigError: an unknown name (naming ``train.loss`` and the choices), invalid class counts, ``epochs``
            not an integer >= 1, or an invalid option of the chosen loss.
    """
    spec: LossSpec = LOSSES.get(name)
    counts = as_counts(class_counts)  # the same validation for every loss, including "ce"
    # Checked here: LDAM's default drw_epoch (80 % of it) would otherwise name drw_epoch, or fail in arithmetic.
    if isinstance(epochs, bool) or not isinstance(epochs, Integral) or epochs < 1:
        raise ConfigError(f"epochs={epochs!r}: expected an integer >= 1")
    known = {f.name for spec_ in LOSSES.values() if spec_.config for f in dataclasses.fields(spec_.config)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"loss {name!r}: unknown option {unknown[0]!r}; expected some of {', '.join(sorted(known))}")
    section = None
    if spec.config is not None:  # the options of other losses are ignored, as the config's sections are
        own = {f.name for f in dataclasses.fields(spec.config)}
        section = spec.config(**{key: value for key, value in options.items() if key in own})
        check_section(section, f"train.{name}.")
    return spec.create(counts, section, epochs)


def stage1_loss(config: Config, train_counts: Sequence[int]) -> Loss:
    """The ``train.loss`` criterion with its section's keys, for the training class sizes."""
    spec: LossSpec = LOSSES.get(config.train.loss)
    section = getattr(config.train, spec.name) if spec.config is not None else None
    return spec.create(as_counts(train_counts), section, config.train.epochs)


def _import_loss_files() -> None:
    """Import every module of this package: each registers its loss."""
    for module in sorted(info.name for info in pkgutil.iter_modules(__path__)):
        if module != "base":
            importlib.import_module(f"{__name__}.{module}")


_import_loss_files()

from .balanced_softmax import BalancedSoftmaxLoss  # noqa: E402
from .ce import CrossEntropyLoss  # noqa: E402
from .class_balanced import ClassBalancedLoss, weighted_focal_terms  # noqa: E402
from .focal import FocalLoss, focal_terms  # noqa: E402
from .label_aware import LABEL_AWARE_SHAPES, LabelAwareSmoothingLoss, label_aware_epsilons  # noqa: E402
from .ldam_drw import LDAMLoss  # noqa: E402
from .logit_adjusted import LogitAdjustedLoss  # noqa: E402

__all__ = [
    "LABEL_AWARE_SHAPES",
    "LOSSES",
    "ZERO_COUNT",
    "BalancedSoftmaxLoss",
    "ClassBalancedLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "LDAMLoss",
    "LabelAwareSmoothingLoss",
    "LogitAdjustedLoss",
    "Loss",
    "LossSpec",
    "as_counts",
    "class_balanced_weights",
    "create_loss",
    "focal_terms",
    "label_aware_epsilons",
    "ldam_margins",
    "log_prior",
    "register_loss",
    "stage1_loss",
    "unregister_loss",
    "weighted_focal_terms",
]
