"""`longtail grid --sweep` (stage-1 keys chosen on validation) and `--seeds` (mean ± std over training seeds).

The orchestration is tested on fake stage-1 runs and stage-2 scores (fast); one
slow test trains the real thing end to end.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import tiny_overrides
from longtail.cli import main
from longtail.cli.experiments import _grid_seeds
from longtail.config import config_to_dict, load_config, parse_override
from longtail.errors import ConfigError
from longtail.grid import (
    grid_markdown,
    mean_std,
    parse_sweep,
    run_grid,
    sweep_combinations,
    sweep_dir_name,
)
from longtail.grid import run as grid_module

METHODS = ("joint", "ncm", "crt", "tau_norm", "lws", "logit_adjust", "auto")


def _cell(value: float, **extra: Any) -> dict[str, Any]:
    return {"many": value, "medium": value, "few": value, "all": value, "macro": value, **extra}


class FakeRuns:
    """Stand-ins for training and decoupling: scores are a function of the run's overrides.

    Validation prefers weight decay 1e-3; test prefers 5e-3 (so a choice that read test would differ).
    Each seed adds ``seed`` points, so the spread over seeds is known.
    """

    VAL = {5e-4: 70.0, 1e-3: 80.0, 5e-3: 75.0}
    TEST = {5e-4: 60.0, 1e-3: 65.0, 5e-3: 90.0}

    def __init__(self) -> None:
        self.trained: dict[str, dict[str, Any]] = {}  # run name -> {key: parsed value}
        self.decoupled: list[tuple[str, list[str]]] = []

    def stage1(self, run_dir: Path, overrides: list[str], say, progress, overwrite=False, source=None) -> None:
        self.trained[run_dir.name] = dict(parse_override(text) for text in overrides)
        load_config(source, overrides)  # the overrides a real run would get must be a valid config

    def scores(self, run_dir: Path) -> tuple[float, float]:
        keys = self.trained[run_dir.name]
        seed = keys.get("seed", 0)
        wd = float(keys.get("train.weight_decay", 5e-4))  # YAML reads "1e-3" as text; the config as a float
        return self.VAL.get(wd, 50.0) + seed, self.TEST.get(wd, 50.0) + seed

    def decouple(self, run_dir: Path, methods: list[str], overrides: list[str], overwrite=False) -> dict[str, Any]:
        self.decoupled.append((run_dir.name, list(methods)))
        val, test = self.scores(run_dir)
        return {
            "val_methods": {m: _cell(val - (m != "auto")) for m in METHODS},
            "methods": {m: _cell(test - (m != "auto")) for m in METHODS},
            "auto": {"chosen": {"method": "crt", "label": "crt (lr=0.2)"}},
        }

    def evaluate(self, run_dir: Path, split: str, overrides: list[str]) -> dict[str, Any]:
        return {"methods": {"joint": _cell(self.scores(run_dir)[1])}}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeRuns:
    runs = FakeRuns()
    monkeypatch.setattr(grid_module, "ensure_stage1", runs.stage1)
    monkeypatch.setattr(grid_module, "decouple", runs.decouple)
    monkeypatch.setattr(grid_module, "evaluate", runs.evaluate)
    return runs


def test_parse_sweep_and_combinations():
    assert parse_sweep("train.weight_decay=5e-4, 1e-3") == ("train.weight_decay", ["5e-4", "1e-3"])
    combos = sweep_combinations([("a", ["1", "2"]), ("b", ["x", "y", "z"])])
    assert len(combos) == 6 and combos[0] == {"a": "1", "b": "x"} and combos[-1] == {"a": "2", "b": "z"}
    for bad in ("train.lr", "=1,2", "train.lr=", "train.lr=1,,2", "train.lr=1,1"):
        with pytest.raises(ConfigError, match="--sweep"):
            parse_sweep(bad)


def test_sweep_directory_names_are_safe_and_distinct():
    assert sweep_dir_name({"train.weight_decay": "1e-3"}) == "sweep-train.weight_decay=1e-3"
    assert sweep_dir_name({"a": "1", "b": "x y/z"}) == "sweep-a=1__b=x_y_z"
    long = [sweep_dir_name({"model.backbone": "r" * 200 + tail}) for tail in "ab"]
    assert all(len(name) <= grid_module.MAX_NAME_LENGTH for name in long) and long[0] != long[1]


def test_mean_std_is_the_sample_standard_deviation():
    merged = mean_std([_cell(78.0, tau=1.0), _cell(80.0, tau=1.2), {**_cell(79.0, tau=0.8), "few": None}])
    assert merged["n"] == 3 and merged["macro"] == pytest.approx(79.0)
    assert merged["std"]["macro"] == pytest.approx(statistics.stdev([78.0, 80.0, 79.0])) == pytest.approx(1.0)
    assert merged["few"] is None and merged["tau"] == pytest.approx(1.0)
    assert mean_std([_cell(1.0)]) == _cell(1.0)  # one seed: the cell itself, no spread
    assert mean_std([_cell(1.0), None]) is None


def test_seeds_option_takes_overrides_that_follow_it():
    assert _grid_seeds(["0", "1", "2", "train.epochs=3"]) == ([0, 1, 2], ["train.epochs=3"])
    assert _grid_seeds(["0,1"]) == ([0, 1], [])
    assert _grid_seeds(None) == (None, [])
    with pytest.raises(ConfigError, match="--seeds"):
        _grid_seeds(["x"])


def test_sweep_with_seeds_chooses_by_mean_validation(fake: FakeRuns, tmp_path: Path):
    grid = run_grid(tmp_path, sweeps=["train.weight_decay=5e-4,1e-3,5e-3"], seeds=[0, 1, 2], say=lambda _: None)
    assert sorted(fake.trained) == sorted(
        f"sweep-train.weight_decay={wd}-seed{seed}" for wd in ("5e-4", "1e-3", "5e-3") for seed in (0, 1, 2)
    )
    # seed= per run, the data seed untouched (same long-tailed subset for every seed).
    assert {keys["seed"] for keys in fake.trained.values()} == {0, 1, 2}
    assert not any("data.seed" in keys for keys in fake.trained.values())
    assert all(methods == ["all", "auto"] for _, methods in fake.decoupled)
    sweep = grid["sweep"]
    assert sweep["select"] == "macro" and sweep["keys"] == ["train.weight_decay"]
    chosen = sweep["rows"][sweep["chosen"]]
    assert chosen["combination"] == {"train.weight_decay": "1e-3"}  # best on val; test would pick 5e-3
    auto = chosen["val"]["auto"]
    assert auto["macro"] == pytest.approx(81.0) and auto["std"]["macro"] == pytest.approx(1.0) and auto["n"] == 3
    assert grid["seeds"] == [0, 1, 2] and grid["samplers"] == {}
    text = grid_markdown(grid, "longtail grid --sweep ...")
    assert "**`1e-3`** (chosen)" in text and "81.0 ± 1.0" in text and "n = 3" in text
    assert "denominator n − 1" in text and "Test macro accuracy (display only)" in text
    assert "Chosen on validation: `train.weight_decay=1e-3`" in text


def test_sweep_of_two_keys_is_their_product(fake: FakeRuns, tmp_path: Path):
    grid = run_grid(tmp_path, sweeps=["train.weight_decay=5e-4,1e-3", "train.lr=0.05,0.1"], say=lambda _: None)
    assert len(grid["sweep"]["rows"]) == 4 and "sweep-train.weight_decay=1e-3__train.lr=0.05" in fake.trained
    assert grid["seeds"] is None and "seed" not in fake.trained["sweep-train.weight_decay=1e-3__train.lr=0.05"]
    assert "| train.weight_decay | train.lr |" in grid_markdown(grid, "longtail grid")


def test_paper_grid_over_seeds_gives_mean_and_std_per_cell(fake: FakeRuns, tmp_path: Path):
    grid = run_grid(
        tmp_path, samplers=["instance", "class"], losses=["focal"], trainable=[], seeds=[0, 2], say=lambda _: None
    )
    assert set(fake.trained) == {
        f"{kind}-seed{s}" for kind in ("sampler-instance", "sampler-class", "loss-focal") for s in (0, 2)
    }
    crt = grid["samplers"]["instance"]["crt"]  # test 60 - 1 (+ seed 0 or 2)
    assert crt["macro"] == pytest.approx(60.0) and crt["std"]["macro"] == pytest.approx(statistics.stdev([59, 61]))
    assert grid["losses"]["focal"]["n"] == 2
    text = grid_markdown(grid, "longtail grid --seeds 0 2")
    assert "| Instance-balanced | 60.0 ± 1.4 / 60.0 ± 1.4" in text and "training seeds 0, 2" in text
    assert "Finding 1" in text  # the reading is computed on the means


def test_paper_grid_without_seeds_keeps_its_run_names(fake: FakeRuns, tmp_path: Path):
    grid = run_grid(tmp_path, samplers=["instance"], losses=[], trainable=[], say=lambda _: None)
    assert set(fake.trained) == {"sampler-instance"} and grid["seeds"] is None
    assert "± " not in grid_markdown(grid, "longtail grid")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sweeps": ["decouple.crt.lr=0.1,0.2"]}, "not a stage-1 key"),
        ({"sweeps": ["seed=0,1"]}, "with --seeds"),
        ({"sweeps": ["train.lr=0.1,0.2", "train.lr=0.3"]}, "given twice"),
        ({"sweeps": ["train.lr=0.1,0.2"], "overrides": ["train.lr=0.5"]}, "given twice"),
        ({"sweeps": ["train.lr=0.1,0.2"], "samplers": ["instance"]}, "give no --samplers"),
        ({"sweeps": ["train.lr=0.1,1e-1"]}, "0.1 and 1e-1 are the same value"),
        ({"sweeps": ["train.nope=1,2"]}, "train.nope"),
        ({"sweeps": ["train.lr=0.1,-1"]}, "train.lr"),
        ({"sweeps": ["data.name=a/b,a_b"]}, "same run-directory name|data.name"),
        ({"seeds": [0, 0]}, "given twice"),
        ({"seeds": []}, "at least one seed"),
        ({"seeds": [-1]}, "integers >= 0"),
        ({"seeds": [0, 1], "overrides": ["seed=3"]}, "--seeds alone"),
    ],
)
def test_bad_sweeps_and_seeds_fail_before_anything_runs(kwargs, message, fake: FakeRuns, tmp_path: Path):
    out = tmp_path / "grid"
    with pytest.raises(ConfigError, match=message):
        run_grid(out, **kwargs)
    assert not out.exists() and not fake.trained


def test_a_sweep_of_a_million_runs_is_counted_and_refused_at_once(fake: FakeRuns, tmp_path: Path):
    """It spent minutes listing the product, then would have trained a million runs."""
    values = ",".join(str(n) for n in range(1, 1001))
    out = tmp_path / "grid"
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"1,000,000 stage-1 runs .*more than --max-runs 100"):
        run_grid(out, sweeps=[f"train.epochs={values}", f"train.batch_size={values}"])
    assert time.perf_counter() - start < 2.0  # counted, never listed
    with pytest.raises(ConfigError, match=r"180 stage-1 runs"):  # the paper's 9 rows over 20 seeds
        run_grid(out, seeds=list(range(20)))
    assert not out.exists() and not fake.trained


def test_max_runs_raises_the_cap(fake: FakeRuns, tmp_path: Path, capsys: pytest.CaptureFixture):
    sweep = ["--sweep", "train.weight_decay=5e-4,1e-3,5e-3", "--seeds", "0", "1", "--no-progress"]
    out = ["--out", str(tmp_path / "runs")]
    assert main(["grid", *out, "--max-runs", "5", *sweep]) == 1
    assert "6 stage-1 runs" in capsys.readouterr().err and not fake.trained
    assert main(["grid", *out, "--max-runs", "6", *sweep]) == 0 and len(fake.trained) == 6
    assert main(["grid", *out, "--max-runs", "0", *sweep]) == 1
    assert "--max-runs 0: expected an integer >= 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (["--samplers", "none", "--losses", "none", "--trainable", "none"], "are all none: the grid has no row to run"),
        (["--samplers", ""], "--samplers '': expected a comma-separated list of rows, or none"),
        (["--losses", " , "], "--losses ' , ': expected a comma-separated list of rows, or none"),
        (["--samplers", "instance,class,instance"], "--samplers instance,class,instance: instance is given twice"),
    ],
    ids=["all-none", "empty", "commas", "twice"],
)
def test_grid_rows_that_are_empty_or_repeated_are_refused(
    rows: list[str], expected: str, fake: FakeRuns, tmp_path: Path, capsys: pytest.CaptureFixture
):
    """All rows none printed an empty document ("Runs: .") and exited 0; "" was taken as none, silently; a row
    given twice ran twice."""
    out = tmp_path / "runs"
    assert main(["grid", "--out", str(out), *rows, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err
    assert not out.exists() and not fake.trained


def test_cli_sweep_and_seeds(fake: FakeRuns, tmp_path: Path, capsys: pytest.CaptureFixture):
    doc = tmp_path / "sweep.md"
    argv = [
        "grid",
        "--out",
        str(tmp_path / "runs"),
        "--sweep",
        "train.weight_decay=5e-4,1e-3",
        "--doc",
        str(doc),
        "--no-progress",
        "--seeds",
        "0",
        "1",
        "train.epochs=3",
    ]
    assert main(argv) == 0
    assert {keys["train.epochs"] for keys in fake.trained.values()} == {3} and len(fake.trained) == 4
    assert "(chosen)" in capsys.readouterr().out and "n = 2" in doc.read_text()
    assert main(["grid", "--sweep", "train.lr=0.1", "--losses", "none"]) == 1


@pytest.mark.slow
def test_sweep_over_seeds_end_to_end(tiny_fmnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "runs"
    argv = [
        "grid",
        "--out",
        str(out),
        "--sweep",
        "train.weight_decay=5e-4,5e-3",
        "--seeds",
        "0",
        "1",
        *tiny_overrides(tiny_fmnist),
        "train.epochs=2",
        "--no-progress",
    ]
    assert main(argv) == 0
    runs = sorted(p.name for p in out.iterdir())
    assert runs == [f"sweep-train.weight_decay={wd}-seed{s}" for wd in ("5e-3", "5e-4") for s in (0, 1)]
    configs = [yaml.safe_load((out / name / "config.yaml").read_text()) for name in runs]
    assert [c["seed"] for c in configs] == [0, 1, 0, 1] and len({c["data"]["seed"] for c in configs}) == 1
    assert [c["train"]["weight_decay"] for c in configs] == [5e-3, 5e-3, 5e-4, 5e-4]
    results = json.loads((out / runs[0] / "results.json").read_text())
    assert "auto" in results["methods"] and "crt" in results["val_methods"]
    printed = capsys.readouterr().out
    assert "(chosen)" in printed and " ± " in printed
    assert main(argv) == 0  # the second time every run is reused
    assert capsys.readouterr().err.count("reusing") == 4


def test_grid_markdown_of_a_grid_without_the_new_keys():
    """A grid dict of the earlier shape (no "seeds", no "sweep") still renders as before."""
    row = {m: _cell(50.0) for m in ("joint", "ncm", "crt", "tau_norm", "lws")}
    grid = {
        "samplers": {"instance": row},
        "trainable": {},
        "losses": {},
        "config": config_to_dict(load_config()),
        "seconds": 1.0,
    }
    assert "| Instance-balanced | 50.0 / 50.0 / 50.0 / 50.0 / 50.0 |" in grid_markdown(grid, "longtail grid")


def test_a_grid_doc_that_cannot_be_written_is_refused_before_training(
    fake: FakeRuns, tmp_path: Path, capsys: pytest.CaptureFixture
):
    """`grid --doc /proc/x.md` (or under a file) trained the whole grid, then failed writing the document."""
    (tmp_path / "file").write_text("")
    out = tmp_path / "runs"
    argv = ["grid", "--out", str(out), "--sweep", "train.weight_decay=5e-4,1e-3", "--no-progress"]
    assert main([*argv, "--doc", str(tmp_path / "file" / "grid.md")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "file is a file, not a directory; nothing was written" in err, err
    assert not fake.trained and not out.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file"]  # the probe removed
    assert main([*argv, "--doc", str(tmp_path / "docs" / "grid.md")]) == 0 and len(fake.trained) == 2
    assert [path.name for path in (tmp_path / "docs").iterdir()] == ["grid.md"]


@pytest.mark.parametrize("command", ["grid", "auto"])
@pytest.mark.parametrize("inside", ["", "features"], ids=["the-run", "its-features"])
def test_a_run_directory_is_refused_as_the_folder_of_runs(
    command: str, inside: str, fake: FakeRuns, tmp_path: Path, capsys: pytest.CaptureFixture
):
    """`grid --out RUN` (or auto, or RUN/features) wrote the candidates' runs into the run, beside its checkpoint."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")
    (run / "checkpoint.pt").write_bytes(b"")
    out = run / inside
    assert main([command, "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    where = "is a run directory" if not inside else f"belongs to run directory {run}"
    assert err == f"longtail: error: --out {out}: {where}; choose another folder for the runs\n"
    assert not fake.trained and sorted(path.name for path in run.iterdir()) == ["checkpoint.pt", "config.yaml"]
