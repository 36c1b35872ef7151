"""End to end: the CLI on generated Fashion-MNIST-format data, and the real demo (slow)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import WB_NO_GRID, copy_run, tiny_overrides
from longtail.cli import main
from longtail.data import longtail_counts
from longtail.grid.beside import split_cores
from longtail.methods import expand_methods
from longtail.runs import read_metrics

EXPECTED_FILES = {"config.yaml", "checkpoint.pt", "metrics.jsonl", "results.json", "per_class.csv"}
METHODS = {"joint", *expand_methods(["all"])}  # every registered method of `all`


@pytest.fixture(scope="module")
def trained_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's copy of the shared tiny stage-1 run (its tests decouple it)."""
    return copy_run(tiny_run, tmp_path_factory.mktemp("runs") / "tiny")


def test_train_writes_a_run_directory(trained_run: Path):
    assert EXPECTED_FILES <= {p.name for p in trained_run.iterdir()}
    checkpoint = torch.load(trained_run / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 4
    assert not any(k.startswith("module.") for k in checkpoint["model"])
    assert [r["epoch"] for r in read_metrics(trained_run)] == [1, 2, 3, 4]
    results = json.loads((trained_run / "results.json").read_text())
    assert set(results["methods"]) == {"joint"}
    assert results["train_counts"] == longtail_counts(10, 100, 10)
    assert results["seed"] == 0
    assert {"torch", "python", "longtail"} <= set(results["environment"])
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["train"]["epochs"] == 4 and config["seed"] == 0


def test_decouple_all_then_eval(trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert main(["decouple", str(run), "--method", "all"]) == 0
    table = capsys.readouterr().out
    for label in ("Joint", "NCM", "cRT", "τ-norm", "LWS", "Logit adj."):
        assert label in table
    results = json.loads((run / "results.json").read_text())
    assert set(results["methods"]) == METHODS == set(results["val_methods"])
    for metrics in results["methods"].values():
        assert {"many", "medium", "few", "all", "macro"} <= set(metrics)
    assert 0.0 <= results["methods"]["tau_norm"]["tau"] <= 2.0
    assert 0.0 <= results["methods"]["logit_adjust"]["tau"] <= 2.0
    assert len(results["logit_adjust_curve"]["val"]) == 21
    # Even on this tiny long-tailed data, re-balancing the classifier helps the average class.
    best = max(results["methods"][m]["macro"] for m in METHODS - {"joint"})
    assert best > results["methods"]["joint"]["macro"]
    assert len(results["tau_curve"]["val"]) == 21
    assert {p.name for p in (run / "classifiers").iterdir()} == {f"{m}.pt" for m in METHODS - {"joint"}}

    # A moved run directory still works: it holds no absolute path to itself.
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    run.rename(moved)
    for path in moved.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".yaml", ".jsonl"):
            assert str(run) not in path.read_text()
    before = json.loads((moved / "results.json").read_text())["methods"]
    assert main(["eval", str(moved)]) == 0
    after = json.loads((moved / "results.json").read_text())["methods"]
    assert after == before  # evaluation is deterministic
    assert main(["eval", str(moved), "--split", "val"]) == 0
    assert "on val" in capsys.readouterr().out


def test_decouple_keeps_a_finished_classifier_unless_overwrite(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert main(["decouple", str(run), "--method", "crt", "decouple.crt.epochs=1"]) == 0
    first = json.loads((run / "results.json").read_text())["methods"]["crt"]
    mtime = (run / "classifiers" / "crt.pt").stat().st_mtime_ns
    # The same settings again: the classifier is reused, its scores kept, nothing fit.
    assert main(["decouple", str(run), "--method", "crt", "decouple.crt.epochs=1", "decouple.lws.lr=9"]) == 0
    assert (run / "classifiers" / "crt.pt").stat().st_mtime_ns == mtime
    assert json.loads((run / "results.json").read_text())["methods"]["crt"] == first
    capsys.readouterr()
    # Other settings: refused by name, nothing changed.
    assert main(["decouple", str(run), "--method", "crt", "decouple.crt.epochs=6", "decouple.crt.lr=0.5"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "crt.pt" in err and "decouple.crt.epochs=1 (now 6)" in err and "--overwrite" in err
    assert (run / "classifiers" / "crt.pt").stat().st_mtime_ns == mtime
    # --overwrite fits it again and replaces it.
    args = ["decouple", str(run), "--method", "crt", "decouple.crt.epochs=6", "decouple.crt.lr=0.5", "--overwrite"]
    assert main(args) == 0
    results = json.loads((run / "results.json").read_text())
    assert set(results["methods"]) == {"joint", "crt"}
    assert results["methods"]["crt"] != first
    saved = torch.load(run / "classifiers" / "crt.pt", weights_only=True)
    assert saved["decouple"]["crt"]["epochs"] == 6


def test_a_reused_classifier_brings_its_tau_sweep_after_an_interrupted_decouple(trained_run: Path, tmp_path: Path):
    # A decouple stopped after saving its classifiers but before writing results.json (killed in eval.shift's
    # minutes at 10,000 classes): the next decouple reused them, so results.json never got the τ sweep or how each
    # was fit, and the report's "run decouple --method tau_norm" reused it again, still without the figure.
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = (run / "results.json").read_text()
    assert main(["decouple", str(run), "--method", "tau_norm,crt", "decouple.crt.epochs=1"]) == 0
    fitted = json.loads((run / "results.json").read_text())
    (run / "results.json").write_text(before)  # as if stopped before results.json was written
    assert main(["decouple", str(run), "--method", "tau_norm,crt", "decouple.crt.epochs=1"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["tau_curve"] == fitted["tau_curve"] and len(results["tau_curve"]["val"]) == 21
    assert results["stage2"] == fitted["stage2"] and set(results["stage2"]) == {"tau_norm", "crt"}


def test_train_refuses_a_non_empty_out(tiny_fmnist: Path, trained_run: Path, capsys: pytest.CaptureFixture):
    assert main(["train", *tiny_overrides(tiny_fmnist), "--out", str(trained_run)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(trained_run) in err and "--overwrite" in err


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert main(["train", "train.epoch=1", "--out", str(tmp_path / "x")]) == 1
    assert "did you mean 'train.epochs'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert main(["decouple", str(tmp_path)]) == 1
    assert "not a run directory" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing")]) == 1
    assert "run directory not found" in capsys.readouterr().err


def test_decouple_refuses_stage1_keys(trained_run: Path, capsys: pytest.CaptureFixture):
    assert main(["decouple", str(trained_run), "train.lr=0.5"]) == 1
    assert "train.lr: fixed by stage 1" in capsys.readouterr().err
    assert main(["decouple", str(trained_run), "--method", "knn"]) == 1
    assert "--method 'knn'" in capsys.readouterr().err


def test_run_with_edited_backbone_is_refused(trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["backbone"] = "resnet20"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["eval", str(run)]) == 1
    assert "holds a 'resnet8' backbone" in capsys.readouterr().err


def test_unfinished_stage1_is_refused(trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["train"]["epochs"] = 10
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["decouple", str(run)]) == 1
    assert "stage 1 did not finish (checkpoint.pt is from epoch 4 of 10)" in capsys.readouterr().err


@pytest.mark.slow  # two demos: make test runs it
def test_demo_reuses_its_own_run_and_replaces_another_only_with_overwrite(
    tiny_fmnist: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--no-progress", *tiny_overrides(tiny_fmnist), *WB_NO_GRID]
    assert main(args) == 0
    assert set(json.loads((out / "results.json").read_text())["methods"]) == METHODS | {"auto"}
    # The recipe chosen on validation: the paper's run reused as the instance candidate, progressive trained
    # beside it in a second process (two cores or more), then reused by provenance.
    chosen = json.loads((out / "auto" / "auto.json").read_text())
    assert [row["combination"] for row in chosen["rows"]] == [
        {"train.sampler": "instance"},
        {"train.sampler": "progressive"},
    ]
    progressive = out / "auto" / "sweep-train.sampler=progressive"
    if split_cores(2):
        assert "sweep-train.sampler=progressive in a second process beside the paper's run" in caplog.text
        assert f"reusing {tmp_path / '.demo.partial-'}" in caplog.text
    else:
        assert f"training {out.parent}" in caplog.text
    environment = json.loads((progressive / "results.json").read_text())["environment"]
    assert "train.sampler=progressive" in environment["command"]
    assert not list(tmp_path.glob(".demo.candidates-*"))
    printed = capsys.readouterr().out
    assert "The paper's recipe" in printed and "Chosen on validation: train.sampler=" in printed
    assert "The choice read validation only; test is shown, never used to choose." in printed
    assert (out / "auto" / "auto.md").is_file()
    # Run again: the finished demo is reused, nothing retrained or replaced.
    checkpoint = (out / "checkpoint.pt").stat().st_mtime_ns
    caplog.clear()
    assert main(args) == 0
    assert f"reusing {out} (fingerprint" in caplog.text and "training" not in caplog.text
    assert (out / "checkpoint.pt").stat().st_mtime_ns == checkpoint
    # Other settings: refused by name; --overwrite replaces it once the new run is complete.
    other = [*args, "train.epochs=3"]
    assert main(other) == 1
    assert "holds a run of other config (train.epochs=" in capsys.readouterr().err
    assert (out / "checkpoint.pt").stat().st_mtime_ns == checkpoint
    assert main([*other, "--overwrite"]) == 0
    assert f"replacing existing run directory {out} (--overwrite)" in caplog.text
    assert not list(tmp_path.glob(".demo.partial-*"))
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "precious.txt").write_text("keep me")
    assert main(["demo", "--out", str(tmp_path / "notarun"), *tiny_overrides(tiny_fmnist)]) == 1
    assert (tmp_path / "notarun" / "precious.txt").exists()


@pytest.mark.parametrize("command", [[], ["train"], ["decouple"], ["eval"], ["demo"], ["auto"], ["export"], ["report"]])
def test_help_of_each_command(command: list[str], capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0 and "usage: longtail" in capsys.readouterr().out


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
def test_console_script():
    done = subprocess.run(
        [sys.executable, "-m", "longtail", "config", "train.epochs=x"], capture_output=True, text=True
    )
    assert done.returncode == 1 and done.stderr.strip() == "longtail: error: train.epochs='x': expected int"


@pytest.mark.slow
def test_real_demo_meets_its_targets(real_fmnist: Path, tmp_path: Path):
    """The documented demo's paper recipe on the real Fashion-MNIST-LT (one 80-epoch stage-1 run).

    The issue's targets are +8 macro and +30 few-shot for the best decoupled
    method (measured: see README); this guard leaves room for floating-point
    differences between CPUs. The recipe chosen on validation (a second
    80-epoch run) is the CLI's, tested on tiny data by the demo test above.
    """
    from longtail.demo import demo

    demo(tmp_path / "demo", progress=False, auto=False)
    methods = json.loads((tmp_path / "demo" / "results.json").read_text())["methods"]
    assert "auto" in methods and "chosen" in methods["auto"]
    joint = methods["joint"]
    best = max(("ncm", "crt", "tau_norm", "lws"), key=lambda m: methods[m]["macro"])
    assert methods[best]["macro"] >= joint["macro"] + 6
    assert methods[best]["few"] >= joint["few"] + 25


def test_debug_shows_the_exception_before_or_after_the_command():
    from longtail.errors import ConfigError

    for args in (["--debug", "config", "train.epochs=x"], ["config", "train.epochs=x", "--debug"]):
        with pytest.raises(ConfigError, match="train.epochs='x'"):
            main(args)
    assert main(["config", "train.epochs=x"]) == 1


@pytest.mark.parametrize(
    "argv, shown",
    [
        (["config", "train.epochs", "=", "3"], "'train.epochs = 3'"),
        (["config", "train.epochs", "=3"], "'train.epochs =3'"),
        (["config", "train.epochs=", "3"], "'train.epochs= 3'"),
        (["eval", "RUN", "eval.many", "=", "5"], "'eval.many = 5'"),
    ],
)
def test_key_and_value_split_by_spaces_are_named_as_such(argv: list[str], shown: str, capsys: pytest.CaptureFixture):
    # `key = value` read the key as a config file ("config file train.epochs: not found") and the value as a stray
    # argument; now one line says how to write it.
    with pytest.raises(SystemExit) as done:
        main(argv)
    key, value = shown.strip("'").replace(" ", "").split("=")
    expected = f"{shown}: write key=value as one argument, without spaces around '=' ({key}={value})"
    assert done.value.code == 2 and capsys.readouterr().err.strip().endswith(f"longtail: error: {expected}")


@pytest.mark.parametrize("command", ["eval", "decouple", "report", "export", "features"])
def test_a_missing_run_dir_is_the_only_argument_said_to_be_required(command: str, capsys: pytest.CaptureFixture):
    # argparse listed the optional key=value overrides as required too: "required: RUN_DIR, key=value"
    with pytest.raises(SystemExit):
        main([command])
    error = capsys.readouterr().err
    assert "required: RUN_DIR" in error and "key=value" not in error.splitlines()[-1]


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_output_in_an_encoding_without_tau_or_plus_minus_is_spelled_out(
    encoding: str, tiny_decoupled_run: Path, tmp_path: Path
):
    # PYTHONIOENCODING=ascii: `longtail eval` and `--help` ended in a UnicodeEncodeError traceback on "—", "±", "τ"
    env = {**os.environ, "PYTHONIOENCODING": encoding, "PYTHONPATH": os.pathsep.join(sys.path)}
    for argv in (["eval", str(tiny_decoupled_run)], ["decouple", "--help"]):
        done = subprocess.run([sys.executable, "-m", "longtail", *argv], capture_output=True, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr.decode(encoding, "replace")
        assert b"Traceback" not in done.stderr
        done.stdout.decode(encoding)  # strictly: nothing the encoding lacks
    if encoding == "ascii":
        assert b"+/-" in done.stdout or b"tau" in done.stdout


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
def test_a_deleted_current_directory_is_one_line(tmp_path: Path):
    # torch's oneMKL ended the process with "FATAL ERROR: Cannot load .../libtorch_cpu.so" in a deleted directory
    gone = tmp_path / "gone"
    gone.mkdir()
    script = (
        f"import os, runpy, sys; os.chdir({str(gone)!r}); os.rmdir({str(gone)!r}); sys.argv = ['longtail', 'config']; "
        "runpy.run_module('longtail', run_name='__main__')"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 1
    assert done.stderr.strip() == "longtail: error: the current directory was deleted; cd to an existing directory"


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_standard_output_that_cannot_be_written_is_one_line():
    # `longtail config > /dev/full` ended in an OSError traceback from print()
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "longtail", "config"], stdout=full, stderr=subprocess.PIPE, text=True
        )
    assert done.returncode == 1
    assert done.stderr.strip() == "longtail: error: cannot write to standard output: No space left on device"


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
def test_a_closed_standard_output_is_one_line_and_exit_1():
    # `longtail config >&-` (and `eval RUN >&-`) printed nothing and exited 0: Python's sys.stdout was None
    done = subprocess.run(
        [sys.executable, "-m", "longtail", "config"],
        preexec_fn=lambda: os.close(1),  # in the child, as `>&-` does
        stderr=subprocess.PIPE,
        text=True,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "longtail: error: cannot write to standard output: it is closed (>&-); "
        "send it to a file, or to /dev/null to discard it"
    )


def test_out_of_memory_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    # Under `ulimit -v 800000`, `longtail eval RUN` ended in a bare MemoryError traceback (reading results.json).
    import longtail.cli.tools as tools

    def exhausted(args):
        raise MemoryError

    monkeypatch.setattr(tools, "_cmd_config", exhausted)
    assert main(["config"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("longtail: error: out of memory; raise the process's memory limit (ulimit -v)")
    assert len(error.strip().splitlines()) == 1
    with pytest.raises(MemoryError):
        main(["config", "--debug"])

    def allocator_exhausted(args):  # under `ulimit -v 1100000`, `longtail train` after its first epoch
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: ...")

    monkeypatch.setattr(tools, "_cmd_config", allocator_exhausted)
    assert main(["config"]) == 1
    assert capsys.readouterr().err.startswith("longtail: error: out of memory; ")

    def a_bug(args):  # any other RuntimeError stays a traceback: a bug to report, not a limit to raise
        raise RuntimeError("something else")

    monkeypatch.setattr(tools, "_cmd_config", a_bug)
    with pytest.raises(RuntimeError, match="something else"):
        main(["config"])


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
def test_the_library_takes_one_method_and_one_override_as_strings(tiny_run: Path, tmp_path: Path):
    """``longtail.decouple(run, "ncm")`` was refused as "--method 'c'..." (the string iterated), and one
    override as a string as "override 'd'"."""
    import longtail

    run = copy_run(tiny_run, tmp_path / "run")
    results = longtail.decouple(run, "ncm", "decouple.ncm.metric=l2")
    assert "ncm" in results["methods"] and (run / "classifiers" / "ncm.pt").is_file()
    assert "ncm" in longtail.evaluate(run, "val", "decouple.ncm.metric=l2")["methods"]


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
@pytest.mark.skipif(sys.platform != "linux", reason="file names of any bytes")
def test_a_run_directory_named_in_bytes_that_are_not_utf8_is_printed_as_they_are(tiny_run: Path, tmp_path: Path):
    # LANG=en_US.UTF-8 (stdout errors="strict"): `compare` of such a run ended in a UnicodeEncodeError traceback
    run = copy_run(tiny_run, Path(os.fsdecode(bytes(tmp_path) + b"/r\xff")))
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "longtail", "compare", str(run)], capture_output=True, env=env)
    assert done.returncode == 0 and b"Traceback" not in done.stderr
    assert b"r\xff" in done.stdout


@pytest.mark.parametrize("columns", [40, 80, 120])
def test_the_key_listing_of_help_fits_the_terminal(columns: int, monkeypatch, capsys: pytest.CaptureFixture):
    # The listing's lines ran to 500 characters whatever the terminal: wrapped by it at its edge, under the keys.
    from longtail.config import config_reference

    monkeypatch.setenv("COLUMNS", str(columns))
    with pytest.raises(SystemExit):
        main(["decouple", "--help"])
    text = capsys.readouterr().out
    lines = text[text.index("config keys (key = default):") :].splitlines()
    entries = {f"  {key} = {default!r}" for key, default, _ in config_reference()}
    too_wide = [line for line in lines if len(line) > columns and line.rstrip() not in entries]
    assert not too_wide
    starts = {line.split("  ", 2)[1] for line in lines if line.startswith("  ") and " = " in line}
    assert {entry.strip() for entry in entries} <= {start.strip() for start in starts}


def test_decouple_refuses_an_empty_method(trained_run: Path, capsys: pytest.CaptureFixture):
    # `--method "$UNSET"` fitted nothing and printed the run's table, exit 0
    for method in ("", " , "):
        assert main(["decouple", str(trained_run), "--method", method]) == 1
        assert f"longtail: error: --method {method!r}: expected one of ncm, crt" in capsys.readouterr().err


def test_compare_shows_a_run_given_twice_once(trained_run: Path, capsys: pytest.CaptureFixture):
    # `compare runs/* runs/a` printed runs/a's rows twice, each best score starred twice
    assert main(["compare", str(trained_run)]) == 0
    once = capsys.readouterr().out
    assert main(["compare", str(trained_run), str(trained_run), f"{trained_run}/"]) == 0
    out, err = capsys.readouterr()
    assert out == once
    assert err.count(f"compare: {trained_run}: given twice; its rows are shown once") == 2  # `run/` is `run`


@pytest.mark.parametrize(
    ("value", "readable"),
    [("2", True), (" 2 ", True), ("+2", True), ("02", True), ("2,1", True), ("2 ,1", True)]
    + [("0", False), ("-1", False), ("1.5", False), ("", False), ("abc", False), ("2,", False)],
)
def test_an_omp_thread_count_libgomp_cannot_read_is_dropped_with_one_line(value: str, readable: bool):
    from longtail.cli.thread_env import drop_unreadable_thread_count

    environ = {"OMP_NUM_THREADS": value, "OTHER": "x"}
    warning = drop_unreadable_thread_count(environ)
    assert (warning is None) == readable
    assert environ == ({"OMP_NUM_THREADS": value, "OTHER": "x"} if readable else {"OTHER": "x"})
    if not readable:
        assert f"OMP_NUM_THREADS={value!r}" in warning and "\n" not in warning
    assert drop_unreadable_thread_count({"OTHER": "x"}) is None


@pytest.mark.slow  # seconds of a subprocess loading torch; `make test` runs it
def test_a_malformed_omp_num_threads_gives_the_commands_line_not_libgomps(tmp_path: Path):
    # libgomp printed a blank line and "libgomp: Invalid value for environment variable OMP_NUM_THREADS"
    env = {**os.environ, "OMP_NUM_THREADS": "abc", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "longtail", "--version"], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.startswith("longtail ")
    assert "libgomp" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "longtail: warning: OMP_NUM_THREADS='abc' is not a positive integer (or a comma-separated list of them); "
        "ignored, torch uses its default number of threads"
    ]
