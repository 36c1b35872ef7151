"""Commands never destroy a run's own files: the run lock, output paths, hand-edited config.yaml, what
"finished" means, and the temporary files of killed writes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import tiny_overrides
from longtail.cli import main
from longtail.errors import OutputPathError, RunInUseError, StorageError
from longtail.fs.atomic import write_bytes_atomic, write_text_atomic
from longtail.fs.staging import remove_stale_staging
from longtail.pipeline import load_run
from longtail.runs import LOCK_FILE, RUN_OWN_NAMES, check_output_path, run_lock
from mounts import read_only_view

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}

# Holds the lock of argv[1] as the command argv[2] until killed; "fork" also forks a child that sleeps on.
HOLDER = """
import os, sys, time
from longtail.runs import run_lock
with run_lock(sys.argv[1], sys.argv[2], exclusive=sys.argv[3] == "exclusive"):
    child = os.fork() if "fork" in sys.argv[4:] else None
    if child == 0:
        time.sleep(600)
        os._exit(0)
    print("locked", child or "", flush=True)
    time.sleep(600)
"""


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("longtail: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0].removeprefix("longtail: error: ")


class Holder:
    """A process holding a run lock (``with Holder(...) as h``); SIGKILLed on exit."""

    def __init__(self, run: Path, command: str = "longtail decouple", *, exclusive: bool = True, fork: bool = False):
        mode = "exclusive" if exclusive else "shared"
        argv = [sys.executable, "-c", HOLDER, str(run), command, mode, *(["fork"] if fork else [])]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=ENV)
        words = self.process.stdout.readline().split()
        assert words and words[0] == "locked", "the holder did not take the lock"
        self.pid = self.process.pid
        self.child = int(words[1]) if len(words) > 1 else None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()
        if self.child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child, signal.SIGKILL)


@pytest.fixture(scope="module")
def stage1_run(tiny_fmnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-epoch run (never changed by the tests: they work on copies)."""
    run = tmp_path_factory.mktemp("integrity") / "run"
    assert main(["train", *tiny_overrides(tiny_fmnist), "train.epochs=2", "--out", str(run), "--no-progress"]) == 0
    return run


@pytest.fixture
def run_copy(stage1_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(stage1_run, run)
    return run


def _unfinished(stage1_run: Path, where: Path) -> Path:
    """A run killed before its first checkpoint: config.yaml only (train --resume trains it from scratch)."""
    where.mkdir()
    shutil.copy(stage1_run / "config.yaml", where / "config.yaml")
    return where


# --- the run lock --------------------------------------------------------------------------------------------


def test_a_second_command_is_told_who_holds_the_run(tmp_path: Path):
    with Holder(tmp_path) as holder:
        with pytest.raises(RunInUseError) as caught:
            with run_lock(tmp_path, "longtail eval"):
                pass
        assert str(caught.value) == (
            f"{tmp_path}: run directory is in use by PID {holder.pid} (longtail decouple); wait for it to finish"
        )
        holder.kill()  # SIGKILL: the kernel drops the flock
        with run_lock(tmp_path, "longtail eval"):
            assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_FILE).exists()  # the last holder removes it: a run at rest holds its own files


def test_a_forked_worker_does_not_keep_the_lock(tmp_path: Path):
    """DataLoader workers are forked: they must not hold the lock after their parent was killed."""
    with Holder(tmp_path, fork=True) as holder:
        holder.kill()
        os.kill(holder.child, 0)  # the child still runs
        with run_lock(tmp_path):
            pass


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
def test_readers_share_the_lock_and_writers_exclude_them(tmp_path: Path):
    with Holder(tmp_path, "longtail export", exclusive=False):
        with run_lock(tmp_path, exclusive=False):
            pass
        with pytest.raises(RunInUseError, match=r"in use by PID \d+ \(longtail export\)"):
            with run_lock(tmp_path, "longtail decouple"):
                pass
    with Holder(tmp_path):
        with pytest.raises(RunInUseError):
            with run_lock(tmp_path, exclusive=False):
                pass


def test_the_lock_is_reentrant(tmp_path: Path):
    with run_lock(tmp_path):
        with run_lock(tmp_path):
            pass
        assert (tmp_path / LOCK_FILE).exists()
    with run_lock(tmp_path, exclusive=False), pytest.raises(RuntimeError, match="cannot become exclusive"):
        with run_lock(tmp_path):
            pass


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
def test_resume_and_overwrite_refuse_a_run_in_use(
    stage1_run: Path, run_copy: Path, tiny_fmnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    unfinished = _unfinished(stage1_run, tmp_path / "unfinished")
    with Holder(unfinished, "longtail train --resume") as holder:
        assert main(["train", "--resume", str(unfinished), "--no-progress"]) == 1
        assert _error_line(capsys) == (
            f"{unfinished}: run directory is in use by PID {holder.pid} (longtail train --resume); "
            "wait for it to finish"
        )
    assert sorted(p.name for p in unfinished.iterdir()) == [LOCK_FILE, "config.yaml"]  # SIGKILLed: no clean-up
    before = (run_copy / "checkpoint.pt").read_bytes()
    with Holder(run_copy, "longtail decouple"):
        args = ["train", *tiny_overrides(tiny_fmnist), "train.epochs=1", "--out", str(run_copy), "--overwrite"]
        assert main([*args, "--no-progress"]) == 1
        assert "run directory is in use by PID" in _error_line(capsys)
    assert (run_copy / "checkpoint.pt").read_bytes() == before


def test_an_interrupted_run_points_every_command_at_resume(
    stage1_run: Path, run_copy: Path, tiny_fmnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """A stage 1 stopped before its first checkpoint, or after some epochs: every command names the resume.

    Before, `decouple` and the others said "not a run directory (... create one with `longtail train --out
    DIR`)" or "stage 1 did not finish" without what to do, and the same `train --out RUN` again said "pass
    --overwrite", which throws the epochs done away.
    """
    fresh = _unfinished(stage1_run, tmp_path / "fresh")  # killed before its first checkpoint
    stopped = run_copy  # killed after epoch 2 of 3
    _edit(stopped, "train.epochs", 3)
    (stopped / "results.json").unlink()
    outputs = ["--out", str(tmp_path / "features.npz")]
    for run, why in ((fresh, "stage 1 has no checkpoint yet"), (stopped, "stage 1 did not finish")):
        for command in (["eval"], ["decouple"], ["report"], ["export", "--method", "joint"], ["features", *outputs]):
            assert main([command[0], str(run), *command[1:]]) == 1
            line = _error_line(capsys)
            assert why in line and f"`longtail train --resume {run}`" in line, line
        assert main(["compare", str(run)]) == 1
        assert f"`longtail train --resume {run}`" in _error_line(capsys)
        assert main(["train", *tiny_overrides(tiny_fmnist), "--out", str(run), "--no-progress"]) == 1
        line = _error_line(capsys)
        assert "stage 1 has not finished" in line and f"`longtail train --resume {run}` continues it" in line
    assert sorted(p.name for p in fresh.iterdir()) == ["config.yaml"]  # nothing written by any of them


UPDATER = """
import sys
from pathlib import Path
from longtail.runs import update_results
run, tag, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(count):
    update_results(run, lambda results, key=f"{tag}{i}": results.setdefault("methods", {}).update({key: {"all": i}}))
"""


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
def test_concurrent_results_updates_lose_nothing(tmp_path: Path):
    write_text_atomic(tmp_path / "results.json", json.dumps({"methods": {"joint": {"all": 0}}}))
    processes = [
        subprocess.Popen([sys.executable, "-c", UPDATER, str(tmp_path), tag, "40"], env=ENV) for tag in ("a", "b")
    ]
    assert [p.wait(timeout=300) for p in processes] == [0, 0]
    methods = json.loads((tmp_path / "results.json").read_text())["methods"]
    assert set(methods) == {"joint"} | {f"{tag}{i}" for tag in "ab" for i in range(40)}


def test_a_read_only_run_directory(tmp_path: Path):
    (tmp_path / "run").mkdir()
    with read_only_view(tmp_path / "run", tmp_path / "view") as view:
        with pytest.raises(StorageError) as caught:
            with run_lock(view, "longtail eval"):
                pass
        assert str(caught.value) == (
            f"{view}: the run directory is on a read-only file system; `longtail eval` writes into it "
            "(copy the run somewhere writable)"
        )
        with run_lock(view, "longtail export", exclusive=False):  # a reader goes on: nobody can write there
            pass


# --- output paths --------------------------------------------------------------------------------------------


@pytest.fixture
def fake_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "checkpoint.pt", "results.json"):
        (run / name).write_text("x")
    return run


@pytest.mark.parametrize(
    "inside",
    [
        "config.yaml",
        "checkpoint.pt",
        "results.json",
        "metrics.jsonl",
        "classifiers/crt.pt",
        "features/train.pt",
        "tensorboard/events",
        "report.html",
        "report.md",
        "report_files/norms.png",
        "skipped_images.txt",
        LOCK_FILE,
    ],
)
def test_output_path_refuses_the_runs_own_files(inside: str, fake_run: Path):
    for overwrite in (False, True):
        with pytest.raises(OutputPathError) as caught:
            check_output_path(fake_run / inside, overwrite=overwrite, what="--out")
        own = inside.split("/")[0]
        assert str(caught.value) == (
            f"{fake_run / inside}: belongs to run {fake_run} (its {own}); refusing to replace it, choose another --out"
        )


def test_output_path_rules(fake_run: Path, tmp_path: Path):
    with pytest.raises(OutputPathError, match="is a run directory, not a file; choose another --out$"):
        check_output_path(fake_run, overwrite=True)
    link = tmp_path / "model.pt2"
    link.symlink_to(fake_run / "checkpoint.pt")
    with pytest.raises(OutputPathError, match="belongs to run"):  # judged by where it points
        check_output_path(link, overwrite=True)
    assert check_output_path(fake_run / "export" / "crt.pt2", overwrite=False) == fake_run / "export" / "crt.pt2"
    table = tmp_path / "table.md"
    assert check_output_path(table, overwrite=False, what="--md") == table
    table.write_text("old")
    with pytest.raises(OutputPathError) as caught:
        check_output_path(table, overwrite=False, what="--md")
    assert str(caught.value) == f"{table}: exists; pass --overwrite to replace it, or choose another --md"
    assert check_output_path(table, overwrite=True, what="--md") == table
    with pytest.raises(OutputPathError, match="is a directory; --plot expects a file name"):
        check_output_path(tmp_path, overwrite=True, what="--plot")


def test_run_own_names_follow_the_modules():
    from longtail.data.image_check import SKIPPED_FILE
    from longtail.engine.feature_cache import FEATURE_DIR
    from longtail.engine.tensorboard import TENSORBOARD_DIR
    from longtail.report.build import FILES_DIR, HTML_FILE, MARKDOWN_FILE

    assert {SKIPPED_FILE, FEATURE_DIR, TENSORBOARD_DIR, FILES_DIR, HTML_FILE, MARKDOWN_FILE} <= RUN_OWN_NAMES


# --- config.yaml edited by hand ------------------------------------------------------------------------------


def _edit(run: Path, key: str, value) -> None:
    config = yaml.safe_load((run / "config.yaml").read_text())
    section, _, name = key.rpartition(".")
    (config[section] if section else config)[name] = value
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.mark.parametrize(
    "key, value, shown, trained",
    [
        ("train.lr", 0.2, "0.2", "0.1"),
        ("seed", 7, "7", "0"),
        ("data.imbalance_factor", 20, "20.0", "10.0"),
        ("train.loss", "focal", "focal", "ce"),
        ("train.epochs", 1, "1", "2"),  # fewer epochs than trained; more reads "did not finish"
    ],
)
def test_edited_stage1_keys_are_refused_by_name(
    key: str, value, shown: str, trained: str, run_copy: Path, capsys: pytest.CaptureFixture[str]
):
    _edit(run_copy, key, value)
    assert main(["eval", str(run_copy)]) == 1
    assert _error_line(capsys) == (
        f"{run_copy / 'config.yaml'}: {key}={shown} differs from the checkpoint's {trained}; "
        "stage-1 keys cannot change after training (start a new run to change them)"
    )


def test_edited_run_time_keys_are_accepted(run_copy: Path):
    _edit(run_copy, "eval.batch_size", 64)
    _edit(run_copy, "data.num_workers", 0)
    assert load_run(run_copy).config.eval.batch_size == 64


def test_a_bad_override_is_named_as_such_and_a_bad_file_by_its_name(run_copy: Path, capsys):
    # A bad value given on the command line was reported as "RUN/config.yaml: ...", a file that holds no such value.
    assert main(["eval", str(run_copy), "eval.batch_size=-3"]) == 1
    line = _error_line(capsys)
    assert line.startswith("eval.batch_size=-3") and "config.yaml" not in line
    _edit(run_copy, "eval.batch_size", -3)  # the same value in the file: the file is named
    assert main(["eval", str(run_copy), "eval.many=50"]) == 1
    assert _error_line(capsys).startswith(f"{run_copy / 'config.yaml'}: eval.batch_size=-3")


def test_resume_names_the_edited_key(stage1_run: Path, run_copy: Path, capsys: pytest.CaptureFixture[str]):
    (run_copy / "results.json").unlink()  # as if killed during the final scoring
    _edit(run_copy, "train.weight_decay", 0.5)
    assert main(["train", "--resume", str(run_copy), "--no-progress"]) == 1
    assert _error_line(capsys).startswith(f"{run_copy / 'config.yaml'}: train.weight_decay=0.5 differs from the")


# --- "finished" ----------------------------------------------------------------------------------------------


def test_a_truncated_checkpoint_is_not_finished(run_copy: Path, capsys: pytest.CaptureFixture[str]):
    checkpoint = run_copy / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    assert main(["train", "--resume", str(run_copy), "--no-progress"]) == 1
    line = _error_line(capsys)
    assert line.startswith(f"{checkpoint}: unreadable checkpoint"), line
    assert "already finished" not in line


# --- temporary files of killed writes ------------------------------------------------------------------------


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_stale_temporaries_are_removed_by_the_next_writer(run_copy: Path):
    dead = _dead_pid()
    stale = [
        run_copy / f".checkpoint.pt.{dead}.abcdefgh.tmp",  # a killed writer's
        run_copy / "classifiers" / f".crt.pt.{dead}.k2j4h5g6.tmp",
        run_copy / ".metrics.jsonl.x8y7z6w5.tmp",  # an older longtail's (no PID), older than this process
    ]
    kept = [
        run_copy / f".results.json.{os.getppid()}.abcdefgh.tmp",  # a live writer's
        run_copy / ".notes.tmp",  # not a temporary file of longtail's
        run_copy / "mine.tmp",
    ]
    for path in stale + kept:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x" * 1000)
    an_hour_ago = time.time() - 3600
    os.utime(stale[2], (an_hour_ago, an_hour_ago))
    with run_lock(run_copy, "longtail decouple"):
        pass
    assert [p for p in stale if p.exists()] == []
    assert [p for p in kept if not p.exists()] == []


def test_temporaries_of_a_reused_pid_are_removed(run_copy: Path):
    """A killed writer's PID now belongs to a process that started after its file last changed: in a container
    the command is PID 1 again after a restart, so its own PID, and any PID after a reboot. Before, such files
    (a whole `.checkpoint.pt.*.tmp`, a report's staging folder) were taken for a live writer's and kept forever."""
    with subprocess.Popen(["sleep", "600"]) as later:
        try:
            an_hour_ago = time.time() - 3600
            reused = [
                run_copy / f".checkpoint.pt.{os.getpid()}.abcdefgh.tmp",  # this process's PID, an hour-old file
                run_copy / "classifiers" / f".crt.pt.{later.pid}.k2j4h5g6.tmp",
                run_copy / f".report.{later.pid}.abcdefgh.tmp",  # a report's staging folder
            ]
            live = run_copy / f".results.json.{later.pid}.abcdefgh.tmp"  # written since that process started
            for path in [*reused[:2], live]:
                path.parent.mkdir(exist_ok=True)
                path.write_bytes(b"x" * 1000)
            reused[2].mkdir()
            for path in reused:
                os.utime(path, (an_hour_ago, an_hour_ago))
            with run_lock(run_copy, "longtail decouple"):
                pass
            assert remove_stale_staging(run_copy, ".report.") == [reused[2]]
            assert [p for p in reused if p.exists()] == [] and live.exists()
        finally:
            later.kill()


WRITER = """
import sys, time
from longtail.fs.atomic import write_binary_atomic
def slow(handle):
    handle.write(b"x" * 100000)
    handle.flush()
    print("writing", flush=True)
    time.sleep(600)
write_binary_atomic(sys.argv[1], slow)
"""


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path: Path):
    target = tmp_path / "checkpoint.pt"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert writer.stdout.readline().strip() == "writing"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    left = list(tmp_path.glob(".checkpoint.pt.*.tmp"))
    assert [p.name.split(".")[3] for p in left] == [str(writer.pid)]  # .checkpoint.pt.PID.XXXXXXXX.tmp
    write_bytes_atomic(target, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_the_directory_is_synced_after_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        synced.append("dir" if stat.S_ISDIR(mode) else ("file" if (tmp_path / "a.txt").exists() else "temporary"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    write_text_atomic(tmp_path / "a.txt", "one")
    assert synced == ["temporary", "dir"]
