"""``longtail train``: stage 1 into a new run directory (one process, or every process under torchrun)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..config import Config, config_to_dict, save_config
from ..data.dataset import DatasetSplits
from ..data.registry import create_dataset
from ..engine.device import resolve_device
from ..engine.distributed import agree, barrier, broadcast_object, is_main, process_group, world_size
from ..engine.precision import make_grad_scaler
from ..engine.tensorboard import ScalarLog, log_scores, log_stage1_epoch
from ..io import write_json_atomic
from ..models.classifier import Classifier
from ..runs import CONFIG_FILE, RESULTS_FILE, environment, prepare_new_run_dir, save_checkpoint, write_metrics
from ..stages.joint import check_train_setup, train_joint
from .run_state import SPLITS, results_header, score_heads, split_features


def train(config: Config, out: str | Path, *, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Stage 1: train backbone and linear classifier jointly into run directory ``out``.

    Writes ``config.yaml``, then after every epoch ``checkpoint.pt``,
    ``metrics.jsonl`` and TensorBoard scalars (``tensorboard/``), and finally
    ``results.json`` with ``joint`` on val and test.

    Under torchrun every process calls this and trains with DDP (see
    :func:`~longtail.stages.joint.train_joint`); rank 0 alone checks and writes
    ``out`` and scores val and test at the end, while the others wait. A
    failed check fails every rank alike.

    Returns:
        The results dict written to ``results.json`` (on every rank).
    """
    out = Path(out)
    with process_group(resolve_device(config.device)) as device:

        def check_inputs() -> DatasetSplits:
            check_train_setup(config, device, world_size())
            return create_dataset(config.data)

        splits = agree(check_inputs)  # bad config or data fails here, on every rank, before anything is written
        # The run directory is rank 0's alone; its verdict on `out` reaches every rank.
        agree(lambda: prepare_new_run_dir(out, overwrite=overwrite) if is_main() else None)
        if is_main():
            save_config(config, out / CONFIG_FILE)
        tensorboard = ScalarLog(out, enabled=is_main())
        in_channels = splits.train.image_shape[0]
        history: list[dict[str, Any]] = []
        grad_scaler = make_grad_scaler(config.train.precision, device)  # fp16 only; one for the whole training
        start = time.perf_counter()

        def save_epoch(record: dict[str, Any], model: Classifier, optimizer: Any, scheduler: Any) -> None:
            history.append(record)
            write_metrics(out, history)
            log_stage1_epoch(tensorboard, record)
            checkpoint = {
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},  # the plain module's keys
                "epoch": record["epoch"],
                "num_classes": splits.num_classes,
                "in_channels": in_channels,
                "train_counts": splits.train_counts,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "metrics": history,
                "config": config_to_dict(config),
            }
            if grad_scaler is not None:
                checkpoint["grad_scaler"] = grad_scaler.state_dict()
            save_checkpoint(out, checkpoint)

        model, _ = train_joint(
            config, splits, device=device, on_epoch_end=save_epoch, progress=progress, grad_scaler=grad_scaler
        )
        train_seconds = time.perf_counter() - start
        results: dict[str, Any] | None = None
        if is_main():
            scores = {}
            for split in SPLITS:
                features = split_features(model.backbone, splits, split, config=config, device=device)
                scores[split] = score_heads({"joint": model.head}, features, config, splits.train_counts)
            results = {
                **results_header(config, splits),
                "split": "test",
                "methods": scores["test"],
                "val_methods": scores["val"],
                "timing": {"train_seconds": round(train_seconds, 2)},
                "environment": environment(),
            }
            write_json_atomic(out / RESULTS_FILE, results)
            log_scores(tensorboard, results, config.train.epochs)
        tensorboard.close()
        barrier()  # the other ranks wait for rank 0's scoring
        return broadcast_object(results)
