"""Bad input through the CLI: one readable line naming the culprit, exit status 1, nothing written.

Every case runs ``longtail train`` (or ``decouple`` / ``eval``) as a user would and
checks the three promises: status 1, a single ``longtail: error:`` line that
names the file / key / value and what was expected, and no run directory
content (in particular no ``checkpoint.pt``). ``data.skip_bad=true`` is checked
to skip unreadable images and say which.
"""

from __future__ import annotations

import gzip
import logging
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import tiny_overrides
from datagen import write_cifar, write_filelist_dataset, write_list, write_npz
from longtail.cli import main
from longtail.config import load_config
from longtail.data import create_dataset, keep_batch, read_idx
from longtail.data import image_check as image_check_module
from longtail.data.fashion_mnist import FILES
from longtail.data.image_check import SKIPPED_FILE, skipped_images_record, write_skipped_images
from longtail.errors import DataError
from longtail.methods.ncm import FIT_WITH_EMPTY_CLASSES, NCMClassifier
from longtail.samplers import make_sampler

FAST = ["train.epochs=1", "train.batch_size=8", "eval.batch_size=64", "--no-progress"]
# Config cases name data that does not exist: a check that wrongly passed fails fast instead of training the demo.
NO_DATA = ["data.name=npz", "data.path=/nonexistent/longtail-test.npz"]


def fails_cleanly(args: list[str], out: Path | None, capsys: pytest.CaptureFixture, *expected: str) -> str:
    """Run ``longtail ARGS``; assert status 1, one error line holding every ``expected`` text, nothing written."""
    assert main(args) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("longtail: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    if out is not None:
        assert not out.exists() or not any(out.iterdir()), f"{out} was written: {sorted(out.iterdir())}"
    return lines[0]


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.epoch=3", ["unknown config key 'train.epoch'", "did you mean 'train.epochs'"]),
        ("decouple.tau.mx=1", ["decouple.tau.mx", "did you mean 'decouple.tau.max'"]),
        ("train.lr=fast", ["train.lr='fast'", "expected float"]),
        ("train.batch_size=1.5", ["train.batch_size=1.5", "expected int"]),
        ("data.skip_bad=maybe", ["data.skip_bad='maybe'", "expected bool"]),
        ("train.epochs=-3", ["train.epochs=-3", "expected an integer in [1, 100,000]"]),
        ("decouple.crt.epochs=-1", ["decouple.crt.epochs=-1", "expected an integer in [1, 100,000]"]),
        ("decouple.tau.min=-0.5", ["decouple.tau.min=-0.5", "expected a number >= 0"]),
        ("decouple.logit_adjust.min=-1", ["decouple.logit_adjust.min=-1.0", "expected a number >= 0"]),
        ("train.logit_adjusted.tau=-1", ["train.logit_adjusted.tau=-1.0", "expected a number >= 0"]),
        ("data.imbalance_factor=0.5", ["data.imbalance_factor=0.5", "expected a number >= 1"]),
        ("data.seed=-1", ["data.seed=-1", "expected an integer in [0, 2**63)"]),
        ("seed=-7", ["seed=-7", "expected an integer in [0, 2**63)"]),
        ("train.lr=nan", ["train.lr=nan", "expected a finite number"]),
        ("decouple.tau.max=inf", ["decouple.tau.max=inf", "expected a finite number"]),
    ],
)
def test_bad_config_values(override: str, expected: list[str], tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "run"
    fails_cleanly(["train", *NO_DATA, *FAST, override, "--out", str(out)], out, capsys, *expected)


def test_bad_config_file(tmp_path: Path, capsys: pytest.CaptureFixture):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  epochs: -2\n")
    out = tmp_path / "run"
    fails_cleanly(
        ["train", str(config), *NO_DATA, "--out", str(out)], out, capsys, "train.epochs=-2", "in [1, 100,000]"
    )
    config.write_text("data:\n  imbalanse_factor: 10\n")
    fails_cleanly(
        ["train", str(config), *NO_DATA, "--out", str(out)], out, capsys, "did you mean 'data.imbalance_factor'"
    )
    fails_cleanly(["train", str(tmp_path / "none.yaml"), "--out", str(out)], out, capsys, "none.yaml: not found")
    (tmp_path / "folder.yaml").mkdir()  # was "not found" too
    fails_cleanly(["train", str(tmp_path / "folder.yaml"), "--out", str(out)], out, capsys, "folder.yaml: a directory")


@pytest.mark.parametrize(
    "text, expected",
    [
        # PyYAML keeps the last of two equal keys: a file meaning epochs 1 and 2 trained for 2 without a word.
        ("train:\n  epochs: 1\n  lr: 0.1\n  epochs: 2\n", ["line 4: key 'epochs' given twice", "keep one"]),
        ("train: {epochs: 1}\ndecouple: {}\ntrain: {lr: 0.2}\n", ["line 3: key 'train' given twice"]),
        # A syntax error said "not valid YAML (ScannerError)", without where or what.
        ("train:\n\tepochs: 1\n", ["c.yaml: line 2: not valid YAML (ScannerError: found character '\\t'"]),
        ("train: {epochs: 1}\n---\ntrain: {epochs: 2}\n", ["line 2: not valid YAML (ComposerError"]),
    ],
    ids=["duplicate-key", "duplicate-section", "tab", "two-documents"],
)
def test_a_config_file_with_a_duplicate_key_or_a_syntax_error_names_the_line(
    text: str, expected: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    out = tmp_path / "run"
    fails_cleanly(["train", str(config), *NO_DATA, "--out", str(out)], out, capsys, *expected)


# --- npz -------------------------------------------------------------------------------------

U8 = np.uint8


def _valid_arrays() -> dict[str, np.ndarray]:
    labels = np.repeat(np.arange(2), 6)
    return {
        "x_train": np.zeros((12, 8, 8), U8),
        "y_train": labels,
        "x_test": np.zeros((2, 8, 8), U8),
        "y_test": np.array([0, 1]),
    }


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"y_test": None}, ["no array 'y_test'", "expected x_train, y_train, x_test, y_test"]),
        ({"y_train": np.zeros(11, int)}, ["y_train is int64 of shape (11,)", "expected 12 integer labels"]),
        ({"x_train": np.zeros((12, 8, 8), np.float32)}, ["x_train is float32", "expected uint8 N x H x W (x C)"]),
        ({"x_train": np.zeros((12, 64), U8)}, ["x_train is uint8 of shape (12, 64)", "expected uint8 N x H x W"]),
        ({"x_train": np.zeros((12, 3, 8, 8), U8)}, ["x_train has 8 channels", "looks like N x C x H x W"]),
        ({"x_test": np.zeros((2, 0, 8), U8)}, ["x_test has shape (2, 0, 8)", "at least 1 x 1 pixels"]),
        ({"y_train": np.r_[np.zeros(11, int), -2]}, ["y_train holds label -2", "expected labels >= 0"]),
        ({"y_train": np.r_[np.zeros(11, int), 3]}, ["class 1 has no training image", "labels run up to 3"]),
        ({"y_train": np.r_[np.zeros(11, np.uint64), 2**64 - 1]}, ["class 1 has no training image"]),
        ({"y_test": np.array([0, 2])}, ["y_test holds label 2", "y_train has labels 0 to 1 only"]),
        ({"y_train": np.zeros(12)}, ["y_train is float64", "integer labels"]),
        ({"y_train": np.zeros(12, "m8[s]")}, ["y_train is timedelta64[s]", "integer labels"]),  # a traceback before
        ({"x_test": np.zeros((0, 8, 8), U8), "y_test": np.zeros(0, int)}, ["the test split has no images"]),
        ({"x_val": np.zeros((0, 8, 8), U8), "y_val": np.zeros(0, int)}, ["the validation split has no images"]),
        ({"class_names": np.array(["a", "b", "c"])}, ["class_names has shape (3,)", "expected 2 names"]),
    ],
    ids=lambda value: "" if isinstance(value, list) else "-".join(value) if isinstance(value, dict) else None,
)
def test_bad_npz(change: dict, expected: list[str], tmp_path: Path, capsys: pytest.CaptureFixture):
    arrays = {**_valid_arrays(), **change}
    path = tmp_path / "data.npz"
    np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
    out = tmp_path / "run"
    fails_cleanly(["train", "data.name=npz", f"data.path={path}", "--out", str(out), *FAST], out, capsys, *expected)


def test_npz_that_is_not_an_npz(tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "run"
    args = ["train", "data.name=npz", "--out", str(out), *FAST]
    fails_cleanly([*args, f"data.path={tmp_path / 'absent.npz'}"], out, capsys, "absent.npz: .npz file not found")
    (tmp_path / "text.npz").write_text("just text")
    fails_cleanly([*args, f"data.path={tmp_path / 'text.npz'}"], out, capsys, "text.npz: not a readable .npz file")
    np.savez(tmp_path / "objects.npz", **{**_valid_arrays(), "x_train": np.array([None] * 12, dtype=object)})
    fails_cleanly(
        [*args, f"data.path={tmp_path / 'objects.npz'}"], out, capsys, "objects.npz: not a readable .npz", "pickle"
    )


# --- Fashion-MNIST and CIFAR labels -------------------------------------------------------------


def test_negative_fashion_mnist_label_names_the_file(tiny_fmnist: Path, tmp_path: Path, capsys):
    root = tmp_path / "fm"
    shutil.copytree(tiny_fmnist, root)
    labels = read_idx(root / FILES["y_train"]).astype(np.int8)
    labels[7] = -4
    header = bytes([0, 0, 0x09, 1]) + len(labels).to_bytes(4, "big")  # IDX type 0x09: signed bytes
    with gzip.open(root / FILES["y_train"], "wb") as handle:
        handle.write(header + labels.tobytes())
    out = tmp_path / "run"
    args = ["train", *tiny_overrides(root), "--out", str(out), *FAST]
    fails_cleanly(args, out, capsys, "train-labels-idx1-ubyte.gz: label -4, expected 0 to 9")


def test_cifar_label_out_of_range_names_the_pickle(tmp_path: Path, capsys: pytest.CaptureFixture):
    write_cifar(tmp_path, "cifar10", train_per_class=6, test_per_class=1)
    batch_file = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch = pickle.loads(batch_file.read_bytes(), encoding="bytes")
    out = tmp_path / "run"
    for wrong in (-1, 10):
        batch[b"labels"][3] = wrong
        batch_file.write_bytes(pickle.dumps(batch, protocol=2))
        args = ["train", "data.name=cifar10_lt", f"data.root={tmp_path}", "data.n_max=5", "--out", str(out), *FAST]
        fails_cleanly(args, out, capsys, f"test_batch: label {wrong}, expected 0 to 9")


# --- split files and image files ---------------------------------------------------------------


@pytest.fixture
def image_lists(tmp_path: Path) -> dict[str, Path]:
    return write_filelist_dataset(tmp_path / "data", [7, 6, 5], test_per_class=2, size=16)


def filelist_overrides(root: Path, lists: dict[str, Path], *extra: str) -> list[str]:
    keys = [f"data.filelist.{split}_list={path}" for split, path in lists.items()]
    sizes = ["data.image_size=16", "data.resize=16", "data.augment=cifar", "data.val_per_class=2"]
    return ["data.name=filelist", f"data.root={root}", *sizes, *keys, *extra]


def filelist_args(root: Path, lists: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["train", *filelist_overrides(root, lists, *extra), "--out", str(out), *FAST]


@pytest.mark.parametrize(
    "line, expected",
    [
        ("train/000/img_00000.jpg", ":8: expected 'relative/path label', got 'train/000/img_00000.jpg'"),
        ("a.jpg zero", ":8: label 'zero' is not an integer"),
        ("a.jpg 1.0", ":8: label '1.0' is not an integer"),
        ("a.jpg ٣", ":8: label '٣' is not an integer"),  # an Arabic-Indic digit, which int() would accept
        ("a.jpg -1", ":8: label -1, expected a class index >= 0 in 'a.jpg -1'"),
        ("a.jpg 4294967296", ":8: label 4294967296, expected a class index below 2^31"),
    ],
)
def test_malformed_split_line_names_file_line_and_line(
    line: str, expected: str, image_lists: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
):
    lines = image_lists["train"].read_text().splitlines()
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join([*lines[:6], "", line, *lines[6:]]) + "\n")  # a blank line 7 counts too
    out = tmp_path / "run"
    args = filelist_args(tmp_path / "data", {**image_lists, "train": bad}, out)
    fails_cleanly(args, out, capsys, f"bad.txt{expected}")


def test_evaluation_label_beyond_the_training_classes(image_lists, tmp_path: Path, capsys: pytest.CaptureFixture):
    test = tmp_path / "test.txt"
    write_list(test, [("test/000/img_00000.jpg", 3)])
    out = tmp_path / "run"
    args = filelist_args(tmp_path / "data", {**image_lists, "test": test}, out)
    fails_cleanly(args, out, capsys, "test.txt: label 3, but the training split has classes 0 to 2")


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "missing":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"this is no image" * 20)
    elif how == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize(
    "how, problem",
    [("missing", "not found"), ("truncated", "truncated"), ("garbage", "not an image"), ("empty", "empty file")],
)
def test_unreadable_image_names_its_path(
    how: str, problem: str, image_lists: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
):
    root = tmp_path / "data"
    victim = image_lists["train"].read_text().splitlines()[4].split()[0]
    _damage(root / victim, how)
    out = tmp_path / "run"
    line = fails_cleanly(filelist_args(root, image_lists, out), out, capsys, f"{root / victim}: {problem}")
    assert "1 of the 18 images of the train split" in line and "data.skip_bad=true" in line


def test_missing_split_file_and_root(image_lists: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "run"
    root = tmp_path / "data"
    missing = {**image_lists, "test": tmp_path / "nope.txt"}
    fails_cleanly(filelist_args(root, missing, out), out, capsys, "nope.txt", "split file not found")
    fails_cleanly(filelist_args(tmp_path / "gone", image_lists, out), out, capsys, "gone", "directory not found")
    line = fails_cleanly(filelist_args(tmp_path, image_lists, out, "data.skip_bad=true"), out, capsys)
    assert "none of the 18 images of the train split is there" in line and "data.root must be" in line


def test_skip_bad_drops_unreadable_images_and_says_which(
    image_lists: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    root = tmp_path / "data"
    train_lines = image_lists["train"].read_text().splitlines()
    test_line = image_lists["test"].read_text().splitlines()[0]
    victims = {"truncated": train_lines[2].split()[0], "missing": train_lines[9].split()[0]}
    victims["garbage"] = test_line.split()[0]
    for how, rel in victims.items():
        _damage(root / rel, how)
    config = load_config(None, filelist_overrides(root, image_lists, "data.skip_bad=true"))
    with caplog.at_level(logging.WARNING, logger="longtail"):
        splits = create_dataset(config.data)
    assert len(splits.train) + len(splits.val) == 16 and len(splits.test) == 5
    kept = {part.paths[i] for part in (splits.train, splits.val) for i in range(len(part))}
    assert not kept & set(victims.values())
    skipped = splits.info["skipped_images"]
    # In split order, then in list order.
    expected = [("train", victims["truncated"]), ("train", victims["missing"]), ("test", victims["garbage"])]
    assert [(item["split"], item["path"]) for item in skipped] == expected
    assert "skipped 3 unreadable image(s) (train 2, test 1)" in caplog.text and victims["missing"] in caplog.text
    record = skipped_images_record(splits.info)
    assert record["count"] == 3 and record["by_split"] == {"train": 2, "test": 1} and record["file"] == SKIPPED_FILE
    listing = write_skipped_images(tmp_path, splits.info).read_text().splitlines()
    assert len(listing) == 4 and listing[1].split("\t")[:2] == [skipped[0]["split"], skipped[0]["path"]]
    # Without skip_bad the same data is refused, naming the first bad training image.
    config_strict = load_config(None, filelist_overrides(root, image_lists))
    with pytest.raises(DataError, match=f"{victims['truncated']}: truncated"):
        create_dataset(config_strict.data)


def test_skip_bad_run_trains_on_the_readable_images(image_lists: dict[str, Path], tmp_path: Path, capsys):
    root = tmp_path / "data"
    victim = image_lists["train"].read_text().splitlines()[0].split()[0]
    _damage(root / victim, "truncated")
    out = tmp_path / "run"
    assert main(filelist_args(root, image_lists, out, "data.skip_bad=true")) == 0
    assert f"{victim} (truncated" in capsys.readouterr().err
    assert (out / "checkpoint.pt").is_file()


def test_image_check_verdict_is_cached_for_large_splits(
    image_lists: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(image_check_module, "CACHE_MIN_IMAGES", 1)
    monkeypatch.setenv("LONGTAIL_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "data"
    config = load_config(None, filelist_overrides(root, image_lists))
    create_dataset(config.data)
    assert len(list((tmp_path / "cache" / "image-checks").glob("*.json"))) == 2  # train and test

    def no_decoding(path: Path) -> str | None:
        raise AssertionError(f"{path} decoded again although nothing changed")

    with monkeypatch.context() as patch:
        patch.setattr(image_check_module, "image_problem", no_decoding)
        assert len(create_dataset(config.data).test) == 6
    victim = image_lists["test"].read_text().splitlines()[1].split()[0]
    _damage(root / victim, "truncated")  # a new size: the cached verdict no longer applies
    with pytest.raises(DataError, match=f"{victim}: truncated"):
        create_dataset(config.data)


# --- classes without training images --------------------------------------------------------


def test_methods_that_need_every_class_name_the_empty_one():
    labels = np.repeat(np.arange(3), 4)  # classes 0-2 present, 3 and 4 empty
    for strategy, method in (
        ("class", "class-balanced"),
        ("progressive", "progressive"),
        ("class_aware", "class-aware"),
    ):
        with pytest.raises(DataError, match=f"class 3 has no training images: {method} sampling"):
            make_sampler(labels, strategy, epochs=3, num_classes=5)
    assert len(make_sampler(labels, "sqrt", num_classes=5)) == 12  # n^q with n = 0: probability 0, fine
    with pytest.raises(DataError, match="class 3 has no training images: NCM"):
        NCMClassifier().fit(torch.randn(12, 4), torch.as_tensor(labels), num_classes=5)


@pytest.fixture(scope="module")
def run_with_empty_classes(tiny_fmnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch run whose subset (n_max 5, imbalance factor 100) leaves the last classes without images."""
    run = tmp_path_factory.mktemp("empty") / "run"
    args = ["train", *tiny_overrides(tiny_fmnist), "data.n_max=5", "data.imbalance_factor=100", "data.val_per_class=2"]
    assert main([*args, "--out", str(run), *FAST]) == 0
    return run


def test_ncm_on_a_run_with_an_empty_class_names_it(run_with_empty_classes: Path, capsys: pytest.CaptureFixture):
    counts = torch.load(run_with_empty_classes / "checkpoint.pt", weights_only=True)["train_counts"]
    empty = counts.index(0)
    args = ["decouple", str(run_with_empty_classes), "--method", "ncm"]
    fails_cleanly(args, None, capsys, f"class {empty} has no training images (", "NCM needs at least one per class")
    assert not (run_with_empty_classes / "classifiers" / "ncm.pt").exists()
    # train's "next:" command: NCM comes first in all and auto, so the line says what can be fitted instead.
    for method in ("all", "auto"):
        args = ["decouple", str(run_with_empty_classes), "--method", method]
        fails_cleanly(args, None, capsys, f"{counts.count(0)} such classes", "name the others, e.g. --method tau_norm")


@pytest.mark.slow  # a training and three heads of the tiny run: ~5 s
def test_train_suggests_methods_that_fit_when_its_subset_left_classes_empty(
    tiny_fmnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    # train's "next:" said `--method all`, which stops at NCM (it needs every class) on such a run.
    run = tmp_path / "run"
    args = ["train", *tiny_overrides(tiny_fmnist), "data.n_max=5", "data.imbalance_factor=100", "data.val_per_class=2"]
    assert main([*args, "--out", str(run), *FAST]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"run directory: {run}  (next: longtail decouple {run} --method {FIT_WITH_EMPTY_CLASSES})"
    assert main(["decouple", str(run), "--method", FIT_WITH_EMPTY_CLASSES]) == 0


def test_a_sampler_that_needs_every_class_names_its_key(run_with_empty_classes: Path, capsys):
    # The line named the strategy only ("class-aware sampling needs ..."): decouple.sampler is a default
    # the user never set, and WB draws with its own decouple.wb.sampler.
    counts = torch.load(run_with_empty_classes / "checkpoint.pt", weights_only=True)["train_counts"]
    empty = f"class {counts.index(0)} has no training images: class-aware sampling"
    run = str(run_with_empty_classes)
    for method in ("crt", "lws", "las"):
        fails_cleanly(["decouple", run, "--method", method], None, capsys, empty, "(decouple.sampler=class_aware;")
    wb = ["decouple", run, "--method", "wb", "decouple.wb.sampler=class_aware"]
    fails_cleanly(wb, None, capsys, empty, "(decouple.wb.sampler=class_aware;", "instance or power sampling")
    assert main(["decouple", run, "--method", "crt", "decouple.sampler=instance"]) == 0


def test_class_balanced_stage1_with_an_empty_class_names_it(tiny_fmnist: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    args = ["train", *tiny_overrides(tiny_fmnist), "data.n_max=5", "data.imbalance_factor=100", "train.sampler=class"]
    line = fails_cleanly([*args, "data.val_per_class=2", "--out", str(out), *FAST], None, capsys)
    assert "has no training images: class-balanced sampling" in line and "(train.sampler=class;" in line
    assert not (out / "checkpoint.pt").exists()


# --- run directories -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def npz_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 1-epoch run on a small 3-class .npz, and the .npz."""
    folder = tmp_path_factory.mktemp("npzrun")
    data = write_npz(folder / "data.npz", [12, 10, 8], test_per_class=2, size=8, channels=None)
    run = folder / "run"
    assert main(["train", "data.name=npz", f"data.path={data}", "--out", str(run), *FAST]) == 0
    return run, data


def test_stage2_on_what_is_not_a_run(npz_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture):
    for command in ("decouple", "eval"):
        fails_cleanly([command, str(tmp_path / "absent")], None, capsys, "absent: run directory not found")
        fails_cleanly([command, str(tmp_path)], None, capsys, "not a run directory (no config.yaml")
    run = tmp_path / "run"
    shutil.copytree(npz_run[0], run)
    (run / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes()[:1000])
    fails_cleanly(["eval", str(run)], None, capsys, "checkpoint.pt: unreadable checkpoint")


def test_run_whose_data_has_other_classes_is_refused(
    npz_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
):
    other = write_npz(tmp_path / "other.npz", [12, 10, 8, 6], test_per_class=2, size=8, channels=None)
    run, _ = npz_run
    for command in ("eval", "decouple"):
        fails_cleanly([command, str(run), f"data.path={other}"], None, capsys, "the data differs from", "class sizes")
    assert not (run / "classifiers").exists()


def test_occupied_out_is_refused_and_kept(npz_run: tuple[Path, Path], tmp_path: Path, capsys):
    _, data = npz_run
    out = tmp_path / "notes"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["train", "data.name=npz", f"data.path={data}", "--out", str(out), *FAST]
    fails_cleanly(args, None, capsys, f"{out}: exists and is not empty", "--overwrite")
    fails_cleanly([*args, "--overwrite"], None, capsys, f"{out}: exists and is not a run directory")
    assert (out / "keep.txt").read_text() == "mine"


def test_bad_data_with_overwrite_keeps_the_old_run(npz_run: tuple[Path, Path], tmp_path: Path, capsys):
    run = tmp_path / "run"
    shutil.copytree(npz_run[0], run)
    before = (run / "checkpoint.pt").read_bytes()
    bad = tmp_path / "bad.npz"
    np.savez(bad, **{**_valid_arrays(), "y_test": np.array([0, 5])})
    args = ["train", "data.name=npz", f"data.path={bad}", "--out", str(run), "--overwrite", *FAST]
    fails_cleanly(args, None, capsys, "y_test holds label 5")
    assert (run / "checkpoint.pt").read_bytes() == before


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
def test_no_traceback_without_debug(tmp_path: Path):
    args = ["train", "data.name=npz", f"data.path={tmp_path / 'x.npz'}", "--out", str(tmp_path / "run")]
    plain = subprocess.run([sys.executable, "-m", "longtail", *args], capture_output=True, text=True, timeout=120)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert plain.stderr.strip() == f"longtail: error: {tmp_path / 'x.npz'}: .npz file not found (data.path)"
    with pytest.raises(DataError, match="x.npz: .npz file not found"):  # --debug lets the exception through
        main([*args, "--debug"])
    assert not (tmp_path / "run").exists()


def test_image_lost_after_the_check_is_named_in_one_line_from_a_worker(image_lists: dict[str, Path], tmp_path: Path):
    splits = create_dataset(load_config(None, filelist_overrides(tmp_path / "data", image_lists)).data)
    victim = splits.test.path(1)
    victim.unlink()  # gone after the up-front check: only the DataLoader worker finds out
    loader = DataLoader(splits.test, batch_size=3, num_workers=1, collate_fn=keep_batch)
    with pytest.raises(DataError) as caught:
        list(loader)
    assert str(caught.value) == f"{victim}: image not found"
