"""longtail.fs.staging: build beside the target, swap in by renames; a failure leaves the old contents whole."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from longtail.fs.staging import remove_stale_staging, replace_directory, staging_dir, swap_into_place

DEAD_PID = 4194399  # above Linux's largest PID: no process can have it


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def _fail_on(monkeypatch: pytest.MonkeyPatch, name: str, destination: Path) -> None:
    """Make ``os.<name>`` fail with ENOSPC the first time it moves something to ``destination``."""
    real, failed = getattr(os, name), []

    def move(src, dst):
        if Path(dst) == destination and not failed:
            failed.append(dst)
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, name, move)


def _old_target(tmp_path: Path) -> Path:
    target = tmp_path / "target"
    (target / "files").mkdir(parents=True)
    (target / "files" / "a.txt").write_text("old a")
    (target / "page.md").write_text("old page")
    return target


def test_swap_moves_directories_and_files_and_cleans_up(tmp_path: Path):
    target = _old_target(tmp_path)
    with staging_dir(target, ".build.") as staging:
        assert staging.name.startswith(f".build.{os.getpid()}.") and staging.name.endswith(".tmp")
        (staging / "files").mkdir()
        (staging / "files" / "b.txt").write_text("new b")
        (staging / "page.md").write_text("new page")
        swap_into_place(staging, target, ["files", "page.md"])
    assert _tree(target) == {"files/b.txt": "new b", "page.md": "new page"}  # the old folder left with the staging


def test_a_failed_file_move_puts_the_directories_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    target = _old_target(tmp_path)
    before = _tree(target)
    with staging_dir(target, ".build.") as staging:
        (staging / "files").mkdir()
        (staging / "files" / "b.txt").write_text("new b")
        (staging / "page.md").write_text("new page")
        _fail_on(monkeypatch, "replace", target / "page.md")
        with pytest.raises(OSError, match="No space"):
            swap_into_place(staging, target, ["files", "page.md"])
        monkeypatch.undo()
    assert _tree(target) == before
    assert sorted(p.name for p in target.iterdir()) == ["files", "page.md"]  # no staging folder left


def test_stale_staging_of_dead_processes_is_removed_live_kept(tmp_path: Path):
    dead, live, other = tmp_path / f".build.{DEAD_PID}.x.tmp", tmp_path / ".build.1.y.tmp", tmp_path / ".other.7.tmp"
    for folder in (dead, live, other):
        folder.mkdir()
    assert remove_stale_staging(tmp_path, ".build.") == [dead]
    assert not dead.exists() and live.is_dir() and other.is_dir()


def test_replace_directory_replaces_and_keeps_the_old_one_when_it_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    target, new = tmp_path / "run", tmp_path / ".run.partial"
    target.mkdir()
    (target / "old.txt").write_text("old")
    new.mkdir()
    (new / "new.txt").write_text("new")
    _fail_on(monkeypatch, "rename", target)  # the new run cannot be moved in: the old one must be back
    with pytest.raises(OSError, match="No space"):
        replace_directory(new, target)
    monkeypatch.undo()
    assert _tree(target) == {"old.txt": "old"} and new.is_dir()
    replace_directory(new, target)
    assert _tree(target) == {"new.txt": "new"} and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the old run was removed, nothing left aside
    fresh = tmp_path / ".fresh"
    fresh.mkdir()
    replace_directory(fresh, tmp_path / "absent")  # no old directory: a plain rename
    assert (tmp_path / "absent").is_dir()
