"""Typed configuration: defaults in dataclasses, a YAML file over them, ``key=value`` overrides last.

The defaults are the demo recipe (Fashion-MNIST-LT, imbalance factor 100), so
``longtail train --out RUN`` with no config at all trains the demo's stage 1.
Every key is checked: an unknown key names its closest match, a wrong type or
an impossible value names the key and what was expected. The resolved config is
written next to every checkpoint (``config.yaml``) and reloads to the same object.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .errors import ConfigError
from .io import write_text_atomic


Sampler = Literal["instance", "class", "sqrt", "power", "progressive", "class_aware"]
SAMPLER_HELP = (
    "instance (q=1), class (q=0), sqrt (q=1/2), power (any q), progressive (instance to class over the epochs) "
    "or class_aware (the official blocked round-robin)"
)


def option(default: Any, help: str) -> Any:
    """A config field with its default and the help text shown by ``--help`` and the docs."""
    return field(default=default, metadata={"help": help})


@dataclass
class DataConfig:
    """Which dataset, where it lives, and how its long-tailed subset is drawn."""

    name: str = option("fashion_mnist_lt", "dataset reader")
    root: str | None = option(None, "data directory; null: the dataset's default (Debian's for Fashion-MNIST)")
    seed: int = option(0, "seed of the long-tailed subset and validation draw (independent of the training seed)")
    n_max: int = option(1000, "images in the largest class of the long-tailed subset")
    imbalance_factor: float = option(100.0, "largest / smallest class size of the subset")
    profile: Literal["exp", "step"] = option(
        "exp", "class sizes: exp (n_max * IF^(-i/(C-1))) or step (half n_max, half n_max/IF)"
    )
    val_per_class: int = option(
        20, "class-balanced validation images per class, from training images outside the subset"
    )
    crop_padding: int = option(2, "stage-1 augmentation: random crop after zero-padding by this many pixels (0: off)")
    hflip: bool = option(True, "stage-1 augmentation: random horizontal flip")
    num_workers: int = option(0, "DataLoader worker processes (in-memory datasets need none)")


@dataclass
class ModelConfig:
    """The backbone; the linear classifier on top is sized from the data."""

    backbone: str = option(
        "resnet8", "backbone: resnet8, resnet14, resnet20, resnet32, resnet44, resnet56 (CIFAR-style)"
    )


@dataclass
class TrainConfig:
    """Stage 1: joint training of backbone and linear classifier (SGD, cosine to 0 per step)."""

    epochs: int = option(30, "training epochs; an epoch is len(train) // batch_size steps whatever the sampler")
    batch_size: int = option(128, "images per step")
    lr: float = option(0.1, "peak learning rate (cosine-decayed to 0, per step)")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(5e-4, "SGD weight decay")
    warmup_epochs: int = option(0, "epochs of linear warm-up before the cosine decay")
    sampler: Sampler = option("instance", SAMPLER_HELP)
    sampler_q: float = option(0.5, "exponent q of sampler=power: p_j = n_j^q / sum_i n_i^q")
    num_samples_cls: int = option(4, "sampler=class_aware: consecutive images per class visit (official: 4)")
    loss: Literal["ce", "focal", "class_balanced", "ldam_drw", "balanced_softmax", "logit_adjusted"] = option(
        "ce", "stage-1 loss: ce, focal, class_balanced, ldam_drw (trains a cosine classifier), balanced_softmax, "
        "logit_adjusted"
    )
    focal_gamma: float = option(2.0, "γ of loss=focal: -(1 - p_t)^γ log p_t")
    cb_beta: float = option(0.9999, "β of the effective number (1-β^n)/(1-β): weights of loss=class_balanced and of DRW")
    ldam_max_margin: float = option(0.5, "loss=ldam_drw: margin of the rarest class (margins ∝ n_j^-1/4)")
    ldam_scale: float = option(30.0, "loss=ldam_drw: scale s applied to the cosine logits")
    drw_epoch: int | None = option(
        None, "loss=ldam_drw: epoch (from 0) at which re-weighting starts; null: 80% of train.epochs (160 of 200)"
    )
    la_tau: float = option(1.0, "τ of loss=logit_adjusted: cross-entropy on logits + τ·log prior")


@dataclass
class CRTConfig:
    """Classifier re-training: a fresh linear classifier on frozen features."""

    epochs: int = option(10, "cRT epochs (official: 10)")
    batch_size: int = option(512, "cRT batch size (official: 512)")
    lr: float = option(0.2, "cRT peak learning rate, cosine to 0 (official: 0.2)")
    momentum: float = option(0.9, "cRT SGD momentum")
    weight_decay: float = option(5e-4, "cRT weight decay (official: 5e-4)")


@dataclass
class LWSConfig:
    """Learnable weight scaling: one scale per class on the frozen joint classifier."""

    epochs: int = option(5, "LWS epochs (official: 5)")
    batch_size: int = option(512, "LWS batch size (official: 512)")
    lr: float = option(0.2, "LWS peak learning rate, cosine to 0 (official: 0.2)")
    momentum: float = option(0.9, "LWS SGD momentum")
    weight_decay: float = option(
        0.0, "weight decay on the scales; the official code uses 5e-4, which pulls them toward 0 (set it to reproduce)"
    )


@dataclass
class TauConfig:
    """A τ grid for a post-hoc method (τ-normalisation, logit adjustment); τ is chosen on validation."""

    min: float = option(0.0, "smallest τ of the sweep")
    max: float = option(2.0, "largest τ of the sweep")
    steps: int = option(21, "number of τ values, evenly spaced (official: linspace(0, 2, 21))")


@dataclass
class DecoupleConfig:
    """Stage 2: classifier re-balancing on the frozen representation."""

    sampler: Sampler = option("class", "sampling for cRT and LWS: " + SAMPLER_HELP)
    sampler_q: float = option(0.5, "exponent q of decouple.sampler=power")
    num_samples_cls: int = option(4, "decouple.sampler=class_aware: consecutive images per class visit")
    trainable: Literal["classifier", "last_stage", "all"] = option(
        "classifier",
        "what cRT re-trains: classifier (frozen backbone, the paper's cRT), last_stage (last backbone stage too) or "
        "all (the whole network, fine-tuned from stage 1)",
    )
    select: Literal["macro", "all", "few"] = option("macro", "validation metric that chooses τ")
    ncm_metric: Literal["cl2n", "l2", "cosine"] = option("cl2n", "NCM: cl2n (official), l2 or cosine")
    crt: CRTConfig = field(default_factory=CRTConfig)
    lws: LWSConfig = field(default_factory=LWSConfig)
    tau: TauConfig = field(default_factory=TauConfig)
    logit_adjust: TauConfig = field(default_factory=TauConfig)


@dataclass
class EvalConfig:
    """Evaluation: shot-group thresholds on training-class size and batch size."""

    many: int = option(100, "many-shot classes have more than this many training images")
    few: int = option(20, "few-shot classes have fewer than this many training images")
    batch_size: int = option(1000, "images per inference batch")


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
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            rows += config_reference(hints[f.name], f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", getattr(defaults, f.name), f.metadata.get("help", "")))
    return rows


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


def _unknown_key(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, config_keys(), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return " | ".join(repr(v) for v in typing.get_args(hint))
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
    raise ConfigError(f"{key}={value!r}: expected {_type_name(hint)}")


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, checking every key and type."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in hints:
            raise _unknown_key(key)
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{key}.")
        else:
            kwargs[name] = _coerce(key, value, hint)
    return cls(**kwargs)


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
        raise ConfigError(f"override {text!r}: expected key=value, e.g. train.epochs=5")
    if key not in config_keys():
        section = [k for k in config_keys() if k.startswith(key + ".")]
        if section:
            raise ConfigError(f"{key}: is a section, not a key; set one of its keys, e.g. {section[0]}=...")
        raise _unknown_key(key)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # Keep the raw text for strings so that e.g. data.root=/x/1e3 stays as typed.
    return key, raw if isinstance(value, str) else value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then ``key=value`` overrides; validated."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path}: not found")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path}: not valid YAML ({error.__class__.__name__})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: expected a mapping of keys, got {type(loaded).__name__}")
        tree = loaded or {}
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    config = _build(Config, tree)
    validate_config(config)
    return config


def _require(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: expected {expected}")


def validate_config(config: Config) -> None:
    """Reject impossible values with a message naming the key."""
    d, t, dc, e = config.data, config.train, config.decouple, config.eval
    _require(d.n_max >= 1, "data.n_max", d.n_max, "an integer >= 1")
    _require(d.imbalance_factor >= 1, "data.imbalance_factor", d.imbalance_factor, "a number >= 1")
    # τ and the epoch records need a validation split; choosing on test is not an option.
    _require(d.val_per_class >= 1, "data.val_per_class", d.val_per_class, "an integer >= 1")
    _require(d.crop_padding >= 0, "data.crop_padding", d.crop_padding, "an integer >= 0")
    _require(d.num_workers >= 0, "data.num_workers", d.num_workers, "an integer >= 0")
    for prefix, section in (("train", t), ("decouple.crt", dc.crt), ("decouple.lws", dc.lws)):
        _require(section.epochs >= 1, f"{prefix}.epochs", section.epochs, "an integer >= 1")
        _require(section.batch_size >= 1, f"{prefix}.batch_size", section.batch_size, "an integer >= 1")
        _require(section.lr > 0, f"{prefix}.lr", section.lr, "a number > 0")
        _require(0 <= section.momentum < 1, f"{prefix}.momentum", section.momentum, "a number in [0, 1)")
        _require(section.weight_decay >= 0, f"{prefix}.weight_decay", section.weight_decay, "a number >= 0")
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
    for prefix, grid in (("decouple.tau", dc.tau), ("decouple.logit_adjust", dc.logit_adjust)):
        _require(grid.min >= 0, f"{prefix}.min", grid.min, "a number >= 0")
        _require(grid.max >= grid.min, f"{prefix}.max", grid.max, f"a number >= {prefix}.min")
        _require(grid.steps >= 1, f"{prefix}.steps", grid.steps, "an integer >= 1")
    _require(e.few >= 0, "eval.few", e.few, "an integer >= 0")
    _require(e.many >= e.few, "eval.many", e.many, "an integer >= eval.few")
    _require(e.batch_size >= 1, "eval.batch_size", e.batch_size, "an integer >= 1")
    device_ok = config.device in ("auto", "cpu", "cuda") or config.device.startswith("cuda:")
    _require(device_ok, "device", config.device, "auto, cpu, cuda or cuda:N")


def config_to_dict(config: Config) -> dict[str, Any]:
    """The config as a plain nested dict (YAML/JSON-ready)."""
    return dataclasses.asdict(config)


def config_from_dict(values: dict[str, Any]) -> Config:
    """Inverse of :func:`config_to_dict`, with the same checks as :func:`load_config`."""
    config = _build(Config, values)
    validate_config(config)
    return config


def save_config(config: Config, path: Path) -> None:
    """Write the resolved config as YAML, atomically."""
    write_text_atomic(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))
