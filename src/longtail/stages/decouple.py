"""Stage 2: re-balance the classifier on a frozen representation.

Every method here works on features extracted once by the frozen backbone in
eval mode (BatchNorm uses its running statistics and does not drift): the
test-time view of every image, plus optionally ``K`` views with the stage-1
training augmentation for cRT and LWS (``decouple.views``). That makes stage 2
cost seconds instead of re-running the backbone every epoch, as the official
code does (its way is :mod:`longtail.stages.retrain`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..config import CRTConfig, LWSConfig
from ..data.dataset import ImageDataset, TensorPairDataset
from ..engine.device import seed_everything
from ..engine.loops import EpochStatsCallback, make_loader, predict, train_epochs
from ..engine.optim import cosine_schedule, sgd
from ..engine.partial import PartialTraining
from ..evaluation.metrics import accuracy_summary
from ..losses import log_prior
from ..models.heads import LogitAdjustedHead, LWSHead, TauNormHead, linear_head, tau_sweep_predictions
from ..models.ncm import NCMClassifier, NCMHead
from ..samplers import epoch_generator, make_sampler


@dataclass
class Features:
    """Frozen-backbone features of one split.

    ``x`` (N, d) float32 with the test-time transform, ``y`` (N,) int64, and
    optionally ``views`` (K, N, d) float32: K augmented views of every image,
    which cRT and LWS then train on instead of ``x``.
    """

    x: torch.Tensor
    y: torch.Tensor
    views: torch.Tensor | None = None


class AugmentedViews(TensorPairDataset):
    """Training features with K cached augmented views; each epoch every item shows one view, drawn anew.

    Args:
        views: (K, N, d) features of K augmented passes over the training images.
        labels: (N,) int64.
        seed: the views drawn in epoch ``e`` depend on ``(seed, e)`` only.
    """

    def __init__(self, views: torch.Tensor, labels: torch.Tensor, seed: int) -> None:
        super().__init__(views[0], labels)
        self.views = views
        self.seed = seed
        self.view_of = torch.zeros(len(labels), dtype=torch.int64)

    def set_epoch(self, epoch: int) -> None:
        """Draw which view (0..K-1) each item shows in ``epoch``."""
        generator = epoch_generator(self.seed, epoch)
        self.view_of = torch.randint(len(self.views), (len(self.labels),), generator=generator)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.views[self.view_of[index], index], self.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.int64)
        return self.views[self.view_of[index], index], self.labels[index]


@torch.no_grad()
def extract_features(
    backbone: nn.Module, dataset: TensorPairDataset, *, transform, device: torch.device, batch_size: int
) -> Features:
    """Run the backbone (eval mode) once over ``dataset``; features land on the CPU."""
    backbone.eval()
    x, y = predict(backbone.forward_features, make_loader(dataset, batch_size), device=device, transform=transform)
    return Features(x, y)


@torch.no_grad()
def extract_views(
    backbone: nn.Module,
    dataset: ImageDataset,
    views: int,
    *,
    augment: Callable[[torch.Tensor], torch.Tensor],
    seed: int,
    device: torch.device,
    batch_size: int,
) -> torch.Tensor:
    """(views, N, d) features of ``views`` augmented passes of the frozen backbone (eval mode) over ``dataset``.

    ``dataset`` is the training view of the images (per-item augmentation for
    image files, re-drawn per pass via ``set_epoch``); ``augment`` is the
    on-device stage-1 transform.
    """
    backbone.eval()
    passes = []
    for view in range(views):
        dataset.set_epoch(view, seed)
        x, _ = predict(backbone.forward_features, make_loader(dataset, batch_size), device=device, transform=augment)
        passes.append(x)
    return torch.stack(passes)


def fresh_linear_head(num_features: int, num_classes: int, seed: int) -> nn.Linear:
    """cRT's classifier before training: a linear layer initialised from ``seed`` (same on every path)."""
    torch.manual_seed(seed)
    return linear_head(num_features, num_classes)


def train_head(
    head: nn.Module,
    train: Features,
    cfg: CRTConfig | LWSConfig,
    *,
    sampler: str = "class",
    sampler_q: float = 0.5,
    num_samples_cls: int = 4,
    seed: int,
    device: torch.device,
    on_epoch: EpochStatsCallback | None = None,
    partial: PartialTraining | None = None,
) -> nn.Module:
    """Train the parameters of ``head`` on features: cross-entropy, SGD, per-step cosine to 0.

    ``cfg`` gives epochs, batch size, lr, momentum and weight decay. The head
    trains on ``train.views`` when there are any, else on ``train.x``. Epochs have
    ``len(train)`` draws of ``sampler`` (see :func:`~longtail.samplers.make_sampler`;
    ``sampler_q`` is the q of ``power``, ``num_samples_cls`` the block of ``class_aware``).
    ``on_epoch(epoch, {"loss", "acc", "lr"})`` follows every epoch (1-based; for logging);
    ``partial`` keeps the state after every epoch so that a killed run continues exactly
    (see :func:`~longtail.engine.loops.train_epochs`).
    """
    seed_everything(seed)
    head = head.to(device)
    num_classes = _num_outputs(head)
    draw = make_sampler(
        train.y,
        sampler,
        seed=seed,
        epochs=cfg.epochs,
        q=sampler_q,
        num_samples_cls=num_samples_cls,
        num_classes=num_classes,
    )
    dataset = TensorPairDataset(train.x, train.y) if train.views is None else AugmentedViews(train.views, train.y, seed)
    loader = make_loader(dataset, cfg.batch_size, sampler=draw, drop_last=True)
    trainable = [p for p in head.parameters() if p.requires_grad]
    optimizer = sgd(trainable, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = cosine_schedule(optimizer, cfg.epochs * len(loader))

    def start_epoch(epoch: int) -> None:
        draw.set_epoch(epoch)
        if isinstance(dataset, AugmentedViews):
            dataset.set_epoch(epoch)

    train_epochs(
        head,
        loader,
        optimizer,
        scheduler,
        cfg.epochs,
        device=device,
        start_epoch=start_epoch,
        on_epoch=on_epoch,
        partial=partial,
        name="stage 2 head training",
    )
    return head.eval()


def _num_outputs(head: nn.Module) -> int:
    """C of a linear-like head: the rows of its weight."""
    return int(head.weight.shape[0])


def fit_crt(train: Features, num_classes: int, cfg: CRTConfig, **options: Any) -> nn.Linear:
    """cRT: a freshly initialised linear classifier (weight and bias) trained on frozen features.

    ``options``: ``seed``, ``device`` and the sampling keywords of :func:`train_head`.
    """
    return train_head(fresh_linear_head(train.x.shape[1], num_classes, options["seed"]), train, cfg, **options)


def fit_lws(train: Features, joint_head: nn.Linear, cfg: LWSConfig, **options: Any) -> LWSHead:
    """LWS: learn one scale per class on the frozen joint classifier (weight and bias kept).

    ``options``: ``seed``, ``device`` and the sampling keywords of :func:`train_head`.
    """
    return train_head(LWSHead.from_linear(joint_head), train, cfg, **options)


def sweep_curve(
    predictions: Iterable[tuple[float, torch.Tensor]],
    labels: torch.Tensor,
    *,
    train_counts: Sequence[int],
    many: int,
    few: int,
) -> list[dict[str, Any]]:
    """Per ``(τ, (N,) predicted classes)``: ``{"tau", "many", "medium", "few", "all", "macro"}`` against ``labels``."""
    curve = []
    for tau, predicted in predictions:
        summary = accuracy_summary(predicted, labels, train_counts, many=many, few=few)
        summary.pop("per_class")
        curve.append({"tau": tau, **summary})
    return curve


def best_tau(curve: Sequence[dict[str, Any]], select: str) -> float:
    """The τ of ``curve`` with the highest ``select`` metric; ties go to the smallest τ (listed first)."""
    scores = np.array([-np.inf if point[select] is None else point[select] for point in curve])
    return curve[int(np.argmax(scores))]["tau"]


@torch.no_grad()
def tau_norm_predictions(
    joint_head: nn.Linear, features: Features, taus: Sequence[float]
) -> Iterator[tuple[float, torch.Tensor]]:
    """``(τ, (N,) predictions)`` of the τ-normalised joint classifier for every τ, from one matrix product."""
    weight = joint_head.weight.detach().cpu()
    predictions = tau_sweep_predictions(features.x, weight, taus)
    return zip((float(t) for t in taus), predictions, strict=True)


@torch.no_grad()
def logit_adjust_predictions(
    joint_head: nn.Linear, features: Features, taus: Sequence[float], train_counts: Sequence[int]
) -> Iterator[tuple[float, torch.Tensor]]:
    """``(τ, (N,) predictions)`` of ``logits - τ log π`` for every τ (one product, then a shift per τ)."""
    weight, bias = joint_head.weight.detach().cpu(), joint_head.bias
    logits = F.linear(features.x, weight, None if bias is None else bias.detach().cpu())
    prior = log_prior(train_counts)
    return ((float(tau), (logits - float(tau) * prior).argmax(1)) for tau in taus)


def choose_tau(
    joint_head: nn.Linear,
    val: Features,
    taus: Sequence[float],
    *,
    train_counts: Sequence[int],
    select: str = "macro",
    many: int = 100,
    few: int = 20,
) -> tuple[TauNormHead, list[dict[str, Any]]]:
    """τ-normalisation with τ chosen on the validation features (never on test).

    All τ are scored from one matrix product (see :func:`tau_sweep_predictions`);
    ties go to the smallest τ.

    Returns:
        The head with the chosen τ, and the curve: per τ ``{"tau", "many",
        "medium", "few", "all", "macro"}`` on validation.
    """
    predictions = tau_norm_predictions(joint_head, val, taus)
    curve = sweep_curve(predictions, val.y, train_counts=train_counts, many=many, few=few)
    return TauNormHead(joint_head.weight.detach().cpu(), best_tau(curve, select)), curve


def choose_logit_adjustment(
    joint_head: nn.Linear,
    val: Features,
    taus: Sequence[float],
    *,
    train_counts: Sequence[int],
    select: str = "macro",
    many: int = 100,
    few: int = 20,
) -> tuple[LogitAdjustedHead, list[dict[str, Any]]]:
    """Post-hoc logit adjustment ``logits - τ log π`` with τ chosen on the validation features.

    Returns:
        The head with the chosen τ, and the validation curve (as :func:`choose_tau`).
    """
    predictions = logit_adjust_predictions(joint_head, val, taus, train_counts)
    curve = sweep_curve(predictions, val.y, train_counts=train_counts, many=many, few=few)
    weight, bias = joint_head.weight.detach().cpu(), joint_head.bias
    bias = None if bias is None else bias.detach().cpu()
    return LogitAdjustedHead(weight, bias, log_prior(train_counts), best_tau(curve, select)), curve


def fit_ncm(train: Features, num_classes: int, metric: str = "cl2n") -> NCMHead:
    """NCM on the training features (test-time transform), as a head module."""
    return NCMClassifier(metric).fit(train.x, train.y, num_classes).to_head()
