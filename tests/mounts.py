"""Real storage conditions for tests: a small tmpfs (a disk that fills), a read-only bind mount.

Both need root and mount permission (CI runs as root); a test is skipped,
saying why, where mounting is refused. Every mount is lazily unmounted when
the context ends, even after a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _mount(*args: str) -> None:
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount {' '.join(args)} not permitted here: {done.stderr.strip() or done.returncode}")


def _unmount(point: Path) -> None:
    subprocess.run(["umount", "-l", str(point)], capture_output=True)


@contextlib.contextmanager
def small_tmpfs(point: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes (rounded up to pages) mounted at ``point``."""
    point.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point))
    try:
        yield point
    finally:
        _unmount(point)


def resize_tmpfs(point: Path, size: int) -> None:
    """Give the tmpfs at ``point`` ``size`` bytes (free space, after a full disk)."""
    _mount("-o", f"remount,size={size}", str(point))


@contextlib.contextmanager
def read_only_view(source: Path, point: Path) -> Iterator[Path]:
    """``source`` seen read-only at ``point`` (a bind mount remounted ro: root ignores chmod, not this)."""
    point.mkdir(parents=True, exist_ok=True)
    _mount("--bind", str(source), str(point))
    try:
        _mount("-o", "remount,bind,ro", str(point))
        yield point
    finally:
        _unmount(point)


def fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to the last byte with ``folder/filler``."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1):
            block = b"\0" * chunk
            with contextlib.suppress(OSError):
                while os.write(fd, block) == chunk:
                    pass
    finally:
        os.close(fd)


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), to show that nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
