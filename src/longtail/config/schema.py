"""The config schema: one dataclass per section, each key with its default, help and constraint.

The defaults are the demo recipe (Fashion-MNIST-LT, imbalance factor 100), so
``longtail train --out RUN`` with no config at all trains the demo's stage 1.
Components add their own sections under ``data``, ``train`` and ``decouple``
(:mod:`longtail.config.sections`): a loss's keys are ``train.<loss>.*``, a
sampler's ``train.<sampler>.*`` and ``decouple.<sampler>.*``, a reader's
``data.<reader>.*``, a stage-2 method's ``decouple.<section>.*``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from ..registry import DATASETS, LOSSES, SAMPLERS
from .options import INT64, AutoOr, Each, Interval, OneOf, Satisfies, option
from .sections import Sectioned, default_sections

# Upper bounds of the keys that size an allocation or a pool: far above any real use, far below what would
# exhaust a machine (a padding of 10**6 pixels, a batch of 10**20 images, 10**9 worker processes).
MAX_BATCH = 2**24
MAX_PADDING = 128
MAX_IMAGE_SIZE = 4096
MAX_WORKERS = 256
MAX_VIEWS = 256
MAX_GRID_STEPS = 10_001
MAX_EPOCHS = 100_000
MAX_LR_FACTORS = 64
MAX_RESAMPLES = 1_000_000
MAX_SHIFTS = 32  # shifted test distributions per direction
MAX_SHIFT_FACTOR = 1e6
# Learning rates, weight decays and lr factors reach torch's SGD as float32 scalars: beyond 3.4e38 it fails
# with a RuntimeError at the first step (after the run directory is made); 1e6 is far above any real use.
MAX_RATE = 1e6
# τ of the post-hoc sweeps: the paper's grid is [0, 2]; beyond 1e6 nothing changes but the arithmetic (the
# curve's TensorBoard step, 100 τ, overflowed an integer at 1e300).
MAX_TAU = 1e6

SEED = Interval(0, INT64, closed="left", integer=True)  # numpy refuses negatives; a process's seed adds its rank
POSITIVE = Interval(0, None, closed="neither")
NON_NEGATIVE = Interval(0)
LEARNING_RATE = Interval(0, MAX_RATE, closed="right")
DECAY = Interval(0, MAX_RATE)
UNIT = Interval(0, 1)
EPOCHS = Interval(1, MAX_EPOCHS, integer=True)
BATCH = Interval(1, MAX_BATCH, integer=True)
MOMENTUM = Interval(0, 1, closed="left")


def _sections(parent: str) -> Any:
    return field(default_factory=lambda: default_sections(parent), repr=False)


@dataclass
class DataConfig(Sectioned):
    """Which dataset, where it lives, how its long-tailed subset is drawn and how images are transformed."""

    name: str = option(
        "fashion_mnist_lt",
        "dataset reader (its own keys are data.<name>.*; `longtail config --help` lists each)",
        OneOf(DATASETS),
    )
    root: str | None = option(
        None, "the directory the reader reads (what it holds: see the reader); null: the reader's default, if any"
    )
    path: str | None = option(None, "the file the reader reads, for readers of one file (.npz, features)")
    seed: int = option(0, "seed of the long-tailed subset and validation draw (independent of the training seed)", SEED)
    n_max: int = option(
        1000,
        "readers that draw a long-tailed subset of a balanced source: images in the largest class "
        "(CIFAR-10-LT 5000, CIFAR-100-LT 500)",
        Interval(1, integer=True),
    )
    imbalance_factor: float = option(
        100.0, "readers that draw a long-tailed subset: largest / smallest class size", Interval(1)
    )
    profile: Literal["exp", "step"] = option(
        "exp", "class sizes of a drawn subset: exp (n_max * IF^(-i/(C-1))) or step (half n_max, half n_max/IF)"
    )
    val_per_class: int = option(
        20,
        "validation images per class where the dataset has no validation split: from training images outside "
        "the subset, else from the training set (at most a fifth of a class)",
        Interval(1, integer=True),  # τ and the epoch records need a validation split; test is never one
    )
    augment: Literal["auto", "imagenet", "cifar"] = option(
        "auto",
        "stage-1 augmentation: imagenet (random resized crop, flip, colour jitter; readers of image files), "
        "cifar (random crop after zero-padding, flip); auto: imagenet for image files, cifar otherwise",
    )
    crop_padding: int = option(
        2,
        "cifar augmentation: random crop after zero-padding by this many pixels (0: off)",
        Interval(0, MAX_PADDING, integer=True),
    )
    hflip: bool = option(True, "stage-1 augmentation: random horizontal flip")
    image_size: int = option(
        224,
        "readers of image files: side of the square image the network sees",
        Interval(1, MAX_IMAGE_SIZE, integer=True),
    )
    resize: int = option(
        256,
        "readers of image files: test time, shorter side resized to this, then centre crop",
        Interval("image_size", 2 * MAX_IMAGE_SIZE, integer=True),
    )
    scale_min: float = option(
        0.08, "imagenet augmentation: smallest share of the image area a random crop covers", Interval(0, 1, "right")
    )
    color_jitter: float = option(
        0.4, "imagenet augmentation: brightness, contrast and saturation jitter strength (0: off)", NON_NEGATIVE
    )
    normalize: Literal["auto", "imagenet", "inaturalist"] = option(
        "auto",
        "normalisation statistics: imagenet, inaturalist (iNaturalist 2018's); "
        "auto: imagenet for readers of image files, the training images' own for in-memory ones",
    )
    num_workers: int | None = option(
        None,
        "DataLoader worker processes for images read from files; null: auto (0 for in-memory datasets, which need "
        "none; else min(8, CPUs - 1)). Workers persist across epochs; memory is pinned when training on CUDA",
        Interval(0, MAX_WORKERS, integer=True),
    )
    decode_threads: int = option(
        0,
        "readers of image files: threads decoding images outside DataLoader workers (0: one per CPU core)",
        Interval(0, MAX_WORKERS, integer=True),
    )
    skip_bad: bool = option(
        False,
        "readers of image files: every image is opened and decoded once when the dataset is built; false: a "
        "missing, corrupt or truncated image stops the command, naming it; true: such images are dropped from "
        "their split, logged, and listed in the run's skipped_images.txt and results.json",
    )
    # The readers' own sections (data.filelist, ...), by name: see longtail.config.sections.
    sections: dict[str, Any] = _sections("data")


@dataclass
class ModelConfig:
    """The backbone; the linear classifier on top is sized from the data."""

    backbone: str = option(
        "resnet8",
        "backbone: resnet8, resnet14, resnet20, resnet32, resnet44, resnet56 (CIFAR-style, small images); "
        "resnet10, resnet50, resnet152, resnext50_32x4d (ImageNet-style, 224 px); identity (data.name=features, "
        "its default); export:PATH (a torch.export .pt2 program, checked before it is loaded) mapping images to "
        "(N, d) features, used frozen, declared in PATH.json (num_features; optional input_size, mean, std). "
        "TorchScript files are refused (loading one runs its code)",
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
class TrainConfig(Sectioned):
    """Stage 1: joint training of backbone and linear classifier (SGD, cosine to 0 per step)."""

    epochs: int = option(
        80,
        "training epochs; an epoch is len(train) // batch_size steps whatever the sampler (the demo's 80 with "
        "weight decay 5e-3 beat 30 with 5e-4 by 3-4 points macro after re-balancing: docs/results/beyond.md)",
        EPOCHS,
    )
    batch_size: int = option(128, "images per step", BATCH)
    lr: float = option(0.1, "peak learning rate (cosine-decayed to 0, per step)", LEARNING_RATE)
    momentum: float = option(0.9, "SGD momentum", MOMENTUM)
    weight_decay: float = option(
        5e-3,
        "SGD weight decay (the paper's 5e-4 is GRID_DEFAULTS'; weight balancing's lesson: tune it, larger)",
        DECAY,
    )
    warmup_epochs: int = option(
        0, "epochs of linear warm-up before the cosine decay", Interval(0, "epochs", closed="left", integer=True)
    )
    sampler: str = option(
        "instance", "stage-1 sampling (its own keys are train.<sampler>.*: see the samplers below)", OneOf(SAMPLERS)
    )
    loss: str = option("ce", "stage-1 loss (its own keys are train.<loss>.*: see the losses below)", OneOf(LOSSES))
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option(
        "auto",
        "stage-1 arithmetic: fp32, bf16 (autocast) or fp16 (autocast with gradient scaling); auto: bf16 where the "
        "device computes it natively (a CUDA GPU with bfloat16, a CPU with oneDNN bfloat16), else fp32 (and fp32 "
        "for the identity backbone of feature files); the "
        "precision used is in results.json (environment.precision). Features and scores are always float32",
    )
    compile: bool = option(False, "compile the stage-1 network with torch.compile (worth it for long GPU runs)")
    sync_bn: bool = option(False, "under torchrun (DDP): synchronise BatchNorm statistics across processes (CUDA)")
    mixup_alpha: float = option(
        0.0,
        "mixup (Zhang et al. 2018): Beta(α, α) of the blend of each batch with a permutation of itself; 0: off",
        NON_NEGATIVE,
    )
    cutmix_alpha: float = option(
        0.0,
        "CutMix (Yun et al. 2019): Beta(α, α) of the pasted box's share; 0: off (both > 0: half of each)",
        NON_NEGATIVE,
    )
    mix_prob: float = option(1.0, "probability that a batch is mixed (with mixup_alpha or cutmix_alpha > 0)", UNIT)
    maxnorm: float = option(
        0.0,
        "MaxNorm radius: after every optimiser step each class row of the linear classifier is projected into "
        "the ball of this L2 radius (weight balancing); 0: off; not with a loss that trains a cosine classifier",
        NON_NEGATIVE,
    )
    # The losses' and samplers' own sections (train.focal, train.power, ...): see longtail.config.sections.
    sections: dict[str, Any] = _sections("train")


@dataclass
class HeadTrainingConfig:
    """A stage-2 classifier trained with SGD on frozen features (cRT, LWS, ...): the keys every such method has.

    A method's own section (``decouple.<section>``) subclasses this, overriding
    the defaults that differ (see :mod:`longtail.methods`).
    """

    # auto's largest batch: the method's reference batch, what auto gives wherever the data is large enough
    reference_batch_size: ClassVar[int] = 512

    epochs: int = option(10, "training epochs (official cRT: 10)", EPOCHS)
    batch_size: int | Literal["auto"] = option(
        "auto",
        "batch size; auto: the official 512 wherever that gives at least 64 steps an epoch (ImageNet-LT's 115,846 "
        "images: 512, 226 steps), else N // 64, at least 32 (the demo's 2,478 images: 38); 512: the paper's recipe "
        "(longtail.engine.head_schedule)",
        AutoOr(BATCH),
    )
    lr: float = option(0.2, "peak learning rate, cosine to 0 per step (official: 0.2)", LEARNING_RATE)
    momentum: float = option(0.9, "SGD momentum", MOMENTUM)
    weight_decay: float = option(5e-4, "SGD weight decay (official: 5e-4)", DECAY)


@dataclass
class TauConfig:
    """A τ grid for a post-hoc method (τ-normalisation, logit adjustment); τ is chosen on validation."""

    min: float = option(0.0, "smallest τ of the sweep", NON_NEGATIVE)
    max: float = option(2.0, "largest τ of the sweep", Interval("min", MAX_TAU))
    steps: int = option(
        21,
        "number of τ values, evenly spaced (official: linspace(0, 2, 21))",
        Interval(1, MAX_GRID_STEPS, integer=True),
    )

    def values(self) -> list[float]:
        """The τ values of the sweep, ascending."""
        # Rounded: linspace's 1.2000000000000002 is 1.2 in the curve, the chosen τ and the results row alike.
        return [round(float(tau), 9) for tau in np.linspace(self.min, self.max, self.steps)]


@dataclass
class DecoupleConfig(Sectioned):
    """Stage 2: classifier re-balancing on the frozen representation."""

    sampler: str = option(
        "class_aware",
        "sampling for cRT, LWS and the other trained heads (official: class_aware; its own keys are "
        "decouple.<sampler>.*)",
        OneOf(SAMPLERS),
    )
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
        Interval(0, MAX_VIEWS, integer=True),
    )
    cache_dtype: Literal["float32", "float16"] = option(
        "float32",
        "features=cached: the dtype of the cached features (RUN/features/*.pt); float16 halves their memory and disk "
        "(ImageNet-LT's 115,846 x 2,048: 0.95 GB to 0.47 GB), each batch is cast to float32 for the arithmetic",
    )
    select: Literal["macro", "all", "few"] = option(
        "macro", "validation metric that chooses τ and, for --method auto, the method (never test)"
    )
    auto_lr_factors: list[float] = option(
        [0.25, 1.0, 4.0],
        "--method auto: trained heads are tried at their lr times each of these factors",
        Each(LEARNING_RATE, min_items=1, max_items=MAX_LR_FACTORS),
    )
    # The methods' and samplers' own sections (decouple.crt, decouple.tau, ...): see longtail.config.sections.
    sections: dict[str, Any] = _sections("decouple")


@dataclass
class EvalConfig:
    """Evaluation: shot-group thresholds on training-class size and batch size."""

    many: int = option(100, "many-shot classes have more than this many training images", Interval("few", integer=True))
    few: int = option(20, "few-shot classes have fewer than this many training images", Interval(0, integer=True))
    batch_size: int = option(1000, "images per inference batch", BATCH)
    bootstrap_resamples: int = option(
        1000,
        "resamples of the stratified bootstrap behind every 95% interval (at least 1000; seeded by seed; drawn in "
        "blocks, so memory stays bounded)",
        Interval(1000, MAX_RESAMPLES, integer=True),
    )
    shift: list[float] = option(
        [],
        "imbalance factors F of SADE's shifted test sets: every method is also scored on forward-F and backward-F "
        "subsets of test (class sizes following the training profile or its reverse), with prior adaptation "
        "none / em / known (results.json 'shift'; docs/statistics.md); [] (default): off; the protocol's: "
        "[2, 5, 10, 25, 50]",
        Each(Interval(1, MAX_SHIFT_FACTOR, closed="right"), max_items=MAX_SHIFTS),
    )


def _device_ok(device: Any) -> bool:
    # cuda:N with N digits only: torch raises its own RuntimeError on cuda:x or cuda:-1, a traceback
    return device in ("auto", "cpu", "cuda") or (isinstance(device, str) and re.fullmatch(r"cuda:[0-9]+", device))


@dataclass
class Config:
    """The whole configuration of a run."""

    seed: int = option(0, "seed of initialisation, sampling and augmentation", SEED)
    device: str = option(
        "auto", "auto (CUDA when available), cpu, cuda or cuda:N", Satisfies(_device_ok, "auto, cpu, cuda or cuda:N")
    )
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decouple: DecoupleConfig = field(default_factory=DecoupleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


PARENT_CLASSES = {"data": DataConfig, "train": TrainConfig, "decouple": DecoupleConfig}


def parent_fields(parent: str) -> set[str]:
    """The keys a parent section declares itself (a component's section may not take one of their names)."""
    return {f.name for f in dataclasses.fields(PARENT_CLASSES[parent])}
