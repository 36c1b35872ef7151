"""Any exported backbone: model.backbone=export:PATH (torch.export), used frozen for the linear probe and
stage 2, and refused when loading the file could run code from it (TorchScript: tests/test_program_files.py)."""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import copy_run, tiny_overrides
from longtail.cli import main
from longtail.errors import ConfigError
from longtail.models.external import create_external


class SmallBackbone(nn.Module):
    """(N, 1, 28, 28) -> (N, 64): a strided conv, BatchNorm, ReLU and 4 x 4 pooling (the bars' rows survive)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, 2, 1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.bn(self.conv(x)))).flatten(1)


def _spec(path: Path, **spec) -> Path:
    Path(str(path) + ".json").write_text(json.dumps({"num_features": 64, "input_size": [1, 28, 28], **spec}))
    return path


@pytest.fixture(scope="module")
def backbone_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The small network exported with torch.export (a dynamic batch), with its JSON."""
    root = tmp_path_factory.mktemp("backbones")
    torch.manual_seed(0)
    model = SmallBackbone().eval()
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.export.export(model, (torch.rand(2, 1, 28, 28),), dynamic_shapes=({0: batch},))
    torch.export.save(program, root / "net.pt2")
    return {"export": _spec(root / "net.pt2")}


def _train(backbone: str, fmnist: Path, out: Path, *extra: str) -> int:
    overrides = [*tiny_overrides(fmnist), "train.epochs=2", "train.lr=0.5", f"model.backbone={backbone}", *extra]
    return main(["train", *overrides, "--out", str(out), "--no-progress"])


@pytest.fixture(scope="module")
def export_run(backbone_files: dict[str, Path], tiny_fmnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("export") / "run"
    assert _train(f"export:{backbone_files['export']}", tiny_fmnist, run) == 0
    assert main(["decouple", str(run), "--method", "all"]) == 0
    return run


@pytest.mark.slow  # trains and decouples: make test runs it
def test_an_exported_backbone_trains_a_linear_probe_and_decouples(export_run: Path, backbone_files) -> None:
    from longtail.methods import expand_methods

    results = json.loads((export_run / "results.json").read_text())
    assert set(results["methods"]) == {"joint", *expand_methods(["all"])}
    assert results["methods"]["crt"]["macro"] > 30  # ten classes: chance is 10
    config = (export_run / "config.yaml").read_text()
    assert "trainable: none" in config and str(backbone_files["export"].absolute()) in config
    # The program is not in the checkpoint (the file is): its SHA-256 is, and the head.
    state = torch.load(export_run / "checkpoint.pt", weights_only=True)["model"]
    assert sorted(state) == ["backbone.file_sha256", "head.bias", "head.weight"]


@pytest.mark.slow  # trains on the exported backbone (export_run): make test runs it
def test_the_backbone_stays_frozen_and_matches_the_program(export_run: Path, backbone_files) -> None:
    from longtail.pipeline import load_run

    run = load_run(export_run)
    images = torch.rand(3, 1, 28, 28)
    program = torch.export.load(backbone_files["export"]).module()
    # allclose, not equal: the run keeps the weights channels-last, which changes the convolution's summation order.
    assert torch.allclose(run.model.backbone.forward_features(images), program(images), atol=1e-6)
    assert list(run.model.backbone.parameters()) == []


@pytest.mark.slow  # trains on the exported backbone (export_run): make test runs it
def test_a_run_on_an_exported_backbone_exports_and_writes_its_features(export_run: Path, tmp_path: Path) -> None:
    from longtail.export import load_artifact

    run = copy_run(export_run, tmp_path / "run")
    with warnings.catch_warnings(record=True) as caught:  # torch's note about its own LeafSpec is not shown
        warnings.simplefilter("always")
        assert main(["export", str(run), "--method", "crt", "--out", str(tmp_path / "crt.pt2")]) == 0
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
    module, metadata = load_artifact(tmp_path / "crt.pt2")
    assert module(torch.rand(5, 1, 28, 28)).shape == (5, 10)
    assert main(["features", str(run), "--out", str(tmp_path / "f.npz")]) == 0


def _error(capsys, *args: str) -> str:
    """The error line of a failing command (log lines before it aside)."""
    capsys.readouterr()
    assert main(list(args)) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert message.startswith("longtail: error: ")
    return message


def test_declared_and_produced_sizes_must_agree(backbone_files, tiny_fmnist: Path, tmp_path: Path, capsys) -> None:
    wrong = tmp_path / "wrong.pt2"
    wrong.write_bytes(backbone_files["export"].read_bytes())
    out = str(tmp_path / "run")
    base = ["train", *tiny_overrides(tiny_fmnist), "--out", out]
    _spec(wrong, num_features=32)
    assert "returns (2, 64) for a batch of 2, but wrong.pt2.json declares num_features=32" in _error(
        capsys, *base, f"model.backbone=export:{wrong}"
    )
    _spec(wrong, input_size=[3, 32, 32])
    assert "declares input_size [3, 32, 32], the data's test-time images are [1, 28, 28]" in _error(
        capsys, *base, f"model.backbone=export:{wrong}"
    )
    Path(str(wrong) + ".json").unlink()
    assert "wrong.pt2.json: not found" in _error(capsys, *base, f"model.backbone=export:{wrong}")
    assert "expected none: a backbone file is used frozen" in _error(
        capsys, *base, f"model.backbone=export:{backbone_files['export']}", "model.trainable=all"
    )
    assert not Path(out).exists()


def test_a_changed_backbone_file_is_refused(backbone_files, tiny_fmnist: Path, tmp_path: Path, capsys) -> None:
    mine = _spec(tmp_path / "net.pt2")
    mine.write_bytes(backbone_files["export"].read_bytes())
    run = tmp_path / "run"
    assert _train(f"export:{mine}", tiny_fmnist, run, "train.epochs=1") == 0
    assert main(["eval", str(run)]) == 0
    capsys.readouterr()
    torch.manual_seed(1)
    torch.export.save(torch.export.export(SmallBackbone().eval(), (torch.rand(2, 1, 28, 28),)), mine)
    assert "the file or its PATH.json changed since this run was trained" in _error(capsys, "eval", str(run))


# --- loading runs no code from the file ----------------------------------------------------------------------


def _rewrite(source: Path, target: Path, edit) -> Path:
    """A copy of zip ``source`` at ``target`` with ``edit(relative_name, bytes) -> bytes | None`` per member."""
    with zipfile.ZipFile(source) as archive:
        members = [(info.filename, archive.read(info.filename)) for info in archive.infolist()]
    with zipfile.ZipFile(target, "w") as out:
        for name, data in members:
            data = edit(name.partition("/")[2], data)
            if data is not None:
                out.writestr(name, data)
    return target


def _edit_json(member: str, change):
    def edit(name: str, data: bytes) -> bytes:
        if name != member and not (member.endswith("*") and name.startswith(member[:-1])):
            return data
        tree = json.loads(data)
        change(tree)
        return json.dumps(tree).encode()

    return edit


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _set_node_target(tree) -> None:
    tree["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"


def _set_expression(tree) -> None:
    values = tree["graph_module"]["graph"]["tensor_values"]
    next(iter(values.values()))["sizes"][0] = {"as_expr": {"expr_str": "eval(chr(49))", "hint": None}}


def _pickle_a_weight(tree) -> None:
    next(iter(tree["config"].values()))["use_pickle"] = True


REFUSED = {
    "pickled weight": (_edit_json("data/weights/model_weights_config.json", _pickle_a_weight), "is pickled"),
    "guard code": (_edit_json("models/model.json", lambda t: t.update(guards_code=["import os"])), "guard code"),
    "node target": (_edit_json("models/model.json", _set_node_target), "calls 'torch.os.system'"),
    "expression": (_edit_json("models/model.json", _set_expression), "not plain arithmetic"),
    "sample inputs": (
        lambda n, d: pickle.dumps(_RunsCode()) if n.startswith("data/sample_inputs/") else d,
        "does not load with weights_only=True",
    ),
}


@pytest.mark.parametrize("case", ["pickled weight", "guard code", "node target", "expression", "sample inputs"])
def test_a_pt2_that_would_run_code_is_refused(backbone_files, tmp_path: Path, case: str) -> None:
    edit, expected = REFUSED[case]
    evil = _spec(_rewrite(backbone_files["export"], tmp_path / "evil.pt2", edit))
    with pytest.raises(ConfigError, match="refusing to load this program file") as error:
        create_external(f"export:{evil}")
    assert "\n" not in str(error.value) and str(evil) in str(error.value)
    assert expected  # what the case plants (the refusal's wording is longtail.safe_program's)


def test_a_pt2_with_members_beyond_a_plain_program_is_refused(backbone_files, tmp_path: Path) -> None:
    with zipfile.ZipFile(backbone_files["export"]) as archive:
        top = archive.namelist()[0].partition("/")[0]
    evil = _rewrite(backbone_files["export"], tmp_path / "evil.pt2", lambda n, d: d)
    with zipfile.ZipFile(evil, "a") as archive:
        archive.writestr(f"{top}/data/aotinductor/model/model.so", b"\x7fELF")
    with pytest.raises(ConfigError, match="model.so") as error:
        create_external(f"export:{_spec(evil)}")
    assert "\n" not in str(error.value)
    create_external(f"export:{backbone_files['export']}")  # the plain one passes


@pytest.mark.parametrize(
    "target, why",
    [
        ("torch.ops.aten.save.default", "reaches outside its tensors"),  # writes a file
        ("torch.ops.aten.from_file.default", "reaches outside its tensors"),  # reads (or maps) a file
        ("torch.ops.aten.manual_seed.default", "is a TorchScript built-in"),  # the process's random stream
        ("torch.ops.aten.lower.default", "is a TorchScript built-in"),  # string operations
        ("torch.ops.aten.set_.source_Storage", "takes Storage 'source'"),  # raw storage
        ("torch.ops.aten._cufft_set_plan_cache_max_size.default", "reaches outside its tensors"),  # a global cache
    ],
)
def test_program_operators_are_an_allow_list(target: str, why: str, backbone_files, tmp_path: Path) -> None:
    """Only native ATen operators on tensors, numbers and mode names: none that opens a file or runs Python."""

    def retarget(tree) -> None:
        node = next(n for n in tree["graph_module"]["graph"]["nodes"] if n["target"].startswith("torch.ops.aten"))
        node["target"] = target

    evil = _spec(_rewrite(backbone_files["export"], tmp_path / "evil.pt2", _edit_json("models/model.json", retarget)))
    with pytest.raises(ConfigError, match=f"operator '{re.escape(target)}' {re.escape(why)}") as error:
        create_external(f"export:{evil}")
    assert "\n" not in str(error.value)


def test_every_operator_of_an_exported_resnet_is_allowed(tmp_path: Path) -> None:
    """The allow-list keeps what torch.export writes for a real network (convolutions, BatchNorm, pooling...)."""
    from longtail.models import create_backbone

    model = create_backbone("resnet8").eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (torch.rand(2, 3, 32, 32),), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "resnet8.pt2")
    _spec(tmp_path / "resnet8.pt2", num_features=model.num_features, input_size=[3, 32, 32])
    backbone = create_external(f"export:{tmp_path / 'resnet8.pt2'}")
    assert backbone.forward_features(torch.rand(3, 3, 32, 32)).shape == (3, model.num_features)


def test_a_top_level_sequential_is_accepted(tmp_path: Path) -> None:
    """``nn.Sequential(*list(model.children())[:-1])``, the usual way to cut a classifier off, names its weights
    ``0.weight``: a digit is no code, so the name check takes it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten())
    program = torch.export.export(
        model.eval(), (torch.rand(2, 1, 28, 28),), dynamic_shapes=({0: torch.export.Dim("b")},)
    )
    torch.export.save(program, tmp_path / "seq.pt2")
    backbone = create_external(f"export:{_spec(tmp_path / 'seq.pt2')}")
    images = torch.rand(3, 1, 28, 28)
    assert torch.allclose(backbone.forward_features(images), model(images))


class PlantedTorchScript(nn.Module):
    """A TorchScript module whose ``__setstate__`` writes a file (aten::save) when torch.jit.load reads it."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.weight = torch.zeros(1)
        self.marker = marker

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool, str]:
        return (self.weight, self.training, self.marker)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool, str]) -> None:
        self.weight, self.training, self.marker = state[0], state[1], state[2]
        torch.ops.aten.save(self.weight, self.marker)


# The test builds the plant with TorchScript itself, whose API torch now marks deprecated: expected here.
@pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")
def test_a_torchscript_backbone_is_refused_without_being_loaded(tiny_fmnist: Path, tmp_path: Path, capsys) -> None:
    """torch.jit.load ran the file's own __setstate__: a backbone file wrote a path of its choosing."""
    marker = tmp_path / "written"
    planted = tmp_path / "planted.ts"
    torch.jit.script(PlantedTorchScript(str(marker))).save(str(planted))
    _spec(planted)
    message = _error(capsys, "train", *tiny_overrides(tiny_fmnist), f"model.backbone=torchscript:{planted}",
                     "--out", str(tmp_path / "run"))  # fmt: skip
    assert "TorchScript files are not loaded" in message and "torch.export.export" in message
    assert "dynamic_shapes" in message and "model.backbone=export:" in message
    assert not marker.exists() and not (tmp_path / "run").exists()
    torch.jit.load(str(planted))  # the plant is live: loading the file is what writes the marker
    assert marker.exists()


def test_a_program_with_a_fixed_batch_size_is_refused_before_anything_is_written(
    tiny_fmnist: Path, tmp_path: Path, capsys
) -> None:
    """It passed a probe of 2 images, then stopped training at its first other batch with a guard traceback."""
    fixed = _spec(tmp_path / "fixed.pt2")
    torch.export.save(torch.export.export(SmallBackbone().eval(), (torch.rand(2, 1, 28, 28),)), fixed)
    out = tmp_path / "run"
    message = _error(capsys, "train", *tiny_overrides(tiny_fmnist), f"model.backbone=export:{fixed}", "--out", str(out))
    assert "runs on a batch of 2 images [1, 28, 28] but fails on a batch of 3" in message
    assert "exported for a fixed batch size; export it with dynamic_shapes=({0: torch.export.Dim('batch')},)" in message
    assert not out.exists()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[" * 20_000 + "]" * 20_000, "nested 20000 levels deep, at most 64"),  # a RecursionError before
        ("[" * 100_000 + "]" * 100_000, "200,000 bytes, more than a backbone JSON holds (65,536)"),
        (b'{"num_features": "\xff"}', "1: not UTF-8 text"),
    ],
    ids=["nested", "large", "not-utf8"],
)
def test_a_backbone_json_from_elsewhere_is_bounded(text, expected: str, backbone_files, tmp_path: Path) -> None:
    program = tmp_path / "net.pt2"
    program.write_bytes(backbone_files["export"].read_bytes())
    sidecar = Path(str(program) + ".json")
    sidecar.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError, match=re.escape(expected)) as error:
        create_external(f"export:{program}")
    assert str(sidecar) in str(error.value) and "\n" not in str(error.value)


def test_trainable_none_freezes_a_registered_backbone_too() -> None:
    from longtail.models import create_model
    from longtail.models.pretrained import configure_backbone

    model = create_model("resnet8", 1, 10)
    configure_backbone(model, backbone="resnet8", pretrained=None, trainable="none")
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    assert not model.train().backbone.training  # BatchNorm statistics stay as they are
