"""Every value of a config checked before anything is written: each key against the constraint it declares
(:mod:`longtail.config.options`), then the rules across keys, which the selected components state themselves."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..errors import ConfigError
from ..registry import DATASETS, LOSSES, SAMPLERS
from .fields import field_types, is_nullable, is_section
from .options import INT64, check_value, constraint_of, require
from .schema import Config

TORCHSCRIPT_REFUSED = (
    "TorchScript files are not loaded: torch.jit.load runs code from the file (its __setstate__, operators "
    "such as aten::save and aten::from_file that write and read any path) before anything can check it; "
    "convert it with program = torch.export.export(module, (example_batch,), "
    "dynamic_shapes=({0: torch.export.Dim('batch')},)) and torch.export.save(program, 'backbone.pt2'), "
    "then use model.backbone=export:backbone.pt2"
)


def check_section(section: Any, prefix: str) -> None:
    """Each key of one section (and of its sub-sections) against its constraint; floats finite; integers in
    64 bits; then the section's own ``check(prefix)``, if it has one."""
    fields = {f.name for f in dataclasses.fields(section)}
    for name, hint in field_types(type(section)).items():
        value, key = getattr(section, name), f"{prefix}{name}"
        if dataclasses.is_dataclass(value):
            check_section(value, f"{key}.")
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:  # nan or inf passes no range check meaningfully
            require(not isinstance(item, float) or math.isfinite(item), key, value, "a finite number")
        if name in fields and not is_section(type(section), name):  # then the key's own constraint
            within = constraint_of(type(section), name)
            check_value(key, value, within, section, prefix=prefix, nullable=is_nullable(hint))
        for item in items:  # an unconstrained integer still fits in 64 bits: nothing overflows deep inside
            fits = not isinstance(item, int) or isinstance(item, bool) or -INT64 <= item < INT64
            require(fits, key, value, "an integer in [-2**63, 2**63)")
    if hasattr(section, "check"):
        section.check(prefix.rstrip("."))


def validate_config(config: Config) -> None:
    """Reject impossible values with a message naming the key, before anything is written."""
    check_section(config, "")
    _check_representation(config)
    for registry, name in ((DATASETS, config.data.name), (LOSSES, config.train.loss), (SAMPLERS, config.train.sampler)):
        spec = registry.get(name)
        if spec.check is not None:
            spec.check(config)
    sampler = SAMPLERS.get(config.decouple.sampler)
    if sampler.check is not None:
        sampler.check(config)


def _check_representation(config: Config) -> None:
    """Backbone, data and stage-2 keys that do not go together: feature vectors need the identity backbone and
    nothing else; a backbone file is frozen; the joint classifier comes from a file only with features."""
    d, m, dc = config.data, config.model, config.decouple
    if m.backbone.startswith("torchscript:"):
        raise ConfigError(f"model.backbone={m.backbone}: {TORCHSCRIPT_REFUSED}")
    features, external = DATASETS.get(d.name).holds_features, m.backbone.startswith("export:")
    if features and m.backbone != "identity":
        raise ConfigError(
            f"model.backbone={m.backbone!r}: data.name={d.name} holds feature vectors, not images; "
            "expected model.backbone=identity (its default)"
        )
    vectors = ", ".join(f"data.name={spec.name}" for spec in DATASETS.values() if spec.holds_features)
    network = f"a network (identity is for {vectors or 'readers of feature vectors'})"
    require(features or m.backbone != "identity", "model.backbone", m.backbone, network)
    require(features or m.joint == "train", "model.joint", m.joint, f"train (file is for {vectors})")
    head = LOSSES.get(config.train.loss).head
    linear = f"train: train.loss={config.train.loss} trains a {head} classifier, a file holds a linear one"
    require(m.joint == "train" or head == "linear", "model.joint", m.joint, linear)
    if external:
        require(m.trainable == "none", "model.trainable", m.trainable, "none: a backbone file is used frozen")
        require(m.pretrained is None, "model.pretrained", m.pretrained, "null: a backbone file has its weights")
    if features:
        require(m.pretrained is None, "model.pretrained", m.pretrained, "null: features need no backbone weights")
        require(dc.views == 0, "decouple.views", dc.views, "0: precomputed features have no augmented views")
        # Both were accepted and did nothing: there is no backbone to run per batch, nor BatchNorm to switch.
        no_backbone = "cached: precomputed features have no backbone to run"
        require(dc.features == "cached", "decouple.features", dc.features, no_backbone)
        require(dc.bn == "eval", "decouple.bn", dc.bn, "eval: precomputed features have no BatchNorm")
    # Cached views are what online training does every epoch instead: with online they were silently unused.
    online = "0 with decouple.features=online (it augments every epoch; views are for features=cached)"
    require(dc.views == 0 or dc.features == "cached", "decouple.views", dc.views, online)
    if external and dc.features == "online":  # a program keeps the BatchNorm mode it was exported in
        require(dc.bn == "eval", "decouple.bn", dc.bn, "eval: a backbone file's BatchNorm cannot switch to train")
    if features or external:
        frozen = "classifier: the backbone is " + ("the features" if features else "a frozen file")
        require(dc.trainable == "classifier", "decouple.trainable", dc.trainable, frozen)
