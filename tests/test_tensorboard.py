"""TensorBoard event files: stage 1 per epoch, stage 2 per head epoch and the final scores, as in the run's JSON."""

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from longtail.engine.tensorboard import TENSORBOARD_DIR, ScalarLog, log_scores
from longtail.pipeline.scores import sweep_keys


@pytest.fixture(scope="module")
def run(tiny_decoupled_run: Path) -> Path:
    """The shared tiny run after `decouple --method auto` (read only)."""
    return tiny_decoupled_run


def _scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the run's event files -> [(step, value)], over all files in the folder."""
    events = EventAccumulator(str(run / TENSORBOARD_DIR), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_stage1_epochs_match_metrics_jsonl(run: Path):
    scalars = _scalars(run)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [step for step, _ in scalars["train/loss"]] == [r["epoch"] for r in records]
    pairs = (("train/loss", "train_loss"), ("train/acc", "train_acc"), ("train/lr", "lr"), ("val/few", "val_few"))
    for tag, key in pairs:
        assert [v for _, v in scalars[tag]] == pytest.approx([r[key] for r in records], rel=1e-6), tag
    assert {"val/many", "val/medium", "val/all", "val/macro"} <= set(scalars)


def test_stage2_head_training_and_scores(run: Path):
    scalars = _scalars(run)
    results = json.loads((run / "results.json").read_text())
    assert len(scalars["decouple/crt/loss"]) == 3  # decouple.crt.epochs of the tiny config
    assert len(scalars["decouple/lws/lr"]) == 2
    epochs = 4  # train.epochs: the final scores sit at the end of the stage-1 curve
    for method in ("joint", "crt", "tau_norm", "lws", "ncm", "logit_adjust"):
        for group in ("many", "few", "all"):
            expected = results["methods"][method][group]
            assert scalars[f"test/{method}/{group}"][-1] == (epochs, pytest.approx(expected, rel=1e-6))
    curve = results["tau_curve"]["val"]
    assert [step for step, _ in scalars["tau_sweep/val/all"]] == [round(100 * p["tau"]) for p in curve]
    curve = results["logit_adjust_curve"]["test"]
    assert [v for _, v in scalars["logit_adjust_sweep/test/few"]] == pytest.approx([p["few"] for p in curve])


def test_the_curves_logged_are_the_registry_sweeps(tmp_path: Path):
    """The τ curves come from MethodSpec.sweep (a plugin's included), not from a list in the engine."""
    assert {"tau_curve", "logit_adjust_curve"} <= set(sweep_keys())
    point = {"tau": 0.5, "many": 80.0, "medium": 60.0, "few": 40.0, "all": 70.0, "macro": 60.0}
    results = {"debias_curve": {"val": [point], "test": []}, "tau_curve": {"val": [point]}}
    with ScalarLog(tmp_path) as log:
        log_scores(log, results, 4, sweeps=["debias_curve"])
    scalars = _scalars(tmp_path)
    assert scalars["debias_sweep/val/few"] == [(50, 40.0)]
    assert not any(tag.startswith("tau_sweep") for tag in scalars)  # not asked for: not logged


def test_disabled_log_writes_nothing(tmp_path: Path):
    with ScalarLog(tmp_path, enabled=False) as log:
        log.scalars({"loss": 1.0}, 1)
    assert not (tmp_path / TENSORBOARD_DIR).exists()


def test_non_numbers_are_skipped(tmp_path: Path):
    with ScalarLog(tmp_path) as log:
        log.scalars({"loss": 0.5, "none": None, "flag": True, "name": "x"}, 3, prefix="p/")
    assert _scalars(tmp_path) == {"p/loss": [(3, 0.5)]}
