"""Which methods choose on validation, and refusing a choice that would be arbitrary: a ``decouple.select``
metric over an empty group.

``decouple.select=few`` scores every candidate (a τ, a WB grid point, ``auto``'s
methods) by its validation accuracy on the few-shot classes. When no class is
few-shot, or none of them has a validation image, every candidate scores None
and the "choice" is the first candidate, reported as if it had won. That is
refused before anything is fitted (:func:`check_select_group`), by ``decouple``,
``grid`` (before its first training) and the scikit-learn estimator alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..config import Config, config_to_dict
from ..errors import ConfigError
from ..evaluation.metrics import shot_groups
from .base import MethodSpec

GROUP_RULES = {"many": "more than {many}", "medium": "{few} to {many}", "few": "fewer than {few}"}


def chooses_on_validation(spec: MethodSpec) -> bool:
    """Whether a method chooses anything by ``decouple.select`` on validation: ``auto``, a τ sweep, WB's grid."""
    return spec.chooses_among_others or spec.sweep is not None or spec.selects


def check_select_group(
    select: str,
    train_counts: Sequence[int],
    val_labels: Any,
    *,
    many: int,
    few: int,
    names: tuple[str, str, str] = ("decouple.select", "eval.many", "eval.few"),
) -> None:
    """Refuse a selection metric that is a shot group without a class, or without a validation image.

    Args:
        select: the metric that chooses (``macro``, ``all`` or a group name).
        train_counts: (C,) training images per class, which define the groups.
        val_labels: (N,) labels of the validation split the choice is made on.
        many, few: the group thresholds.
        names: how the caller names the select key and the two thresholds, for the message.

    Raises:
        ConfigError: naming the key, the empty group and what to change.
    """
    if select not in GROUP_RULES:
        return  # macro and all are defined on any non-empty validation split
    key, many_name, few_name = names
    rule = GROUP_RULES[select].format(many=f"{many_name}={many}", few=f"{few_name}={few}")
    members = shot_groups(train_counts, many, few)[select]
    sizes = f"class sizes {min(train_counts)} to {max(train_counts)}" if len(train_counts) else "no classes"
    if not members:
        raise ConfigError(
            f"{key}={select}: the {select}-shot group is empty (no class has {rule} training images; {sizes}), "
            f"so every candidate would score None on it and the choice would be arbitrary; use {key}=macro, "
            f"or change {few_name if select != 'many' else many_name}"
        )
    labels = np.asarray(val_labels.cpu() if hasattr(val_labels, "cpu") else val_labels)
    if not np.isin(labels, members).any():
        raise ConfigError(
            f"{key}={select}: none of the {len(members)} {select}-shot classes ({rule} training images) has a "
            f"validation image, so every candidate would score None on it and the choice would be arbitrary; "
            f"use {key}=macro, or give those classes validation images"
        )


def check_select_on_data(configs: Iterable[Config]) -> None:
    """:func:`check_select_group` on the data each config describes, built here (each distinct ``data``
    section once): ``grid`` calls it before its first training, for every combination of a sweep."""
    from ..data import create_dataset  # the data readers: only when a group metric chooses

    seen: set[str] = set()
    for config in configs:
        data = repr(config_to_dict(config)["data"])
        if config.decouple.select not in GROUP_RULES or data in seen:
            continue
        seen.add(data)
        splits = create_dataset(config.data)
        many, few = config.eval.many, config.eval.few
        check_select_group(config.decouple.select, splits.train_counts, splits.val.labels, many=many, few=few)
