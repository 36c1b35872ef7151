"""Stage 2: re-balance the classifier on a frozen representation.

Every method here works on features extracted once by the frozen backbone in
eval mode with the test-time transform (BatchNorm uses its running statistics
and does not drift; no augmentation in stage 2). That makes stage 2 cost a
few seconds instead of re-running the backbone every epoch, as the official
code does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..config import CRTConfig, LWSConfig
from ..data.dataset import TensorPairDataset
from ..engine.device import seed_everything
from ..engine.loops import make_loader, predict, train_one_epoch
from ..engine.optim import cosine_schedule, sgd
from ..evaluation.metrics import accuracy_summary
from ..losses import log_prior
from ..models.heads import LogitAdjustedHead, LWSHead, TauNormHead, linear_head, tau_sweep, weight_norms
from ..models.ncm import NCMClassifier, NCMHead
from ..samplers import make_sampler


@dataclass
class Features:
    """Frozen-backbone features of one split: ``x`` (N, d) float32, ``y`` (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor


@torch.no_grad()
def extract_features(
    backbone: nn.Module, dataset: TensorPairDataset, *, transform, device: torch.device, batch_size: int
) -> Features:
    """Run the backbone (eval mode) once over ``dataset``; features land on the CPU."""
    backbone.eval()
    x, y = predict(backbone.forward_features, make_loader(dataset, batch_size), device=device, transform=transform)
    return Features(x, y)


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
) -> nn.Module:
    """Train the parameters of ``head`` on features: cross-entropy, SGD, per-step cosine to 0.

    ``cfg`` gives epochs, batch size, lr, momentum and weight decay. Epochs have
    ``len(train)`` draws of ``sampler`` (see :func:`~longtail.samplers.make_sampler`;
    ``sampler_q`` is the q of ``power``, ``num_samples_cls`` the block of ``class_aware``).
    """
    seed_everything(seed)
    head = head.to(device)
    draw = make_sampler(train.y, sampler, seed=seed, epochs=cfg.epochs, q=sampler_q, num_samples_cls=num_samples_cls)
    loader = make_loader(TensorPairDataset(train.x, train.y), cfg.batch_size, sampler=draw, drop_last=True)
    trainable = [p for p in head.parameters() if p.requires_grad]
    optimizer = sgd(trainable, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = cosine_schedule(optimizer, cfg.epochs * len(loader))
    for epoch in range(cfg.epochs):
        draw.set_epoch(epoch)
        train_one_epoch(head, loader, optimizer, device=device, scheduler=scheduler)
    return head.eval()


def fit_crt(train: Features, num_classes: int, cfg: CRTConfig, **options: Any) -> nn.Linear:
    """cRT: a freshly initialised linear classifier (weight and bias) trained on frozen features.

    ``options``: ``seed``, ``device`` and the sampling keywords of :func:`train_head`.
    """
    torch.manual_seed(options["seed"])
    return train_head(linear_head(train.x.shape[1], num_classes), train, cfg, **options)


def fit_lws(train: Features, joint_head: nn.Linear, cfg: LWSConfig, **options: Any) -> LWSHead:
    """LWS: learn one scale per class on the frozen joint classifier (weight and bias kept).

    ``options``: ``seed``, ``device`` and the sampling keywords of :func:`train_head`.
    """
    return train_head(LWSHead.from_linear(joint_head), train, cfg, **options)


def _sweep(
    logits_per_tau: Iterable[tuple[float, torch.Tensor]],
    labels: torch.Tensor,
    *,
    train_counts: Sequence[int],
    select: str,
    many: int,
    few: int,
) -> tuple[float, list[dict[str, Any]]]:
    """Score every ``(τ, (N, C) logits)`` on validation; return the best τ and the curve (ties: smallest τ)."""
    curve = []
    for tau, logits in logits_per_tau:
        summary = accuracy_summary(logits.argmax(1), labels, train_counts, many=many, few=few)
        summary.pop("per_class")
        curve.append({"tau": tau, **summary})
    scores = np.array([-np.inf if point[select] is None else point[select] for point in curve])
    return curve[int(np.argmax(scores))]["tau"], curve


@torch.no_grad()
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

    All τ are scored from one matrix product (see :func:`tau_sweep`); ties go
    to the smallest τ.

    Returns:
        The head with the chosen τ, and the curve: per τ ``{"tau", "many",
        "medium", "few", "all", "macro"}`` on validation.
    """
    weight = joint_head.weight.detach().cpu()
    raw_logits = val.x @ weight.T
    sweep = tau_sweep(raw_logits, weight_norms(weight), taus)
    best, curve = _sweep(sweep, val.y, train_counts=train_counts, select=select, many=many, few=few)
    return TauNormHead(weight, best), curve


@torch.no_grad()
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
    weight, bias = joint_head.weight.detach().cpu(), joint_head.bias
    bias = None if bias is None else bias.detach().cpu()
    logits = F.linear(val.x, weight, bias)
    prior = log_prior(train_counts)
    sweep = ((float(tau), logits - float(tau) * prior) for tau in taus)
    best, curve = _sweep(sweep, val.y, train_counts=train_counts, select=select, many=many, few=few)
    return LogitAdjustedHead(weight, bias, prior, best), curve


def fit_ncm(train: Features, num_classes: int, metric: str = "cl2n") -> NCMHead:
    """NCM on the training features (test-time transform), as a head module."""
    return NCMClassifier(metric).fit(train.x, train.y, num_classes).to_head()
