"""Stage 2 on images rather than cached features: the official online mode and fine-tuned cRT.

Two questions need the backbone in the loop during stage 2:

- ``decouple.features=online`` is the official code's way: cRT or LWS train
  with a backbone forward on every batch, on images with the stage-1 training
  augmentation, BatchNorm in eval mode (``decouple.bn=eval``) or, as the
  official code leaves it, in train mode (``decouple.bn=train``: batch
  statistics, running statistics drift on class-balanced batches). It is kept
  to check that the cached mode loses nothing (see docs/performance.md).
- ``decouple.trainable=last_stage|all``: Kang et al. ask whether re-training
  more of the network in stage 2 helps (it does not, in their appendix); this
  answers it on the user's data, re-training the backbone's last stage or the
  whole network with a fresh classifier.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from ..config import Config, HeadTrainingConfig
from ..data.dataset import DatasetSplits
from ..data.transforms import train_transform
from ..models.classifier import Classifier
from ..samplers import section_sampler
from .device import seed_everything
from .loops import EpochStatsCallback, make_loader, train_epochs
from .optim import cosine_schedule, sgd
from .partial import PartialTraining


def retrain_on_images(
    model: Classifier,
    head: nn.Module,
    splits: DatasetSplits,
    config: Config,
    section: HeadTrainingConfig,
    *,
    trainable: str = "classifier",
    device: torch.device,
    on_epoch: EpochStatsCallback | None = None,
    partial: PartialTraining | None = None,
    criterion: nn.Module | None = None,
    after_step: Callable[[], None] | None = None,
) -> Classifier:
    """A copy of the stage-1 ``model`` with ``head`` in place of its classifier, trained on augmented images.

    Args:
        model: the stage-1 network (not modified).
        head: the classifier to train: a fresh linear layer (cRT) or an LWS head.
        splits: the data; training images get the stage-1 training transform.
        config: ``decouple.sampler*`` choose the sampling, ``decouple.bn`` the
            BatchNorm mode of the frozen part, ``seed`` the randomness.
        section: epochs, batch size and SGD settings (the method's ``decouple.<section>``).
        trainable: ``classifier`` (backbone frozen), ``last_stage`` (the
            backbone's last stage too) or ``all`` (everything).
        on_epoch: called as ``on_epoch(epoch, {"loss", "acc", "lr"})`` after every epoch (1-based).
        partial: keeps the state after every epoch, so that a killed run continues exactly.
        criterion: the loss (cross-entropy when None); ``after_step()`` runs after every optimiser step.

    Returns:
        The re-trained network in eval mode, backbone frozen again, with
        ``fine_tuned`` set to ``trainable``.
    """
    seed_everything(config.seed)
    tuned = copy.deepcopy(model).to(device)
    tuned.reset_classifier(head.to(device))
    tuned.unfreeze_backbone()
    if trainable != "all":
        batch_stats = config.decouple.bn == "train"
        tuned.freeze_backbone(keep_last_stage=trainable == "last_stage", batch_stats=batch_stats)
    sampler = section_sampler(
        splits.train.labels, config.decouple, epochs=section.epochs, seed=config.seed, num_classes=splits.num_classes
    )
    loader = make_loader(
        splits.train, section.batch_size, sampler=sampler, drop_last=True, num_workers=config.data.num_workers
    )
    parameters = [p for p in tuned.parameters() if p.requires_grad]
    optimizer = sgd(parameters, lr=section.lr, momentum=section.momentum, weight_decay=section.weight_decay)
    scheduler = cosine_schedule(optimizer, section.epochs * len(loader))
    augment = train_transform(splits, config.data, seed=config.seed).to(device)

    def start_epoch(epoch: int) -> None:
        sampler.set_epoch(epoch)
        splits.train.set_epoch(epoch, config.seed)  # per-image augmentation of file datasets

    train_epochs(
        tuned,
        loader,
        optimizer,
        scheduler,
        section.epochs,
        device=device,
        start_epoch=start_epoch,
        transform=augment,
        on_epoch=on_epoch,
        partial=partial,
        name="stage 2 training on images",
        criterion=criterion,
        after_step=after_step,
    )
    tuned.fine_tuned = trainable
    return tuned.freeze_backbone().eval()
