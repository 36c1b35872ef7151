"""`longtail auto`: stage-1 candidates x every stage-2 method, chosen on validation; test never read to choose.

The orchestration is tested on fake runs and scores (fast); the real thing on
tiny data, twice, the second time with the test labels corrupted (slow).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import WB_NO_GRID, tiny_overrides
from longtail.cli import main
from longtail.config import load_config, parse_override
from longtail.data.fashion_mnist import FILES
from longtail.data.idx import read_idx, write_idx
from longtail.demo import recipe_sentence
from longtail.errors import ConfigError, OutputPathError
from longtail.grid import run as grid_module
from longtail.grid.auto import (
    auto_markdown,
    default_candidates,
    file_run_time,
    parse_candidates,
    run_auto,
    write_auto,
)
from longtail.grid.rows import paper_samplers, rebalancing_losses
from longtail.grid.run import choose_on_validation

METHODS = ("joint", "ncm", "crt", "tau_norm", "lws", "logit_adjust", "auto")


def _cell(value: float) -> dict[str, Any]:
    return {"many": value, "medium": value, "few": value, "all": value, "macro": value}


class FakeRuns:
    """Training and decoupling stand-ins: scores follow the candidate. Validation prefers progressive sampling,
    test prefers the balanced softmax (so a choice that read test would differ)."""

    VAL = {"train.sampler=progressive": 80.0, "train.loss=balanced_softmax": 70.0}
    TEST = {"train.sampler=progressive": 60.0, "train.loss=balanced_softmax": 90.0}

    def __init__(self) -> None:
        self.trained: dict[str, list[str]] = {}

    def stage1(self, run_dir: Path, overrides: list[str], say, progress, overwrite=False, source=None) -> None:
        self.trained[run_dir.name] = overrides
        load_config(source, overrides)

    def decouple(self, run_dir: Path, methods: list[str], overrides: list[str], overwrite=False) -> dict[str, Any]:
        keys = dict(parse_override(text) for text in self.trained[run_dir.name])
        seed = keys.get("seed", 0)
        candidate = next((f"{k}={v}" for k, v in keys.items() if f"{k}={v}" in self.VAL), "")
        val, test = self.VAL.get(candidate, 50.0) + seed, self.TEST.get(candidate, 50.0) + seed
        return {
            "val_methods": {m: _cell(val - 5 * (m != "auto")) for m in METHODS},
            "methods": {
                **{m: _cell(test - 5) for m in METHODS if m != "auto"},
                "auto": {**_cell(test), "ci": {"macro": [test - 1, test + 1]}},
            },
            "auto": {"chosen": {"method": "las", "label": "las (lr=0.05)"}},
        }


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeRuns:
    runs = FakeRuns()
    monkeypatch.setattr(grid_module, "ensure_stage1", runs.stage1)
    monkeypatch.setattr(grid_module, "decouple", runs.decouple)
    monkeypatch.setattr("longtail.grid.auto._fingerprints", lambda used: {"runs": {r.name: "f" for r in used}})
    monkeypatch.setattr("longtail.grid.auto.read_results", lambda run: {})
    return runs


def test_selection_reads_validation_only():
    rows = [
        {"val": {"auto": {"macro": 70.0}}, "test": {"auto": {"macro": 99.0}}},
        {"val": {"auto": {"macro": 80.0}}, "test": {"auto": {"macro": 10.0}}},
        {"val": {"auto": {"macro": 80.0}}, "test": {"auto": {"macro": 50.0}}},
    ]
    assert choose_on_validation(rows, "macro") == 1  # best val, the first on a tie; test disagrees
    assert choose_on_validation([{**row, "test": None} for row in rows], "macro") == 1  # test is never touched
    with pytest.raises(ConfigError, match="no candidate"):
        choose_on_validation([], "macro")


def test_candidates_are_a_union_of_single_keys_from_the_registries():
    assert parse_candidates(["train.sampler=instance,progressive", "train.loss=balanced_softmax"]) == [
        {"train.sampler": "instance"},
        {"train.sampler": "progressive"},
        {"train.loss": "balanced_softmax"},
    ]
    defaults = parse_candidates(default_candidates())
    assert defaults == [{"train.sampler": s} for s in paper_samplers()] + [
        {"train.loss": loss} for loss in rebalancing_losses()
    ]
    assert {"instance", "class", "sqrt", "progressive"} <= {c.get("train.sampler") for c in defaults}
    for bad, message in [("train.lr", "KEY=v1"), ("train.lr=1,,2", "KEY=v1"), ("train.lr=1,1", "given twice")]:
        with pytest.raises(ConfigError, match=message):
            parse_candidates([bad])


def test_auto_chooses_on_validation_and_writes_its_table(fake: FakeRuns, tmp_path: Path):
    candidates = ["train.sampler=instance,progressive", "train.loss=balanced_softmax"]
    record = run_auto(tmp_path, candidates=candidates, epochs=3, seeds=[0, 1], say=lambda _: None)
    assert sorted(fake.trained) == sorted(
        f"sweep-{c}-seed{s}"
        for c in ("train.sampler=instance", "train.sampler=progressive", "train.loss=balanced_softmax")
        for s in (0, 1)
    )
    assert all("train.epochs=3" in overrides for overrides in fake.trained.values())  # the budget
    chosen = record["rows"][record["chosen"]]
    assert chosen["combination"] == {"train.sampler": "progressive"}  # best val; test prefers balanced_softmax
    assert chosen["val"]["auto"]["macro"] == pytest.approx(80.5) and chosen["auto_test_ci"][0]["macro"] == [59, 61]
    paths = write_auto(record, tmp_path, "longtail auto ...")
    text = paths["markdown"].read_text()
    assert "**`train.sampler=progressive`** (chosen)" in text and "[59.0, 61.0] [60.0, 62.0]" in text
    assert "Chosen on validation: train.sampler=progressive with las (lr=0.05), las (lr=0.05)" in text
    assert "test is shown, never used to choose" in text and "80.5 ± 0.7" in text
    assert "Data: `fashion_mnist_lt`, " in text and "images in the largest class" in text  # the grid's caption
    saved = json.loads(paths["json"].read_text())
    assert saved["summary"]["candidate"] == "train.sampler=progressive" and saved["command"] == "longtail auto ..."
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporary behind


def test_demo_sentence_says_who_won_and_by_how_much(fake: FakeRuns, tmp_path: Path):
    record = run_auto(tmp_path, candidates=["train.sampler=instance,progressive"], say=lambda _: None)
    sentence = recipe_sentence(record, "instance")
    assert "progressively-balanced stage 1 + las (lr=0.05)" in sentence and "(+30.0)" in sentence
    assert "(+10.0)" in sentence and "never used to choose" in sentence
    record = run_auto(tmp_path / "b", candidates=["train.loss=balanced_softmax,focal"], say=lambda _: None)
    assert "`train.loss=balanced_softmax`" in auto_markdown(record, "c")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"candidates": ["decouple.crt.lr=0.1,0.2"]}, "not a stage-1 key"),
        ({"candidates": ["seed=0,1"]}, "--seeds"),
        ({"candidates": ["train.sampler=class"], "overrides": ["train.sampler=sqrt"]}, "also given"),
        ({"candidates": ["train.sampler=nope"]}, "train.sampler"),
        ({"candidates": ["train.epochs=2"], "epochs": 3}, "also given"),
        ({"epochs": 0}, "--epochs"),
        ({"max_runs": 8}, "^auto: 9 stage-1 runs \\(candidates, times the seeds\\), more than --max-runs 8"),
        ({"candidates": ["train.sampler=class"], "seeds": [0, 0]}, "given twice"),
        ({"candidates": ["train.weight_decay=5e-4,0.0005"]}, "5e-4 and 0.0005 are the same value"),
        ({"candidates": ["train.mixup_alpha=0", "train.sampler=class", "train.mixup_alpha=0.0"]}, "same value"),
    ],
)
def test_bad_candidates_fail_before_anything_runs(kwargs, message, fake: FakeRuns, tmp_path: Path):
    out = tmp_path / "auto"
    with pytest.raises(ConfigError, match=message):
        run_auto(out, **kwargs)
    assert not out.exists() and not fake.trained


def test_cli_auto_refuses_bad_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "auto"
    assert main(["auto", "--out", str(out), "--candidates", "decouple.crt.lr=1,2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a stage-1 key" in err[0] and not out.exists()
    assert main(["auto", "--out", str(out), "--max-runs", "2", "--candidates", "train.sampler=class,sqrt,power"]) == 1
    assert "3 stage-1 runs" in capsys.readouterr().err


def _corrupt_test_labels(root: Path, to: Path) -> Path:
    """A copy of a Fashion-MNIST-format directory whose test labels are shuffled."""
    shutil.copytree(root, to)
    labels_file = to / FILES["y_test"]
    labels = read_idx(labels_file)
    write_idx(labels_file, np.random.default_rng(0).permutation(labels).astype(np.uint8))
    return to


@pytest.mark.slow  # four tiny stage-1 runs, each decoupled with every method (about 30 s on 2 cores)
def test_the_choice_never_reads_test_labels(tiny_fmnist: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    corrupted = _corrupt_test_labels(tiny_fmnist, tmp_path / "corrupted")
    records = []
    for name, root in (("clean", tiny_fmnist), ("corrupted", corrupted)):
        overrides = [*tiny_overrides(root), *WB_NO_GRID, "train.epochs=2"]
        out = tmp_path / name
        args = ["auto", *overrides, "--out", str(out), "--no-progress", "--candidates", "train.sampler=instance,class"]
        assert main(args) == 0
        records.append(json.loads((out / "auto.json").read_text()))
    clean, corrupted_record = records
    assert clean["chosen"] == corrupted_record["chosen"]
    for a, b in zip(clean["rows"], corrupted_record["rows"], strict=True):
        assert a["val"]["auto"]["macro"] == b["val"]["auto"]["macro"] and a["auto"] == b["auto"]
    assert [r["test"]["auto"]["macro"] for r in clean["rows"]] != [
        r["test"]["auto"]["macro"] for r in corrupted_record["rows"]
    ]  # the corruption did reach test
    # Resumable: a second invocation reuses every run (nothing trained again).
    caplog.clear()
    assert main(args) == 0 and "training" not in caplog.text and caplog.text.count("reusing") == 2
    assert json.loads((out / "auto.json").read_text())["chosen"] == corrupted_record["chosen"]


def test_a_config_files_stage2_settings_reach_every_run(tmp_path: Path):
    """A reused run is decoupled with the config file's stage-2 and scoring keys, not those it was trained with."""
    config = tmp_path / "c.yaml"
    config.write_text("decouple:\n  crt: {epochs: 7, batch_size: auto}\n  auto_lr_factors: [1.0]\neval: {few: 5}\n")
    overrides = file_run_time(config)
    assert all(text.startswith(("decouple.", "eval.")) for text in overrides)
    assert load_config(None, overrides).decouple == load_config(config).decouple
    assert load_config(None, overrides).eval == load_config(config).eval
    assert file_run_time(None) == []


def test_an_out_that_is_a_file_is_one_line(fake: FakeRuns, tmp_path: Path):
    out = tmp_path / "auto"
    out.write_text("mine")
    with pytest.raises(OutputPathError, match="expected a directory for the runs"):
        run_auto(out, candidates=["train.sampler=class"], say=lambda _: None)
    with pytest.raises(OutputPathError, match="not a directory"):
        run_auto(out / "below", candidates=["train.sampler=class"], say=lambda _: None)
    assert out.read_text() == "mine" and not fake.trained
