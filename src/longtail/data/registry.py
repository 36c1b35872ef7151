"""Dataset readers by name: a :class:`DatasetSpec` per reader, registered from the reader's own file, and
``create_dataset(cfg)`` for ``data.name``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import Config, DataConfig, register_component_sections, unregister_component_sections
from ..errors import DataError
from ..registry import DATASETS
from .dataset import DatasetSplits


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset reader's registry entry (see :func:`register_dataset`).

    Attributes:
        name: ``data.name`` value, and the name of its section ``data.<name>``.
        label: how tables name it (``Fashion-MNIST-LT``).
        summary: what it reads, in one line (``longtail config --help``, the docs).
        create: ``(DataConfig) -> DatasetSplits``; its own keys are ``cfg.<name>`` (its section).
        config: its section's dataclass (defaults, help, constraints); None: no keys of its own.
        locations: keys of its section that say where its files are (they may change on a trained run, as
            ``data.root`` and ``data.path`` may; the data's fingerprint says whether it is the same data).
        holds_features: it reads feature vectors, not images (the backbone is then the identity).
        image_files: it reads images from files (the image-file keys apply: image_size, resize, skip_bad, ...).
        draws_subset: it draws a long-tailed subset of a balanced source (``data.n_max``,
            ``data.imbalance_factor``, ``data.profile`` apply).
        check: a rule across config keys (``check(config)``), when it is selected.
        renamed: its keys' names before it had a section (``{"train_list": "train_list"}``: ``data.train_list``
            is read as ``data.filelist.train_list``), so older config files still load.
    """

    name: str
    label: str
    summary: str
    create: Callable[[DataConfig], DatasetSplits]
    config: type | None = None
    locations: tuple[str, ...] = ()
    holds_features: bool = False
    image_files: bool = False
    draws_subset: bool = False
    check: Callable[[Config], None] | None = None
    renamed: dict[str, str] = field(default_factory=dict)


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to :data:`~longtail.registry.DATASETS`, with its ``data.<name>`` section; returns it."""
    DATASETS.register(spec.name, spec)
    register_component_sections(("data",), spec.name, spec.config, spec.renamed)
    return spec


def unregister_dataset(name: str) -> None:
    """Remove a reader added by :func:`register_dataset` (tests, plugins)."""
    if DATASETS.unregister(name) is not None:
        unregister_component_sections(("data",), name)


def location_keys() -> tuple[str, ...]:
    """Every reader's location keys, dotted (``data.filelist.train_list``, ...), besides ``data.root`` and
    ``data.path``: where the data lives may change on a trained run."""
    return tuple(f"data.{spec.name}.{key}" for spec in DATASETS.values() for key in spec.locations)


def create_dataset(cfg: DataConfig) -> DatasetSplits:
    """Build the dataset named by ``cfg.name``; ``cfg.seed`` fixes its long-tailed subset.

    Raises:
        DataError: the data has fewer than two classes, whatever its reader: every method would score
            100 on one class, a number that compares nothing.
    """
    spec: DatasetSpec = DATASETS.get(cfg.name)
    splits = spec.create(cfg)
    if splits.num_classes < 2:
        source = cfg.path or cfg.root or cfg.name
        raise DataError(
            f"{source}: {splits.name} has {splits.num_classes} class in its training split; "
            "long-tailed recognition needs at least 2 classes"
        )
    return splits


def dataset_spec(name: str) -> Any:
    """The registered spec of reader ``name``."""
    return DATASETS.get(name)
