"""Degenerate inputs are refused with one line, not scored: the CLI agrees with the estimator's refusals.

One class, features of width 0, sparse or overlapping tensors, class names that are not UTF-8, a selection
metric over an empty shot group, a damaged predictions member, an output name longer than the file system
allows, a features file rewritten while it is read. Each was a confident number, a traceback or a SIGBUS.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import copy_run, tiny_overrides
from hostile import one_error_line
from longtail.cli import main
from longtail.config import load_config
from longtail.data import create_dataset
from longtail.errors import ConfigError

SRC = Path(__file__).resolve().parents[1] / "src"


def _features(path: Path, counts=(12, 8), d: int = 4, **replace) -> Path:
    """A small features file (.npz or .pt): ``counts`` training vectors per class, 2 test vectors each."""
    rng = np.random.default_rng(0)
    y_train = np.repeat(np.arange(len(counts)), counts)
    y_test = np.repeat(np.arange(len(counts)), 2)
    arrays = {
        "x_train": rng.normal(size=(len(y_train), d)).astype(np.float32),
        "y_train": y_train,
        "x_test": rng.normal(size=(len(y_test), d)).astype(np.float32),
        "y_test": y_test,
        **replace,
    }
    if path.suffix == ".pt":
        torch.save({k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in arrays.items()}, path)
    else:
        np.savez(path, **arrays)
    return path


def _stats(path: Path, name: str = "features") -> list[str]:
    return ["data", "stats", f"data.name={name}", f"data.path={path}"]


# --- data: one class, no features, sparse or overlapping tensors, names that are not text ------------------


def test_features_with_one_class_are_refused(tmp_path: Path, capsys):
    """Every method scored "100.0 ±0.0" on a file of one class."""
    path = _features(tmp_path / "one.npz", counts=(20,))
    one_error_line(_stats(path), capsys, str(path), "has 1 class", "at least 2 classes")


def test_an_image_npz_with_one_class_is_refused(tmp_path: Path, capsys):
    arrays = {"x_train": np.zeros((6, 4, 4), np.uint8), "y_train": np.zeros(6, np.int64)}
    np.savez(tmp_path / "one.npz", **arrays, x_test=np.zeros((2, 4, 4), np.uint8), y_test=np.zeros(2, np.int64))
    one_error_line(_stats(tmp_path / "one.npz", "npz"), capsys, "has 1 class", "at least 2 classes")


def test_features_of_width_zero_are_refused(tmp_path: Path, capsys):
    """Chance accuracy was reported as a result for (N, 0) features."""
    path = _features(tmp_path / "empty.npz", d=0)
    one_error_line(_stats(path), capsys, "x_train has shape (20, 0): no feature per row; expected d >= 1")


def test_sparse_pt_features_are_refused(tmp_path: Path, capsys):
    """A sparse tensor was a NotImplementedError traceback."""
    dense = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    path = _features(tmp_path / "sparse.pt")
    arrays = torch.load(path, weights_only=True)
    torch.save({**arrays, "x_train": torch.from_numpy(dense).to_sparse()}, path)
    one_error_line(_stats(path), capsys, "x_train is a torch.sparse_coo tensor, expected a dense one")


def test_a_tensor_whose_strides_overlap_its_storage_is_refused(tmp_path: Path, capsys):
    """One stored value viewed as 10**9 rows: copying it would allocate what the file never held."""
    path = _features(tmp_path / "f.pt")
    arrays = torch.load(path, weights_only=True)
    torch.save({**arrays, "x_train": torch.zeros(1).expand(10**9, 4)}, path)
    assert path.stat().st_size < 10_000
    one_error_line(_stats(path), capsys, "x_train has shape (1000000000, 4)", "overlapping strides")


@pytest.mark.parametrize("reader", ["features", "npz"])
def test_class_names_that_are_not_utf8_are_named(reader: str, tmp_path: Path, capsys):
    """Names stored as bytes were a UnicodeDecodeError traceback (features) or printed as "b'...'" (npz)."""
    names = np.array([b"cat", b"d\xffg"])
    if reader == "features":
        path = _features(tmp_path / "f.npz", class_names=names)
    else:
        path = tmp_path / "d.npz"
        images = {"x_train": np.zeros((12, 4, 4), np.uint8), "x_test": np.zeros((2, 4, 4), np.uint8)}
        np.savez(path, **images, y_train=np.repeat([0, 1], 6), y_test=np.array([0, 1]), class_names=names)
    one_error_line(_stats(path, reader), capsys, "class_names[1] = b'd\\xffg' is not valid UTF-8")
    good = np.array([b"cat", "dög".encode()])  # UTF-8 bytes are names, decoded
    np.savez(path, **{**dict(np.load(path)), "class_names": good})
    assert create_dataset(load_config(None, [f"data.name={reader}", f"data.path={path}"]).data).class_names == [
        "cat",
        "dög",
    ]


# --- a selection metric over an empty group ------------------------------------------------------------------


def test_decouple_refuses_select_few_without_a_few_shot_class(tiny_run: Path, tmp_path: Path, capsys):
    """`auto` picked an arbitrary method when every candidate's validation few-shot score was None."""
    run = copy_run(tiny_run, tmp_path / "run")
    args = ["decouple", str(run), "--method", "auto", "decouple.select=few", "eval.few=1"]
    one_error_line(args, capsys, "decouple.select=few: the few-shot group is empty", "eval.few=1")
    assert not (run / "classifiers").exists()
    # NCM chooses nothing on validation: the same keys are fine for it.
    assert main(["decouple", str(run), "--method", "ncm", "decouple.select=few", "eval.few=1"]) == 0


def test_decouple_refuses_select_few_when_no_few_shot_class_has_a_validation_image(tmp_path: Path, capsys):
    """Validation is held out of the training vectors, at most a fifth of a class: classes of 3 and 2 give none."""
    path = _features(tmp_path / "f.npz", counts=(40, 30, 3, 2))
    run = tmp_path / "run"
    assert main(["train", "data.name=features", f"data.path={path}", "train.epochs=1", "--out", str(run)]) == 0
    capsys.readouterr()
    args = ["decouple", str(run), "--method", "tau_norm", "decouple.select=few", "eval.few=5"]
    one_error_line(args, capsys, "none of the 2 few-shot classes (fewer than eval.few=5 training images)")


def test_grid_refuses_select_few_over_an_empty_group_before_training(tiny_fmnist: Path, tmp_path: Path, capsys):
    """A sweep crashed after training every combination when its choice read a None score."""
    out = tmp_path / "grid"
    overrides = [*tiny_overrides(tiny_fmnist), "decouple.select=few", "eval.few=1", "eval.many=50"]
    one_error_line(
        ["grid", "--out", str(out), "--sweep", "train.lr=0.1,0.2", *overrides], capsys, "few-shot group is empty"
    )
    assert not any(out.glob("sweep-*"))
    one_error_line(["grid", "--out", str(out), "--samplers", "instance", *overrides], capsys, "few-shot group")
    assert not (out / "sampler-instance").exists()


def test_the_estimator_refuses_select_few_over_an_empty_group_before_training():
    pytest.importorskip("sklearn")
    from longtail.sklearn import DecoupledClassifier

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [60, 40, 30])
    X = rng.normal(size=(len(y), 4)) + y[:, None]
    clf = DecoupledClassifier(method="auto", few=5, epochs=1, random_state=0, config={"decouple.select": "few"})
    with pytest.raises(ConfigError, match=r"decouple.select=few: the few-shot group is empty .*few=5") as error:
        clf.fit(X, y)
    assert isinstance(error.value, ValueError) and not hasattr(clf, "head_")
    # WB chooses its grid point inside its fit, on the split that fit is given: a held-out one, never its own
    # training data (folds would refit it on all of X and let it choose there), as documented.
    two_points = {"decouple.wb.epochs": 1, "decouple.wb.weight_decay_grid": [0.01], "decouple.wb.thresh_grid": []}
    wb = DecoupledClassifier(method="wb", epochs=1, random_state=0, config=two_points).fit(X, y)
    assert wb.validation_ == "held out"


# --- a damaged predictions member ------------------------------------------------------------------------------


def _rewrite_member(path: Path, name: str, data: bytes, compress: int = zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info.filename) for info in archive.infolist()}
    members[name] = data
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in members.items():
            archive.writestr(member, content, compress_type=compress)


def test_a_damaged_predictions_member_is_one_line(tiny_decoupled_run: Path, tmp_path: Path, capsys):
    """A member that is not a .npy array was an AttributeError traceback in `compare --paired`."""
    run = copy_run(tiny_decoupled_run, tmp_path / "run")
    path = run / "predictions" / "test.npz"
    _rewrite_member(path, "crt.npy", b"not an array")
    one_error_line(["compare", str(run), "--paired", "crt", "joint"], capsys, "crt is not a NumPy array", "eval")
    # A compressed member whose bytes were damaged after it was written: the zip reader's CRC check.
    with zipfile.ZipFile(path) as archive:
        labels = archive.read("labels.npy")
    _rewrite_member(path, "crt.npy", labels, zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    start = data.index(b"crt.npy") + len(b"crt.npy") + 40  # inside the deflated data of the local entry
    data[start : start + 8] = bytes(8)
    path.write_bytes(bytes(data))
    one_error_line(["compare", str(run), "--paired", "crt", "joint"], capsys, "predictions/test.npz", "eval")


# --- output names the file system refuses ----------------------------------------------------------------------


LONG = "x" * 300  # more than NAME_MAX (255 bytes) on every common file system


@pytest.mark.parametrize(
    "command",
    [
        ["features", "{run}", "--out", "{long}.npz"],
        ["export", "{run}", "--method", "joint", "--out", "{long}.pt2"],
        ["compare", "{run}", "--md", "{long}.md"],
        ["data", "stats", "data.name=features", "data.path={data}", "--plot", "{long}.png"],
    ],
    ids=["features", "export", "compare", "stats-plot"],
)
def test_an_output_name_too_long_is_one_line(command: list[str], tiny_run: Path, tmp_path: Path, capsys):
    """An OSError (ENAMETOOLONG) traceback in `features --out`, `export --out` and `compare --md`."""
    run = copy_run(tiny_run, tmp_path / "run")
    where = {"run": run, "long": tmp_path / LONG, "data": _features(tmp_path / "f.npz")}
    line = one_error_line([part.format(**where) for part in command], capsys, "file name too long")
    assert len(line) < 400 and not list(tmp_path.glob("x*"))


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--out", ""],
        ["grid", "--out", ""],
        ["auto", "--out", ""],
        ["grid", "--doc", ""],
        ["compare", "{cwd}", "--md", ""],
        ["data", "stats", "{cwd}/list.txt", "--plot", ""],
    ],
    ids=["train", "grid", "auto", "grid-doc", "compare-md", "stats-plot"],
)
def test_an_empty_output_path_is_refused_not_the_current_folder(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    """`--out ""` (an unset shell variable) is Path("."): train, grid and auto wrote runs into the current
    folder, and `data stats --plot ""` silently drew nothing."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "list.txt").write_text("a.jpg 0\nb.jpg 1\n")
    option = next(word for word in command if word.startswith("--"))
    one_error_line([part.format(cwd=tmp_path) for part in command], capsys, f"{option} '': an empty path")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["list.txt"]


def test_an_input_name_too_long_is_one_line(tmp_path: Path, capsys):
    """`predict MODEL` and a prior file (`predict --prior`, `export --prior`) named past NAME_MAX: Path.is_dir and
    is_file raise ENAMETOOLONG on Python 3.11, an OSError traceback; an image so named repeated its whole path."""
    from longtail.errors import DataError
    from longtail.shift.prior_file import read_prior_file

    (tmp_path / "ok.png").write_bytes(b"")
    line = one_error_line(["predict", str(tmp_path / f"{LONG}.pt2"), str(tmp_path / "ok.png")], capsys)
    assert line.endswith("cannot read the model file (file name too long)") and len(line) < 400
    from longtail.export.predict import read_image

    with pytest.raises(DataError, match=r"characters\): cannot read image \(file name too long\)$"):
        read_image(tmp_path / f"{LONG}.png", {"channels": 1, "height": 2, "width": 2, "geometry": "resize"})
    with pytest.raises(DataError, match=r"characters\): cannot read the prior file \(file name too long\)$"):
        read_prior_file(f"/tmp/{LONG}.txt", 10)


# --- a features file rewritten while it is read ----------------------------------------------------------------


def test_a_features_file_rewritten_while_in_use_cannot_crash_the_reader(tmp_path: Path):
    """A memory-mapped .pt truncated by another program ended the process with SIGBUS and no message: the file
    is now read into memory, so what was read stays whatever happens to the file."""
    path = _features(tmp_path / "f.pt", counts=(3000, 2000), d=64)
    probe = (
        "import sys, torch\n"
        "from longtail.data.features import load_features\n"
        "loaded = load_features(sys.argv[1])\n"
        "open(sys.argv[1], 'wb').close()  # truncated in place, as an editor or a rerun of the writer does\n"
        "print(float(sum(x.sum() for x in loaded['x'].values())))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", probe, str(path)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert path.stat().st_size == 0 and float(result.stdout)
