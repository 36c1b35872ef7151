"""The recipe behind :class:`~longtail.sklearn.DecoupledClassifier`, on tensors: no scikit-learn here.

1. a class-balanced validation split held out of the training matrix
   (:func:`validation_split`, the rule of :mod:`longtail.data.holdout`);
2. the joint linear classifier, a linear probe: instance-balanced SGD with
   cross-entropy (:func:`train_joint`, the engine's ``train_head`` with the
   ``train`` section);
3. the stage-2 method through the method protocol (:func:`fit_method`): a
   :class:`~longtail.methods.FitContext` over in-memory features, trained with
   :func:`~longtail.methods.train_on_features`, ``auto`` after every method of
   ``all`` as ``longtail decouple`` does.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from ..config import Config, load_config
from ..data.holdout import holdout_validation
from ..engine.head_training import Features, train_head
from ..methods import FitContext, Fitted, expand_methods, iter_specs, selection, spec_of, train_on_features
from ..methods.crt import fresh_linear_head
from ..models.heads import LinearHead

# decouple.* keys that need images through a backbone: a feature matrix has none.
IMAGE_ONLY_KEYS = ("decouple.features", "decouple.trainable", "decouple.bn", "decouple.views")


def override_strings(config: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    """``{"decouple.crt.epochs": 10}`` (or ``["decouple.crt.epochs=10"]``) as ``key=value`` overrides.

    Only ``decouple.*`` keys: the joint probe and the shot groups have their own
    estimator parameters. Values are written as JSON, which the config reads as
    YAML (``null``, ``true``, lists); strings go as they are.

    Raises:
        ValueError: a key outside ``decouple.*``, or one that needs images.
    """
    if config is None:
        return []
    if isinstance(config, Mapping):
        items = [f"{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in config.items()]
    elif isinstance(config, Sequence) and not isinstance(config, str):
        items = [str(item) for item in config]
    else:
        raise ValueError(f"config={config!r}: expected a dict of decouple.* keys, e.g. {{'decouple.crt.epochs': 10}}")
    for item in items:
        key = item.partition("=")[0].strip()
        if not key.startswith("decouple."):
            raise ValueError(f"config key {key!r}: only decouple.* keys; the joint probe has estimator parameters")
        if key.startswith(IMAGE_ONLY_KEYS):
            raise ValueError(f"config key {key!r}: needs images through a backbone; this estimator has features only")
    return items


def auto_batch_size(num_samples: int) -> int:
    """``batch_size="auto"``: 32 steps per epoch (``num_samples // 32``), kept within 32 and the official 512.

    The official stage-2 recipe (batch 512) assumes ImageNet-scale data; on a
    few hundred samples it would take one SGD step per epoch, ten for all of cRT.
    """
    return min(512, max(32, num_samples // 32))


def head_batch_overrides(batch_size: int, overrides: list[str]) -> list[str]:
    """``decouple.<m>.batch_size=batch_size`` for every trained head's section the overrides leave unset."""
    given = {item.partition("=")[0].strip() for item in overrides}
    sections = load_config(None).decouple.sections
    keys = [f"decouple.{name}.batch_size" for name, section in sections.items() if hasattr(section, "batch_size")]
    return [f"{key}={batch_size}" for key in keys if key not in given]


def probe_config(
    *,
    seed: int,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    many: int,
    few: int,
    overrides: list[str],
) -> Config:
    """The longtail config of one fit: ``train.*`` is the joint probe (instance-balanced), ``decouple.*`` as given,
    the trained heads at ``batch_size`` unless the overrides set theirs."""
    keys = [
        f"seed={seed}",
        "train.sampler=instance",
        f"train.epochs={epochs}",
        f"train.lr={lr!r}",
        f"train.batch_size={batch_size}",
        f"train.weight_decay={weight_decay!r}",
        f"eval.many={many}",
        f"eval.few={few}",
    ]
    return load_config(None, [*keys, *head_batch_overrides(batch_size, overrides), *overrides])


def chooses_on_validation(method: str) -> bool:
    """Whether ``method`` chooses anything on validation: a swept τ, WB's grid, or ``auto``'s choice."""
    return method != "joint" and selection.chooses_on_validation(spec_of(method))


def check_selection(method: str, splits: dict[str, Features], num_classes: int, config: Config) -> None:
    """Refuse, before anything trains, ``decouple.select`` over a shot group that is empty in ``splits["train"]``
    or has no sample in ``splits["val"]``, for a method that chooses on validation (the choice would be arbitrary)."""
    if chooses_on_validation(method):
        counts = torch.bincount(splits["train"].y, minlength=num_classes).tolist()
        many, few = config.eval.many, config.eval.few
        names = ("decouple.select", "many", "few")
        selection.check_select_group(config.decouple.select, counts, splits["val"].y, many=many, few=few, names=names)


def validation_split(
    codes: np.ndarray, num_classes: int, *, val_per_class: int | None, validation_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)`` of a class-balanced validation split held out of ``codes`` (N,) class indices.

    ``val_per_class`` samples of each class, or, when None, ``validation_fraction``
    of the samples spread evenly over the classes; no class gives more than a
    fifth of its samples nor its last one (:func:`~longtail.data.holdout.holdout_validation`),
    so a class of fewer than five samples gives none and ``val`` may be empty.
    """
    per_class = val_per_class
    if per_class is None:
        per_class = max(1, round(validation_fraction * len(codes) / num_classes)) if validation_fraction > 0 else 0
    if per_class == 0:
        return np.arange(len(codes)), np.zeros(0, dtype=np.int64)
    holdout = holdout_validation(codes, None, per_class, num_classes, seed)
    return holdout.train, holdout.val


def as_features(x: np.ndarray, codes: np.ndarray) -> Features:
    """(N, d) array and (N,) class indices as float32 / int64 tensors (copies: the input may be read-only)."""
    return Features(torch.tensor(x, dtype=torch.float32), torch.tensor(codes, dtype=torch.int64))


def train_joint(train: Features, num_classes: int, config: Config, device: torch.device) -> LinearHead:
    """The joint linear classifier: a fresh (seeded) linear layer trained with ``config.train``
    (instance-balanced sampling, cross-entropy, SGD, cosine), in eval mode on ``device``."""
    head = fresh_linear_head(train.x.shape[1], num_classes, config.seed)
    return train_head(head, train, config.train, sampling=config.train, seed=config.seed, device=device)


def fit_method(
    method: str, splits: dict[str, Features], joint: LinearHead, counts: list[int], config: Config, device: torch.device
) -> Fitted:
    """Fit ``method`` (and, for ``auto``, every method of ``all`` first) on in-memory features.

    Args:
        splits: ``train`` and ``val`` features; ``test`` is the val split again (the methods compute a
            display-only test curve; nothing is chosen on it).
        joint: the joint classifier (frozen).
        counts: (C,) training samples per class of ``splits["train"]``.
    """
    if method == "joint":
        return Fitted(joint)
    features = {**splits, "test": splits["val"]}.__getitem__
    trainer = train_on_features(features, config, device)
    context = FitContext(features, joint.requires_grad_(False), counts, config, device, trainer)
    for spec in iter_specs(expand_methods([method])):
        context.fitted[spec.name] = spec.fit(context)
    return context.fitted[method]


def for_inference(head: torch.nn.Module) -> torch.nn.Module:
    """``head`` on the CPU in float64, eval mode, no gradients: predictions that do not depend on batch size."""
    return head.cpu().double().eval().requires_grad_(False)


@contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Leave the caller's Python, NumPy and torch random streams as they were: fitting seeds them."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
