"""Bring your own representation: precomputed features (data.name=features), `longtail features`, and the
round trip from an image run through its features back to the same stage-2 numbers."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import copy_run, tiny_overrides
from longtail.cli import main
from longtail.config import load_config
from longtail.data import create_dataset
from longtail.data.features import load_features
from longtail.errors import ConfigError, DataError

GROUPS = ("many", "medium", "few", "all", "macro")


def _results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def write_features(path: Path, *, counts=(120, 60, 25, 10, 6), d: int = 12, val: bool = False, seed: int = 0,
                   dtype=np.float32, **replace) -> Path:  # fmt: skip
    """A long-tailed features file of Gaussian classes: ``counts`` training vectors per class, 20 test each."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(counts), d)) * 2.5

    def draw(per_class):
        y = np.repeat(np.arange(len(per_class)), per_class)
        return (centres[y] + rng.normal(size=(len(y), d))).astype(dtype), y

    x_train, y_train = draw(counts)
    x_test, y_test = draw([20] * len(counts))
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    if val:
        arrays["x_val"], arrays["y_val"] = draw([5] * len(counts))
    arrays.update(replace)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    if path.suffix == ".pt":
        torch.save({k: torch.as_tensor(v) if isinstance(v, np.ndarray) and v.dtype.kind != "U" else v
                    for k, v in arrays.items()}, path)  # fmt: skip
    else:
        np.savez(path, **arrays)
    return path


FEATURE_OVERRIDES = [
    "data.name=features",
    "data.val_per_class=5",
    "train.epochs=3",
    "train.batch_size=64",
    "decouple.crt.epochs=2",
    "decouple.lws.epochs=2",
    "eval.many=50",
    "eval.few=20",
]


# --- the round trip: image run -> `longtail features` -> data.name=features, model.joint=file --------------


@pytest.fixture(scope="module")
def image_run(tiny_decoupled_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared tiny image run after `decouple --method auto`, copied (`longtail features` may fill its cache)."""
    return copy_run(tiny_decoupled_run, tmp_path_factory.mktemp("image") / "run")


@pytest.fixture(scope="module")
def exported_features(image_run: Path) -> Path:
    out = image_run.parent / "features.npz"
    assert main(["features", str(image_run), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def features_run(exported_features: Path, tiny_fmnist: Path) -> Path:
    """A run on the image run's features, with its joint classifier, decoupled with every method and auto."""
    run = exported_features.parent / "features_run"
    features = ["data.name=features", f"data.path={exported_features}", "model.joint=file"]
    overrides = [*tiny_overrides(tiny_fmnist), *features]
    assert main(["train", *overrides, "--out", str(run), "--no-progress"]) == 0
    assert main(["decouple", str(run), "--method", "auto"]) == 0
    return run


def test_features_file_holds_every_split_and_the_joint_classifier(image_run: Path, exported_features: Path) -> None:
    with np.load(exported_features, allow_pickle=False) as archive:
        files = set(archive.files)
        x_train, weight = archive["x_train"], archive["joint_weight"]
        names = archive["class_names"].tolist()
    assert {"x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "class_names", "joint_bias"} <= files
    results = _results(image_run)
    assert x_train.dtype == np.float32 and len(x_train) == sum(results["train_counts"])
    assert weight.shape == (results["num_classes"], x_train.shape[1])
    assert names == results["class_names"]


@pytest.mark.slow  # an image run and its features run: make test runs it
def test_features_run_reproduces_the_image_run_stage2_numbers(image_run: Path, features_run: Path) -> None:
    image, features = _results(image_run), _results(features_run)
    assert features["train_counts"] == image["train_counts"]
    assert set(features["methods"]) == set(image["methods"])  # joint, every method fitted on features, auto
    for split in ("methods", "val_methods"):
        for method, row in image[split].items():
            assert {g: features[split][method][g] for g in GROUPS} == {g: row[g] for g in GROUPS}, (split, method)
    assert features["auto"]["chosen"] == image["auto"]["chosen"]


def test_features_run_builds_no_feature_cache(features_run: Path) -> None:
    assert not (features_run / "features").exists()
    config = load_config(features_run / "config.yaml")
    assert config.model.backbone == "identity" and config.model.joint == "file"


# --- the reader --------------------------------------------------------------------------------------------


def _config(path: Path, *extra: str):
    return load_config(None, ["data.name=features", f"data.path={path}", "data.val_per_class=5", *extra])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_reader_accepts_float16_32_64_batches_in_float32(tmp_path: Path, dtype) -> None:
    splits = create_dataset(_config(write_features(tmp_path / "f.npz", dtype=dtype)).data)
    held = torch.float16 if dtype == np.float16 else torch.float32  # float16 stays half the memory
    assert splits.train.inputs.dtype == held and splits.train.image_shape == (12,)
    assert splits.train.__getitems__([0, 1])[0].dtype == torch.float32
    assert splits.num_classes == 5 and splits.class_names == ["0", "1", "2", "3", "4"]
    assert splits.mean == () and splits.std == ()


def test_validation_is_held_out_of_training_class_balanced_never_from_test(tmp_path: Path) -> None:
    splits = create_dataset(_config(write_features(tmp_path / "f.npz")).data)
    # Up to 5 per class, at most a fifth of a class: 5, 5, 5, 2, 1 of 120, 60, 25, 10, 6.
    assert np.bincount(splits.val.labels.numpy()).tolist() == [5, 5, 5, 2, 1]
    assert splits.train_counts == [115, 55, 20, 8, 5]
    assert len(splits.test) == 100  # the test split is whole
    raw = load_features(tmp_path / "f.npz")["x"]
    train_rows = {tuple(row) for row in raw["train"].tolist()}
    assert all(tuple(row) in train_rows for row in splits.val.inputs.tolist())
    assert "held out" in splits.info["val_source"]


def test_own_validation_split_class_names_and_pt_files(tmp_path: Path) -> None:
    names = np.array(["cat", "dog", "eel", "fox", "gnu"])
    npz = create_dataset(_config(write_features(tmp_path / "f.npz", val=True, class_names=names)).data)
    pt = create_dataset(_config(write_features(tmp_path / "f.pt", val=True, class_names=names.tolist())).data)
    assert npz.class_names == pt.class_names == names.tolist()
    assert len(npz.val) == 25 and npz.info["val_source"].startswith("the file's own")
    assert torch.equal(npz.train.inputs, pt.train.inputs) and torch.equal(npz.test.labels, pt.test.labels)


def test_big_endian_features_are_read_as_native(tmp_path: Path) -> None:
    # numpy writes '>f4' as it is; torch.from_numpy refused it with a ValueError traceback.
    native = create_dataset(_config(write_features(tmp_path / "f.npz", val=True)).data)
    raw = dict(np.load(tmp_path / "f.npz"))
    np.savez(tmp_path / "b.npz", **{k: v.astype(v.dtype.newbyteorder(">")) for k, v in raw.items()})
    swapped = create_dataset(_config(tmp_path / "b.npz").data)
    assert swapped.train.inputs.dtype == torch.float32 and torch.equal(swapped.train.inputs, native.train.inputs)
    assert torch.equal(swapped.test.labels, native.test.labels)


BAD_FILES = {
    "rank": ({"x_test": np.zeros((100, 12, 1), np.float32)}, "expected float16/32/64 features of shape (N, d)"),
    "integer": ({"x_train": np.zeros((221, 12), np.int64)}, "x_train is int64"),
    "nan": ({"x_test": np.full((100, 12), np.nan, np.float32)}, "x_test row 0 holds NaN or infinite"),
    "inf": ({"x_train": np.r_[np.zeros((3, 12)), np.full((218, 12), np.inf)]}, "x_train row 3 holds NaN"),
    # Finite float64, held as float32: it said "holds NaN or infinite values", which the file does not.
    "float32_range": ({"x_test": np.full((100, 12), 1e300)}, "x_test row 0 holds values beyond float32's range"),
    "length": ({"y_test": np.zeros(99, np.int64)}, "y_test is int64 of shape (99,), expected 100 integer labels"),
    "range": ({"y_test": np.full(100, 7)}, "y_test holds label 7, but y_train has labels 0 to 4 only"),
    "negative": ({"y_test": np.full(100, -1)}, "y_test holds label -1, expected labels >= 0"),
    "timedelta": ({"y_test": np.zeros(100, "m8[s]")}, "y_test is timedelta64[s] of shape (100,), expected 100 integer"),
    # uint64 beyond int64: cast, 2**64 - 1 became label -1, which passed and ended training in an IndexError.
    "uint64": ({"y_test": np.full(100, 2**64 - 1, np.uint64)}, "y_test holds label 18446744073709551615, expected"),
    "dimension": ({"x_test": np.zeros((100, 11), np.float32)}, "x_train has 12, x_test has 11"),
    "missing": ({"y_test": None}, "no entry 'y_test'"),
    "gap": ({"y_train": np.repeat([0, 1, 2, 3, 5], [120, 60, 25, 10, 6])}, "class 4 has no training vector"),
    "names": ({"class_names": np.array(["a", "b"])}, "class_names has 2 entries, expected 5"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_are_one_line_errors_naming_the_entry(tmp_path: Path, case: str) -> None:
    replace, expected = BAD_FILES[case]
    path = write_features(tmp_path / "f.npz", **replace)
    with pytest.raises(DataError) as error:
        create_dataset(_config(path).data)
    assert expected in str(error.value) and str(path) in str(error.value) and "\n" not in str(error.value)


def test_unreadable_files_are_refused_without_unpickling(tmp_path: Path, capsys) -> None:
    pickled = tmp_path / "f.pt"
    torch.save({"x_train": np.zeros((3, 2))}, pickled)  # a NumPy array needs pickle: weights_only refuses it
    not_npz = tmp_path / "g.npz"
    not_npz.write_text("not an archive")
    for path in (pickled, not_npz, tmp_path / "absent.npz"):
        code = main(["train", "data.name=features", f"data.path={path}", "--out", str(tmp_path / "run")])
        assert code == 1
        message = capsys.readouterr().err.strip()
        assert message.startswith(f"longtail: error: {path}") and "\n" not in message
    assert not (tmp_path / "run").exists()


# --- configuration ------------------------------------------------------------------------------------------


def test_features_imply_the_identity_backbone_and_refuse_a_network(tmp_path: Path) -> None:
    path = write_features(tmp_path / "f.npz")
    assert _config(path).model.backbone == "identity"
    refused = {
        ("model.backbone=resnet8",): "model.backbone='resnet8': data.name=features holds feature vectors",
        ("decouple.views=2",): "decouple.views=2: expected 0",
        ("decouple.trainable=all",): "decouple.trainable='all': expected classifier",
        # accepted and without effect before: no backbone to run per batch, no BatchNorm to switch
        ("decouple.features=online",): "decouple.features='online': expected cached",
        ("decouple.bn=train",): "decouple.bn='train': expected eval",
        ("model.joint=file", "train.loss=ldam_drw"): "model.joint='file': expected train: train.loss=ldam_drw",
    }
    for extra, message in refused.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
            _config(path, *extra)
    with pytest.raises(ConfigError, match="identity is for data.name=features"):
        load_config(None, ["model.backbone=identity"])
    with pytest.raises(ConfigError, match="file is for data.name=features"):
        load_config(None, ["model.joint=file"])


# --- the linear probe, stage 2, eval, compare, report, export ----------------------------------------------


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A linear probe on a long-tailed features file, decoupled with every method."""
    root = tmp_path_factory.mktemp("probe")
    path = write_features(root / "emb.npz", class_names=np.array(list("abcde")))
    run = root / "run"
    assert main(["train", *FEATURE_OVERRIDES, f"data.path={path}", "--out", str(run), "--no-progress"]) == 0
    assert main(["decouple", str(run), "--method", "all"]) == 0
    return run


def test_linear_probe_and_every_method_on_features(probe_run: Path) -> None:
    from longtail.methods import expand_methods

    results = _results(probe_run)
    assert set(results["methods"]) == {"joint", *expand_methods(["all"])}
    assert results["class_names"] == list("abcde") and results["train_counts"] == [115, 55, 20, 8, 5]
    assert results["methods"]["joint"]["many"] > 50  # the probe learned something: Gaussian classes
    assert len((probe_run / "metrics.jsonl").read_text().splitlines()) == 3
    assert not (probe_run / "features").exists()  # no backbone pass, no feature cache


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
def test_eval_compare_and_report_work_on_a_features_run(probe_run: Path, tmp_path: Path) -> None:
    run = copy_run(probe_run, tmp_path / "run")
    assert main(["eval", str(run), "--split", "val"]) == 0
    assert main(["compare", str(run), str(probe_run), "--md", str(tmp_path / "cmp.md")]) == 0
    assert "Joint" in (tmp_path / "cmp.md").read_text()
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").stat().st_size > 0


def test_export_of_a_features_run_maps_feature_vectors_to_its_logits(probe_run: Path, tmp_path: Path, capsys) -> None:
    from longtail.export import load_artifact
    from longtail.pipeline import load_fitted, load_run

    out = tmp_path / "tau.pt2"
    assert main(["export", str(probe_run), "--method", "tau_norm", "--out", str(out)]) == 0
    module, metadata = load_artifact(out)
    assert metadata["input"]["kind"] == "features" and metadata["input"]["features"] == 12
    run = load_run(probe_run)
    x = run.splits.test.inputs
    expected = load_fitted(run)["tau_norm"].head.cpu()(x)
    assert torch.allclose(module(x), expected, atol=1e-5)
    capsys.readouterr()
    assert main(["predict", str(out), str(tmp_path / "image.png")]) == 1
    assert "takes (N, 12) feature vectors, not images" in capsys.readouterr().err
    # A validation split too small for a calibration (a class with one image) still exports, without an adapter;
    # a prior is then refused, saying why.
    assert metadata["prior_adapter"] is None  # this run's validation split has a class of one vector
    assert "no prior adapter" in metadata["prior_adapter_unavailable"]
    from longtail.export.deploy_prior import recorded_adapter
    from longtail.export.errors import ExportError

    with pytest.raises(ExportError, match="no prior adapter.*--prior needs one"):
        recorded_adapter(metadata, "tau.pt2")
    prior = tmp_path / "prior.txt"
    prior.write_text(" ".join(["1"] * len(metadata["class_names"])))
    assert (
        main(
            [
                "export",
                str(probe_run),
                "--method",
                "tau_norm",
                "--out",
                str(tmp_path / "p.pt2"),
                "--prior",
                str(prior),
            ]
        )
        == 1
    )
    assert "--prior" in capsys.readouterr().err


def test_the_next_command_quotes_a_path_with_a_space(probe_run: Path, tmp_path: Path, capsys) -> None:
    """The printed next step is meant to be pasted: a path with a space stays one argument."""
    out = tmp_path / "my features" / "f.npz"
    out.parent.mkdir()
    assert main(["features", str(probe_run), "--out", str(out)]) == 0
    hint = capsys.readouterr().out.splitlines()[-1]
    assert shlex.split(hint.removeprefix("next: "))[3] == f"data.path={out}"


def test_features_command_refuses_to_overwrite(probe_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "f.npz"
    assert main(["features", str(probe_run), "--out", str(out)]) == 0
    first = out.stat().st_mtime_ns
    assert main(["features", str(probe_run), "--out", str(out)]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err and out.stat().st_mtime_ns == first
    assert main(["features", str(probe_run), "--out", str(out), "--overwrite"]) == 0
    assert main(["features", str(probe_run), "--out", str(tmp_path / "f.csv")]) == 1
    with np.load(out, allow_pickle=False) as archive:  # a features run's features are its own file's
        assert archive["x_test"].shape == (100, 12)


def test_features_suffixes_are_read_in_any_case(probe_run: Path, tmp_path: Path, capsys) -> None:
    # `features --out f.NPZ` was "expected a file name ending in .npz"; data.path=F.PT read as an .npz ("no entry")
    out = tmp_path / "f.NPZ"
    assert main(["features", str(probe_run), "--out", str(out)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["f.NPZ"]  # written under the name given, no .npz added
    assert create_dataset(_config(out).data).num_classes == 5
    upper_pt = write_features(tmp_path / "g.pt").rename(tmp_path / "g.PT")
    assert len(create_dataset(_config(upper_pt).data).train) == len(create_dataset(_config(out).data).train)
    capsys.readouterr()
    assert main(["features", str(probe_run), "--out", str(tmp_path / "f.npy")]) == 1
    assert "expected a file name ending in .npz (any case)" in capsys.readouterr().err


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
def test_a_stage2_head_whose_loss_diverges_is_named_with_its_learning_rate_key(tmp_path: Path, capsys) -> None:
    # Features of scale 1e30: stage 1 survives one epoch, cRT's first steps overflow. The line said
    # "stage 2 head training, epoch 2: ..." only: under --method all, which head, and which key to lower?
    rng = np.random.default_rng(0)
    big = {f"x_{s}": (rng.normal(size=(n, 4)) * 1e30).astype(np.float32) for s, n in (("train", 20), ("test", 15))}
    path = write_features(tmp_path / "big.npz", counts=(12, 6, 2), d=4, **big, y_test=np.repeat(np.arange(3), 5))
    run = tmp_path / "run"
    assert main(["train", "data.name=features", f"data.path={path}", "train.epochs=1", "--out", str(run)]) == 0
    capsys.readouterr()
    for method, key in (("all", "decouple.crt.lr"), ("wb", "decouple.wb.lr")):
        assert main(["decouple", str(run), "--method", method]) == 1
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("longtail: error:")]
        assert len(lines) == 1 and "Traceback" not in err, err
        assert "the loss became NaN or infinite" in lines[0] and f"lower {key}" in lines[0], lines[0]
        assert f"training {key.split('.')[1]} at lr" in lines[0], lines[0]
