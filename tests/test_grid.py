"""Stage-1 losses and samplers end to end, cRT fine-tuning, and a miniature of `longtail grid`."""

import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides
from longtail.cli import main
from longtail.config import config_to_dict, load_config
from longtail.engine.stage1 import stage1_loss
from longtail.errors import ConfigError
from longtail.grid import NOTES_MARKER, grid_markdown, reading
from longtail.pipeline import decouple, train


@pytest.mark.slow  # a training per case: make test runs it
@pytest.mark.parametrize("loss", ["focal", "class_balanced", "balanced_softmax", "logit_adjusted"])
def test_stage1_trains_with_each_loss(loss: str, tiny_fmnist: Path, tmp_path: Path):
    overrides = [*tiny_overrides(tiny_fmnist), f"train.loss={loss}"]
    results = train(load_config(None, overrides), tmp_path / "run", progress=False)
    assert results["methods"]["joint"]["all"] > 10.0  # better than chance (10 classes)
    assert load_config(tmp_path / "run" / "config.yaml").train.loss == loss


@pytest.mark.slow  # a training per case: make test runs it
def test_ldam_drw_run_uses_a_cosine_classifier_and_decouples(tiny_fmnist: Path, tmp_path: Path):
    overrides = [*tiny_overrides(tiny_fmnist), "train.loss=ldam_drw", "train.ldam_drw.drw_epoch=2"]
    train(load_config(None, overrides), tmp_path / "run", progress=False)
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert "head.bias" not in checkpoint["model"]  # the cosine classifier has no bias
    results = decouple(tmp_path / "run", ["all"])
    assert set(results["methods"]) == {"joint", "ncm", "crt"}  # the rest need a linear joint classifier
    with pytest.raises(ConfigError, match="needs a linear joint classifier"):
        decouple(tmp_path / "run", ["tau_norm"])


def test_drw_switches_on_at_the_configured_epoch():
    config = load_config(None, ["train.loss=ldam_drw", "train.epochs=10"])
    loss = stage1_loss(config, [100, 10, 1])
    loss.set_epoch(7)
    assert not loss.drw_active
    loss.set_epoch(8)  # default: 80% of the epochs
    assert loss.drw_active


@pytest.mark.slow  # a training per case: make test runs it
@pytest.mark.parametrize("sampler", ["class_aware", "progressive"])
def test_stage1_trains_with_the_new_samplers(sampler: str, tiny_fmnist: Path, tmp_path: Path):
    overrides = [*tiny_overrides(tiny_fmnist), "train.epochs=2", f"train.sampler={sampler}"]
    results = train(load_config(None, overrides), tmp_path / "run", progress=False)
    assert results["methods"]["joint"]["all"] > 10.0


@pytest.mark.slow  # six trainings and their decoupling: ~50 s
def test_grid_miniature(tiny_fmnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    doc = tmp_path / "grid.md"
    doc.write_text(f"old\n{NOTES_MARKER}\nmy notes stay\n")
    argv = [
        "grid",
        "--out",
        str(tmp_path / "runs"),
        "--doc",
        str(doc),
        "--samplers",
        "instance,class",
        "--losses",
        "none",
        "--trainable",
        "classifier,last_stage",
        *tiny_overrides(tiny_fmnist),
        "train.epochs=3",
        "--no-progress",
    ]
    assert main(argv) == 0
    text = doc.read_text()
    assert "| Instance-balanced |" in text and "| Class-balanced |" in text
    assert "| last stage + classifier |" in text and "Finding 1" in text and "Finding 2" in text
    assert text.rstrip().endswith("my notes stay") and "old" not in text.split("\n")[0]
    assert "longtail grid --out" in text
    # The instance run ends with the paper's (classifier-only) cRT, and fine-tuning left its own backbone.
    instance = tmp_path / "runs" / "sampler-instance"
    results = json.loads((instance / "results.json").read_text())
    assert results["methods"]["crt"]["trainable"] == "classifier"
    # Finished runs are reused the second time.
    capsys.readouterr()
    assert main(argv) == 0
    assert "reusing" in capsys.readouterr().err


@pytest.mark.slow  # a training per case: make test runs it
def test_crt_fine_tuning_saves_and_reloads_its_backbone(tiny_fmnist: Path, tmp_path: Path):
    run = tmp_path / "run"
    train(load_config(None, [*tiny_overrides(tiny_fmnist), "train.epochs=2"]), run, progress=False)
    tuned = decouple(run, ["crt"], ["decouple.trainable=all"])["methods"]["crt"]
    assert tuned["trainable"] == "all"
    saved = torch.load(run / "classifiers" / "crt.pt", weights_only=True)
    assert "backbone" in saved
    original = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    assert any(not torch.equal(v, original[f"backbone.{k}"]) for k, v in saved["backbone"].items())
    assert main(["eval", str(run)]) == 0  # re-scored from the saved file: same numbers
    again = json.loads((run / "results.json").read_text())["methods"]["crt"]
    assert again["macro"] == pytest.approx(tuned["macro"]) and again["trainable"] == "all"


def test_reading_reports_both_findings():
    def row(joint, crt):
        cell = lambda v: {"many": v, "medium": v, "few": v, "all": v, "macro": v}  # noqa: E731
        return {"joint": cell(joint), "ncm": cell(0), "crt": cell(crt), "tau_norm": cell(0), "lws": cell(0)}

    grid = {"samplers": {"instance": row(60, 80), "class": row(70, 75)}, "trainable": {}, "losses": {}}
    first, second = reading(grid)
    assert "60.0" in first and "70.0" in first and "**reproduced**" in first
    assert "80.0" in second and "**reproduced**" in second
    grid["samplers"]["class"] = row(50, 90)
    first, second = reading(grid)
    assert "not reproduced" in first and "not reproduced" in second
    markdown = grid_markdown({**grid, "config": config_to_dict(load_config()), "seconds": 60.0}, "longtail grid")
    assert "| Class-balanced | 50.0 / 50.0 / 50.0 / 50.0 / 50.0 |" in markdown and NOTES_MARKER in markdown
