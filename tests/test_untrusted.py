"""A file from elsewhere never runs code: every reader of a file a user may have received, with a planted pickle.

Each test plants a pickle whose unpickling would create a marker directory (``hostile.Plant``) at one
entrance, runs the command that reads it, and asserts that the command fails with one line (or, for a
cache, ignores the file and recomputes) and that the marker never appears. The last tests keep the
class closed: no reader in the source may unpickle, and list paths may not leave ``data.root``.
"""

from __future__ import annotations

import ast
import io
import json
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from hostile import TINY, Plant, one_error_line, pickled_plant, torch_saved_plant, train_tiny_run
from longtail.cli import main
from longtail.data.filelist import leaves_root
from longtail.safe_text import parse_yaml

SRC = Path(__file__).resolve().parents[1] / "src" / "longtail"


@pytest.fixture(scope="module")
def tiny_run(tiny_fmnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch run with its joint classifier exported to ``export/joint.pt2``."""
    run = train_tiny_run(tiny_fmnist, tmp_path_factory.mktemp("untrusted") / "run")
    assert main(["export", str(run), "--method", "joint"]) == 0
    return run


@pytest.fixture
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of the tiny run to plant files in."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "ok.png"
    Image.new("L", (28, 28)).save(path)
    return path


def test_the_planted_pickles_would_run(tmp_path: Path):
    """The payload is live: a loader that executes pickles creates the marker (so the tests below can fail)."""
    marker = tmp_path / "MARKER"
    (tmp_path / "saved.pt").write_bytes(torch_saved_plant(marker))
    torch.load(tmp_path / "saved.pt", weights_only=False)
    assert marker.is_dir()
    marker.rmdir()
    with pytest.raises(Exception):  # noqa: B017 - what torch makes of the bare pickle's result does not matter
        torch.load(io.BytesIO(pickled_plant(marker)), weights_only=False)
    assert marker.is_dir()


# --- exported programs: longtail predict MODEL.pt2 ---------------------------------------------------

Entries = dict[str, bytes]


def _entries(path: Path) -> Entries:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _write(path: Path, entries: Entries, compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def _edit_json(entries: Entries, name: str, edit: Callable[[dict], None]) -> None:
    (key,) = [k for k in entries if k.endswith("/" + name)]
    tree = json.loads(entries[key])
    edit(tree)
    entries[key] = json.dumps(tree).encode()


def _prefix(entries: Entries) -> str:
    return next(iter(entries)).split("/", 1)[0] + "/"


def _pickled_weight(entries: Entries, marker: Path) -> None:
    def edit(config: dict) -> None:
        meta = next(iter(config["config"].values()))
        meta["use_pickle"] = True
        entries[_prefix(entries) + "data/weights/" + meta["path_name"]] = pickled_plant(marker)

    _edit_json(entries, "model_weights_config.json", edit)


def _pickled_constant(entries: Entries, marker: Path, record: str = "tensor_0") -> None:
    meta = {"path_name": record, "is_param": False, "use_pickle": True, "tensor_meta": None}
    _edit_json(entries, "model_constants_config.json", lambda config: config["config"].update({"c0": meta}))
    entries[_prefix(entries) + "data/constants/" + record] = pickled_plant(marker)


def _opaque_constant(entries: Entries, marker: Path) -> None:
    _pickled_constant(entries, marker, "opaque_obj_0")  # torch unpickles these with pickle.loads


def _sample_inputs(entries: Entries, marker: Path) -> None:
    # weights_only refuses it, and torch.export.load retries it with weights_only=False
    entries[_prefix(entries) + "data/sample_inputs/model.pt"] = pickled_plant(marker)


def _legacy_weights(entries: Entries, marker: Path) -> None:
    entries[_prefix(entries) + "data/weights/model.pt"] = pickled_plant(marker)


def _shape_expression(entries: Entries, marker: Path) -> None:
    def edit(program: dict) -> None:
        text = json.dumps(program)
        symbol = re.search(r"Symbol\('s[0-9]+'[^)]*\)", text).group()
        program.update(json.loads(text.replace(symbol, f"__import__('os').mkdir('{marker}') or {symbol}")))

    _edit_json(entries, "model.json", edit)


def _guard_code(entries: Entries, marker: Path) -> None:
    _edit_json(entries, "model.json", lambda p: p.update(guards_code=[f"__import__('os').mkdir('{marker}') is None"]))


def _operator_target(entries: Entries, marker: Path) -> None:
    def edit(program: dict) -> None:
        node = program["graph_module"]["graph"]["nodes"][0]
        node["target"] = "torch.os.mkdir"  # torch resolves any attribute path under torch
        node["inputs"] = [{"name": "path", "arg": {"as_string": str(marker)}, "kind": 1}]

    _edit_json(entries, "model.json", edit)


def _file_operator(entries: Entries, marker: Path, operator: str = "from_file") -> None:
    # An ATen operator that opens a file: from_file(shared=True) maps it writably into a tensor.
    node = {"target": f"torch.ops.aten.{operator}.default", "name": "opened", "metadata": {}, "outputs": []}
    node["inputs"] = [
        {"name": "filename", "arg": {"as_string": str(marker)}, "kind": 1},
        {"name": "shared", "arg": {"as_bool": True}, "kind": 1},
    ]
    _edit_json(entries, "model.json", lambda program: program["graph_module"]["graph"]["nodes"].insert(0, node))


def _string_argument(entries: Entries, marker: Path) -> None:
    _file_operator(entries, marker, "div")  # any other operator given a file name is refused just the same


def _injected_name(entries: Entries, marker: Path) -> None:
    # A parameter name becomes getattr(self, "NAME") in the code .module() generates and executes.
    evil = f'x"), getattr(__import__("os"), "mkdir")("{marker}"), ("'

    def edit(program: dict) -> None:
        spec = program["graph_module"]["signature"]["input_specs"][0]["parameter"]
        spec["parameter_name"] = evil

    _edit_json(entries, "model.json", edit)


def _shared_library(entries: Entries, marker: Path) -> None:
    entries[_prefix(entries) + "data/aotinductor/model/model.so"] = b"\x7fELF not really"


def _compressed(entries: Entries, marker: Path) -> None:
    pass  # written with ZIP_DEFLATED below: a compressed entry could inflate without bound


PLANTS = {
    "pickled weight": _pickled_weight,
    "pickled constant": _pickled_constant,
    "opaque constant": _opaque_constant,
    "sample inputs": _sample_inputs,
    "legacy weights file": _legacy_weights,
    "shape expression": _shape_expression,
    "guard code": _guard_code,
    "operator target": _operator_target,
    "file operator": _file_operator,
    "string argument": _string_argument,
    "parameter name": _injected_name,
    "shared library": _shared_library,
    "compressed entry": _compressed,
}
# The plants that plain torch.export.load (then .module() and a forward pass) does execute with this PyTorch.
LIVE = ("pickled weight", "pickled constant", "opaque constant", "sample inputs", "legacy weights file")
LIVE += ("shape expression", "guard code")


def _plant_pt2(tiny_run: Path, tmp_path: Path, plant: str) -> tuple[Path, Path]:
    marker = tmp_path / "MARKER"
    entries = _entries(tiny_run / "export" / "joint.pt2")
    PLANTS[plant](entries, marker)
    compression = zipfile.ZIP_DEFLATED if plant == "compressed entry" else zipfile.ZIP_STORED
    return _write(tmp_path / "model.pt2", entries, compression), marker


def test_a_rewritten_archive_still_loads(tiny_run: Path, tmp_path: Path, image: Path, capsys):
    """The archives below differ from a good one by their plant only: the rewrite itself is accepted."""
    model = _write(tmp_path / "model.pt2", _entries(tiny_run / "export" / "joint.pt2"))
    assert main(["predict", str(model), str(image)]) == 0
    assert str(image) in capsys.readouterr().out


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_predict_refuses_a_model_that_would_run_code(plant: str, tiny_run: Path, tmp_path: Path, image: Path, capsys):
    model, marker = _plant_pt2(tiny_run, tmp_path, plant)
    line = one_error_line(["predict", str(model), str(image)], capsys, str(model))
    assert "refusing to load" in line or "not a torch.export program" in line
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("plant", LIVE)
def test_plain_torch_export_load_would_run_them(plant: str, tiny_run: Path, tmp_path: Path):
    """Why the archive is checked: torch.export.load (then .module()) runs each of these plants."""
    model, marker = _plant_pt2(tiny_run, tmp_path, plant)
    try:
        torch.export.load(model).module()(torch.rand(2, 1, 28, 28))
    except Exception:  # noqa: BLE001 - most plants break the load after they have run
        pass
    assert marker.is_dir()


# --- run directories: checkpoint, classifiers, feature cache, partial state ---------------------------


def test_eval_refuses_a_checkpoint_that_would_run_code(run_copy: Path, tmp_path: Path, capsys):
    marker = tmp_path / "MARKER"
    (run_copy / "checkpoint.pt").write_bytes(torch_saved_plant(marker))
    one_error_line(["eval", str(run_copy)], capsys, "checkpoint.pt: unreadable checkpoint")
    assert not marker.exists()


def test_eval_refuses_a_classifier_file_that_would_run_code(run_copy: Path, tmp_path: Path, capsys):
    marker = tmp_path / "MARKER"
    (run_copy / "classifiers").mkdir(exist_ok=True)
    (run_copy / "classifiers" / "crt.pt").write_bytes(torch_saved_plant(marker, wrap="head"))
    one_error_line(["eval", str(run_copy)], capsys, "crt.pt: unreadable classifier")
    assert not marker.exists()


def test_a_feature_cache_that_would_run_code_is_recomputed(run_copy: Path, tmp_path: Path, capsys):
    marker = tmp_path / "MARKER"
    (run_copy / "features").mkdir(exist_ok=True)
    for split in ("train", "val", "test"):
        (run_copy / "features" / f"{split}.pt").write_bytes(torch_saved_plant(marker, wrap="x"))
    assert main(["decouple", str(run_copy), "--method", "ncm"]) == 0
    assert not marker.exists()
    cache = torch.load(run_copy / "features" / "train.pt", weights_only=True)
    assert isinstance(cache["x"], torch.Tensor)  # replaced by real features


def test_a_partial_state_that_would_run_code_is_ignored(run_copy: Path, tmp_path: Path, capsys):
    marker = tmp_path / "MARKER"
    (run_copy / "classifiers").mkdir(exist_ok=True)
    (run_copy / "classifiers" / "crt.partial").write_bytes(torch_saved_plant(marker, wrap="key"))
    assert main(["decouple", str(run_copy), "--method", "crt"]) == 0
    assert not marker.exists()
    assert (run_copy / "classifiers" / "crt.pt").is_file() and not (run_copy / "classifiers" / "crt.partial").exists()


# --- data and weights from elsewhere -------------------------------------------------------------------


def test_train_refuses_pretrained_weights_that_would_run_code(tiny_fmnist: Path, tmp_path: Path, capsys):
    marker, weights = tmp_path / "MARKER", tmp_path / "weights.pt"
    weights.write_bytes(torch_saved_plant(marker, wrap="state_dict"))
    out = tmp_path / "run"
    args = ["train", f"data.root={tiny_fmnist}", *TINY, f"model.pretrained={weights}", "--out", str(out)]
    one_error_line(args, capsys, f"model.pretrained={str(weights)!r}: not a PyTorch weights file")
    assert not marker.exists()


def test_cifar_pickles_that_would_run_code_are_refused(tmp_path: Path, capsys):
    marker, folder = tmp_path / "MARKER", tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(pickled_plant(marker))
    one_error_line(["data", "stats", "data.name=cifar10_lt", f"data.root={tmp_path}"], capsys, "not a CIFAR")
    assert not marker.exists()


def _npz_arrays() -> dict[str, np.ndarray]:
    labels = np.repeat(np.arange(2), 6)
    return {"x_train": np.zeros((12, 4, 4), np.uint8), "y_train": labels, "x_test": np.zeros((2, 4, 4), np.uint8)}


def test_npz_arrays_that_would_run_code_are_refused_or_never_read(tmp_path: Path, capsys):
    marker = tmp_path / "MARKER"
    plant = np.array([Plant(marker)], dtype=object)
    np.savez(tmp_path / "bad.npz", **{**_npz_arrays(), "y_test": plant})
    line = one_error_line(["data", "stats", "data.name=npz", f"data.path={tmp_path / 'bad.npz'}"], capsys, "pickle")
    assert "y_test" in line and not marker.exists()
    # An extra member nobody asked for is not read at all.
    np.savez(tmp_path / "extra.npz", **_npz_arrays(), y_test=np.array([0, 1]), notes=plant)
    assert main(["data", "stats", "data.name=npz", f"data.path={tmp_path / 'extra.npz'}"]) == 0
    assert not marker.exists()


def _feature_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x_train, x_test = rng.normal(size=(12, 4)).astype(np.float32), rng.normal(size=(2, 4)).astype(np.float32)
    return {"x_train": x_train, "y_train": np.repeat(np.arange(2), 6), "x_test": x_test, "y_test": np.array([0, 1])}


@pytest.mark.parametrize("entry", ["x_test", "class_names", "joint_weight"])
def test_features_arrays_that_would_run_code_are_refused_or_never_read(entry: str, tmp_path: Path, capsys):
    marker = tmp_path / "MARKER"
    plant = np.array([Plant(marker)], dtype=object)
    path = tmp_path / "f.npz"
    np.savez(path, **{**_feature_arrays(), "joint_bias": np.zeros(2, np.float32), entry: plant})
    args = ["train", "data.name=features", f"data.path={path}", "model.joint=file", "--out", str(tmp_path / "run")]
    line = one_error_line(args, capsys, "pickle")
    assert entry in line and not marker.exists() and not (tmp_path / "run").exists()
    # An extra member nobody asked for is not read at all.
    np.savez(path, **_feature_arrays(), notes=plant)
    assert main(["data", "stats", "data.name=features", f"data.path={path}"]) == 0
    assert not marker.exists()


def test_predictions_that_would_run_code_are_refused_or_never_read(tiny_run: Path, tmp_path: Path, capsys):
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    assert main(["decouple", str(run), "--method", "ncm"]) == 0
    capsys.readouterr()
    marker, path = tmp_path / "MARKER", run / "predictions" / "test.npz"
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    np.savez(path, **{**arrays, "ncm": np.array([Plant(marker)], dtype=object)})
    one_error_line(["compare", str(run), "--paired", "ncm", "joint"], capsys, "ncm holds Python objects, a pickle")
    assert not marker.exists()
    np.savez(path, **arrays, lws=np.array([Plant(marker)], dtype=object))  # a method not compared: never read
    assert main(["compare", str(run), "--paired", "ncm", "joint"]) == 0
    assert not marker.exists()


def test_predict_refuses_an_npy_image_that_would_run_code(tiny_run: Path, tmp_path: Path, capsys):
    marker, path = tmp_path / "MARKER", tmp_path / "image.npy"
    np.save(path, np.array([Plant(marker)], dtype=object), allow_pickle=True)
    one_error_line(["predict", str(tiny_run / "export" / "joint.pt2"), str(path)], capsys, "image.npy: cannot read")
    assert not marker.exists()


def test_a_config_with_a_python_tag_is_refused(tmp_path: Path, capsys):
    marker, config = tmp_path / "MARKER", tmp_path / "config.yaml"
    config.write_text(f"seed: !!python/object/apply:os.mkdir ['{marker}']\n")
    one_error_line(["config", str(config)], capsys, "not valid YAML")
    assert not marker.exists()


def test_an_eps_file_is_not_an_image(tiny_run: Path, tmp_path: Path, capsys):
    """Pillow renders EPS by running Ghostscript: an "image" that is PostScript is refused before that."""
    path = tmp_path / "photo.png"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\nshowpage\n")
    line = one_error_line(["predict", str(tiny_run / "export" / "joint.pt2"), str(path)], capsys, "photo.png")
    assert "UnidentifiedImageError" in line


# --- split files: paths stay inside data.root --------------------------------------------------------


@pytest.mark.parametrize(
    "path, why",
    [
        ("/etc/passwd", "is absolute"),
        ("../secret.png", "climbs above data.root"),
        ("a/../../secret.png", "climbs above data.root"),
        ("a/./b/../../../x.png", "climbs above data.root"),
    ],
)
def test_list_paths_that_leave_the_root_are_refused_by_line(path: str, why: str, tmp_path: Path, capsys):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "a" / "ok.png")
    train, test = tmp_path / "train.txt", tmp_path / "test.txt"
    train.write_text(f"a/ok.png 0\n\n{path} 1\n")
    test.write_text("a/ok.png 0\n")
    args = [
        "data.name=filelist",
        f"data.root={root}",
        f"data.filelist.train_list={train}",
        f"data.filelist.test_list={test}",
    ]
    one_error_line(["data", "stats", *args], capsys, f"{train}:3: path {path!r} {why}")


def test_paths_inside_the_root_are_fine_through_a_symlink_too():
    for inside in ("a/b.png", "a/../b.png", "./a/./b.png", "link/to/elsewhere.png", "..a/b.png", "a/..b"):
        assert leaves_root(inside) is None, inside


def test_a_symlink_inside_the_root_may_point_elsewhere(tmp_path: Path, capsys):
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    for folder in (elsewhere / "c0", elsewhere / "c1"):
        folder.mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(folder / f"{i}.png")
    root.mkdir()
    (root / "link").symlink_to(elsewhere)
    lines = [f"link/c{c}/{i}.png {c}\n" for c in (0, 1) for i in range(6)]
    (tmp_path / "train.txt").write_text("".join(lines))
    (tmp_path / "test.txt").write_text("link/c0/0.png 0\nlink/c1/0.png 1\n")
    args = [
        f"data.root={root}",
        f"data.filelist.train_list={tmp_path / 'train.txt'}",
        f"data.filelist.test_list={tmp_path / 'test.txt'}",
    ]
    sizes = ["data.image_size=8", "data.resize=8", "data.val_per_class=1"]
    assert main(["data", "stats", "data.name=filelist", *args, *sizes]) == 0


# --- the class stays closed: no reader in the source unpickles ---------------------------------------------


def _calls(name: str) -> list[tuple[str, int, ast.Call]]:
    """``(file, line, call)`` of every call of the dotted ``name`` (e.g. ``torch.load``) in longtail's code."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == name:
                found.append((str(path.relative_to(SRC)), node.lineno, node))
    return found


def _keyword(call: ast.Call, name: str) -> str | None:
    """The source of keyword argument ``name`` of ``call``, or None."""
    return next((ast.unparse(k.value) for k in call.keywords if k.arg == name), None)


UNPICKLERS = ("pickle.load", "pickle.loads", "pickle.Unpickler", "marshal.loads", "dill.load")
UNPICKLERS += ("joblib.load", "onnx.load", "onnx.load_model", "yaml.unsafe_load", "yaml.full_load", "np.loads")


@pytest.mark.slow  # a few seconds to ten: make test runs it (keeps plain pytest under 3 minutes)
def test_no_reader_in_the_source_executes_pickles():
    """Every torch.load passes weights_only=True and np.load allow_pickle=False; nothing else unpickles but
    CIFAR's restricted unpickler; torch.export.load runs only after the archive check; YAML goes through the
    alias-free safe loader; ONNX files are written, never read. A reader added later must keep to this."""
    for where, line, call in _calls("torch.load"):
        assert _keyword(call, "weights_only") == "True", f"{where}:{line}"
    # NumPy files are read by one reader (longtail.safe_npz), never by np.load: members checked, no pickle.
    assert _calls("np.load") == [] and _calls("numpy.load") == []
    for where, line, call in _calls("np.lib.format.read_array"):
        assert where == "safe_npz.py" and _keyword(call, "allow_pickle") == "False", f"{where}:{line}"
    for where, line, call in _calls("yaml.load"):  # parse_yaml's loader: SafeYamlLoader or a subclass, checked
        assert where == "safe_text.py" and _keyword(call, "Loader") == "loader", f"{where}:{line}"
        source = (SRC / where).read_text()
        assert source.index("issubclass(loader, SafeYamlLoader)") < source.index("yaml.load(text, Loader=loader)")
    with pytest.raises(TypeError, match="is not a SafeYamlLoader"):
        parse_yaml("a: 1", yaml.UnsafeLoader)  # type: ignore[arg-type]
    # JSON is parsed in one place, bounded in size and nesting (longtail.safe_text).
    assert {where for where, _, _ in _calls("json.loads") + _calls("json.load")} == {"safe_text.py"}
    for name in UNPICKLERS:
        assert _calls(name) == [], f"{name}: {[(where, line) for where, line, _ in _calls(name)]}"
    # torch.jit.load runs the file's own __setstate__ and operators (aten::save): TorchScript is never loaded.
    assert _calls("torch.jit.load") == [] and _calls("torch.load_script_module") == []
    loaders = ["safe_program.py"]  # one checked loader (load_program), which both entrances call
    assert sorted(where for where, _, _ in _calls("torch.export.load")) == loaders
    for where in loaders:  # it runs only after the archive check, on the same open file
        source = (SRC / where).read_text()
        assert source.index("check_archive(handle") < source.index("torch.export.load(handle")
    cifar = ast.parse((SRC / "data" / "cifar.py").read_text())
    unpicklers = [n for n in ast.walk(cifar) if isinstance(n, ast.ClassDef) and n.name == "_SafeUnpickler"]
    assert unpicklers and any(f.name == "find_class" for f in unpicklers[0].body if isinstance(f, ast.FunctionDef))


def test_the_reliability_page_names_tests_that_exist():
    """Every test docs/reliability.md cites by name (its promises' evidence) exists in tests/."""
    page = (SRC.parents[1] / "docs" / "reliability.md").read_text()
    cited = set(re.findall(r"`(test_[a-z0-9_]+)`", page))
    sources = "".join(path.read_text() for path in sorted(Path(__file__).parent.glob("test_*.py")))
    defined = set(re.findall(r"^def (test_[a-z0-9_]+)", sources, re.MULTILINE))
    assert cited and cited <= defined, sorted(cited - defined)
