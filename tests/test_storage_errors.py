"""A full disk, a quota, a read-only run directory: one line naming the file, exit 1, the previous files intact.

Full disks are real tmpfs mounts filled to the last byte, read-only run
directories real read-only bind mounts (root ignores chmod); both are skipped
where mounting is not permitted. Where a condition cannot be made for real
(a quota), the OSError is injected at the write layer.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides
from longtail.cli import main
from longtail.errors import StorageError
from longtail.fs.atomic import save_torch_atomic, write_binary_atomic, write_json_atomic, write_text_atomic
from mounts import fill, read_only_view, resize_tmpfs, small_tmpfs, tree

SRC = Path(__file__).resolve().parents[1] / "src"


def _error_line(capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    """The one ``longtail: error:`` line of the last command; no traceback; holding every ``expected`` text."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("longtail: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]


def _files(run: Path) -> dict[str, bytes]:
    """The run's files but its TensorBoard events (a command may open an empty event file)."""
    return {k: v for k, v in tree(run).items() if not k.startswith("tensorboard")}


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*.tmp")]


# --- the write layer -----------------------------------------------------------------------------------------


def test_full_disk_keeps_the_previous_file(tmp_path: Path):
    with small_tmpfs(tmp_path / "disk", 64 * 1024) as disk:
        write_json_atomic(disk / "results.json", {"methods": {"joint": 1}})
        before = (disk / "results.json").read_bytes()
        fill(disk)
        with pytest.raises(StorageError) as caught:
            write_json_atomic(disk / "results.json", {"methods": {"joint": 1, "crt": "x" * 10_000}})
        assert str(caught.value) == f"{disk / 'results.json'}: no space left on device; nothing was replaced"
        with pytest.raises(StorageError, match="checkpoint.pt: no space left on device; nothing was written$"):
            save_torch_atomic(disk / "checkpoint.pt", {"w": torch.zeros(100_000)})
        assert (disk / "results.json").read_bytes() == before
        assert not (disk / "checkpoint.pt").exists()
        assert _temporaries(disk) == []


@pytest.mark.parametrize(
    "target, code, reason",
    [
        ("tempfile.mkstemp", errno.EROFS, "read-only file system"),
        ("tempfile.mkstemp", errno.EACCES, "permission denied"),
        ("os.fsync", errno.EDQUOT, "disk quota exceeded"),
        ("os.fsync", errno.ENOSPC, "no space left on device"),
        ("os.replace", errno.EDQUOT, "disk quota exceeded"),
    ],
)
def test_injected_storage_errors_are_one_line(
    target: str, code: int, reason: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path = tmp_path / "config.yaml"
    write_text_atomic(path, "seed: 0\n")

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(f"longtail.fs.atomic.{target}", fail)
    with pytest.raises(StorageError) as caught:
        write_text_atomic(path, "seed: 1\n")
    assert str(caught.value) == f"{path}: {reason}; nothing was replaced"
    monkeypatch.undo()
    assert path.read_text() == "seed: 0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_a_failing_writer_keeps_its_own_error(tmp_path: Path):
    """An exception of the writer callback that is not the disk's is not dressed up as a storage error."""

    def broken(handle) -> None:
        handle.write(b"half")
        raise FileNotFoundError(errno.ENOENT, "some input", "font.ttf")

    with pytest.raises(FileNotFoundError):
        write_binary_atomic(tmp_path / "figure.png", broken)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
def test_torch_export_on_a_full_disk_is_an_error_not_an_abort(tmp_path: Path):
    """torch.export.save writes from C++; an exception there aborted the process (exit 134)."""
    script = (
        "import sys, torch\n"
        "from longtail.fs.atomic import write_binary_atomic\n"
        "from longtail.errors import StorageError\n"
        "program = torch.export.export(torch.nn.Linear(300, 300), (torch.zeros(1, 300),))\n"
        "try:\n"
        "    write_binary_atomic(sys.argv[1], lambda f: torch.export.save(program, f))\n"
        "except StorageError as error:\n"
        "    print(error); sys.exit(1)\n"
    )
    with small_tmpfs(tmp_path / "disk", 64 * 1024) as disk:
        fill(disk)
        done = subprocess.run(
            [sys.executable, "-c", script, str(disk / "model.pt2")],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"},
            timeout=300,
        )
        assert done.returncode == 1, done.stderr
        assert done.stdout.strip() == f"{disk / 'model.pt2'}: no space left on device; nothing was written"
        assert _temporaries(disk) == []


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
def test_tensorboard_on_a_full_disk_is_one_line(tmp_path: Path):
    """The writer thread's traceback is not printed; the main thread gets one StorageError."""
    script = (
        "import sys\n"
        "from longtail.engine.tensorboard_guard import GuardedSummaryWriter\n"
        "from longtail.errors import StorageError\n"
        "try:\n"
        "    GuardedSummaryWriter(sys.argv[1]).add_scalar('x', 1.0, 0)\n"
        "except StorageError as error:\n"
        "    print(error); sys.exit(1)\n"
    )
    with small_tmpfs(tmp_path / "disk", 64 * 1024) as disk:
        fill(disk)
        done = subprocess.run(
            [sys.executable, "-c", script, str(disk / "tensorboard")],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"},
            timeout=300,
        )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout.strip().startswith(f"{disk / 'tensorboard'}: no space left on device")


# --- commands on a full disk ---------------------------------------------------------------------------------


@pytest.mark.slow  # trains twice on a filled tmpfs: make test runs it
def test_train_on_a_full_disk_keeps_the_last_checkpoint_and_resumes(
    tiny_run: Path, tiny_fmnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    # Room for one checkpoint and the small files, not for the second checkpoint's temporary copy.
    size = int((tiny_run / "checkpoint.pt").stat().st_size * 1.5) + 64 * 1024
    with small_tmpfs(tmp_path / "disk", size) as disk:
        run = disk / "run"
        args = ["train", *tiny_overrides(tiny_fmnist), "train.epochs=3", "--out", str(run), "--no-progress"]
        assert main(args) == 1
        _error_line(
            capsys,
            f"{run / 'checkpoint.pt'}: no space left on device; nothing was replaced",
            f"`longtail train --resume {run}` continues after epoch 1",
        )
        assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 1
        assert _temporaries(disk) == []
        resize_tmpfs(disk, 4 * size)  # space freed
        assert main(["train", "--resume", str(run), "--no-progress"]) == 0
        assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 3


def test_train_into_a_full_disk_fails_before_training(
    tiny_fmnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    with small_tmpfs(tmp_path / "disk", 64 * 1024) as disk:
        fill(disk)
        assert main(["train", *tiny_overrides(tiny_fmnist), "--out", str(disk / "run"), "--no-progress"]) == 1
        _error_line(capsys, str(disk / "run"), "no space left on device")


@pytest.fixture(scope="module")
def full_disk_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """A copy of ``tiny_run`` with cached features and a tau_norm classifier, on a tmpfs filled to the brim."""
    size = 8 * (tiny_run / "checkpoint.pt").stat().st_size + (1 << 20)
    with small_tmpfs(tmp_path_factory.mktemp("full") / "disk", size) as disk:
        run = disk / "run"
        shutil.copytree(tiny_run, run)
        assert main(["decouple", str(run), "--method", "tau_norm"]) == 0  # features cached: later commands write more
        fill(disk)
        yield run


@pytest.mark.parametrize(
    "args",
    [
        ["eval"],
        ["decouple", "--method", "tau_norm"],
        ["decouple", "--method", "ncm"],
        ["report"],
    ],
    ids=["eval", "decouple-again", "decouple-new", "report"],
)
def test_commands_on_a_full_disk_fail_in_one_line(
    args: list[str], full_disk_run: Path, capsys: pytest.CaptureFixture[str]
):
    before = _files(full_disk_run)
    assert main([args[0], str(full_disk_run), *args[1:]]) == 1
    _error_line(capsys, str(full_disk_run), "no space left on device")
    assert _files(full_disk_run) == before
    assert _temporaries(full_disk_run) == []


@pytest.mark.slow  # a few seconds to ten: make test runs it (keeps plain pytest under 3 minutes)
def test_export_on_a_full_disk_fails_in_one_line(full_disk_run: Path):
    """In a subprocess: a native abort (exit 134) must not take the test session with it."""
    before = _files(full_disk_run)
    done = subprocess.run(
        [sys.executable, "-m", "longtail", "export", str(full_disk_run), "--method", "joint"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"longtail: error: {full_disk_run / 'export' / 'joint.pt2'}: no space left on device; nothing was written"
    ]
    assert _files(full_disk_run) == before


# --- commands on a read-only run directory -------------------------------------------------------------------


@pytest.fixture(scope="module")
def read_only_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """``tiny_run`` seen through a read-only bind mount."""
    with read_only_view(tiny_run, tmp_path_factory.mktemp("ro") / "run") as view:
        yield view


@pytest.mark.parametrize(
    "args",
    [["eval"], ["decouple", "--method", "tau_norm"], ["report"], ["export", "--method", "joint"]],
    ids=["eval", "decouple", "report", "export"],
)
def test_commands_on_a_read_only_run_fail_in_one_line(
    args: list[str], read_only_run: Path, capsys: pytest.CaptureFixture[str]
):
    before = tree(read_only_run)
    assert main([args[0], str(read_only_run), *args[1:]]) == 1
    _error_line(capsys, str(read_only_run), "read-only file system")
    assert tree(read_only_run) == before


def test_features_of_a_read_only_run_is_one_line_and_writes_nothing(
    read_only_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    # `features` may compute and cache the run's features in it: refused before anything is computed or written,
    # in one line naming the run; no --out file (not even a temporary one) is left beside it
    before = tree(read_only_run)
    assert main(["features", str(read_only_run), "--out", str(tmp_path / "f.npz")]) == 1
    _error_line(capsys, f"{read_only_run}: the run directory is on a read-only file system", "`longtail features`")
    assert tree(read_only_run) == before and list(tmp_path.iterdir()) == []


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
def test_a_read_only_run_can_be_read(read_only_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """Commands that only read the run work: resume of a finished run, export elsewhere, compare."""
    assert main(["train", "--resume", str(read_only_run), "--no-progress"]) == 0
    assert "already finished" in capsys.readouterr().err
    assert main(["export", str(read_only_run), "--method", "joint", "--out", str(tmp_path / "m.pt2")]) == 0
    assert (tmp_path / "m.pt2").is_file()
    assert main(["compare", str(read_only_run)]) == 0


def test_resume_and_train_on_a_read_only_directory(
    tiny_run: Path, tiny_fmnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    unfinished = tmp_path / "unfinished"  # killed before its first checkpoint: resume would train
    unfinished.mkdir()
    shutil.copy(tiny_run / "config.yaml", unfinished / "config.yaml")
    with read_only_view(unfinished, tmp_path / "ro") as view:
        assert main(["train", "--resume", str(view), "--no-progress"]) == 1
        _error_line(capsys, f"{view}: the run directory is on a read-only file system", "longtail train --resume")
        assert main(["train", *tiny_overrides(tiny_fmnist), "--out", str(view / "new"), "--no-progress"]) == 1
        _error_line(capsys, str(view / "new"), "read-only file system")
        assert sorted(p.name for p in view.iterdir()) == ["config.yaml"]
