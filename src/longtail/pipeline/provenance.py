"""Provenance: what a run's numbers were computed from, and the check every command that combines them makes.

A run's provenance (``checkpoint.pt`` and ``results.json``, key ``"provenance"``)::

    {"fingerprint": "3f2a9c1e07b4",              # short form of everything below
     "data": {"train": sha256, "val": sha256, "test": sha256},   # longtail.data.fingerprint
     "config": sha256,                            # the stage-1 keys of the config (not where the data lives)
     "program": {"backbone": sha256 | null, "pretrained": sha256 | null},  # a backbone file and its PATH.json
     "longtail": "0.2.0"}

It is written by stage 1 and checked by every later command that reads the
run's data (``decouple``, ``eval``, ``export``, ``features``, ``train
--resume``): data that changed since stage 1 is refused, naming the split.
Classifiers, prediction files, features files, grid cells and reports carry the
fingerprint they were computed from, so that ``compare --paired``, ``grid`` and
``report`` can refuse to combine artifacts of different data.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..config import Config, config_to_dict
from ..data.dataset import DatasetSplits
from ..data.fingerprint import SHORT, SPLITS, data_fingerprints, short
from ..data.registry import location_keys
from ..errors import RunDirError
from ..models.external import external_path, is_external, program_sha256
from ..runs import file_sha256
from ..version import __version__

# Keys that may change after stage 1: they do not alter what stage 1 learned. Where the data lives may change
# too (a moved dataset): its content is checked against stage 1's fingerprints. A reader's own location keys
# (``data.filelist.train_list``, ...) are added from its spec (:func:`run_time_keys`).
GENERAL_RUN_TIME_KEYS = (
    "decouple.",
    "eval.",
    "device",
    "data.root",
    "data.path",
    "data.num_workers",
    "data.decode_threads",
)


def run_time_keys() -> tuple[str, ...]:
    """The dotted keys (a trailing dot: a whole section) that may change on a trained run."""
    return (*GENERAL_RUN_TIME_KEYS, *location_keys())


KEY = "provenance"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def stage1_keys(tree: dict[str, Any]) -> dict[str, Any]:
    """A config tree as ``{dotted key: value}`` without :func:`run_time_keys` (what may change after stage 1)."""
    keys = run_time_keys()
    return {key: value for key, value in flatten(tree).items() if not key.startswith(keys)}


def config_digest(config: Config) -> str:
    """SHA-256 of the config's stage-1 keys (canonical JSON): what training did, not where the data lives."""
    return _digest(stage1_keys(config_to_dict(config)))


def program_digests(config: Config) -> dict[str, str | None]:
    """SHA-256 of the files that are part of the network: a backbone file with its ``PATH.json``, and
    ``model.pretrained``'s weights (None where the config names none)."""
    backbone = config.model.backbone
    pretrained = config.model.pretrained
    return {
        "backbone": program_sha256(external_path(backbone)[1]) if is_external(backbone) else None,
        "pretrained": file_sha256(Path(pretrained).expanduser()) if pretrained else None,
    }


def stage1_provenance(config: Config, splits: DatasetSplits) -> dict[str, Any]:
    """The provenance of a run of ``config`` on ``splits`` (waits for the data's fingerprints)."""
    record = {
        "data": data_fingerprints(splits),
        "config": config_digest(config),
        "program": program_digests(config),
        "longtail": __version__,
    }
    return {"fingerprint": _digest(record)[:SHORT], **record}


def check_same_data(where: Path, recorded: Any, current: dict[str, Any], *, hint: str) -> None:
    """Refuse when ``current`` data differs from the ``recorded`` provenance (of stage 1), naming the split.

    A record without data fingerprints (a run of an older longtail) is not compared.

    Raises:
        RunDirError: "RUN: the test data differs from what stage 1 recorded (fingerprint a → b); HINT".
    """
    old = recorded.get("data") if isinstance(recorded, dict) else None
    if not isinstance(old, dict):
        return
    for split in SPLITS:
        if split in old and old[split] != current["data"][split]:
            raise RunDirError(
                f"{where}: the {split} data differs from what stage 1 recorded (fingerprint "
                f"{short(old[split])} then, {short(current['data'][split])} now); {hint}"
            )
    program = recorded.get("program")
    if isinstance(program, dict) and program.get("backbone") not in (None, current["program"]["backbone"]):
        raise RunDirError(
            f"{where}: the backbone file or its PATH.json changed since stage 1 (fingerprint "
            f"{short(program['backbone'])} then, {short(current['program']['backbone'])} now); {hint}"
        )


def differences(a: Any, b: Any) -> list[str]:
    """What differs between two provenance records, as ``["test data", "config", ...]`` (empty: the same)."""
    a = a if isinstance(a, dict) else {}
    b = b if isinstance(b, dict) else {}
    found = [
        f"{split} data" for split in SPLITS if (a.get("data") or {}).get(split) != (b.get("data") or {}).get(split)
    ]
    found += [key for key in ("config", "program", "longtail") if a.get(key) != b.get(key)]
    return found


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
