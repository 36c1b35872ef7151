"""TensorBoard event files beside ``metrics.jsonl``: ``tensorboard --logdir RUN_DIR/tensorboard``.

Every command that trains or scores writes scalars into ``RUN_DIR/tensorboard``
(stage 1 per epoch; stage 2 per head-training epoch and the final scores).
Each process opens its own event file there, as TensorBoard expects; it shows
them as one run. ``metrics.jsonl`` and ``results.json`` stay the record of
truth: the event files are for looking.

Tags:
    ``train/loss``, ``train/acc``, ``train/lr``, ``train/epoch_seconds``, ``val/all``, ``val/macro``,
    ``val/many``, ``val/medium``, ``val/few``: stage 1, step = epoch.
    ``decouple/<method>/loss``, ``decouple/<method>/acc``, ``decouple/<method>/lr``: stage-2 head training,
    step = epoch.
    ``<split>/<method>/<group>`` (split val or test; group many, medium, few, all, macro): the scores of every
    method, step = the stage-1 epochs.
    ``<name>_sweep/<split>/<group>``: each τ curve ``<name>_curve`` of results.json (the ``MethodSpec.sweep`` of a
    method: ``tau_sweep``, ``logit_adjust_sweep``), step = round(100 τ).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

TENSORBOARD_DIR = "tensorboard"
GROUPS = ("many", "medium", "few", "all", "macro")


class ScalarLog:
    """Scalars of one process into ``run_dir/tensorboard``; a no-op when ``enabled`` is false (non-zero ranks)."""

    def __init__(self, run_dir: str | Path, *, enabled: bool = True) -> None:
        self._writer = None
        if enabled:
            # Imported here: it loads the tensorboard package, which only logging needs. Guarded: a full disk
            # is one line in the main thread, not a traceback from the writer's thread.
            from .tensorboard_guard import GuardedSummaryWriter

            self._writer = GuardedSummaryWriter(Path(run_dir) / TENSORBOARD_DIR)

    def scalars(self, values: Mapping[str, Any], step: int, *, prefix: str = "") -> None:
        """Add ``prefix + name`` = value at ``step`` for every numeric value (None and non-numbers are skipped)."""
        if self._writer is None:
            return
        for name, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(prefix + name, float(value), step)

    def close(self) -> None:
        """Flush and close the event file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> ScalarLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def log_stage1_epoch(log: ScalarLog, record: Mapping[str, Any]) -> None:
    """One ``metrics.jsonl`` record of stage 1 as ``train/*`` and ``val/*`` scalars at step = epoch."""
    train = {"loss": record["train_loss"], "acc": record["train_acc"], "lr": record["lr"]}
    train["epoch_seconds"] = record.get("seconds")
    log.scalars(train, record["epoch"], prefix="train/")
    val = {k.removeprefix("val_"): v for k, v in record.items() if k.startswith("val_")}
    log.scalars(val, record["epoch"], prefix="val/")


def log_scores(log: ScalarLog, results: Mapping[str, Any], step: int, sweeps: Iterable[str] = ()) -> None:
    """Every method's group accuracies on val and test, and the τ curves, from a results dict.

    Args:
        sweeps: the results keys of τ curves (``tau_curve``...): the engine does not know the methods, so the
            caller reads them from the registry (:func:`longtail.pipeline.scores.sweep_keys`).
    """
    for split, key in (("val", "val_methods"), ("test", "methods")):
        for method, summary in results.get(key, {}).items():
            log.scalars({g: summary.get(g) for g in GROUPS}, step, prefix=f"{split}/{method}/")
    for curve_key in sweeps:
        curve, tag = results.get(curve_key), curve_key.removesuffix("_curve") + "_sweep"
        if not curve:
            continue
        for split in ("val", "test"):
            for point in curve.get(split, []):
                log.scalars({g: point.get(g) for g in GROUPS}, round(100 * point["tau"]), prefix=f"{tag}/{split}/")
