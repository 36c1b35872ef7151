"""Crash safety: exact resume of stage 1 and of stage-2 cRT (in process and after SIGKILL), NaN stop, Ctrl-C."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides
from longtail.cli import main
from longtail.engine import stage1 as joint
from longtail.errors import TrainingError

SRC = Path(__file__).resolve().parents[1] / "src"
TIMING_KEYS = ("seconds", "rss_mb")


def _tiny(root: Path, *extra: str) -> list[str]:
    return [*tiny_overrides(root), "train.epochs=3", *extra]


def _checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs"


def _metrics(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _wait_for(condition, process: subprocess.Popen, timeout: float = 300.0) -> None:
    """Poll ``condition()`` until true; fail if the process ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"process ended (status {process.returncode}) before the condition held")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def _epoch_done(run: Path, epoch: int):
    def check() -> bool:
        try:
            return (run / "checkpoint.pt").is_file() and _checkpoint(run)["epoch"] >= epoch
        except Exception:  # noqa: BLE001  (between the rename and the read; atomic writes make this rare)
            return False

    return check


@pytest.fixture(scope="module")
def reference(tiny_fmnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 3-epoch run."""
    run = tmp_path_factory.mktemp("resume") / "reference"
    assert main(["train", *_tiny(tiny_fmnist), "--out", str(run), "--no-progress"]) == 0
    return run


def test_checkpoint_holds_the_whole_training_state(reference: Path):
    checkpoint = _checkpoint(reference)
    assert checkpoint["epoch"] == 3
    assert {"model", "optimizer", "scheduler", "grad_scaler", "generators", "sampler", "metrics"} <= set(checkpoint)
    assert checkpoint["sampler"] == {"epoch": 3, "position": 0}
    assert len(checkpoint["generators"]) == 1 and checkpoint["generators"][0]["augment"] is not None
    assert [r["epoch"] for r in checkpoint["metrics"]] == [1, 2, 3]


def test_resume_after_a_crash_is_bitwise_equal(
    reference: Path, tiny_fmnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A crash right after epoch 1's checkpoint (simulated in process), then --resume."""
    run = tmp_path / "run"
    real_epoch = joint.train_one_epoch
    calls = {"n": 0}

    def crash_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # what Ctrl-C raises; the CLI reports it and exits 130
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(joint, "train_one_epoch", crash_in_epoch_two)
    assert main(["train", *_tiny(tiny_fmnist), "--out", str(run), "--no-progress"]) == 130
    assert _checkpoint(run)["epoch"] == 1 and not (run / "results.json").exists()
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    _assert_same_weights(_checkpoint(run)["model"], _checkpoint(reference)["model"])
    assert _metrics(run) == _metrics(reference)
    results, expected = (json.loads((r / "results.json").read_text()) for r in (run, reference))
    assert results["methods"] == expected["methods"]


@pytest.mark.slow
def test_sigkill_after_first_epoch_then_resume_is_bitwise_equal(reference: Path, tiny_fmnist: Path, tmp_path: Path):
    run = tmp_path / "killed"
    command = [sys.executable, "-m", "longtail", "train", *_tiny(tiny_fmnist), "--out", str(run), "--no-progress"]
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(_epoch_done(run, 1), process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    done = _checkpoint(run)["epoch"]
    assert done < 3, "the run finished before it was killed; the test needs a longer run"
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    _assert_same_weights(_checkpoint(run)["model"], _checkpoint(reference)["model"])
    assert _metrics(run) == _metrics(reference)


def test_resuming_a_finished_run_says_so(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    before = (reference / "checkpoint.pt").stat().st_mtime_ns
    assert main(["train", "--resume", str(reference), "--no-progress"]) == 0
    assert "already finished" in capsys.readouterr().err
    assert (reference / "checkpoint.pt").stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--resume", "RUN", "--out", "x"], "give no --out"),
        (["train", "--resume", "RUN", "train.epochs=9"], "give no --out, --overwrite, config file or key=value"),
        (["train"], "give --out RUN_DIR for a new run, or --resume RUN_DIR"),
        (["train", "--resume", "EMPTY"], "not a run directory (no config.yaml)"),
    ],
)
def test_resume_arguments(argv, message, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    argv = [str(reference) if a == "RUN" else str(tmp_path) if a == "EMPTY" else a for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_resume_refuses_a_checkpoint_of_another_config(reference: Path, tmp_path: Path):
    run = tmp_path / "edited"
    shutil.copytree(reference, run)
    (run / "results.json").unlink()
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("epochs: 3", "epochs: 5"))
    assert main(["train", "--resume", str(run)]) == 1


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(
    tiny_fmnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    real_loss = joint.stage1_loss

    class NaNFromEpochTwo(torch.nn.Module):
        """The real loss, but NaN from the third step of the second epoch on."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner, self.epoch, self.step = inner, 0, 0

        def set_epoch(self, epoch: int) -> None:
            self.inner.set_epoch(epoch)
            self.epoch, self.step = epoch, 0

        def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            self.step += 1
            loss = self.inner(logits, labels)
            return loss * float("nan") if (self.epoch, self.step) >= (1, 3) else loss

    monkeypatch.setattr(joint, "stage1_loss", lambda config, counts: NaNFromEpochTwo(real_loss(config, counts)))
    run = tmp_path / "nan"
    assert main(["train", *_tiny(tiny_fmnist), "--out", str(run), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "epoch 2" in err and "NaN or infinite" in err and "step 3 of the epoch" in err, err
    assert "checkpoint.pt keeps epoch 1" in err
    assert _checkpoint(run)["epoch"] == 1
    assert not (run / "results.json").exists()


def test_training_error_carries_the_step():
    assert TrainingError("x", step=4).step == 4


CRT_OVERRIDES = ["decouple.crt.epochs=150", "decouple.crt.batch_size=16"]


def _crt_head(run: Path) -> dict[str, torch.Tensor]:
    saved = torch.load(run / "classifiers" / "crt.pt", map_location="cpu", weights_only=True)
    return saved["head"]["state_dict"]


@pytest.mark.slow
def test_sigkill_during_crt_then_rerun_is_bitwise_equal(reference: Path, tmp_path: Path):
    uninterrupted, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    shutil.copytree(reference, uninterrupted)
    shutil.copytree(reference, killed)
    assert main(["decouple", str(uninterrupted), "--method", "crt", *CRT_OVERRIDES]) == 0
    partial = killed / "classifiers" / "crt.partial"

    def some_epochs_done() -> bool:
        try:
            return torch.load(partial, weights_only=True)["epoch"] >= 2
        except Exception:  # noqa: BLE001  (not written yet)
            return False

    command = [sys.executable, "-m", "longtail", "decouple", str(killed), "--method", "crt", *CRT_OVERRIDES]
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(some_epochs_done, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert not (killed / "classifiers" / "crt.pt").exists(), "cRT finished before it was killed"
    assert main(["decouple", str(killed), "--method", "crt", *CRT_OVERRIDES]) == 0
    assert not partial.exists()
    _assert_same_weights(_crt_head(killed), _crt_head(uninterrupted))


def _interruptible_train(argv: list[str]) -> subprocess.Popen:
    """``longtail train ARGV`` in a process group of its own, stderr piped, SIGINT handled as in a terminal."""
    return subprocess.Popen(
        [sys.executable, "-m", "longtail", "train", *argv],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # As in a terminal: a test runner started in the background (make, CI) may ignore SIGINT, and a
        # child inherits that, so Python would never raise KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@pytest.mark.slow
def test_ctrl_c_stops_workers_and_keeps_the_checkpoint(tiny_fmnist: Path, tmp_path: Path):
    """SIGINT to the whole process group, as a terminal's Ctrl-C sends it, with two DataLoader workers."""
    run = tmp_path / "interrupted"
    argv = [*_tiny(tiny_fmnist, "train.epochs=30", "data.num_workers=2"), "--out", str(run), "--no-progress"]
    process = _interruptible_train(argv)
    _wait_for(_epoch_done(run, 1), process)
    os.killpg(process.pid, signal.SIGINT)
    start = time.monotonic()
    _, err = process.communicate(timeout=30)
    assert time.monotonic() - start < 15
    assert process.returncode == 130
    assert f"longtail train --resume {run}" in err.strip().splitlines()[-1]
    assert "Traceback" not in err
    assert 1 <= _checkpoint(run)["epoch"] < 30
    deadline = time.monotonic() + 10
    while True:  # the workers are gone with it: nothing is left in its process group
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "DataLoader workers outlived the interrupted run"
        time.sleep(0.1)


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
def test_a_second_ctrl_c_while_the_workers_stop_prints_no_traceback(tiny_fmnist: Path, tmp_path: Path):
    """Ctrl-C pressed twice: before, the second one landed in the DataLoader's worker shutdown (its ``__del__``,
    after the one-line message) and printed "Exception ignored in ... Traceback ... KeyboardInterrupt"."""
    run = tmp_path / "interrupted"
    argv = [*_tiny(tiny_fmnist, "train.epochs=300", "data.num_workers=2"), "--out", str(run), "--no-progress"]
    process = _interruptible_train(argv)
    _wait_for(_epoch_done(run, 2), process)
    # To the command alone (`kill -INT PID`), so that its workers take a while to notice and stop.
    os.kill(process.pid, signal.SIGINT)
    time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert err.strip().splitlines()[-1] == f"longtail: interrupted; continue with `longtail train --resume {run}`"


# Raises KeyboardInterrupt where `import torch` starts, as a Ctrl-C in the seconds the command takes to load does.
CTRL_C_WHILE_LOADING = """
import runpy, sys

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, CtrlC())
sys.argv = ["longtail", "train", "--out", sys.argv[1]]
runpy.run_module("longtail", run_name="__main__")
"""


def test_ctrl_c_while_the_command_loads_is_one_line(tmp_path: Path):
    """Before: a KeyboardInterrupt traceback of some 30 lines through torch's import."""
    command = [sys.executable, "-c", CTRL_C_WHILE_LOADING, str(tmp_path / "run")]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (130, "longtail: interrupted\n")
    assert not (tmp_path / "run").exists()


def test_ctrl_c_names_the_resume_only_once_the_run_directory_is_made(
    tiny_fmnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    """Stopped while its data loads, `train --out RUN` has made nothing to resume: before, the message said
    `longtail train --resume RUN` all the same, which then failed (no such run)."""
    from longtail.pipeline import stage1

    run = tmp_path / "run"
    argv = ["train", *_tiny(tiny_fmnist), "--out", str(run), "--no-progress"]

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(stage1, "_checked_inputs", interrupt)  # while the data loads
        assert main(argv) == 130
    assert capsys.readouterr().err == "longtail: interrupted\n"
    assert not run.exists()
    with monkeypatch.context() as patch:
        patch.setattr(stage1, "train_joint", interrupt)  # in the first epoch: config.yaml is there
        assert main(argv) == 130
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"longtail: interrupted; continue with `longtail train --resume {run}`"
    )
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0


def test_ctrl_c_in_decouple_says_the_same_command_continues(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    """Stopped in stage 2, the message says what to do next: the same command again (finished classifiers are
    kept, cRT's partial epochs resumed), and it does finish."""
    from conftest import copy_run
    from longtail.pipeline import stage2

    run = copy_run(tiny_run, tmp_path / "run")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(stage2, "train_head", interrupt)
        assert main(["decouple", str(run), "--method", "crt"]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == (
        "longtail: interrupted; the same command again continues: what finished is kept and reused"
    )
    assert main(["decouple", str(run), "--method", "crt"]) == 0


@pytest.mark.slow
def test_ddp_run_killed_and_resumed_is_bitwise_equal(tiny_fmnist: Path, tmp_path: Path):
    """Two gloo processes, augmentation on (each rank has its own generator): SIGKILL, then torchrun --resume."""
    from test_distributed import TORCHRUN, torchrun

    args = [*_tiny(tiny_fmnist, "train.epochs=4", "device=cpu"), "--no-progress"]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert torchrun(["train", *args, "--out", str(reference)]).returncode == 0
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "longtail", "train", *args]
    process = subprocess.Popen(
        [*command, "--out", str(killed)],
        env={**_env(), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _wait_for(_epoch_done(killed, 1), process)
    os.killpg(process.pid, signal.SIGKILL)  # torchrun and both ranks at once
    process.wait(timeout=30)
    assert _checkpoint(killed)["epoch"] < 4, "the run finished before it was killed"
    assert len(_checkpoint(killed)["generators"]) == 2
    resumed = torchrun(["train", "--resume", str(killed), "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _assert_same_weights(_checkpoint(killed)["model"], _checkpoint(reference)["model"])
    assert _metrics(killed) == _metrics(reference)
