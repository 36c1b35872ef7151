"""Build a directory's new contents beside it, then swap them into place by renames alone.

Whatever can fail for a long time (drawing figures, training, a full disk) is
done in a staging folder on the same file system; only renames touch the
target, so a failure part-way leaves the old contents whole. A staging folder
is named ``PREFIX PID.RANDOM.tmp``: one left by a killed process is recognised
by its PID (gone, or reused by a process that started later) and removed by the next
(:func:`remove_stale_staging`).

Used by the report (``RUN/.report.*.tmp`` -> ``report.md``, ``report.html``,
``report_files/``) and the demo (a whole run directory replaced).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from .atomic import sync_directory, writer_gone

_PREVIOUS = ".previous"  # suffix of an old directory moved into the staging folder while the new one goes in


def make_staging_dir(parent: Path, prefix: str) -> Path:
    """A fresh hidden folder ``PREFIX PID.RANDOM.tmp`` in ``parent`` (mode 0700; the PID tells whose it is)."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}.", suffix=".tmp", dir=parent))


def remove_stale_staging(parent: Path, prefix: str) -> list[Path]:
    """Remove the staging folders ``PREFIX PID.*.tmp`` of ``parent`` whose process is gone; a live one is left alone."""
    removed = []
    for folder in Path(parent).glob(f"{glob.escape(prefix)}*.tmp"):
        pid = folder.name[len(prefix) :].split(".", 1)[0]
        if folder.is_dir() and pid.isdigit() and writer_gone(int(pid), folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


@contextlib.contextmanager
def staging_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A fresh staging folder in ``parent`` for the block, removed after it however it ends.

    Stale folders of the same ``prefix`` (their process died) are removed first.
    """
    remove_stale_staging(parent, prefix)
    staging = make_staging_dir(parent, prefix)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def swap_into_place(staging: Path, target: Path, names: Sequence[str]) -> None:
    """Move ``staging/NAME`` over ``target/NAME`` for each of ``names``, in order, by renames; then fsync ``target``.

    A directory replaces the old one in two renames (the old one goes into
    ``staging``, to be removed with it); a file replaces the old one in one
    (``os.replace``). Should a move fail, the directories moved before it are
    put back, the old ones restored, and the error raised: ``target`` holds
    what it held. A file already replaced stays replaced, so of entries that
    must change together, name at most one file, and last.
    """
    moved: list[tuple[str, bool]] = []  # (name, whether an old entry was moved aside) of the directories moved
    try:
        for name in names:
            new, dest, old = staging / name, target / name, staging / f"{name}{_PREVIOUS}"
            if not new.is_dir() or new.is_symlink():
                os.replace(new, dest)
                continue
            had_old = dest.exists() or dest.is_symlink()
            if had_old:
                os.rename(dest, old)
            try:
                os.rename(new, dest)
            except BaseException:
                if had_old:
                    os.rename(old, dest)
                raise
            moved.append((name, had_old))
    except BaseException:
        for name, had_old in reversed(moved):
            os.rename(target / name, staging / name)
            if had_old:
                os.rename(staging / f"{name}{_PREVIOUS}", target / name)
        raise
    if names:
        sync_directory(target, written=target / names[-1])


def replace_directory(new: Path, target: Path) -> None:
    """Put the directory ``new`` at ``target`` by renames (both in one parent folder); an old ``target`` is removed.

    The old ``target`` is renamed aside first and removed only once ``new`` is
    in place; should that rename fail, it is put back.
    """
    old = target.parent / f".{target.name}{_PREVIOUS}-{os.getpid()}"
    had_old = target.exists() or target.is_symlink()
    if had_old:
        _discard(old)  # left by an earlier process of this PID
        os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        if had_old:
            os.rename(old, target)
        raise
    if had_old:
        _discard(old)
    sync_directory(target.parent, written=target)


def _discard(path: Path) -> None:
    """Remove ``path`` (a folder, a file or a link) if it is there; what cannot be removed is left."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()
