"""Atomic file writes: a crash leaves the previous file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str) -> None:
    """Write through ``write(file)`` into a temporary sibling, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically."""
    _atomic_write(path, lambda handle: handle.write(text), "w")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Replace ``path`` with ``obj`` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_binary_atomic(path: Path, write: Callable[[Any], None]) -> None:
    """Replace ``path`` with what ``write(binary_file)`` writes, atomically."""
    _atomic_write(path, write, "wb")


def save_torch_atomic(path: Path, obj: Any) -> None:
    """``torch.save`` into ``path`` atomically."""
    write_binary_atomic(path, lambda handle: torch.save(obj, handle))


def read_json(path: Path) -> Any:
    """Read a JSON file."""
    with open(path) as handle:
        return json.load(handle)
