"""Where the representation comes from, checked against the data: a registered network, the identity (precomputed
features), or a backbone file (``export:PATH``) with what its ``PATH.json`` declares."""

from __future__ import annotations

import dataclasses

import torch

from ..config import Config
from ..data.dataset import DatasetSplits
from ..data.transforms import eval_transform
from ..errors import ConfigError, described
from ..models.backbones import BACKBONES, create_backbone
from ..models.external import external_path, is_external, read_spec, spec_path
from ..models.identity import IdentityBackbone

# Batch sizes the program is run on before anything is written: a program exported with a fixed batch size
# passes one and fails another (a guard error), which would otherwise stop training at its first other batch;
# 1 too, since a split's last batch may hold a single image.
PROBE_BATCHES = (2, 3, 1)
DYNAMIC_BATCH = "dynamic_shapes=({0: torch.export.Dim('batch')},)"


def is_identity(backbone: torch.nn.Module) -> bool:
    """Whether ``backbone`` is the identity: its features are the dataset's own tensors."""
    return isinstance(backbone, IdentityBackbone)


def representation_splits(config: Config, splits: DatasetSplits) -> DatasetSplits:
    """``splits`` with the normalisation a backbone file declares (``mean``/``std`` of ``PATH.json``), if any.

    Every consumer of the statistics (the batch transforms, the exported model)
    then uses the program's own, whatever ``data.normalize`` computed.
    """
    if not is_external(config.model.backbone):
        return splits
    spec = read_spec(external_path(config.model.backbone)[1])
    if spec.mean is None:
        return splits
    return dataclasses.replace(splits, mean=spec.mean, std=spec.std)


def check_representation(config: Config, splits: DatasetSplits) -> None:
    """Refuse, before a run directory is written, a backbone that cannot run on ``splits``.

    A registered name must exist; a backbone file is loaded (refused if it
    would run code) and run on the first test-time images, in batches of each
    size of :data:`PROBE_BATCHES`: its declared input size and channels must be
    the data's, its features (N, num_features), and it must take any batch size.

    Raises:
        ConfigError: one line naming the backbone, its JSON and what differs.
    """
    name = config.model.backbone
    if not is_external(name):
        BACKBONES.get(name)
        return
    backbone = create_backbone(name)
    where = spec_path(external_path(name)[1]).name
    test = splits.split("test")
    images, _ = test.__getitems__([i % len(test) for i in range(max(PROBE_BATCHES))])  # (a tiny test set repeats)
    channels = int(images.shape[1])
    spec = backbone.spec
    if spec.mean is not None and len(spec.mean) != channels:
        raise ConfigError(
            f"model.backbone={name}: {where} declares mean/std for {len(spec.mean)} channels, "
            f"the data's images have {channels}"
        )
    batch = eval_transform(splits)(images)
    if spec.input_size is not None and tuple(batch.shape[1:]) != spec.input_size:
        raise ConfigError(
            f"model.backbone={name}: {where} declares input_size {list(spec.input_size)}, the data's test-time "
            f"images are {list(batch.shape[1:])} (data.image_size for file readers; the images' own size otherwise)"
        )
    failures: dict[int, str] = {}  # batch size -> why the program failed on it
    for size in PROBE_BATCHES:
        try:
            with torch.no_grad():
                backbone.forward_features(batch[:size])
        except ConfigError:
            raise
        except Exception as error:  # noqa: BLE001 - a program refuses a wrong input with many error types
            failures[size] = described(error, 120)
    shape = list(batch.shape[1:])
    if failures and len(failures) < len(PROBE_BATCHES):
        size, why = next(iter(failures.items()))
        works = next(n for n in PROBE_BATCHES if n not in failures)
        raise ConfigError(
            f"model.backbone={name}: the program runs on a batch of {works} images {shape} but fails on a batch of "
            f"{size} ({why}): it was exported for a fixed batch size; export it with {DYNAMIC_BATCH}"
        )
    if failures:
        raise ConfigError(
            f"model.backbone={name}: the program fails on the data's test-time images {shape} "
            f"({failures[PROBE_BATCHES[0]]}); check input_size in {where}, and that it was exported with "
            f"{DYNAMIC_BATCH}"
        )
