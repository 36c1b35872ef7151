"""The run directory: what a run writes, and how it is read back.

A run directory holds only files named relative to itself, so it can be moved
or copied:

    config.yaml          the resolved config of stage 1
    checkpoint.pt        {"model": state dict (no DDP "module." prefix), "epoch", "num_classes",
                          "in_channels", "train_counts", "optimizer", "scheduler", "metrics", "config",
                          "grad_scaler" with train.precision=fp16}
    metrics.jsonl        one JSON line per stage-1 epoch
    results.json         metrics per method on test ("methods") and val ("val_methods"),
                         train_counts, seed, shot groups, timing, versions
    classifiers/M.pt     the stage-2 classifier of method M and the checkpoint hash it was fit on
    features/*.pt        the stage-2 feature cache (see :mod:`longtail.engine.feature_cache`)
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .version import __version__
from .errors import RunDirError
from .io import read_json, save_torch_atomic, write_json_atomic, write_text_atomic

CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
CLASSIFIER_DIR = "classifiers"


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a stage-1 run (config and checkpoint)."""
    return (path / CONFIG_FILE).is_file() and (path / CHECKPOINT_FILE).is_file()


def require_run_dir(path: str | Path) -> Path:
    """``path`` as a Path if it is a run directory, else a :class:`RunDirError` saying why not."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path}: run directory not found (create one with `longtail train --out {path}`)")
    for name in (CONFIG_FILE, CHECKPOINT_FILE):
        if not (path / name).is_file():
            raise RunDirError(f"{path}: not a run directory (no {name}; create one with `longtail train --out DIR`)")
    return path


def is_occupied(path: Path) -> bool:
    """Whether ``path`` exists as anything but an empty directory."""
    return path.exists() and not (path.is_dir() and not any(path.iterdir()))


def check_replaceable(path: Path) -> None:
    """Refuse to replace ``path`` unless it is absent, an empty directory or a run directory."""
    if is_occupied(path) and not (path.is_dir() and is_run_dir(path)):
        raise RunDirError(f"{path}: exists and is not a run directory, refusing to replace it; choose another --out")


def prepare_new_run_dir(path: Path, *, overwrite: bool) -> None:
    """Make ``path`` an empty directory for a new run.

    An occupied ``path`` is refused unless ``overwrite``; even then only a run
    directory is replaced, never an arbitrary folder.
    """
    if is_occupied(path):
        if not overwrite:
            raise RunDirError(
                f"{path}: exists and is not empty; pass --overwrite to replace it, or choose another --out"
            )
        check_replaceable(path)
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def environment() -> dict[str, str]:
    """Versions of what produced a run."""
    return {
        "longtail": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:]),
    }


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` with one line per epoch, atomically."""
    write_text_atomic(run_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in history))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The epoch records of ``metrics.jsonl`` (empty if absent).

    Raises:
        RunDirError: naming ``file:line`` for a line that is not a JSON object (or not UTF-8 text).
    """
    from .run_shapes import parse_metrics_line  # local: this helper's diff stays inside the readers

    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        number = path.read_bytes()[: error.start].count(b"\n") + 1
        raise RunDirError(f"{path}:{number}: not UTF-8 text, expected one JSON object per line") from None
    return [parse_metrics_line(path, n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_results(run_dir: Path) -> dict[str, Any]:
    """``results.json`` as a dict (empty if absent), its shape checked (:func:`~longtail.run_shapes.check_results`).

    Raises:
        RunDirError: for a file that is not JSON, or JSON of another shape, naming the key and the type expected.
    """
    from .run_shapes import check_results  # local: this helper's diff stays inside the readers

    path = run_dir / RESULTS_FILE
    if not path.is_file():
        return {}
    hint = f"; delete it and run `longtail eval {run_dir}` to rebuild it"
    try:
        results = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # not JSON, not UTF-8, nested too deeply
        raise RunDirError(f"{path}: not valid JSON{hint}") from None
    return check_results(path, results, hint)


def update_results(run_dir: Path, update: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read ``results.json``, let ``update`` change it in place, write it back atomically."""
    results = read_results(run_dir)
    update(results)
    write_json_atomic(run_dir / RESULTS_FILE, results)
    return results


def save_checkpoint(run_dir: Path, checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint.pt`` atomically."""
    save_torch_atomic(run_dir / CHECKPOINT_FILE, checkpoint)


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """Read ``checkpoint.pt`` onto the CPU."""
    path = run_dir / CHECKPOINT_FILE
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt files
        raise RunDirError(f"{path}: unreadable checkpoint ({error.__class__.__name__})") from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise RunDirError(f"{path}: not a longtail checkpoint (no 'model' state dict)")
    return checkpoint


def classifier_path(run_dir: Path, method: str) -> Path:
    """Where the stage-2 classifier of ``method`` is saved."""
    return run_dir / CLASSIFIER_DIR / f"{method}.pt"


def saved_methods(run_dir: Path) -> list[str]:
    """Stage-2 methods with a saved classifier, sorted."""
    folder = run_dir / CLASSIFIER_DIR
    return sorted(p.stem for p in folder.glob("*.pt")) if folder.is_dir() else []
