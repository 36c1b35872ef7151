"""Stage 2 on features: a frozen backbone's features extracted once, and heads trained on them.

Features come from the backbone in eval mode (BatchNorm uses its running
statistics and does not drift): the test-time view of every image, plus
optionally ``K`` views with the stage-1 training augmentation
(``decouple.views``). Training a head on them costs seconds instead of a
backbone pass every epoch, as the official code does (that way is
:mod:`longtail.engine.stage2_online`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data.dataset import ImageDataset, TensorPairDataset
from ..samplers import epoch_generator, section_sampler
from .device import seed_everything
from .feature_rows import as_compute
from .loops import EpochStatsCallback, make_loader, predict, train_epochs
from .optim import cosine_schedule, sgd
from .partial import PartialTraining


@dataclass
class Features:
    """Frozen-backbone features of one split.

    ``x`` (N, d) float32 with the test-time transform, ``y`` (N,) int64, and
    optionally ``views`` (K, N, d) float32: K augmented views of every image,
    which trained heads then see instead of ``x``.
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
        return as_compute(self.views[self.view_of[index], index]), self.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.int64)
        return as_compute(self.views[self.view_of[index], index]), self.labels[index]


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


def train_head(
    head: nn.Module,
    train: Features,
    section: Any,
    *,
    sampling: Any,
    seed: int,
    device: torch.device,
    on_epoch: EpochStatsCallback | None = None,
    partial: PartialTraining | None = None,
    criterion: nn.Module | None = None,
    after_step: Callable[[], None] | None = None,
) -> nn.Module:
    """Train the parameters of ``head`` that require grad on features: ``criterion`` (cross-entropy by default),
    SGD, per-step cosine to 0; ``after_step()`` runs after every optimiser step (a MaxNorm projection).

    ``section`` gives ``epochs``, ``batch_size``, ``lr``, ``momentum`` and
    ``weight_decay`` (a :class:`~longtail.config.HeadTrainingConfig`). The head
    trains on ``train.views`` when there are any, else on ``train.x``. Epochs
    have ``len(train)`` draws of the sampler that ``sampling`` names
    (``decouple``: ``sampler``, and that strategy's own section).
    ``on_epoch(epoch, {"loss", "acc", "lr"})`` follows every epoch (1-based, for
    logging); ``partial`` keeps the state after every epoch so that a killed run
    continues exactly (see :func:`~longtail.engine.loops.train_epochs`).

    Returns:
        ``head``, trained, in eval mode.
    """
    seed_everything(seed)
    head = head.to(device)
    num_classes = int(head.as_linear().weight.shape[0])
    draw = section_sampler(train.y, sampling, epochs=section.epochs, seed=seed, num_classes=num_classes)
    dataset = TensorPairDataset(train.x, train.y) if train.views is None else AugmentedViews(train.views, train.y, seed)
    loader = make_loader(dataset, section.batch_size, sampler=draw, drop_last=True)
    trainable = [p for p in head.parameters() if p.requires_grad]
    optimizer = sgd(trainable, lr=section.lr, momentum=section.momentum, weight_decay=section.weight_decay)
    scheduler = cosine_schedule(optimizer, section.epochs * len(loader))

    def start_epoch(epoch: int) -> None:
        draw.set_epoch(epoch)
        if isinstance(dataset, AugmentedViews):
            dataset.set_epoch(epoch)

    train_epochs(
        head,
        loader,
        optimizer,
        scheduler,
        section.epochs,
        device=device,
        start_epoch=start_epoch,
        on_epoch=on_epoch,
        partial=partial,
        name="stage 2 head training",
        criterion=criterion,
        after_step=after_step,
    )
    return head.eval()
