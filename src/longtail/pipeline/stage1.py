"""``longtail train``: stage 1 into a new run directory, or continued in one (``--resume``); one process,
or every process under torchrun."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..config import Config, config_to_dict, load_config, save_config
from ..data.dataset import DatasetSplits
from ..data.features import read_joint
from ..data.fingerprint import begin_fingerprints
from ..data.image_check import write_skipped_images
from ..data.registry import create_dataset
from ..engine.device import resolve_device
from ..engine.distributed import agree, barrier, broadcast_object, is_main, process_group, world_size
from ..engine.precision import make_grad_scaler, resolve_precision
from ..engine.stage1 import check_train_setup, train_joint
from ..engine.tensorboard import ScalarLog, log_scores, log_stage1_epoch
from ..errors import ConfigError, RunDirError, StorageError
from ..evaluation.per_class import write_per_class_csv
from ..evaluation.predictions import write_predictions
from ..fs.atomic import make_dirs, write_json_atomic
from ..methods import Fitted
from ..models.classifier import Classifier
from ..models.factory import create_model, joint_head_kind
from ..runs import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    RESULTS_FILE,
    check_new_run_dir,
    environment,
    file_sha256,
    load_checkpoint,
    prepare_new_run_dir,
    read_results,
    run_lock,
    save_checkpoint,
    write_metrics,
)
from ..samplers import section_sampler
from ..samplers.base import EmptyClassError
from .provenance import KEY as PROVENANCE_KEY
from .provenance import check_same_data, stage1_provenance
from .representation import check_representation, representation_splits
from .run_state import SPLITS, check_stage1_config, results_header, score_fitted, split_features
from .scores import SCORED_KEY, scored_record

log = logging.getLogger(__name__)


def joint_from_file(config: Config, splits: DatasetSplits, device: Any) -> Classifier:
    """``model.joint=file``: the identity backbone with the joint classifier that ``data.path`` carries
    (``joint_weight`` (C, d), ``joint_bias`` (C,)); nothing is trained."""
    num_features = splits.train.image_shape[0]
    weight, bias = read_joint(config.data.path, splits.num_classes, num_features)
    model = create_model(config.model.backbone, num_features, splits.num_classes, joint_head_kind(config.train.loss))
    with torch.no_grad():
        model.head.weight.copy_(weight)
        model.head.bias.copy_(bias)
    return model.to(device).eval()


def train(config: Config, out: str | Path, *, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Stage 1: train backbone and linear classifier jointly into run directory ``out``.

    Writes ``config.yaml``, then after every epoch ``checkpoint.pt`` (everything
    :func:`resume` needs), ``metrics.jsonl`` and TensorBoard scalars
    (``tensorboard/``), and finally ``results.json`` with ``joint`` on val and
    test. Bad config or data fails before anything is written; an occupied
    ``out`` is refused unless ``overwrite``.

    Under torchrun every process calls this and trains with DDP (see
    :func:`~longtail.engine.stage1.train_joint`); rank 0 alone checks and writes
    ``out`` and scores val and test at the end, while the others wait. A
    failed check fails every rank alike.

    Returns:
        The results dict written to ``results.json`` (on every rank).
    """
    out = Path(out)

    def new_run_dir(held: contextlib.ExitStack) -> None:
        check_new_run_dir(out, overwrite=overwrite)  # before a lock file lands in a folder that is not ours
        make_dirs(out)
        held.enter_context(run_lock(out, "longtail train"))
        prepare_new_run_dir(out, overwrite=overwrite)  # again under the lock: another train may have filled it
        save_config(config, out / CONFIG_FILE)

    return _stage1(config, out, new_run_dir, progress=progress)


def resume(run_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Continue the stage 1 of ``run_dir`` from its last checkpoint, with its own ``config.yaml``.

    The result is bitwise the one an uninterrupted run gives on CPU (the
    checkpoint holds the model, optimiser, scheduler, grad scaler, sampler
    epoch, every random generator and the metrics so far). A run killed before
    its first checkpoint starts again from scratch in place; a finished run is
    left alone (logged) and its results returned; "finished" means a
    checkpoint that loads, of the last epoch, beside a results.json. Under
    torchrun, resume with as many processes as wrote the checkpoint. The run
    is locked while it trains (:func:`~longtail.runs.run_lock`).

    Raises:
        RunDirError: ``run_dir`` is not a run, its checkpoint is unreadable or was written for another config,
            or another command holds the run (:class:`~longtail.errors.RunInUseError`).
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunDirError(f"{run_dir}: not a run directory (no {CONFIG_FILE}); nothing to resume")
    try:
        config = load_config(run_dir / CONFIG_FILE)
    except ConfigError as error:
        raise RunDirError(f"{run_dir / CONFIG_FILE}: {error}") from None
    results = read_results(run_dir)
    if "methods" in results and _finished(run_dir, config):
        log.info("%s: stage 1 already finished (%d epochs); nothing to resume", run_dir, config.train.epochs)
        return results

    def read_checkpoint(held: contextlib.ExitStack) -> dict[str, Any] | None:
        held.enter_context(run_lock(run_dir, "longtail train --resume"))
        if not (run_dir / CHECKPOINT_FILE).is_file():
            log.info("%s: no checkpoint yet; starting stage 1 again from epoch 1", run_dir)
            return None
        checkpoint = _resumable_checkpoint(run_dir, config)
        written_by = len(checkpoint["generators"])  # one per process
        if written_by and written_by != world_size():  # said once, before a train.batch_size no resume can change
            raise ConfigError(
                f"{run_dir / CHECKPOINT_FILE}: written by {written_by} process(es); resume it with as many "
                f"(torchrun --nproc_per_node {written_by}), not {world_size()}"
            )
        log.info("%s: resuming stage 1 after epoch %d of %d", run_dir, checkpoint["epoch"], config.train.epochs)
        return checkpoint

    return _stage1(config, run_dir, read_checkpoint, progress=progress, run_dir_first=True)


def _resumable_checkpoint(run_dir: Path, config: Config) -> dict[str, Any]:
    """``checkpoint.pt`` of ``run_dir``, refused when unreadable, of another config or without resume state."""
    checkpoint = load_checkpoint(run_dir)
    saved = checkpoint.get("config")
    if not isinstance(saved, dict):
        raise RunDirError(f"{run_dir / CHECKPOINT_FILE}: holds no stage-1 config (an older longtail); cannot resume")
    check_stage1_config(run_dir, saved, config)  # names the first stage-1 key edited in config.yaml
    if "generators" not in checkpoint:
        raise RunDirError(f"{run_dir / CHECKPOINT_FILE}: written by an older longtail without resume state")
    return checkpoint


def _finished(run_dir: Path, config: Config) -> bool:
    """Whether stage 1 of ``run_dir`` is done: its checkpoint loads, matches config.yaml and is of the last epoch.

    A results.json alone proves nothing: a damaged or older checkpoint.pt beside it is reported (RunDirError).
    """
    if not (run_dir / CHECKPOINT_FILE).is_file():
        return False
    return _resumable_checkpoint(run_dir, config).get("epoch") == config.train.epochs


def _checked_inputs(config: Config, device: Any) -> DatasetSplits:
    """The data of ``config``, after every check that can fail before training: device and precision, the
    readers, the backbone (by name, or a backbone file probed on images), a joint classifier from the features
    file (``model.joint=file``), and the sampler (which refuses a class-balanced law with an empty class)."""
    check_train_setup(config, device, world_size())
    splits = representation_splits(config, create_dataset(config.data))
    begin_fingerprints(splits)  # hashed in the background; recorded with the first checkpoint
    check_representation(config, splits)
    if config.model.joint == "file":
        read_joint(config.data.path, splits.num_classes, splits.train.image_shape[0])
    try:
        section_sampler(
            splits.train.labels,
            config.train,
            epochs=config.train.epochs,
            seed=config.seed,
            num_replicas=1,
            rank=0,
            num_classes=splits.num_classes,
        )
    except EmptyClassError as error:  # the sampler knows its strategy, not the key that chose it
        hint = f"train.sampler={config.train.sampler}; instance or power sampling needs none"
        raise EmptyClassError(f"{error} ({hint})") from None
    return splits


def _stage1(
    config: Config,
    out: Path,
    open_run_dir: Callable[[contextlib.ExitStack], dict[str, Any] | None],
    *,
    progress: bool,
    run_dir_first: bool = False,
) -> dict[str, Any]:
    """Train into ``out``: ``open_run_dir(held)`` (rank 0 only, after the inputs are checked) locks and prepares
    the directory, the lock entered into ``held`` (held until the results are written), and returns the
    checkpoint to continue from, or None to start afresh. ``run_dir_first``: open it before the inputs are
    checked (a resume: the directory exists, and its checkpoint's own refusals, such as another number of
    processes, come before the config's)."""
    with process_group(resolve_device(config.device)) as device, contextlib.ExitStack() as held:

        def opened() -> dict[str, Any] | None:  # the run directory is rank 0's alone; its verdict reaches every rank
            return broadcast_object(agree(lambda: open_run_dir(held) if is_main() else None))

        checkpoint = opened() if run_dir_first else None
        # Bad config or data fails here, on every rank, before anything is written.
        splits = agree(lambda: _checked_inputs(config, device))
        if not run_dir_first:
            checkpoint = opened()
        provenance = stage1_provenance(config, splits)
        if checkpoint is not None:  # a resumed run goes on only on the data it started on
            hint = "point data.* back at the data it was trained on, or train a new run"
            agree(lambda: check_same_data(out, checkpoint.get(PROVENANCE_KEY), provenance, hint=hint))
        if is_main():
            write_skipped_images(out, splits.info)  # images data.skip_bad left out, if any
        tensorboard = ScalarLog(out, enabled=is_main())
        grad_scaler = make_grad_scaler(config.train.precision, device)  # fp16 only; one for the whole training
        seconds_before = checkpoint.get("train_seconds", 0.0) if checkpoint else 0.0
        start = time.perf_counter()

        def save_state(state: dict[str, Any]) -> None:
            checkpoint = {
                **state,
                "num_classes": splits.num_classes,
                "in_channels": splits.train.image_shape[0],
                "train_counts": splits.train_counts,
                "config": config_to_dict(config),
                PROVENANCE_KEY: provenance,
                "train_seconds": seconds_before + time.perf_counter() - start,
            }
            try:
                save_checkpoint(out, checkpoint)
            except StorageError as error:  # the last checkpoint is intact: say how to go on from it
                kept = state["epoch"] - 1
                then = f"continues after epoch {kept}" if kept > 0 else "starts it again"
                raise StorageError(f"{error}; free some space, then `longtail train --resume {out}` {then}") from error

        def save_epoch(record: dict[str, Any], state: dict[str, Any]) -> None:
            write_metrics(out, state["metrics"])
            log_stage1_epoch(tensorboard, record)
            save_state(state)

        if config.model.joint == "file":  # the joint classifier is given: a run of 0 epochs
            log.info("model.joint=file: joint classifier read from %s; stage 1 trains nothing", config.data.path)
            model = joint_from_file(config, splits, device)
            if is_main():
                state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
                save_state({"model": state, "epoch": 0, "metrics": [], "generators": [], "sampler": {"epoch": 0}})
        else:
            model, _ = train_joint(
                config,
                splits,
                device=device,
                on_epoch_end=save_epoch,
                progress=progress,
                grad_scaler=grad_scaler,
                resume=checkpoint,
            )
        train_seconds = seconds_before + time.perf_counter() - start
        results: dict[str, Any] | None = None
        if is_main():
            scores, records = {}, {}
            checkpoint_sha256 = file_sha256(out / CHECKPOINT_FILE)
            for split in SPLITS:
                features = split_features(model.backbone, splits, split, config=config, device=device)
                predictions: dict[str, Any] = {}
                fitted = {"joint": Fitted(model.head)}
                scores[split] = score_fitted(fitted, features, config, splits.train_counts, predictions)
                data = provenance["data"][split]
                records[split] = {"joint": scored_record(config, classifier_sha256=checkpoint_sha256, data=data)}
                # per image, for `compare --paired`
                write_predictions(out, split, features.y, predictions, fingerprint=data)
            results = {
                **results_header(config, splits, provenance),
                "split": "test",
                "methods": scores["test"],
                "val_methods": scores["val"],
                SCORED_KEY: records,
                "timing": {"train_seconds": round(train_seconds, 2)},
                # What `auto` became here: the same config trains in bf16 on one machine and fp32 on another.
                "environment": {
                    **environment(),
                    "device": str(device),
                    "precision": resolve_precision(config.train.precision, device, backbone=config.model.backbone),
                },
            }
            write_json_atomic(out / RESULTS_FILE, results)
            write_per_class_csv(out, results)  # per_class.csv: every class's numbers, beside results.json
            log_scores(tensorboard, results, config.train.epochs)
        tensorboard.close()
        barrier()  # the other ranks wait for rank 0's scoring
        return broadcast_object(results)
