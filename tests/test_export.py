"""``longtail export`` and ``longtail predict``: folded classifiers, the .pt2 artifact, ONNX, top-k on image files."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import copy_run
from longtail.cli import main
from longtail.data.dataset import DatasetSplits
from longtail.data.image_files import ImageFileDataset, PathTable
from longtail.data.image_transforms import CenterCrop
from longtail.data.transforms import eval_transform
from longtail.errors import DataError
from longtail.export import (
    ExportError,
    Prediction,
    export_run,
    fold_head,
    format_predictions,
    input_spec,
    load_artifact,
    read_image,
    read_metadata,
)
from longtail.export.artifact import METADATA_FILE, save_artifact
from longtail.export.predict import image_logits, read_pixels
from longtail.methods.logit_adjust import LogitAdjustedHead
from longtail.methods.lws import LWSHead
from longtail.methods.ncm import NCMClassifier
from longtail.methods.tau_norm import TauNormHead
from longtail.models.heads import CosineHead, LinearHead
from longtail.pipeline import load_fitted, load_run, run_features
from longtail.runs import read_results

METHODS = ("auto", "joint", "ncm", "crt", "tau_norm", "lws", "logit_adjust")


def _close(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal to float tolerance: 1e-4 relative to the logits' scale."""
    scale = max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * scale)


@pytest.fixture(scope="module")
def run_dir(tiny_decoupled_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shared tiny run with every stage-2 classifier and ``auto`` (exports are written into it)."""
    return copy_run(tiny_decoupled_run, tmp_path_factory.mktemp("export") / "run")


@pytest.fixture(scope="module")
def pipeline(run_dir: Path) -> dict:
    """What the library computes: test images, the frozen backbone's test features, every head."""
    run = load_run(run_dir)
    test = run.splits.split("test")
    return {
        "run": run,
        "images": test.images,
        "labels": test.labels,
        "features": run_features(run, "test").x,
        "heads": load_fitted(run),
    }


def _pipeline_logits(pipeline: dict, method: str) -> torch.Tensor:
    fitted = pipeline["heads"][method]
    with torch.no_grad():
        if fitted.backbone is not None:  # fit with its own backbone
            images = eval_transform(pipeline["run"].splits)(pipeline["images"])
            return fitted.head.cpu()(fitted.backbone.cpu().forward_features(images))
        return fitted.head.cpu()(pipeline["features"])


@pytest.fixture(scope="module")
def exported(run_dir: Path, pipeline: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """method -> path of its .pt2 (auto through the CLI, at the default place; the others from the loaded run)."""
    out = tmp_path_factory.mktemp("models")
    assert main(["export", str(run_dir)]) == 0
    paths = {"auto": run_dir / "export" / "auto.pt2"}
    for method in METHODS[1:]:
        paths[method] = export_run(pipeline["run"], method, out / method).path
    return paths


def _plain_load(path: Path) -> tuple[nn.Module, dict]:
    extra = {METADATA_FILE: ""}
    return torch.export.load(path, extra_files=extra).module(), json.loads(extra[METADATA_FILE])


# --- folding, head by head, on features ---------------------------------------------------------------


def _ncm_head(metric: str, features: torch.Tensor, labels: torch.Tensor) -> nn.Module:
    return NCMClassifier(metric).fit(features, labels, 4).to_head()


def _heads(features: torch.Tensor, labels: torch.Tensor) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    linear = LinearHead(8, 4)
    lws = LWSHead.from_linear(linear)
    with torch.no_grad():
        lws.scales.copy_(torch.tensor([0.5, 1.5, 2.0, 0.8]))
    lws_no_bias = LWSHead(linear.weight, None)
    with torch.no_grad():
        lws_no_bias.scales.copy_(torch.tensor([1.2, 0.7, 1.0, 3.0]))
    log_prior = torch.log(torch.tensor([0.6, 0.25, 0.1, 0.05]))
    return {
        "linear": linear,
        "tau_norm": TauNormHead.from_linear(linear, 0.7),
        "lws": lws,
        "lws_no_bias": lws_no_bias,
        "logit_adjust": LogitAdjustedHead(linear.weight, linear.bias, log_prior, 1.3),
        "cosine": CosineHead(8, 4),
        "ncm_cl2n": _ncm_head("cl2n", features, labels),
        "ncm_l2": _ncm_head("l2", features, labels),
        "ncm_cosine": _ncm_head("cosine", features, labels),
    }


@pytest.mark.parametrize(
    "kind", ["linear", "tau_norm", "lws", "lws_no_bias", "logit_adjust", "cosine", "ncm_cl2n", "ncm_l2", "ncm_cosine"]
)
def test_a_folded_head_gives_the_heads_logits(kind: str):
    generator = torch.Generator().manual_seed(1)
    features = torch.rand(300, 8, generator=generator) * 3  # non-negative, as after ReLU and pooling
    labels = torch.arange(300) % 4
    head = _heads(features, labels)[kind].eval()
    folded = fold_head(head)
    linears = [m for m in folded.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1  # one linear layer, all parameters baked in
    with torch.no_grad():
        _close(folded(features), head(features))
        _close(folded(features[:1]), head(features[:1]))  # cdist's direct (non-matmul) path for small inputs
    assert folded.squared_distance == (kind in ("ncm_cl2n", "ncm_l2"))


def test_an_unknown_head_cannot_be_folded():
    with pytest.raises(ExportError, match="Sequential"):
        fold_head(nn.Sequential(nn.Linear(3, 2)))


# --- the artifact -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_exported_logits_equal_the_pipelines(method: str, exported: dict, pipeline: dict):
    module, metadata = _plain_load(exported[method])
    images = pipeline["images"].float() / 255.0
    with torch.no_grad():
        got = module(images)
        _close(got, _pipeline_logits(pipeline, method))
        _close(module(images[:1]), got[:1])  # the batch dimension is dynamic
    assert metadata["exported"] == method
    assert metadata["check"]["max_abs_logit_difference"] <= 1e-4 * max(1.0, float(got.abs().max()))


def test_metadata_round_trips_and_describes_the_run(exported: dict, run_dir: Path, pipeline: dict):
    results = read_results(run_dir)
    _, metadata = _plain_load(exported["auto"])
    assert read_metadata(exported["auto"])[1] == metadata
    assert metadata["format"] == "longtail-export" and metadata["format_version"] == 1
    assert metadata["class_names"] == results["class_names"] and metadata["num_classes"] == 10
    chosen = results["auto"]["chosen"]
    assert metadata["classifier"]["label"] == chosen["label"] and metadata["classifier"]["method"] == chosen["method"]
    splits = pipeline["run"].splits
    assert metadata["input"] == {
        "layout": "NCHW",
        "dtype": "float32",
        "range": [0.0, 1.0],
        "normalized_inside": True,
        "channels": 1,
        "height": 28,
        "width": 28,
        "geometry": "resize",
        "resize_shorter": None,
        "mean": list(splits.mean),
        "std": list(splits.std),
    }
    tau = read_metadata(exported["tau_norm"])[1]["classifier"]
    assert tau["params"]["tau"] == results["methods"]["tau_norm"]["tau"] and tau["label"].startswith("tau_norm (tau=")
    ncm = read_metadata(exported["ncm"])[1]["classifier"]
    assert ncm["params"] == {"metric": "cl2n"} and "distance" in ncm["folding"]["output"]


@pytest.mark.slow  # 5-6 s: make test runs it (keeps plain pytest under 3 minutes)
def test_the_artifact_runs_with_plain_pytorch_without_longtail(exported: dict, pipeline: dict, tmp_path: Path):
    images = pipeline["images"][:16].float() / 255.0
    torch.save(images, tmp_path / "images.pt")
    script = f"""
import importlib.abc, json, sys
class NoLongtail(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "longtail":
            raise ImportError("longtail must not be needed")
sys.meta_path.insert(0, NoLongtail())
import torch
extra = {{"longtail.json": ""}}
model = torch.export.load({str(exported["lws"])!r}, extra_files=extra).module()
logits = model(torch.load({str(tmp_path / "images.pt")!r}))
assert "longtail" not in sys.modules
print(json.dumps({{"logits": logits.tolist(), "names": json.loads(extra["longtail.json"])["class_names"]}}))
"""
    done = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    _close(torch.tensor(answer["logits"]), _pipeline_logits(pipeline, "lws")[:16])
    assert answer["names"] == pipeline["run"].splits.class_names


@pytest.mark.slow  # 5-6 s: make test runs it (keeps plain pytest under 3 minutes)
def test_onnx_logits_equal_the_pipelines(run_dir: Path, pipeline: dict, tmp_path: Path, capsys):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    assert main(["export", str(run_dir), "--method", "ncm", "--out", str(tmp_path / "ncm"), "--onnx"]) == 0
    assert f"ONNX: {tmp_path / 'ncm.onnx'}" in capsys.readouterr().out
    session = ort.InferenceSession(str(tmp_path / "ncm.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    images = (pipeline["images"].float() / 255.0).numpy()
    (logits,) = session.run(["logits"], {"images": images})
    _close(torch.from_numpy(logits), _pipeline_logits(pipeline, "ncm"))
    properties = {p.key: p.value for p in onnx.load(str(tmp_path / "ncm.onnx")).metadata_props}
    assert json.loads(properties["longtail"]) == read_metadata(tmp_path / "ncm.pt2")[1]


@pytest.mark.slow  # an export of the tiny run: ~3 s
def test_an_onnx_conversion_that_fails_is_one_line_and_writes_nothing(
    run_dir: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
):
    """torch.onnx's error was a traceback, after the .pt2 had been written (the same command was then refused)."""
    pytest.importorskip("onnxscript")

    def fails(*args, **kwargs):
        raise RuntimeError("no ONNX symbolic for aten::weird_op\nmore lines of torch's report")

    monkeypatch.setattr(torch.onnx, "export", fails)
    line = _error(["export", str(run_dir), "--method", "crt", "--out", str(tmp_path / "m"), "--onnx"], capsys)
    assert "--onnx: torch.onnx cannot convert this model (RuntimeError: 'no ONNX symbolic for aten::weird_op')" in line
    assert line.endswith("nothing was written: export it without --onnx") and not any(tmp_path.iterdir())


@pytest.mark.slow  # two exports of the tiny run: ~5 s
def test_overwrite_without_onnx_removes_the_replaced_models_onnx(run_dir: Path, tmp_path: Path, capsys):
    """`export --overwrite` without --onnx left the replaced model's MODEL.onnx beside the new MODEL.pt2, where it
    would be taken for the new model's."""
    model = tmp_path / "m.pt2"
    assert main(["export", str(run_dir), "--method", "crt", "--out", str(model)]) == 0
    (tmp_path / "m.onnx").write_bytes(b"the replaced model's ONNX")  # as an earlier `export --onnx` left it
    capsys.readouterr()
    assert main(["export", str(run_dir), "--method", "ncm", "--out", str(model), "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert f"removed {tmp_path / 'm.onnx'}: the replaced model's ONNX file" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt2"]
    assert load_artifact(model)[1]["exported"] == "ncm"


@pytest.mark.slow  # cRT fine-tuning the last stage on images: ~10 s
def test_a_fine_tuned_crt_is_exported_with_its_own_backbone(run_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    overrides = ["decouple.trainable=last_stage", "decouple.crt.epochs=1"]
    # The shared run already holds a cRT fit on the frozen backbone: replacing it is asked for by name.
    assert main(["decouple", str(run), "--method", "crt", "--overwrite", *overrides]) == 0
    result = export_run(run, "crt", tmp_path / "crt.pt2")
    assert result.metadata["classifier"]["params"] == {"lr": 0.2, "trainable": "last_stage"}
    loaded = load_run(run)
    fitted = load_fitted(loaded)["crt"]
    assert fitted.backbone is not None
    images = loaded.splits.split("test").images
    module, _ = load_artifact(result.path)
    with torch.no_grad():
        expected = fitted.head.cpu()(fitted.backbone.cpu().forward_features(eval_transform(loaded.splits)(images)))
        _close(module(images.float() / 255.0), expected)
        # the stage-1 backbone gives other logits: the fine-tuned one was used
        assert not torch.allclose(
            loaded.model.head(loaded.model.forward_features(eval_transform(loaded.splits)(images))), expected, atol=1e-3
        )


# --- predict --------------------------------------------------------------------------------------------


def _correct_image(pipeline: dict) -> int:
    """Index of the test image that the auto classifier gets right with the highest probability."""
    top = _pipeline_logits(pipeline, "auto").softmax(1).max(1)
    right = top.indices == pipeline["labels"]
    assert right.any()
    return int(torch.where(right, top.values, -1.0).argmax())


def test_predict_prints_the_top_classes_of_a_png_and_an_npy(exported: dict, pipeline: dict, tmp_path: Path, capsys):
    index = _correct_image(pipeline)
    image = pipeline["images"][index, 0].numpy()
    Image.fromarray(image).save(tmp_path / "shoe.png")
    np.save(tmp_path / "shoe.npy", image)
    Image.fromarray(image).convert("RGB").resize((56, 56)).save(tmp_path / "big.jpg")  # another size, RGB
    name = pipeline["run"].splits.class_names[int(pipeline["labels"][index])]
    assert (
        main(
            [
                "predict",
                str(exported["auto"]),
                str(tmp_path / "shoe.png"),
                str(tmp_path / "shoe.npy"),
                str(tmp_path / "big.jpg"),
                "--topk",
                "3",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(tmp_path / "shoe.png") and out[1].strip().startswith("1.") and out[1].endswith(f"%  {name}")
    assert len(out) == 12 and out[4] == str(tmp_path / "shoe.npy") and out[3].strip().startswith("3.")
    assert main(["predict", str(exported["auto"]), str(tmp_path / "shoe.png"), "--json", "--topk", "10"]) == 0
    (answer,) = json.loads(capsys.readouterr().out)
    assert answer["top"][0]["class"] == name and len(answer["top"]) == 10
    assert sum(c["probability"] for c in answer["top"]) == pytest.approx(1.0, abs=1e-5)
    expected = _pipeline_logits(pipeline, "auto")[index].softmax(0)
    assert answer["top"][0]["probability"] == pytest.approx(float(expected.max()), abs=1e-5)


def test_read_image_applies_the_recorded_transform(tmp_path: Path):
    spec = {"channels": 3, "height": 8, "width": 8, "geometry": "resize_shorter_center_crop", "resize_shorter": 16}
    Image.new("RGB", (40, 20), (255, 0, 0)).save(tmp_path / "red.png")
    tensor = read_image(tmp_path / "red.png", spec)
    assert tensor.shape == (3, 8, 8) and float(tensor[0].min()) == 1.0 and float(tensor[1:].max()) == 0.0
    grey = {"channels": 1, "height": 4, "width": 6, "geometry": "resize", "resize_shorter": None}
    np.save(tmp_path / "chw.npy", np.full((3, 4, 6), 0.5, dtype=np.float32))  # channels first, floats in [0, 1]
    assert read_image(tmp_path / "chw.npy", grey).shape == (1, 4, 6)
    assert torch.allclose(read_image(tmp_path / "chw.npy", grey), torch.full((1, 4, 6), 128 / 255))


def test_image_file_runs_record_the_centre_crop_and_predict_reads_like_the_pipeline(tmp_path: Path):
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.png"):
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / name)
    test = CenterCrop(size=8, resize=10)
    dataset = ImageFileDataset(tmp_path, PathTable(["a.jpg", "b.png"]), np.array([0, 1]), test, eval_transform=test)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.2, 0.2)
    splits = DatasetSplits("files", dataset, dataset, dataset, 2, ["a", "b"], mean, std)
    spec = input_spec(splits)
    assert (spec["channels"], spec["height"], spec["width"]) == (3, 8, 8)
    assert spec["geometry"] == "resize_shorter_center_crop" and spec["resize_shorter"] == 10
    assert spec["mean"] == list(mean) and spec["std"] == list(std)
    images, _ = dataset.__getitems__([0, 1])  # what the pipeline feeds the network, before normalisation
    for i, name in enumerate(("a.jpg", "b.png")):
        assert torch.equal(read_image(tmp_path / name, spec), images[i].float() / 255.0)


# --- errors: one line each -----------------------------------------------------------------------------


def _error(args: list[str], capsys) -> str:
    assert main(args) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_predict_errors_name_the_culprit(exported: dict, run_dir: Path, tmp_path: Path, capsys):
    model = str(exported["auto"])
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "bad.npy").write_bytes(b"nope")
    Image.new("L", (28, 28)).save(tmp_path / "ok.png")
    assert "missing.png: image not found" in _error(["predict", model, str(tmp_path / "missing.png")], capsys)
    assert "broken.png: cannot read image" in _error(["predict", model, str(tmp_path / "broken.png")], capsys)
    assert "bad.npy: cannot read image" in _error(["predict", model, str(tmp_path / "bad.npy")], capsys)
    for not_a_model in (run_dir / "config.yaml", run_dir / "checkpoint.pt"):
        line = _error(["predict", str(not_a_model), str(tmp_path / "ok.png")], capsys)
        assert f"{not_a_model}: not a " in line  # a model exported by `longtail export` / a torch.export program
        assert "not a model exported by `longtail export`" in line or "not a torch.export program" in line
    assert "model file not found" in _error(["predict", str(tmp_path / "none.pt2"), str(tmp_path / "ok.png")], capsys)
    for k in ("0", "11"):
        assert f"--topk {k}: expected 1 to 10" in _error(
            ["predict", model, str(tmp_path / "ok.png"), "--topk", k], capsys
        )


def test_predict_names_a_directory_given_as_an_image_or_as_the_model(exported: dict, tmp_path: Path, capsys):
    """A folder of images gave "cannot read image (IsADirectoryError: [Errno 21] ...)"; a folder as MODEL,
    "model file not found"."""
    Image.new("L", (28, 28)).save(tmp_path / "ok.png")
    line = _error(["predict", str(exported["auto"]), str(tmp_path)], capsys)
    assert line.endswith(f"{tmp_path}: a directory, not an image file; give its images (e.g. {tmp_path}/*.png)")
    line = _error(["predict", str(tmp_path), str(tmp_path / "ok.png")], capsys)
    assert line.endswith(f"{tmp_path}: a directory, not a model file (a .pt2 written by `longtail export`)")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_predict_refuses_a_pipe_among_the_images_instead_of_waiting_for_a_writer(
    exported: dict, tmp_path: Path, capsys
):
    """A FIFO in a folder given as DIR/* made predict wait forever for a writer; /dev/zero was read until it failed."""
    os.mkfifo(tmp_path / "pipe.png")
    line = _error(["predict", str(exported["auto"]), str(tmp_path / "pipe.png")], capsys)
    assert line.endswith("pipe.png: not a regular file (a pipe, socket or device); expected an image file")


def test_the_predict_table_stays_aligned_with_long_class_names_many_ranks_and_odd_file_names():
    """The names came first, padded to the longest shown: one class name of 200 characters pushed every
    probability 200 columns right; ranks past 99 shifted their lines; a file name holding a new line split
    its heading in two."""
    long_name = "a class name " * 15
    top = [(long_name if rank == 3 else f"c{rank}", rank, 1 / (rank + 2)) for rank in range(1000)]
    text = format_predictions([Prediction("dir/new\nline.png", top), Prediction("b\udcff.png", top[:2])])
    lines = text.splitlines()
    assert lines[0] == repr("dir/new\nline.png") and lines[1001] == repr("b\udcff.png")
    assert lines[1] == "     1.  50.00%  c0" and lines[4] == f"     4.  20.00%  {long_name}"
    assert lines[1000] == "  1000.   0.10%  c999"
    assert {line.index("%") for line in lines if "%" in line} == {14}  # one column of probabilities


def test_export_out_an_existing_directory_is_refused_not_written_beside_it(run_dir: Path, tmp_path: Path, capsys):
    """``--out DIR`` got the .pt2 suffix first and wrote DIR.pt2, a file beside the folder named."""
    folder = tmp_path / "models"
    folder.mkdir()
    line = _error(["export", str(run_dir), "--method", "crt", "--out", str(folder)], capsys)
    assert line.endswith(f"{folder}: is a directory; --out expects a file name")
    line = _error(["export", str(run_dir), "--method", "crt", "--out", f"{tmp_path / 'new'}/"], capsys)
    assert f"is a directory name; --out expects a file name (e.g. {tmp_path / 'new' / 'crt.pt2'})" in line
    assert "is a run directory" in _error(["export", str(run_dir), "--method", "crt", "--out", str(run_dir)], capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"] and not any(folder.iterdir())


def test_predict_holds_the_images_as_uint8_until_their_batch_runs(tmp_path: Path):
    """Every image was held as float32 before the first forward pass: 10,000 images of 224 x 224, 6 GB."""
    spec = {"channels": 3, "height": 8, "width": 8, "geometry": "resize_shorter_center_crop", "resize_shorter": 10}
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (12, 9, 3), dtype=np.uint8)).save(paths[-1])
    pixels = read_pixels(paths[0], spec)
    assert pixels.dtype == torch.uint8 and torch.equal(read_image(paths[0], spec), pixels.float() / 255.0)
    seen: list[torch.Tensor] = []
    module = lambda batch: seen.append(batch) or batch.flatten(1)[:, :4]  # noqa: E731
    logits = image_logits(module, {"input": spec, "class_names": list("abcd")}, paths)
    assert seen[0].dtype == torch.float32 and torch.equal(seen[0], torch.stack([read_image(p, spec) for p in paths]))
    assert logits.shape == (3, 4)


_BAD_METADATA = {
    "no input": (lambda m: m.pop("input"), "'input': expected an object describing the model's input, got None"),
    "no class names": (lambda m: m.pop("class_names"), "'class_names': expected a list of class names (strings)"),
    "numbers for names": (lambda m: m.update(class_names=list(range(10))), "'class_names': expected a list of"),
    "fewer names": (lambda m: m.update(class_names=["a", "b"]), "names 2 classes; the program scores 10 per image"),
    "another size": (lambda m: m["input"].update(height=32), "1 x 32 x 28; the program takes inputs of 1 x 28 x 28"),
    "text channels": (lambda m: m["input"].update(channels="1"), "channels '1', height 28, width 28; expected"),
    "no height": (lambda m: m["input"].update(height=0), "height 0, width 28; expected channels 1 or 3"),
    "unknown geometry": (lambda m: m["input"].update(geometry="warp"), "geometry 'warp'; expected one of resize"),
    "features of images": (lambda m: m["input"].update(kind="features"), "features None; the program takes inputs"),
    "a text prior": (lambda m: m.update(prior="x"), "'prior': expected an object, got 'x'"),
}


@pytest.mark.parametrize("case", list(_BAD_METADATA))
def test_a_model_whose_metadata_does_not_describe_its_program_is_one_line(
    case: str, exported: dict, tmp_path: Path, capsys
):
    """A ``longtail.json`` from elsewhere or edited by hand: KeyError, IndexError, AttributeError tracebacks,
    torch's "Guard failed" assertion, or an unknown geometry silently read as ``resize``."""
    edit, message = _BAD_METADATA[case]
    program, metadata = read_metadata(exported["crt"])
    edit(metadata)
    save_artifact(tmp_path / "edited.pt2", program, metadata)
    Image.new("L", (28, 28)).save(tmp_path / "ok.png")
    line = _error(["predict", str(tmp_path / "edited.pt2"), str(tmp_path / "ok.png")], capsys)
    assert line.startswith(f"longtail: error: {tmp_path / 'edited.pt2'}: ") and message in line
    with pytest.raises(ExportError, match="edited.pt2"):
        load_artifact(tmp_path / "edited.pt2")


def test_an_npy_image_without_pixels_is_refused(tmp_path: Path):
    # uint8 (0, 28) was resized from nothing and "predicted"; float32 raised NumPy's "zero-size array to
    # reduction operation minimum which has no identity".
    spec = {"geometry": "resize", "width": 28, "height": 28, "channels": 1}
    for name, array in {"u8.npy": np.zeros((0, 28), np.uint8), "f32.npy": np.zeros((5, 0, 3), np.float32)}.items():
        np.save(tmp_path / name, array)
        with pytest.raises(DataError, match=rf"{name}: cannot read image \(ValueError: shape .*: no pixels"):
            read_image(tmp_path / name, spec)


def test_export_errors(run_dir: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("export", "features"))
    (run / "classifiers" / "lws.pt").unlink()
    line = _error(["export", str(run), "--method", "lws"], capsys)
    assert f"run `longtail decouple {run} --method lws` first" in line
    assert line.endswith("(or export stage 1's own classifier: --method joint)")  # a run not yet decoupled
    assert "--out" in _error(["export", str(run), "--method", "crt", "--out", str(tmp_path / "m.onnx")], capsys)
    line = _error(["export", str(run), "--method", "crt", "--out", str(tmp_path / "m.ONNX")], capsys)
    assert "expected the .pt2 file's name" in line  # m.ONNX is an ONNX name too (it was written as a .pt2)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        "importlib.util.find_spec", lambda name, *a: None if name == "onnxscript" else find_spec(name, *a)
    )
    line = _error(["export", str(run), "--method", "crt", "--onnx"], capsys)
    assert "onnxscript" in line and "longtail[export]" in line
    assert not (tmp_path / "run" / "export").exists()
