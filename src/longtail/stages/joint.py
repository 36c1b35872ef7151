"""Stage 1: joint training of backbone and linear classifier."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from ..config import Config, DecoupleConfig, TrainConfig
from ..data.dataset import DatasetSplits, TensorImageDataset
from ..data.transforms import BatchTransform, train_batch_transform
from ..engine.device import seed_everything
from ..engine.loops import make_loader, predict, train_one_epoch
from ..engine.optim import cosine_schedule, sgd
from ..evaluation.metrics import accuracy_summary
from ..losses import create_loss
from ..models.backbones import create_backbone
from ..models.classifier import Classifier
from ..models.heads import CosineHead, linear_head
from ..models.pretrained import configure_backbone
from ..samplers import EpochSampler, make_sampler

log = logging.getLogger(__name__)

EpochCallback = Callable[[dict[str, Any], Classifier, torch.optim.Optimizer, Any], None]


def joint_head_kind(config: Config) -> str:
    """``cosine`` when the stage-1 loss expects cosine logits (LDAM, as in Cao et al.), else ``linear``."""
    return "cosine" if config.train.loss == "ldam_drw" else "linear"


def build_model(backbone: str, in_channels: int, num_classes: int, head: str = "linear") -> Classifier:
    """The stage-1 network: backbone ``backbone`` with a ``linear`` or ``cosine`` classifier for ``num_classes``.

    Parameters are in channels-last layout, which runs convolutions about twice
    as fast on CPU (and suits tensor cores on GPU).
    """
    features = create_backbone(backbone, in_channels=in_channels)
    make_head = CosineHead if head == "cosine" else linear_head
    model = Classifier(features, make_head(features.num_features, num_classes))
    return model.to(memory_format=torch.channels_last)


def stage1_loss(config: Config, train_counts: list[int]) -> torch.nn.Module:
    """The ``train.loss`` criterion with its parameters, for the training class sizes."""
    cfg = config.train
    drw_epoch = cfg.drw_epoch if cfg.drw_epoch is not None else int(0.8 * cfg.epochs)
    return create_loss(
        cfg.loss,
        train_counts,
        focal_gamma=cfg.focal_gamma,
        cb_beta=cfg.cb_beta,
        ldam_max_margin=cfg.ldam_max_margin,
        ldam_scale=cfg.ldam_scale,
        drw_epoch=drw_epoch,
        la_tau=cfg.la_tau,
    )


def eval_transform(splits: DatasetSplits) -> BatchTransform:
    """The test-time transform: normalisation only."""
    return BatchTransform(splits.mean, splits.std)


def section_sampler(
    labels: torch.Tensor, section: TrainConfig | DecoupleConfig, *, epochs: int, seed: int
) -> EpochSampler:
    """The sampler a config section names (``sampler``, ``sampler_q``, ``num_samples_cls``) over ``epochs``."""
    return make_sampler(
        labels, section.sampler, seed=seed, epochs=epochs, q=section.sampler_q, num_samples_cls=section.num_samples_cls
    )


def train_transform(splits: DatasetSplits, config: Config) -> BatchTransform:
    """The on-device training transform: ``data.crop_padding`` crops and ``data.hflip`` flips seeded by ``seed``
    for in-memory images; normalisation only for image files (augmented where they are decoded)."""
    d = config.data
    return train_batch_transform(splits, crop_padding=d.crop_padding, hflip=d.hflip, seed=config.seed)


def predict_logits(
    model: Classifier, dataset: TensorImageDataset, transform: BatchTransform, *, device: torch.device, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) logits and (N,) labels of ``model`` in eval mode over ``dataset``."""
    model.eval()
    return predict(model, make_loader(dataset, batch_size), device=device, transform=transform.to(device))


def train_joint(
    config: Config,
    splits: DatasetSplits,
    *,
    device: torch.device,
    on_epoch_end: EpochCallback | None = None,
    progress: bool = True,
) -> tuple[Classifier, list[dict[str, Any]]]:
    """Train backbone and classifier together with ``config.train``'s sampler, SGD and cosine schedule.

    After each epoch the model is scored on the validation split and
    ``on_epoch_end(record, model, optimizer, scheduler)`` is called (to write
    metrics and a checkpoint).

    Returns:
        The trained model (on ``device``) and one record per epoch:
        ``{"epoch", "train_loss", "train_acc", "lr", "val_all", "val_macro", "seconds"}``.
    """
    cfg = config.train
    train_counts = splits.train_counts
    seed_everything(config.seed)
    model = build_model(config.model.backbone, splits.train.image_shape[0], splits.num_classes, joint_head_kind(config))
    m = config.model
    configure_backbone(model, backbone=m.backbone, pretrained=m.pretrained, trainable=m.trainable)
    model = model.to(device)
    criterion = stage1_loss(config, train_counts).to(device)
    sampler = section_sampler(splits.train.labels, cfg, epochs=cfg.epochs, seed=config.seed)
    loader = make_loader(
        splits.train, cfg.batch_size, sampler=sampler, drop_last=True, num_workers=config.data.num_workers
    )
    augment = train_transform(splits, config).to(device)
    evaluate = eval_transform(splits).to(device)
    optimizer = sgd(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    steps = len(loader)
    scheduler = cosine_schedule(optimizer, cfg.epochs * steps, cfg.warmup_epochs * steps)
    history: list[dict[str, Any]] = []
    bar = tqdm(total=cfg.epochs * steps, desc="stage 1: joint", unit="step", disable=not progress, dynamic_ncols=True)
    for epoch in range(cfg.epochs):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        sampler.set_epoch(epoch)
        splits.train.set_epoch(epoch, config.seed)  # per-item augmentation of image files: (seeds, epoch)
        criterion.set_epoch(epoch)
        stats = train_one_epoch(
            model,
            loader,
            optimizer,
            device=device,
            scheduler=scheduler,
            transform=augment,
            criterion=criterion,
            on_step=lambda _: bar.update(),
        )
        logits, labels = predict_logits(model, splits.val, evaluate, device=device, batch_size=config.eval.batch_size)
        val = accuracy_summary(logits.argmax(1), labels, train_counts, many=config.eval.many, few=config.eval.few)
        record = {
            "epoch": epoch + 1,
            "train_loss": stats["loss"],
            "train_acc": stats["acc"],
            "lr": lr,
            "val_all": val["all"],
            "val_macro": val["macro"],
            "seconds": time.perf_counter() - start,
        }
        history.append(record)
        bar.set_postfix(epoch=epoch + 1, loss=f"{stats['loss']:.3f}", val_macro=f"{val['macro'] or 0:.1f}")
        if not progress:
            log.info(
                "epoch %d/%d  loss %.4f  train acc %.1f  val macro %.1f  (%.1fs)",
                epoch + 1,
                cfg.epochs,
                stats["loss"],
                stats["acc"],
                val["macro"] or 0.0,
                record["seconds"],
            )
        if on_epoch_end is not None:
            on_epoch_end(record, model, optimizer, scheduler)
    bar.close()
    return model, history
