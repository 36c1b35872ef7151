"""Typed configuration: defaults in dataclasses, a YAML file over them, ``key=value`` overrides last.

The defaults are the demo recipe (Fashion-MNIST-LT, imbalance factor 100), so
``longtail train --out RUN`` with no config at all trains the demo's stage 1.
Every key is checked: an unknown key names its closest match, a wrong type or
an impossible value names the key and what was expected. The resolved config is
written next to every checkpoint (``config.yaml``) and reloads to the same object.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
import yaml

from .errors import ConfigError
from .io import write_text_atomic
from .safe_text import YamlAliasRefused, YamlTooDeep, parse_yaml

Sampler = Literal["instance", "class", "sqrt", "power", "progressive", "class_aware"]
SAMPLER_HELP = (
    "instance (q=1), class (q=0), sqrt (q=1/2), power (any q), progressive (instance to class over the epochs) "
    "or class_aware (the official blocked round-robin)"
)


def option(default: Any, help: str) -> Any:
    """A config field with its default and the help text shown by ``--help`` and the docs."""
    if isinstance(default, list):  # a mutable default needs a factory
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class DataConfig:
    """Which dataset, where it lives, how its long-tailed subset is drawn and how images are transformed."""

    name: str = option(
        "fashion_mnist_lt",
        "dataset reader: fashion_mnist_lt, cifar10_lt, cifar100_lt, npz, filelist, imagefolder, or features "
        "(precomputed feature vectors: no backbone, model.backbone=identity)",
    )
    root: str | None = option(
        None,
        "data directory (filelist: where the list paths start; imagefolder: holds train/, val/, test/; "
        "CIFAR: holds the python pickles); null: Debian's Fashion-MNIST for fashion_mnist_lt",
    )
    path: str | None = option(
        None,
        "npz: the .npz file (x_train, y_train, x_test, y_test, optional x_val, y_val); features: the .npz or .pt "
        "file of the same keys, x_* (N, d) float feature vectors",
    )
    train_list: str | None = option(None, "filelist: training split file, one 'relative/path label' per line")
    val_list: str | None = option(None, "filelist: validation split file; null: held out of the training images")
    test_list: str | None = option(None, "filelist: test split file")
    seed: int = option(0, "seed of the long-tailed subset and validation draw (independent of the training seed)")
    n_max: int = option(
        1000, "fashion_mnist_lt, CIFAR: images in the largest class of the subset (CIFAR-10-LT 5000, CIFAR-100-LT 500)"
    )
    imbalance_factor: float = option(100.0, "fashion_mnist_lt, CIFAR: largest / smallest class size of the subset")
    profile: Literal["exp", "step"] = option(
        "exp", "class sizes: exp (n_max * IF^(-i/(C-1))) or step (half n_max, half n_max/IF)"
    )
    val_per_class: int = option(
        20,
        "validation images per class where the dataset has no validation split: from training images outside "
        "the subset, else from the training set (at most a fifth of a class)",
    )
    augment: Literal["auto", "imagenet", "cifar"] = option(
        "auto",
        "stage-1 augmentation: imagenet (random resized crop, flip, colour jitter; file-based readers), "
        "cifar (random crop after zero-padding, flip); auto: imagenet for filelist/imagefolder, cifar otherwise",
    )
    crop_padding: int = option(2, "cifar augmentation: random crop after zero-padding by this many pixels (0: off)")
    hflip: bool = option(True, "stage-1 augmentation: random horizontal flip")
    image_size: int = option(224, "filelist, imagefolder: side of the square image the network sees")
    resize: int = option(256, "filelist, imagefolder: test time, shorter side resized to this, then centre crop")
    scale_min: float = option(0.08, "imagenet augmentation: smallest share of the image area a random crop covers")
    color_jitter: float = option(
        0.4, "imagenet augmentation: brightness, contrast and saturation jitter strength (0: off)"
    )
    normalize: Literal["auto", "imagenet", "inaturalist"] = option(
        "auto",
        "normalisation statistics: imagenet, inaturalist (iNaturalist 2018's); "
        "auto: imagenet for file-based readers, the training images' own for in-memory ones",
    )
    num_workers: int | None = option(
        None,
        "DataLoader worker processes for images read from files; null: auto (0 for in-memory datasets, which need "
        "none; else min(8, CPUs - 1)). Workers persist across epochs; memory is pinned when training on CUDA",
    )
    decode_threads: int = option(
        0, "filelist, imagefolder: threads decoding images outside DataLoader workers (0: one per CPU core)"
    )
    skip_bad: bool = option(
        False,
        "filelist, imagefolder: every image is opened and decoded once when the dataset is built; false: a missing, "
        "corrupt or truncated image stops the command, naming it; true: such images are dropped from their split, "
        "logged, and listed in the run's skipped_images.txt and results.json",
    )


@dataclass
class ModelConfig:
    """The backbone; the linear classifier on top is sized from the data."""

    backbone: str = option(
        "resnet8",
        "backbone: resnet8, resnet14, resnet20, resnet32, resnet44, resnet56 (CIFAR-style, small images); "
        "resnet10, resnet50, resnet152, resnext50_32x4d (ImageNet-style, 224 px); identity (data.name=features, "
        "its default); export:PATH (a torch.export .pt2 program of ATen operators) mapping images to (N, d) "
        "features, used frozen, declared in PATH.json (num_features; optional input_size, mean, std)",
    )
    pretrained: str | None = option(
        None, "initial backbone weights: a local state-dict file (a 'module.' prefix and an 'fc.*' classifier are fine)"
    )
    trainable: Literal["all", "last_stage", "none"] = option(
        "all",
        "stage 1 trains all layers, only the last stage (the rest frozen, BatchNorm statistics too), or none "
        "(the classifier alone: a linear probe; the default, and the only choice, for export: backbones)",
    )
    joint: Literal["train", "file"] = option(
        "train",
        "the joint classifier: train (stage 1 trains it), or file (data.name=features only: joint_weight and "
        "joint_bias of data.path, as `longtail features` writes them; stage 1 trains nothing, train.* unused)",
    )


@dataclass
class TrainConfig:
    """Stage 1: joint training of backbone and linear classifier (SGD, cosine to 0 per step)."""

    epochs: int = option(
        80,
        "training epochs; an epoch is len(train) // batch_size steps whatever the sampler (the demo's 80 with "
        "weight decay 5e-3 beat 30 with 5e-4 by 3-4 points macro after re-balancing: docs/results/beyond.md)",
    )
    batch_size: int = option(128, "images per step")
    lr: float = option(0.1, "peak learning rate (cosine-decayed to 0, per step)")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(
        5e-3, "SGD weight decay (the paper's 5e-4 is GRID_DEFAULTS'; weight balancing's lesson: tune it, larger)"
    )
    warmup_epochs: int = option(0, "epochs of linear warm-up before the cosine decay")
    sampler: Sampler = option("instance", SAMPLER_HELP)
    sampler_q: float = option(0.5, "exponent q of sampler=power: p_j = n_j^q / sum_i n_i^q")
    num_samples_cls: int = option(4, "sampler=class_aware: consecutive images per class visit (official: 4)")
    loss: Literal["ce", "focal", "class_balanced", "ldam_drw", "balanced_softmax", "logit_adjusted"] = option(
        "ce",
        "stage-1 loss: ce, focal, class_balanced, ldam_drw (trains a cosine classifier), balanced_softmax, "
        "logit_adjusted",
    )
    focal_gamma: float = option(2.0, "γ of loss=focal: -(1 - p_t)^γ log p_t")
    cb_beta: float = option(
        0.9999, "β of the effective number (1-β^n)/(1-β): weights of loss=class_balanced and of DRW"
    )
    ldam_max_margin: float = option(0.5, "loss=ldam_drw: margin of the rarest class (margins ∝ n_j^-1/4)")
    ldam_scale: float = option(30.0, "loss=ldam_drw: scale s applied to the cosine logits")
    drw_epoch: int | None = option(
        None, "loss=ldam_drw: epoch (from 0) at which re-weighting starts; null: 80% of train.epochs (160 of 200)"
    )
    la_tau: float = option(1.0, "τ of loss=logit_adjusted: cross-entropy on logits + τ·log prior")
    precision: Literal["fp32", "bf16", "fp16"] = option(
        "fp32", "stage-1 arithmetic: fp32, bf16 (autocast) or fp16 (autocast with gradient scaling)"
    )
    compile: bool = option(False, "compile the stage-1 network with torch.compile (worth it for long GPU runs)")
    sync_bn: bool = option(False, "under torchrun (DDP): synchronise BatchNorm statistics across processes (CUDA)")
    mixup_alpha: float = option(
        0.0, "mixup (Zhang et al. 2018): Beta(α, α) of the blend of each batch with a permutation of itself; 0: off"
    )
    cutmix_alpha: float = option(
        0.0, "CutMix (Yun et al. 2019): Beta(α, α) of the pasted box's share; 0: off (both > 0: half of each)"
    )
    mix_prob: float = option(1.0, "probability that a batch is mixed (with mixup_alpha or cutmix_alpha > 0)")
    maxnorm: float = option(
        0.0,
        "MaxNorm radius: after every optimiser step each class row of the linear classifier is projected into "
        "the ball of this L2 radius (weight balancing); 0: off; not with loss=ldam_drw",
    )


@dataclass
class HeadTrainingConfig:
    """A stage-2 classifier trained with SGD on frozen features (cRT, LWS, ...): the keys every such method has.

    A method's own section (``decouple.<section>``) subclasses this, overriding
    the defaults that differ, and registers itself with
    :func:`register_decouple_section` (see :mod:`longtail.methods`).
    """

    epochs: int = option(10, "training epochs (official cRT: 10)")
    batch_size: int = option(512, "batch size (official: 512)")
    lr: float = option(0.2, "peak learning rate, cosine to 0 per step (official: 0.2)")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(5e-4, "SGD weight decay (official: 5e-4)")

    def check(self, prefix: str) -> None:
        """Refuse impossible values, naming ``prefix.key``."""
        _check_training_keys(self, prefix)


@dataclass
class TauConfig:
    """A τ grid for a post-hoc method (τ-normalisation, logit adjustment); τ is chosen on validation."""

    min: float = option(0.0, "smallest τ of the sweep")
    max: float = option(2.0, "largest τ of the sweep")
    steps: int = option(21, "number of τ values, evenly spaced (official: linspace(0, 2, 21))")

    def check(self, prefix: str) -> None:
        """Refuse an empty or negative grid, naming ``prefix.key``."""
        _require(self.min >= 0, f"{prefix}.min", self.min, "a number >= 0")
        _require(self.max >= self.min, f"{prefix}.max", self.max, f"a number >= {prefix}.min")
        _require(self.steps >= 1, f"{prefix}.steps", self.steps, "an integer >= 1")
        _at_most(self.steps, MAX_GRID_STEPS, f"{prefix}.steps", "an integer")

    def values(self) -> list[float]:
        """The τ values of the sweep, ascending."""
        # Rounded: linspace's 1.2000000000000002 is 1.2 in the curve, the chosen τ and the results row alike.
        return [round(float(tau), 9) for tau in np.linspace(self.min, self.max, self.steps)]


# decouple.<name> sections of the stage-2 methods, in registration order: each method file registers its own
# (longtail.methods), so that adding a method adds its keys without touching this file.
_DECOUPLE_SECTIONS: dict[str, type] = {}


def register_decouple_section(name: str, cls: type) -> None:
    """Make ``decouple.<name>.*`` keys, with the fields of dataclass ``cls`` as keys and defaults."""
    if name in _DECOUPLE_SECTIONS and _DECOUPLE_SECTIONS[name] is not cls:
        raise ValueError(f"config section decouple.{name} is registered twice")
    if name in {f.name for f in dataclasses.fields(DecoupleConfig)}:
        raise ValueError(f"decouple.{name}: already a key of the decouple section")
    _DECOUPLE_SECTIONS[name] = cls


def unregister_decouple_section(name: str) -> None:
    """Remove a section registered by :func:`register_decouple_section` (for tests and plugins)."""
    _DECOUPLE_SECTIONS.pop(name, None)


def _default_sections() -> dict[str, Any]:
    return {name: cls() for name, cls in _DECOUPLE_SECTIONS.items()}


@dataclass
class DecoupleConfig:
    """Stage 2: classifier re-balancing on the frozen representation."""

    sampler: Sampler = option(
        "class_aware", "sampling for cRT, LWS and the other trained heads (official: class_aware): " + SAMPLER_HELP
    )
    sampler_q: float = option(0.5, "exponent q of decouple.sampler=power")
    num_samples_cls: int = option(4, "decouple.sampler=class_aware: consecutive images per class visit (official: 4)")
    trainable: Literal["classifier", "last_stage", "all"] = option(
        "classifier",
        "what cRT re-trains: classifier (frozen backbone, the paper's cRT), last_stage (last backbone stage too) or "
        "all (the whole network, fine-tuned from stage 1)",
    )
    features: Literal["cached", "online"] = option(
        "cached",
        "cached: one backbone pass per split, stored in the run directory, every method trains on it; online: the "
        "official way, a backbone forward every cRT/LWS epoch with the stage-1 training augmentation",
    )
    bn: Literal["eval", "train"] = option(
        "eval",
        "features=online: BatchNorm of the frozen backbone in eval mode (running statistics) or train mode (batch "
        "statistics, running statistics drift, as the official code)",
    )
    views: int = option(
        0,
        "features=cached: augmented views per training image cached for cRT and LWS (stage-1 training transform); "
        "0: the test-time view only",
    )
    select: Literal["macro", "all", "few"] = option(
        "macro", "validation metric that chooses τ and, for --method auto, the method (never test)"
    )
    auto_lr_factors: list[float] = option(
        [0.25, 1.0, 4.0], "--method auto: cRT and LWS are tried at their lr times each of these factors"
    )
    ncm_metric: Literal["cl2n", "l2", "cosine"] = option("cl2n", "NCM: cl2n (official), l2 or cosine")
    # The methods' own sections (decouple.crt, decouple.tau, ...), by name: see register_decouple_section.
    sections: dict[str, Any] = field(default_factory=_default_sections, repr=False)

    def __getattr__(self, name: str) -> Any:
        """``decouple.crt`` and the other registered sections read as attributes."""
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(f"decouple has no key or section {name!r}")


@dataclass
class EvalConfig:
    """Evaluation: shot-group thresholds on training-class size and batch size."""

    many: int = option(100, "many-shot classes have more than this many training images")
    few: int = option(20, "few-shot classes have fewer than this many training images")
    batch_size: int = option(1000, "images per inference batch")
    bootstrap_resamples: int = option(
        1000, "resamples of the stratified bootstrap behind every 95% interval (at least 1000; seeded by seed)"
    )


@dataclass
class Config:
    """The whole configuration of a run."""

    seed: int = option(0, "seed of initialisation, sampling and augmentation")
    device: str = option("auto", "auto (CUDA when available), cpu, cuda or cuda:N")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decouple: DecoupleConfig = field(default_factory=DecoupleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def config_reference(cls: type = Config, prefix: str = "") -> list[tuple[str, Any, str]]:
    """``(dotted key, default, help)`` for every leaf key, in declaration order."""
    rows: list[tuple[str, Any, str]] = []
    defaults = cls()
    hints = _field_types(cls)
    for name, hint in hints.items():
        if dataclasses.is_dataclass(hint):
            rows += config_reference(hint, f"{prefix}{name}.")
        else:
            f = next(f for f in dataclasses.fields(cls) if f.name == name)
            rows.append((f"{prefix}{name}", getattr(defaults, name), f.metadata.get("help", "")))
    return rows


def _field_types(cls: type) -> dict[str, Any]:
    """Key -> type of a config dataclass, in order; the decouple section's registered method sections last."""
    sections = tuple(_DECOUPLE_SECTIONS.items()) if cls is DecoupleConfig else ()
    return dict(_cached_field_types(cls, sections))


@functools.lru_cache(maxsize=256)
def _cached_field_types(cls: type, sections: tuple[tuple[str, type], ...]) -> tuple[tuple[str, Any], ...]:
    # Resolving type hints is slow and every key=value override needs them: once per class (and sections).
    hints = typing.get_type_hints(cls)
    return (*((f.name, hints[f.name]) for f in dataclasses.fields(cls) if f.name != "sections"), *sections)


def config_markdown_table() -> str:
    """Every key, its default and its help as the Markdown table of docs/configuration.md."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, help_text in config_reference():
        value = "null" if default is None else str(default).lower() if isinstance(default, bool) else repr(default)
        meaning = help_text.replace("|", "\\|")
        rows.append(f"| `{key}` | `{value}` | {meaning} |")
    return "\n".join(rows)


def config_keys() -> list[str]:
    """Every dotted leaf key of the config, e.g. ``train.lr``."""
    return [key for key, _, _ in config_reference()]


SHOWN_CHARS = 80  # a value in a message is cut to this: a config file can hold a value of any size


def _shown(value: Any) -> str:
    """``repr(value)`` for an error message, cut to :data:`SHOWN_CHARS` with its full length said."""
    try:
        text = repr(value)
    except ValueError:  # an integer past Python's 4300-digit limit of int -> str
        return f"<an integer of {value.bit_length():,} bits>"
    except RecursionError:
        return f"<a {type(value).__name__} nested too deep to show>"
    return text if len(text) <= SHOWN_CHARS else f"{text[: SHOWN_CHARS - 3]}... ({len(text):,} characters)"


def _unknown_key(key: str) -> ConfigError:
    close = difflib.get_close_matches(key[:SHOWN_CHARS], config_keys(), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {_shown(key)}{hint}")


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return " | ".join(repr(v) for v in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    if typing.get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against ``hint``; strings from the command line are converted."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(key, value, option)
            except ConfigError:
                continue
    elif origin is Literal:
        if value in typing.get_args(hint):
            return value
    elif origin is list:
        if isinstance(value, str):  # from the command line: "0.5,1,2" or "[0.5, 1, 2]"
            value = [part for part in value.strip("[] ").split(",") if part.strip()]
        if isinstance(value, (list, tuple)):
            (item_hint,) = typing.get_args(hint)
            return [_coerce(f"{key}[{i}]", item, item_hint) for i, item in enumerate(value)]
    elif hint is type(None):
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
            return None
    elif hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key}={_shown(value)}: expected {_type_name(hint)}")


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, checking every key and type."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {_shown(values)}")
    hints = _field_types(cls)
    kwargs: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in hints:
            raise _unknown_key(key)
        hint = hints[name]
        if cls is DecoupleConfig and name in _DECOUPLE_SECTIONS:
            sections[name] = _build(hint, value, f"{key}.")
        elif dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{key}.")
        else:
            kwargs[name] = _coerce(key, value, hint)
    built = cls(**kwargs)
    if sections:
        built.sections.update(sections)
    return built


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise _unknown_key(key)
        node = child
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``key=value``; the value is read as YAML (``[1, 2]``, ``null``, ``true``)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {_shown(text)}: expected key=value, e.g. train.epochs=5")
    if key not in config_keys():
        section = [k for k in config_keys() if k.startswith(key + ".")]
        if section:
            raise ConfigError(f"{key}: is a section, not a key; set one of its keys, e.g. {section[0]}=...")
        raise _unknown_key(key)
    try:
        value = parse_yaml(raw) if raw.strip() else ""
    except (yaml.YAMLError, YamlAliasRefused, YamlTooDeep, ValueError, RecursionError):
        value = raw
    # Keep the raw text for strings so that e.g. data.root=/x/1e3 stays as typed.
    return key, raw if isinstance(value, str) else value


MAX_CONFIG_BYTES = 1 << 20  # a config is a few kilobytes; a bigger file is not one, and is not read


def _read_config_file(path: Path) -> Any:
    """The YAML data of a config file, refused with one line when too large, aliased, too deep or not YAML."""
    if not path.is_file():
        raise ConfigError(f"config file {path}: not found")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path}: {size:,} bytes, more than a config's {MAX_CONFIG_BYTES:,}")
    try:  # YAML's safe loader, without aliases, bounded in nesting (longtail.safe_text)
        return parse_yaml(path.read_text())
    except YamlAliasRefused as alias:
        raise ConfigError(
            f"config file {path}: line {alias.line}: YAML alias {_shown('*' + alias.anchor)} refused; "
            "write the value out (aliases can expand a small file without bound)"
        ) from None
    except (YamlTooDeep, RecursionError):
        raise ConfigError(f"config file {path}: nested too deeply to be a config") from None
    except (yaml.YAMLError, ValueError, UnicodeDecodeError) as error:  # ValueError: an integer of 4300+ digits
        raise ConfigError(f"config file {path}: not valid YAML ({error.__class__.__name__})") from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then ``key=value`` overrides; validated."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        loaded = _read_config_file(path)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: expected a mapping of keys, got {type(loaded).__name__}")
        tree = loaded or {}
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    _implied_model_keys(tree)
    config = _build(Config, tree)
    validate_config(config)
    return config


EXTERNAL_BACKBONES = ("export:",)
# Why a TorchScript file is refused, and how to convert it: torch.jit.load runs the file's own code while loading.
TORCHSCRIPT_REFUSED = (
    "TorchScript files are not loaded: torch.jit.load runs code from the file (its __setstate__, operators "
    "such as aten::save and aten::from_file that write and read any path) before anything can check it; "
    "convert it with program = torch.export.export(module, (example_batch,), "
    "dynamic_shapes=({0: torch.export.Dim('batch')},)) and torch.export.save(program, 'backbone.pt2'), "
    "then use model.backbone=export:backbone.pt2"
)


def _implied_model_keys(tree: dict[str, Any]) -> None:
    """Model keys that follow from others when not given: ``model.backbone=identity`` for ``data.name=features``,
    ``model.trainable=none`` for a backbone file, whose path is made absolute (a run is read from anywhere)."""
    data, model = tree.get("data") or {}, tree.get("model") or {}
    if not isinstance(data, dict) or not isinstance(model, dict):
        return  # _build names the malformed section
    if data.get("name") == "features" and "backbone" not in model:
        model["backbone"] = "identity"
    backbone = model.get("backbone")
    if isinstance(backbone, str) and backbone.startswith(EXTERNAL_BACKBONES):
        kind, _, path = backbone.partition(":")
        model["backbone"] = f"{kind}:{Path(path).expanduser().absolute()}" if path else backbone
        model.setdefault("trainable", "none")
    if model:
        tree["model"] = model


def _check_representation(config: Config) -> None:
    """Backbone, data and stage-2 keys that do not go together: features need the identity backbone and
    nothing else; a backbone file is frozen; the joint classifier comes from a file only with features."""
    d, m, dc = config.data, config.model, config.decouple
    if m.backbone.startswith("torchscript:"):
        raise ConfigError(f"model.backbone={m.backbone}: {TORCHSCRIPT_REFUSED}")
    features, external = d.name == "features", m.backbone.startswith(EXTERNAL_BACKBONES)
    if features and m.backbone != "identity":
        raise ConfigError(
            f"model.backbone={m.backbone!r}: data.name=features holds feature vectors, not images; "
            "expected model.backbone=identity (its default)"
        )
    network = "a network (identity is for data.name=features)"
    _require(features or m.backbone != "identity", "model.backbone", m.backbone, network)
    _require(features or m.joint == "train", "model.joint", m.joint, "train (file is for data.name=features)")
    linear = "train: train.loss=ldam_drw trains a cosine classifier, a file holds a linear one"
    _require(m.joint == "train" or config.train.loss != "ldam_drw", "model.joint", m.joint, linear)
    if external:
        _require(m.trainable == "none", "model.trainable", m.trainable, "none: a backbone file is used frozen")
        _require(m.pretrained is None, "model.pretrained", m.pretrained, "null: a backbone file has its weights")
    if features:
        _require(m.pretrained is None, "model.pretrained", m.pretrained, "null: features need no backbone weights")
        _require(dc.views == 0, "decouple.views", dc.views, "0: precomputed features have no augmented views")
    if external and dc.features == "online":  # a program keeps the BatchNorm mode it was exported in
        _require(dc.bn == "eval", "decouple.bn", dc.bn, "eval: a backbone file's BatchNorm cannot switch to train")
    if features or external:
        frozen = "classifier: the backbone is " + ("the features" if features else "a frozen file")
        _require(dc.trainable == "classifier", "decouple.trainable", dc.trainable, frozen)


def _require(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={_shown(value)}: expected {expected}")


def _check_finite(node: Any, prefix: str = "") -> None:
    """Every float of the config must be a finite number: nan or inf passes no range check meaningfully."""
    for name in _field_types(type(node)):
        value, key = getattr(node, name), f"{prefix}{name}"
        if dataclasses.is_dataclass(value):
            _check_finite(value, f"{key}.")
        for item in value if isinstance(value, list) else [value]:
            _require(not isinstance(item, float) or math.isfinite(item), key, value, "a finite number")


INT64 = 2**63  # NumPy, torch and the DataLoader take integers in [-2**63, 2**63); more overflows deep inside
# Upper bounds of the keys that size an allocation or a pool: far above any real use, far below what would
# exhaust a machine (a padding of 10**6 pixels, a batch of 10**20 images, 10**9 worker processes).
MAX_BATCH = 2**24
MAX_PADDING = 128
MAX_IMAGE_SIZE = 4096
MAX_WORKERS = 256
MAX_VIEWS = 256
MAX_GRID_STEPS = 10_001
MAX_BLOCK = 2**16
MAX_EPOCHS = 100_000
MAX_LR_FACTORS = 64


def _check_int64(node: Any, prefix: str = "") -> None:
    """Every integer of the config fits in 64 bits, so that nothing overflows after the run directory is made."""
    for f in dataclasses.fields(node):
        value, key = getattr(node, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_int64(value, f"{key}.")
        for item in value if isinstance(value, list) else [value]:
            fits = not isinstance(item, int) or isinstance(item, bool) or -INT64 <= item < INT64
            _require(fits, key, value, "an integer in [-2**63, 2**63)")


def _at_most(value: int | None, limit: int, key: str, expected: str) -> None:
    """``value`` (an already range-checked integer, or None) is at most ``limit``."""
    _require(value is None or value <= limit, key, value, f"{expected} <= {limit:,}")


def _check_upper_bounds(config: Config) -> None:
    """The keys that size memory, processes or loops stay below bounds no real run reaches."""
    d, t, dc, e = config.data, config.train, config.decouple, config.eval
    _at_most(d.crop_padding, MAX_PADDING, "data.crop_padding", "an integer")
    _at_most(d.image_size, MAX_IMAGE_SIZE, "data.image_size", "an integer")
    _at_most(d.resize, 2 * MAX_IMAGE_SIZE, "data.resize", "an integer")
    _at_most(d.num_workers, MAX_WORKERS, "data.num_workers", "null or an integer")
    _at_most(d.decode_threads, MAX_WORKERS, "data.decode_threads", "an integer")
    _at_most(e.batch_size, MAX_BATCH, "eval.batch_size", "an integer")
    for prefix, section in (("train", t), ("decouple", dc)):
        _at_most(section.num_samples_cls, MAX_BLOCK, f"{prefix}.num_samples_cls", "an integer")
    _at_most(dc.views, MAX_VIEWS, "decouple.views", "an integer")
    few_factors = len(dc.auto_lr_factors) <= MAX_LR_FACTORS
    _require(few_factors, "decouple.auto_lr_factors", dc.auto_lr_factors, f"at most {MAX_LR_FACTORS} factors")


def validate_config(config: Config) -> None:
    """Reject impossible values with a message naming the key, before anything is written."""
    _check_finite(config)
    d, t, dc, e = config.data, config.train, config.decouple, config.eval
    # NumPy's generators refuse negative seeds; refuse them here, by name, for both seeds.
    _require(config.seed >= 0, "seed", config.seed, "an integer >= 0")
    _require(d.seed >= 0, "data.seed", d.seed, "an integer >= 0")
    # torch.manual_seed takes at most 2**64 - 1, and a process's seed adds its rank: stay below 2**63.
    _require(config.seed < INT64, "seed", config.seed, "an integer in [0, 2**63)")
    _require(d.seed < INT64, "data.seed", d.seed, "an integer in [0, 2**63)")
    _check_int64(config)
    _require(d.n_max >= 1, "data.n_max", d.n_max, "an integer >= 1")
    _require(d.imbalance_factor >= 1, "data.imbalance_factor", d.imbalance_factor, "a number >= 1")
    # τ and the epoch records need a validation split; choosing on test is not an option.
    _require(d.val_per_class >= 1, "data.val_per_class", d.val_per_class, "an integer >= 1")
    _require(d.crop_padding >= 0, "data.crop_padding", d.crop_padding, "an integer >= 0")
    _require(d.num_workers is None or d.num_workers >= 0, "data.num_workers", d.num_workers, "null or an integer >= 0")
    _require(d.decode_threads >= 0, "data.decode_threads", d.decode_threads, "an integer >= 0")
    _require(d.image_size >= 1, "data.image_size", d.image_size, "an integer >= 1")
    _require(d.resize >= d.image_size, "data.resize", d.resize, "an integer >= data.image_size")
    _require(0 < d.scale_min <= 1, "data.scale_min", d.scale_min, "a number in (0, 1]")
    _require(d.color_jitter >= 0, "data.color_jitter", d.color_jitter, "a number >= 0")
    _check_training_keys(t, "train")
    _check_representation(config)
    for name, section in dc.sections.items():
        if hasattr(section, "check"):
            section.check(f"decouple.{name}")
    _require(0 <= t.warmup_epochs < t.epochs, "train.warmup_epochs", t.warmup_epochs, "an integer in [0, train.epochs)")
    for prefix, section in (("train", t), ("decouple", dc)):
        _require(0 <= section.sampler_q <= 1, f"{prefix}.sampler_q", section.sampler_q, "a number in [0, 1]")
        _require(section.num_samples_cls >= 1, f"{prefix}.num_samples_cls", section.num_samples_cls, "an integer >= 1")
    _require(t.focal_gamma >= 0, "train.focal_gamma", t.focal_gamma, "a number >= 0")
    _require(0 <= t.cb_beta < 1, "train.cb_beta", t.cb_beta, "a number in [0, 1)")
    _require(t.ldam_max_margin > 0, "train.ldam_max_margin", t.ldam_max_margin, "a number > 0")
    _require(t.ldam_scale > 0, "train.ldam_scale", t.ldam_scale, "a number > 0")
    drw_ok = t.drw_epoch is None or 0 <= t.drw_epoch < t.epochs
    _require(drw_ok, "train.drw_epoch", t.drw_epoch, "null or an integer in [0, train.epochs)")
    _require(t.la_tau >= 0, "train.la_tau", t.la_tau, "a number >= 0")
    _require(t.mixup_alpha >= 0, "train.mixup_alpha", t.mixup_alpha, "a number >= 0 (0 = off)")
    _require(t.cutmix_alpha >= 0, "train.cutmix_alpha", t.cutmix_alpha, "a number >= 0 (0 = off)")
    _require(0 <= t.mix_prob <= 1, "train.mix_prob", t.mix_prob, "a number in [0, 1]")
    _require(t.maxnorm >= 0, "train.maxnorm", t.maxnorm, "a number >= 0 (0 = off)")
    # A cosine classifier's logits ignore its row norms: a radius would constrain nothing (and only rescale
    # its gradients), so ask for a linear classifier instead of silently doing nothing.
    cosine_ok = t.maxnorm == 0 or t.loss != "ldam_drw"
    expected = "0 with train.loss=ldam_drw (its cosine classifier's rows are normalised)"
    _require(cosine_ok, "train.maxnorm", t.maxnorm, expected)
    _require(dc.views >= 0, "decouple.views", dc.views, "an integer >= 0")
    factors_ok = len(dc.auto_lr_factors) >= 1 and all(f > 0 for f in dc.auto_lr_factors)
    _require(factors_ok, "decouple.auto_lr_factors", dc.auto_lr_factors, "a non-empty list of numbers > 0")
    _require(e.few >= 0, "eval.few", e.few, "an integer >= 0")
    _require(e.many >= e.few, "eval.many", e.many, "an integer >= eval.few")
    _require(e.batch_size >= 1, "eval.batch_size", e.batch_size, "an integer >= 1")
    resamples_ok = 1000 <= e.bootstrap_resamples <= 1_000_000
    _require(resamples_ok, "eval.bootstrap_resamples", e.bootstrap_resamples, "an integer in [1000, 1,000,000]")
    device_ok = config.device in ("auto", "cpu", "cuda") or config.device.startswith("cuda:")
    _require(device_ok, "device", config.device, "auto, cpu, cuda or cuda:N")
    _check_upper_bounds(config)


def _check_training_keys(section: Any, prefix: str) -> None:
    """The SGD keys of ``train`` and of every trained stage-2 head: epochs, batch size, lr, momentum, decay."""
    _require(section.epochs >= 1, f"{prefix}.epochs", section.epochs, "an integer >= 1")
    _at_most(section.epochs, MAX_EPOCHS, f"{prefix}.epochs", "an integer")
    _require(section.batch_size >= 1, f"{prefix}.batch_size", section.batch_size, "an integer >= 1")
    _at_most(section.batch_size, MAX_BATCH, f"{prefix}.batch_size", "an integer")
    _require(section.lr > 0, f"{prefix}.lr", section.lr, "a number > 0")
    _require(0 <= section.momentum < 1, f"{prefix}.momentum", section.momentum, "a number in [0, 1)")
    _require(section.weight_decay >= 0, f"{prefix}.weight_decay", section.weight_decay, "a number >= 0")


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config (or one of its sections) as a plain nested dict (YAML/JSON-ready)."""
    tree: dict[str, Any] = {}
    for name in _field_types(type(config)):
        value = getattr(config, name)
        tree[name] = config_to_dict(value) if dataclasses.is_dataclass(value) else copy.deepcopy(value)
    return tree


def config_from_dict(values: dict[str, Any]) -> Config:
    """Inverse of :func:`config_to_dict`, with the same checks as :func:`load_config`."""
    config = _build(Config, values)
    validate_config(config)
    return config


def save_config(config: Config, path: Path) -> None:
    """Write the resolved config as YAML, atomically."""
    write_text_atomic(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))
