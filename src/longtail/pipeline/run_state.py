"""A trained run read back, and what every command shares: scoring heads on features, the results header."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Config, config_to_dict, load_config, parse_override
from ..config.build import as_names
from ..data.dataset import DatasetSplits
from ..data.fingerprint import begin_fingerprints
from ..data.image_check import skipped_images_record
from ..data.registry import create_dataset
from ..data.stats import count_difference
from ..data.transforms import eval_transform
from ..engine.device import resolve_device
from ..engine.feature_rows import predicted_classes
from ..engine.head_training import Features, extract_features
from ..errors import ConfigError, RunDirError, shown
from ..evaluation.bootstrap import bootstrap_ci_from_predictions
from ..evaluation.metrics import accuracy_summary, shot_groups
from ..methods import Fitted
from ..models.classifier import Classifier
from ..models.factory import create_model, joint_head_kind
from ..runs import CONFIG_FILE, file_sha256, load_checkpoint, require_run_dir
from .provenance import KEY as PROVENANCE_KEY
from .provenance import check_same_data, flatten, run_time_keys, stage1_provenance
from .representation import is_identity, representation_splits

SPLITS = ("val", "test")
# Resamples of every confidence interval in results.json. On the demo test set (10,000 images) the ends of
# an interval from 1,000 move between bootstrap seeds by a standard deviation of 0.03 point (macro) to 0.08
# (few), below the table's one decimal; each method takes about 6 ms.


@dataclass
class LoadedRun:
    """A stage-1 run read back: its config, data, trained model and checkpoint hash."""

    run_dir: Path
    config: Config
    splits: DatasetSplits
    model: Classifier
    checkpoint_sha256: str
    device: torch.device
    # What the run was computed from (longtail.pipeline.provenance): stage 1's record, checked against the data.
    provenance: dict[str, Any]
    # Feature-cache use per split in this process (True: read from the cache), for results.json.
    cache_hits: dict[str, bool] = field(default_factory=dict)


def results_header(config: Config, splits: DatasetSplits, provenance: dict[str, Any]) -> dict[str, Any]:
    """What results.json says of the run beside its scores: data, classes, seeds, shot groups, provenance."""
    counts = splits.train_counts
    header = {
        PROVENANCE_KEY: provenance,
        "dataset": splits.name,
        "num_classes": splits.num_classes,
        "class_names": splits.class_names,
        "train_counts": counts,
        "seed": config.seed,
        "data_seed": config.data.seed,
        "shot_thresholds": {"many": config.eval.many, "few": config.eval.few},
        "shot_groups": shot_groups(counts, config.eval.many, config.eval.few),
    }
    skipped = skipped_images_record(splits.info)
    if skipped is not None:  # data.skip_bad left images out: say how many and which
        header["skipped_images"] = skipped
    return header


@torch.no_grad()
def score_fitted(
    fitted: dict[str, Fitted],
    features: Features,
    config: Config,
    train_counts: list[int],
    predictions: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Accuracy summary of each classifier's head on ``features``, plus its ``info`` (on the CPU; the heads
    themselves are left where they are). Classifiers with a backbone of their own need features of it.

    Each summary has ``ci``: the 95 % stratified bootstrap interval of each accuracy over the images of
    ``features`` (``eval.bootstrap_resamples`` resamples seeded by the run's seed, so a re-score gives the
    same intervals). When ``predictions`` is given, each classifier's (N,) predicted classes are put in it.
    """
    scores = {}
    for method, fit in fitted.items():
        predicted = predicted_classes(copy.deepcopy(fit.head).cpu().eval(), features.x)  # in row chunks
        thresholds = {"many": config.eval.many, "few": config.eval.few}
        scores[method] = accuracy_summary(predicted, features.y, train_counts, **thresholds)
        scores[method]["ci"] = bootstrap_ci_from_predictions(
            predicted,
            features.y,
            train_counts,
            **thresholds,
            num_resamples=config.eval.bootstrap_resamples,
            seed=config.seed,
        )
        scores[method].update(fit.info)
        if predictions is not None:
            predictions[method] = predicted
    return scores


def split_features(
    backbone: nn.Module, splits: DatasetSplits, split: str, *, config: Config, device: torch.device
) -> Features:
    """Backbone features of one split with the test-time transform; for the identity backbone
    (``data.name=features``) the split's own tensors, with no pass over them."""
    if is_identity(backbone):
        dataset = splits.split(split)
        return Features(dataset.inputs, dataset.labels)
    transform = eval_transform(splits).to(device)
    return extract_features(
        backbone, splits.split(split), transform=transform, device=device, batch_size=config.eval.batch_size
    )


def _check_run_time_overrides(overrides: Sequence[str]) -> None:
    for text in overrides:
        key, _ = parse_override(text)
        if not key.startswith(run_time_keys()):
            raise ConfigError(
                f"{key}: fixed by stage 1 and cannot change on an existing run; "
                f"only {', '.join(k.rstrip('.') for k in run_time_keys())} keys can (start a new run to change it)"
            )


def _as_override(value: Any) -> str:
    """A config value as an override would write it, cut to 60 characters (:func:`~longtail.errors.shown`)."""
    return shown(value if isinstance(value, str) else json.dumps(value), 60, quote=False)


def check_stage1_config(
    run_dir: Path, saved: dict[str, Any] | None, config: Config, *, skip: Sequence[str] = ()
) -> None:
    """Refuse a ``config.yaml`` whose stage-1 keys differ from the config stored in the checkpoint.

    Stage-1 keys are all but :data:`run_time_keys()` (the rule of command-line
    overrides). A key missing on either side (a longtail version with other
    keys) is not compared; nor are the keys in ``skip``.

    Raises:
        RunDirError: "RUN/config.yaml: train.lr=0.2 differs from the checkpoint's 0.1; ...", first key in order.
    """
    if not isinstance(saved, dict):
        return  # a checkpoint of an older longtail without its config: the backbone and data checks remain
    trained, current = flatten(saved), flatten(config_to_dict(config))
    for key, value in current.items():
        if key.startswith(run_time_keys()) or key in skip or key not in trained or trained[key] == value:
            continue
        now, then = _as_override(value), _as_override(trained[key])
        raise RunDirError(
            f"{run_dir / CONFIG_FILE}: {key}={now} differs from the checkpoint's {then}; "
            "stage-1 keys cannot change after training (start a new run to change them)"
        )


def _file_alone_loads(path: Path) -> bool:
    """Whether the run's config file is valid without the command line's overrides."""
    try:
        load_config(path)
    except ConfigError:
        return False
    return True


def load_run(run_dir: str | Path, overrides: str | Sequence[str] = ()) -> LoadedRun:
    """Read a stage-1 run: config (with run-time ``overrides``), data, and the trained model.

    Raises:
        RunDirError: when ``run_dir`` is not a run, or its checkpoint does not
            match its config or data.
    """
    run_dir = require_run_dir(run_dir)
    overrides = as_names(overrides)  # one override as a string is one, not its characters
    _check_run_time_overrides(overrides)
    try:
        config = load_config(run_dir / CONFIG_FILE, overrides)
    except ConfigError as error:
        if overrides and _file_alone_loads(run_dir / CONFIG_FILE):
            raise  # the command line's value is wrong, not the file: the message names the key, not config.yaml
        raise RunDirError(f"{run_dir / CONFIG_FILE}: {error}") from None
    checkpoint = load_checkpoint(run_dir)
    trained_with = checkpoint.get("config", {}).get("model", {}).get("backbone")
    if trained_with != config.model.backbone:
        raise RunDirError(
            f"{run_dir}: checkpoint.pt holds a {trained_with!r} backbone "
            f"but config.yaml says model.backbone={config.model.backbone!r}"
        )
    # train.epochs is judged below: an edit upwards reads as "did not finish", downwards as an edited key.
    check_stage1_config(run_dir, checkpoint.get("config"), config, skip=("train.epochs",))
    splits = representation_splits(config, create_dataset(config.data))
    begin_fingerprints(splits)  # hashed in the background while the model loads
    if checkpoint.get("train_counts") != splits.train_counts:
        raise RunDirError(
            f"{run_dir}: the data differs from what stage 1 trained on (class sizes: "
            f"{count_difference(splits.train_counts, checkpoint.get('train_counts') or [])}); "
            "check data.root and config.yaml"
        )
    # model.joint=file: the joint classifier came with the features, stage 1 trained for 0 epochs.
    done, planned = checkpoint.get("epoch"), 0 if config.model.joint == "file" else config.train.epochs
    if isinstance(done, int) and done > planned:
        check_stage1_config(run_dir, checkpoint.get("config"), config)
    if done != planned:
        raise RunDirError(
            f"{run_dir}: stage 1 did not finish (checkpoint.pt is from epoch {done} of {planned}); "
            f"`longtail train --resume {run_dir}` continues it"
        )
    head = joint_head_kind(config.train.loss)
    model = create_model(config.model.backbone, checkpoint["in_channels"], checkpoint["num_classes"], head)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError:
        raise RunDirError(f"{run_dir}: checkpoint.pt does not match model.backbone={config.model.backbone!r}") from None
    device = resolve_device(config.device)
    model = model.to(device).freeze_backbone().eval()
    provenance = _checked_provenance(run_dir, checkpoint, config, splits)
    return LoadedRun(run_dir, config, splits, model, file_sha256(run_dir / "checkpoint.pt"), device, provenance)


def _checked_provenance(run_dir: Path, checkpoint: dict[str, Any], config: Config, splits: DatasetSplits) -> Any:
    """The provenance stage 1 recorded, once the data now read is shown to be the same; a run of an older
    longtail, which recorded none, gets the provenance of the data as it is now."""
    current = stage1_provenance(config, splits)
    recorded = checkpoint.get(PROVENANCE_KEY)
    hint = (
        "data.root / data.path / data.*_list point at other data than stage 1 used: point them back, or train a new run"
    )
    check_same_data(run_dir, recorded, current, hint=hint)
    return recorded if isinstance(recorded, dict) and "fingerprint" in recorded else current
