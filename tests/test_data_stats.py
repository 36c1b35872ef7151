"""`longtail data stats`: class-size figures of split files and configured datasets, and the plot."""

import json
from pathlib import Path

import pytest

from conftest import real_split
from datagen import write_filelist_dataset
from longtail.cli import main
from longtail.data import class_size_stats
from longtail.data.stats import format_stats


def stats_json(capsys: pytest.CaptureFixture, *argv: str) -> dict:
    assert main(["data", "stats", *argv, "--json"]) == 0
    out = capsys.readouterr().out
    return json.loads(out)  # nothing but JSON on stdout


def test_class_size_stats_by_hand():
    stats = class_size_stats([500, 101, 100, 20, 19, 5, 0], many=100, few=20)
    assert (stats["classes"], stats["images"], stats["max"], stats["min"]) == (7, 745, 500, 5)
    assert stats["imbalance_factor"] == 100.0
    assert (stats["many"], stats["medium"], stats["few"], stats["empty_classes"]) == (2, 2, 3, 1)
    assert class_size_stats([0, 0])["imbalance_factor"] is None


def test_one_class_is_not_classes():
    text = format_stats(class_size_stats([500, 5, 0], many=100, few=20), "list.txt")
    assert text.splitlines()[0] == "list.txt: 3 classes, 505 images"
    assert "many-shot (> 100): 1 class, medium" in text and "1 class without images" in text


@pytest.mark.parametrize(
    "name, classes, per_class",
    [("ImageNet_LT_test.txt", 1000, 50), ("Places_LT_val.txt", 365, 20), ("iNaturalist18_val.txt", 8142, 3)],
)
def test_the_real_split_files(capsys: pytest.CaptureFixture, name: str, classes: int, per_class: int):
    stats = stats_json(capsys, str(real_split(name)))
    assert (stats["classes"], stats["images"]) == (classes, classes * per_class)
    assert (stats["max"], stats["min"], stats["imbalance_factor"]) == (per_class, per_class, 1.0)
    medium = classes if per_class >= 20 else 0
    assert (stats["many"], stats["medium"], stats["few"]) == (0, medium, classes - medium)


def test_thresholds_text_output_and_plot(capsys: pytest.CaptureFixture, tmp_path: Path):
    lists = write_filelist_dataset(tmp_path, [12, 6, 2], test_per_class=1, size=8)
    stats = stats_json(capsys, str(lists["train"]), "--many", "10", "--few", "3", "--plot", str(tmp_path / "p.png"))
    assert (stats["imbalance_factor"], stats["many"], stats["medium"], stats["few"]) == (6.0, 1, 1, 1)
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["data", "stats", str(lists["train"])]) == 0
    text = capsys.readouterr().out
    assert "3 classes, 20 images" in text and "imbalance factor 6" in text


def test_a_config_spec_gives_its_training_split(capsys: pytest.CaptureFixture, tiny_fmnist: Path):
    overrides = [f"data.root={tiny_fmnist}", "data.n_max=100", "data.imbalance_factor=10", "data.val_per_class=5"]
    stats = stats_json(capsys, *overrides)
    assert stats["classes"] == 10 and stats["max"] == 100 and stats["min"] == 10
    assert stats["source"] == "fashion_mnist_lt (train)"
    assert stats["val_source"] == "held out from training images unused by the long-tailed subset"
    config = Path(__file__).resolve().parents[1] / "configs" / "fashion_mnist_lt.yaml"
    stats = stats_json(capsys, str(config), *overrides, "--split", "val")
    assert stats["counts"] == [5] * 10


def test_errors_are_one_line(capsys: pytest.CaptureFixture, tmp_path: Path):
    assert main(["data", "stats", str(tmp_path / "missing.txt")]) == 1
    assert capsys.readouterr().err.strip().endswith("missing.txt: split file not found")
    (tmp_path / "bad.txt").write_text("a.jpg x\n")
    assert main(["data", "stats", str(tmp_path / "bad.txt")]) == 1
    assert "bad.txt:1: label 'x' is not an integer" in capsys.readouterr().err


def test_negative_shot_thresholds_are_refused(capsys: pytest.CaptureFixture, tmp_path: Path):
    # `--many -1 --few -5` printed "many-shot (> -1): 2 classes, medium (-5 to -1): 0, few-shot (< -5): 0",
    # thresholds eval.few refuses in a config.
    listing = tmp_path / "list.txt"
    listing.write_text("a.jpg 0\nb.jpg 1\n")
    assert main(["data", "stats", str(listing), "--many", "-1", "--few", "-5"]) == 1
    assert capsys.readouterr().err.strip() == "longtail: error: --few -5: expected an integer >= 0, as eval.few"
    assert main(["data", "stats", str(listing), "--many", "-1"]) == 1
    assert "--few 20: expected at most --many (-1)" in capsys.readouterr().err


def test_a_folder_or_a_features_file_given_as_the_split_file_names_what_to_give(
    capsys: pytest.CaptureFixture, tmp_path: Path
):
    # A folder was "cannot read split file (IsADirectoryError)"; a features .npz "not UTF-8 text".
    assert main(["data", "stats", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a directory; expected a split file" in err
    assert f"data.name=imagefolder data.root={tmp_path}" in err
    features = tmp_path / "f.npz"
    features.write_bytes(b"PK\x03\x04")
    assert main(["data", "stats", str(features)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a split file; for a features file give data.name=features" in err


def test_split_with_a_split_file_is_refused(capsys: pytest.CaptureFixture, tmp_path: Path):
    # `data stats LIST --split val` printed LIST's own counts: --split chooses a split of a config's dataset only
    listing = tmp_path / "list.txt"
    listing.write_text("a.jpg 0\nb.jpg 1\n")
    for split in ("val", "train"):
        assert main(["data", "stats", str(listing), "--split", split]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert f"--split {split}: {listing} is a split file, one split already" in err
    assert stats_json(capsys, str(listing))["classes"] == 2  # without --split: as before
