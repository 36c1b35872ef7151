"""The validation split of datasets that ship none: class-balanced, held out of the training images.

τ, and any other choice, is made on validation, never on test. Where a dataset
has no validation split of its own, up to ``per_class`` images of each class
are held out:

1. from the training images *not* used by the long-tailed subset (Fashion-MNIST-LT,
   CIFAR-LT: the subset leaves most of the tail classes' images unused);
2. failing that (a class with too few unused images, or a dataset used whole),
   from the class's training images themselves, which then leave the
   training set, but never more than a fifth of the class nor its last image.

A class of fewer than five training images therefore gets no validation image;
metrics skip such a class on validation (its per-class accuracy is undefined),
and everything still runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DataError


@dataclass
class Holdout:
    """The result of :func:`holdout_validation`.

    ``train`` and ``val`` index the full training pool; ``from_unused`` and
    ``from_train`` count the validation images taken from each source.
    """

    train: np.ndarray
    val: np.ndarray
    from_unused: int
    from_train: int
    per_class: list[int] = field(default_factory=list)

    def describe(self) -> str:
        """Where the validation images came from, in words (for ``DatasetSplits.info``)."""
        if self.from_train == 0:
            return "held out from training images unused by the long-tailed subset"
        if self.from_unused == 0:
            return "held out from the training set (at most a fifth of each class)"
        return (
            f"held out: {self.from_unused} from training images unused by the subset, "
            f"{self.from_train} from the training set itself (at most a fifth of a class)"
        )


def holdout_validation(
    labels: np.ndarray, subset: np.ndarray | None, per_class: int, num_classes: int, seed: int
) -> Holdout:
    """Hold out up to ``per_class`` validation images per class; see the module docstring for the rule.

    Args:
        labels: (N,) class index of every available training image.
        subset: indices into ``labels`` forming the training set (the
            long-tailed subset); None: all images.
        per_class: validation images wanted per class.
        num_classes: number of classes.
        seed: seed of the draw.

    Returns:
        The sorted training and validation indices into ``labels``, disjoint.
    """
    labels = np.asarray(labels, dtype=np.int64)
    subset = np.arange(len(labels)) if subset is None else np.asarray(subset, dtype=np.int64)
    unused = np.setdiff1d(np.arange(len(labels)), subset)
    # Step 1, the unused images: one seeded permutation of the pool, first ``per_class`` of each class.
    pool = np.random.default_rng(seed).permutation(unused)
    pool_labels = labels[pool]
    # Step 2's draw has its own generator, so that step 1 alone matches earlier releases exactly.
    fallback = np.random.default_rng([seed, 1])
    val_parts, removed, from_unused, from_train, taken = [], [], 0, 0, []
    subset_labels = labels[subset]
    for cls in range(num_classes):
        chosen = pool[pool_labels == cls][:per_class]
        from_unused += len(chosen)
        short = per_class - len(chosen)
        members = subset[subset_labels == cls]
        allowed = min(short, len(members) // 5, len(members) - 1)
        if allowed > 0:
            extra = fallback.permutation(members)[:allowed]
            removed.append(extra)
            chosen = np.concatenate([chosen, extra])
            from_train += allowed
        val_parts.append(chosen)
        taken.append(len(chosen))
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.zeros(0, dtype=np.int64)
    removed_all = np.concatenate(removed) if removed else np.zeros(0, dtype=np.int64)
    train = np.sort(np.setdiff1d(subset, removed_all))
    return Holdout(train, val.astype(np.int64), from_unused, from_train, taken)


def require_evaluation_images(
    name: str, val_labels: Any, test_labels: Any, *, held_out: bool, unit: str = "images"
) -> None:
    """Refuse a dataset whose validation or test split came out empty: nothing could be chosen or scored.

    Args:
        name: the dataset, for the message.
        val_labels, test_labels: (N,) labels of the two splits (anything with ``len``).
        held_out: whether validation was held out of the training images (else it is the dataset's own).
        unit: what the samples are, for the message: "images", or "vectors" for a features file.

    Raises:
        DataError: naming the empty split and what would fill it.
    """
    if len(test_labels) == 0:
        raise DataError(f"{name}: the test split has no {unit}; expected at least one")
    if len(val_labels) == 0:
        why = (
            f"held out of the training {unit}, a class needs at least 5 of them to give one"
            if held_out
            else "the dataset's own validation split is empty"
        )
        raise DataError(
            f"{name}: the validation split has no {unit} ({why}); τ and the epoch records are chosen on it: "
            f"give a validation split (x_val/y_val in the .npz, data.filelist.val_list, a val/ folder) or more "
            f"training {unit}"
        )
