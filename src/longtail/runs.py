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
    per_class.csv        one row per class: size, shot group, each method's accuracy per split
    classifiers/M.pt     the stage-2 classifier of method M and the checkpoint hash it was fit on
    features/*.pt        the stage-2 feature cache (see :mod:`longtail.engine.feature_cache`)
    .longtail.lock       while a command holds the run: its lock, and who holds it (see :func:`run_lock`)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import platform
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import OutputPathError, RunDirError, RunInUseError, StorageError, shown
from .fs.atomic import (
    make_dirs,
    os_error_reason,
    remove_stale_temporaries,
    remove_tree,
    save_torch_atomic,
    write_json_atomic,
    write_text_atomic,
)
from .fs.locks import LockPolicy, directory_lock
from .safe_text import read_json_file, read_text_file
from .safe_torch import load_tensors
from .version import __version__

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.jsonl"
MAX_RUN_JSON = 64 << 20  # bytes of results.json or metrics.jsonl: a run's are well under a megabyte
RESULTS_FILE = "results.json"
PER_CLASS_FILE = "per_class.csv"  # written beside results.json (longtail.evaluation.per_class)
CLASSIFIER_DIR = "classifiers"
LOCK_FILE = ".longtail.lock"
# Every name a run writes at its top level; no command may write a user-named output over one of them.
# (Kept here as plain names: feature_cache.FEATURE_DIR, tensorboard.TENSORBOARD_DIR, image_check.SKIPPED_FILE and
# report.build's files import heavy modules; tests/test_run_integrity.py checks that the names agree.)
RUN_OWN_NAMES = frozenset(
    {
        CONFIG_FILE,
        CHECKPOINT_FILE,
        METRICS_FILE,
        RESULTS_FILE,
        PER_CLASS_FILE,
        CLASSIFIER_DIR,
        LOCK_FILE,
        "features",
        "predictions",
        "tensorboard",
        "skipped_images.txt",
        "report.html",
        "report.md",
        "report_files",
    }
)
# How long a results.json update waits for another command's short update before giving up.
RESULTS_LOCK_WAIT_S = 10.0


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a stage-1 run (config and checkpoint)."""
    return (path / CONFIG_FILE).is_file() and (path / CHECKPOINT_FILE).is_file()


def runs_in(folder: Path) -> list[Path]:
    """The run directories directly inside ``folder`` (what `longtail auto` and `grid` write), by name; [] for a
    folder that cannot be listed."""
    try:
        children = sorted(folder.iterdir())
    except OSError:
        return []
    return [child for child in children if child.is_dir() and (child / CONFIG_FILE).is_file()]


def _not_a_run_folder(path: Path) -> str:
    """Why the directory ``path`` (no config.yaml) is no run: a folder of runs is named as one, with its runs."""
    runs = runs_in(path)
    if not runs:
        return f"{path}: not a run directory (no {CONFIG_FILE}; create one with `longtail train --out DIR`)"
    first = ", ".join(shown(run.name, 40, quote=False) for run in runs[:3]) + (", ..." if len(runs) > 3 else "")
    return (
        f"{path}: a folder of {len(runs)} run(s) ({first}), not a run directory; give one of them "
        f"(`longtail compare {shlex.quote(str(path))}` compares them all)"
    )


def require_run_dir(path: str | Path) -> Path:
    """``path`` as a Path if it is a run directory, else a :class:`RunDirError` saying why not."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        # A file is no missing directory (and `train --out` would refuse it): say what it is, and which run it
        # belongs to when it is one of a run's own files (`results.json` given for its run).
        owner = path.parent if path.name in RUN_OWN_NAMES and is_run_dir(path.parent) else None
        where = f"; give its run directory, {owner}" if owner is not None else ", expected a run directory"
        raise RunDirError(f"{path}: a file, not a directory{where}")
    if not path.is_dir():
        raise RunDirError(f"{path}: run directory not found (create one with `longtail train --out {path}`)")
    if not (path / CONFIG_FILE).is_file():
        raise RunDirError(_not_a_run_folder(path))
    if not (path / CHECKPOINT_FILE).is_file():  # stage 1 writes config.yaml first, its first checkpoint after epoch 1
        raise RunDirError(
            f"{path}: stage 1 has no checkpoint yet (config.yaml, no {CHECKPOINT_FILE}); if it was interrupted, "
            f"`longtail train --resume {path}` trains it again from epoch 1"
        )
    return path


def is_unfinished_run(path: Path) -> bool:
    """Whether ``path`` holds a stage 1 that has not written its results (interrupted, or training now)."""
    return (path / CONFIG_FILE).is_file() and not (path / RESULTS_FILE).is_file()


def is_occupied(path: Path) -> bool:
    """Whether ``path`` exists as anything but an empty directory (a lone lock file counts as empty)."""
    return path.exists() and not (path.is_dir() and not any(p.name != LOCK_FILE for p in path.iterdir()))


def check_replaceable(path: Path) -> None:
    """Refuse to replace ``path`` unless it is absent, an empty directory or a run directory."""
    if is_occupied(path) and not (path.is_dir() and is_run_dir(path)):
        raise RunDirError(f"{path}: exists and is not a run directory, refusing to replace it; choose another --out")


def check_new_run_dir(path: Path, *, overwrite: bool) -> None:
    """Refuse ``path`` as the directory of a new run: occupied without ``overwrite``, or not a run directory."""
    if is_occupied(path):
        if not overwrite and is_unfinished_run(path):
            raise RunDirError(
                f"{path}: holds a run whose stage 1 has not finished; `longtail train --resume {path}` continues it "
                "(or pass --overwrite to start it again, or choose another --out)"
            )
        if not overwrite:
            raise RunDirError(
                f"{path}: exists and is not empty; pass --overwrite to replace it, or choose another --out"
            )
        check_replaceable(path)


def prepare_new_run_dir(path: Path, *, overwrite: bool) -> None:
    """Make ``path`` an empty directory for a new run.

    An occupied ``path`` is refused unless ``overwrite``; even then only a run
    directory is replaced, never an arbitrary folder. Its lock file is kept:
    the caller may hold it (see :func:`run_lock`), and a new file would be
    another lock.
    """
    check_new_run_dir(path, overwrite=overwrite)
    if path.is_dir():
        for child in path.iterdir():
            if child.name != LOCK_FILE:
                remove_tree(child)
    make_dirs(path)


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
    text = read_text_file(path, "metrics file (one JSON object per line)", max_bytes=MAX_RUN_JSON, error=RunDirError)
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
    # Not JSON, not UTF-8, larger or nested deeper than a results file: one line (longtail.safe_text).
    results = read_json_file(path, "results file", max_bytes=MAX_RUN_JSON, error=RunDirError, hint=hint)
    return check_results(path, results, hint)


def update_results(run_dir: Path, update: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read ``results.json``, let ``update`` change it in place, write it back atomically, under the run lock.

    The lock makes the read-modify-write whole: two commands updating the
    same run never lose each other's entries. It is the command's own lock
    when it holds one (:func:`run_lock` is re-entrant), else taken for the
    update, waiting up to :data:`RESULTS_LOCK_WAIT_S` for another update.
    """
    with run_lock(run_dir, wait=RESULTS_LOCK_WAIT_S):
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
        checkpoint = load_tensors(path)
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


# --- The run lock -------------------------------------------------------------------------------------------
# longtail.fs.locks' directory lock on RUN/.longtail.lock, in a run's words. A second command fails at once rather
# than waiting: a waiting `decouple` would silently run on what the first one left, and a failure tells the user
# what is going on.


def _read_only_error(run_dir: Path, error: OSError, command: str) -> StorageError:
    if error.errno == errno.EROFS:
        where = "is on a read-only file system"
    else:
        where = f"cannot be written ({os_error_reason(error)})"
    return StorageError(
        f"{run_dir}: the run directory {where}; `{command}` writes into it (copy the run somewhere writable)"
    )


def _remove_interrupted_writes(run_dir: Path) -> None:
    for path in remove_stale_temporaries(run_dir):
        log.info("%s: removed a temporary file left by an interrupted write", path)


RUN_LOCK = LockPolicy(
    file_name=LOCK_FILE,
    noun="run",
    missing=lambda run_dir: RunDirError(f"{run_dir}: run directory not found"),
    in_use=lambda run_dir, holder: RunInUseError(
        f"{run_dir}: run directory is in use by {holder}; wait for it to finish"
    ),
    unwritable=_read_only_error,
    on_exclusive=_remove_interrupted_writes,
)


def run_lock(
    run_dir: str | Path, command: str = "longtail", *, exclusive: bool = True, wait: float = 0.0
) -> contextlib.AbstractContextManager[None]:
    """Hold the lock of run directory ``run_dir`` for the block (:func:`longtail.fs.locks.directory_lock`).

    A command that changes the run takes it ``exclusive`` for its whole run;
    one that only reads it may take it shared (``exclusive=False``): readers
    coexist, a writer excludes everyone. A command that finds the lock taken
    fails at once with :class:`RunInUseError` "RUN: run directory is in use by
    PID n (longtail decouple); wait for it to finish", or after ``wait``
    seconds of retrying. Re-entrant within one process (a shared lock cannot
    become exclusive). Taking it exclusive also removes the temporary files
    that killed writers left in the run.

    Args:
        run_dir: an existing directory.
        command: what this process is, for the message another one gets ("longtail decouple").

    Raises:
        RunDirError: ``run_dir`` does not exist.
        StorageError: exclusive on a directory that cannot be written (read-only file system, permissions).
        RunInUseError: another process holds the lock.
    """
    return directory_lock(run_dir, RUN_LOCK, command, exclusive=exclusive, wait=wait)


# --- Output paths -------------------------------------------------------------------------------------------


def owning_run(path: Path) -> Path | None:
    """The run directory ``path`` is, or lies inside, if any (a folder with config.yaml and checkpoint.pt)."""
    for folder in (path, *path.parents):
        if is_run_dir(folder):
            return folder
    return None


def check_output_path(path: str | Path, *, overwrite: bool, what: str = "--out") -> Path:
    """Refuse a user-named output ``path`` that would replace a run's own file, or an existing file.

    ``path`` (symlinks followed) may not be a run directory, nor one of its
    files or folders (:data:`RUN_OWN_NAMES`: config.yaml, checkpoint.pt,
    classifiers/, ...); elsewhere in a run (``RUN/export/``) is fine. An
    existing file is refused unless ``overwrite``, an existing directory
    always: the rule of ``train --out``.

    Args:
        path: the output path a user gave.
        overwrite: whether the command was given ``--overwrite``.
        what: the option that named it, for the message ("--out", "--md", "--plot").

    Returns:
        ``path`` as a Path.

    Raises:
        OutputPathError: with one line naming ``path`` and the rule, or why the path cannot be looked at
            (a name longer than the file system allows, a folder that may not be searched).
    """
    path = Path(path)
    try:
        return _checked_output_path(path, overwrite, what)
    except OSError as error:  # ENAMETOOLONG, EACCES, ELOOP...: the path cannot even be examined
        # A refused name may be thousands of characters long: its middle is cut, its file name kept.
        where = shown(path, 160, quote=False, middle=True)
        raise OutputPathError(f"{where}: cannot be used as {what} ({os_error_reason(error)})") from None


def _checked_output_path(path: Path, overwrite: bool, what: str) -> Path:
    """:func:`check_output_path`'s rules; OSError escapes (the caller makes it one line)."""
    target = path.resolve()
    run = owning_run(target)
    if run == target:
        raise OutputPathError(f"{path}: is a run directory, not a file; choose another {what}")
    if run is not None:
        own = target.relative_to(run).parts[0]
        if own in RUN_OWN_NAMES:
            raise OutputPathError(
                f"{path}: belongs to run {run} (its {own}); refusing to replace it, choose another {what}"
            )
    if target.is_dir():
        raise OutputPathError(f"{path}: is a directory; {what} expects a file name")
    if (target.exists() or path.is_symlink()) and not overwrite:
        raise OutputPathError(f"{path}: exists; pass --overwrite to replace it, or choose another {what}")
    return path
