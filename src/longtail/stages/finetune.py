"""cRT with part of the representation re-trained: the paper's frozen-versus-fine-tuned question.

The paper's cRT re-trains only the classifier on a frozen backbone. Kang et al.
also ask whether re-training more of the network in stage 2 helps (it does
not, in their Table 1 of the appendix); ``decouple.trainable`` answers it on
the user's data: ``last_stage`` re-trains the backbone's last stage with a
fresh classifier, ``all`` fine-tunes the whole stage-1 network. Unlike the
classifier-only cRT, this needs the images (with the stage-1 augmentation),
not cached features.
"""

from __future__ import annotations

import copy

import torch

from ..config import Config
from ..data.dataset import DatasetSplits
from ..engine.device import seed_everything
from ..engine.loops import make_loader, train_one_epoch
from ..engine.optim import cosine_schedule, sgd
from ..models.classifier import Classifier
from ..models.heads import linear_head
from .joint import section_sampler, train_transform


def finetune_crt(model: Classifier, splits: DatasetSplits, config: Config, *, device: torch.device) -> Classifier:
    """A copy of the stage-1 ``model`` with a fresh linear classifier, re-trained with ``decouple.*``.

    ``decouple.trainable`` = ``last_stage`` trains the classifier and the
    backbone's last stage (the rest frozen, its BatchNorm in eval mode);
    ``all`` trains everything. Sampling, epochs, batch size and SGD settings
    are cRT's (``decouple.sampler``, ``decouple.crt.*``); images get the
    stage-1 training transform.

    Returns:
        The re-trained network, in eval mode, with its backbone frozen again
        and ``fine_tuned`` set to ``decouple.trainable``.
    """
    cfg = config.decouple
    if cfg.trainable not in ("last_stage", "all"):
        raise ValueError(f"finetune_crt: decouple.trainable={cfg.trainable!r}, expected last_stage or all")
    seed_everything(config.seed)
    tuned = copy.deepcopy(model).to(device)
    tuned.reset_classifier(linear_head(tuned.num_features, splits.num_classes).to(device))
    tuned.unfreeze_backbone()
    if cfg.trainable == "last_stage":
        tuned.freeze_backbone(keep_last_stage=True)
    sampler = section_sampler(splits.train.labels, cfg, epochs=cfg.crt.epochs, seed=config.seed)
    loader = make_loader(
        splits.train, cfg.crt.batch_size, sampler=sampler, drop_last=True, num_workers=config.data.num_workers
    )
    trainable = [p for p in tuned.parameters() if p.requires_grad]
    optimizer = sgd(trainable, lr=cfg.crt.lr, momentum=cfg.crt.momentum, weight_decay=cfg.crt.weight_decay)
    scheduler = cosine_schedule(optimizer, cfg.crt.epochs * len(loader))
    augment = train_transform(splits, config).to(device)
    for epoch in range(cfg.crt.epochs):
        sampler.set_epoch(epoch)
        splits.train.set_epoch(epoch, config.seed)  # per-image augmentation of file datasets
        train_one_epoch(tuned, loader, optimizer, device=device, scheduler=scheduler, transform=augment)
    tuned.fine_tuned = cfg.trainable
    return tuned.freeze_backbone().eval()
