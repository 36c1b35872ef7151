"""Small inputs must not exhaust the machine: every one here is refused with one line, in bounded memory and time.

A YAML file of a few hundred bytes, an ``.npz`` of a megabyte, a split file of three lines, a number in
a config, a PNG header: each could make a command allocate gigabytes or overflow after writing its run
directory. Each test feeds one and asserts a single error line (or, for an unused member, success in
bounded memory) before anything is written.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import copy_run
from hostile import TINY, one_error_line, png_header, train_tiny_run
from longtail.cli import main
from longtail.config import MAX_CONFIG_BYTES, SHOWN_CHARS
from longtail.data.longtail import FREE_CLASSES, class_counts
from longtail.errors import DataError

SRC = Path(__file__).resolve().parents[1] / "src"


# --- YAML configs ---------------------------------------------------------------------------------

# 285 bytes that expand to 9**6 strings: `longtail config` printed a 39 MB line, one more level ran for minutes.
LAUGHS = """a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
data: {root: *f}
"""


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_yaml_aliases_are_refused_at_once(tmp_path: Path, capsys):
    start = time.perf_counter()
    line = one_error_line(["config", str(_config(tmp_path, LAUGHS))], capsys, "line 2: YAML alias '*a' refused")
    assert time.perf_counter() - start < 5 and len(line) < 300
    # Anchors alone copy nothing and are fine.
    assert main(["config", str(_config(tmp_path, "seed: &s 3\n"))]) == 0


@pytest.mark.parametrize(
    "text, expected",
    [
        ("data: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested too deeply"),
        ("seed: " + "9" * 5000 + "\n", "not valid YAML (ValueError)"),
        ("seed: 1\n" + "#" * MAX_CONFIG_BYTES + "\n", "more than a config's"),
    ],
    ids=["deep", "digits", "large"],
)
def test_yaml_that_would_take_the_stack_or_the_memory_is_refused(text: str, expected: str, tmp_path: Path, capsys):
    one_error_line(["config", str(_config(tmp_path, text))], capsys, expected)


@pytest.mark.parametrize(
    "text, key",
    [
        ("data:\n  root: [" + ", ".join(["'x'"] * 50_000) + "]\n", "data.root=['x', 'x'"),
        ("data: [" + ", ".join(["1"] * 50_000) + "]\n", "data: expected a mapping, got [1, 1"),
        ("train:\n  epochs: " + "9" * 4000 + "\n", "train.epochs=9999"),
        ("? " + "x" * 100_000 + "\n: 1\n", "unknown config key 'xxxx"),  # an explicit key: any length
    ],
    ids=["value", "section", "integer", "key"],
)
def test_errors_show_a_cut_value(text: str, key: str, tmp_path: Path, capsys):
    line = one_error_line(["config", str(_config(tmp_path, text))], capsys, key)
    assert len(line) < 2 * SHOWN_CHARS + 200, line


def test_an_override_with_a_huge_value_is_cut(capsys):
    line = one_error_line(["config", "seed=" + "9" * 5000], capsys, "seed='9999")
    assert len(line) < 2 * SHOWN_CHARS + 200 and "characters" in line


# --- integers that would overflow: refused by name before anything is written ---------------------------

HUGE = 10**23


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ([f"seed={HUGE}"], f"seed={HUGE}: expected an integer in [0, 2**63)"),
        ([f"data.seed={HUGE}"], f"data.seed={HUGE}: expected an integer in [0, 2**63)"),
        ([f"data.n_max={HUGE}"], f"data.n_max={HUGE}: expected an integer in [-2**63"),
        ([f"train.batch_size={HUGE}"], f"train.batch_size={HUGE}: expected an integer in [1, 16,777,216]"),
        (["train.batch_size=1073741824"], "train.batch_size=1073741824: expected an integer in [1, 16,777,216]"),
        (["eval.batch_size=1073741824"], "eval.batch_size=1073741824: expected an integer in [1, 16,777,216]"),
        (
            ["decouple.crt.batch_size=1073741824"],
            "decouple.crt.batch_size=1073741824: expected 'auto' or an integer in [1, 16,777,216]",
        ),
        ([f"data.crop_padding={HUGE}"], f"data.crop_padding={HUGE}: expected an integer in [0, 128]"),
        (["data.crop_padding=1000000"], "data.crop_padding=1000000: expected an integer in [0, 128]"),
        (["data.image_size=100000", "data.resize=100000"], "data.image_size=100000: expected an integer in [1, 4,096]"),
        (["data.resize=100000"], "data.resize=100000: expected an integer in [data.image_size, 8,192]"),
        (["data.num_workers=100000"], "data.num_workers=100000: expected null or an integer in [0, 256]"),
        (["data.decode_threads=100000"], "data.decode_threads=100000: expected an integer in [0, 256]"),
        (["decouple.views=100000"], "decouple.views=100000: expected an integer in [0, 256]"),
        (["decouple.tau.steps=1000000000"], "decouple.tau.steps=1000000000: expected an integer in [1, 10,001]"),
        (
            ["train.class_aware.num_samples_cls=1099511627776"],
            "train.class_aware.num_samples_cls=1099511627776: expected an integer in",
        ),
        (["train.epochs=1000000000"], "train.epochs=1000000000: expected an integer in [1, 100,000]"),
        (["decouple.auto_lr_factors=[" + ",".join(["1"] * 65) + "]"], "expected a list of 1 to 64 numbers in (0, "),
    ],
    ids=lambda value: value[0].split("=")[0] if isinstance(value, list) else None,
)
def test_integers_out_of_range_are_refused_before_anything_is_written(
    overrides: list[str], expected: str, tmp_path: Path, capsys
):
    out = tmp_path / "run"
    one_error_line(["train", *TINY, *overrides, "--out", str(out)], capsys, expected)
    assert not out.exists()


# Finite in float64 but beyond float32: SGD's scalars overflowed at the first step (a RuntimeError traceback
# after the run directory was made), a τ grid's TensorBoard step (100 τ) after results.json was written.
BEYOND_FLOAT32 = [
    ("train.lr=1e300", "train.lr=1e+300: expected a number in (0, 1e+06]"),
    ("train.weight_decay=1e300", "train.weight_decay=1e+300: expected a number in [0, 1e+06]"),
    ("decouple.crt.lr=1e39", "decouple.crt.lr=1e+39: expected a number in (0, 1e+06]"),
    ("decouple.las.weight_decay=1e300", "decouple.las.weight_decay=1e+300: expected a number in [0, 1e+06]"),
    ("decouple.wb.weight_decay_grid=[1e300]", "expected a list of numbers in [0, 1e+06]"),
    ("decouple.auto_lr_factors=[1e300]", "expected a list of 1 to 64 numbers in (0, 1e+06]"),
    ("decouple.tau.max=1e300", "decouple.tau.max=1e+300: expected a number in [decouple.tau.min, 1e+06]"),
    ("decouple.logit_adjust.max=1e300", "expected a number in [decouple.logit_adjust.min, 1e+06]"),
]


@pytest.mark.parametrize("override, expected", BEYOND_FLOAT32, ids=[o.split("=")[0] for o, _ in BEYOND_FLOAT32])
def test_numbers_beyond_what_the_arithmetic_holds_are_refused_before_anything_is_written(
    override: str, expected: str, tmp_path: Path, capsys
):
    out = tmp_path / "run"
    one_error_line(["train", *TINY, override, "--out", str(out)], capsys, expected)
    assert not out.exists()


def test_the_largest_seed_trains(tiny_fmnist: Path, tmp_path: Path):
    assert main(["train", f"data.root={tiny_fmnist}", *TINY, f"seed={2**63 - 1}", "--out", str(tmp_path / "r")]) == 0


# --- .npz files: only the needed members, each checked from its header ------------------------------------


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _npy_header(shape: tuple[int, ...], descr: str) -> bytes:
    """A ``.npy`` header declaring ``shape``: a file that claims far more than it holds."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _arrays() -> dict[str, bytes]:
    labels = np.repeat(np.arange(2), 6)
    return {
        "x_train.npy": _npy(np.zeros((12, 4, 4), np.uint8)),
        "y_train.npy": _npy(labels),
        "x_test.npy": _npy(np.zeros((2, 4, 4), np.uint8)),
        "y_test.npy": _npy(np.array([0, 1])),
    }


def _zeros_deflated(size: int, chunk: int = 1 << 24) -> bytes:
    """A raw deflate stream of ``size`` zero bytes, built in a fraction of a second.

    After a full flush the compressor starts afresh, so every further chunk compresses to the same bytes.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    repeated = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return first + repeated * (size // chunk - 1) + compressor.flush()


def _write_zip(path: Path, members: list[tuple[str, bytes, int, int, int]]) -> Path:
    """A zip of ``(name, data as stored, method, crc32, uncompressed size)`` members, written by hand."""
    local, central = io.BytesIO(), io.BytesIO()
    for name, data, method, crc, size in members:
        offset, encoded = local.tell(), name.encode()
        fields = (20, 0, method, 0, 0x21, crc, len(data), size, len(encoded), 0)
        local.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields) + encoded + data)
        central.write(struct.pack("<IH", 0x02014B50, 20) + struct.pack("<HHHHHIIIHHHHHII", *fields, 0, 0, 0, 0, offset))
        central.write(encoded)
    count, directory = len(members), central.getvalue()
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(directory), local.tell(), 0)
    path.write_bytes(local.getvalue() + directory + end)
    return path


def _stored(name: str, data: bytes) -> tuple[str, bytes, int, int, int]:
    return name, data, 0, zlib.crc32(data), len(data)


def _bomb(path: Path, members: dict[str, bytes] | None = None, size: int = 1 << 30) -> Path:
    """A valid .npz of ``members`` (default: an image dataset's) and an unused member ``notes.npy`` of ``size``
    zero bytes, about a megabyte on disk."""
    crc = 0
    for _ in range(size >> 24):
        crc = zlib.crc32(bytes(1 << 24), crc)
    stored = [_stored(name, data) for name, data in (_arrays() if members is None else members).items()]
    stored.append(("notes.npy", _zeros_deflated(size), 8, crc, size))
    return _write_zip(path, stored)


def _peak_growth_kib(*args: str) -> tuple[str, int, str]:
    """Run ``longtail ARGS`` in a fresh interpreter: (exit status, growth of its peak memory in KiB, stderr)."""
    probe = (
        "import resource, sys\n"
        "from longtail.cli import main\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "status = main(sys.argv[1:])\n"
        "print(status, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", probe, *args], env=env, capture_output=True, text=True, timeout=300)
    status, grown_kib = result.stdout.split()[-2:]
    return status, int(grown_kib), result.stderr


@pytest.mark.slow  # a few seconds to ten: make test runs it (keeps plain pytest under 3 minutes)
def test_an_unused_member_of_a_gibibyte_is_never_decompressed(tmp_path: Path):
    path = _bomb(tmp_path / "bomb.npz")
    assert path.stat().st_size < 2 << 20
    with zipfile.ZipFile(path) as archive:  # a well-formed archive: the member does inflate to 1 GiB
        assert archive.getinfo("notes.npy").file_size == 1 << 30 and archive.testzip() is None
    status, grown_kib, err = _peak_growth_kib("data", "stats", "data.name=npz", f"data.path={path}", "--json")
    assert status == "0", err
    assert grown_kib < 100 * 1024, f"peak memory grew by {grown_kib // 1024} MiB"


def _feature_arrays() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    return {
        "x_train.npy": _npy(rng.normal(size=(12, 4)).astype(np.float32)),
        "y_train.npy": _npy(np.repeat(np.arange(2), 6)),
        "x_test.npy": _npy(rng.normal(size=(2, 4)).astype(np.float32)),
        "y_test.npy": _npy(np.array([0, 1])),
    }


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
def test_the_features_reader_never_decompresses_an_unused_member(tmp_path: Path):
    """data.name=features read every member of an .npz whole: a 1 MB file took a gibibyte."""
    path = _bomb(tmp_path / "features.npz", _feature_arrays())
    assert path.stat().st_size < 2 << 20
    status, grown_kib, err = _peak_growth_kib("data", "stats", "data.name=features", f"data.path={path}", "--json")
    assert status == "0", err
    assert grown_kib < 100 * 1024, f"peak memory grew by {grown_kib // 1024} MiB"


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
def test_compare_never_decompresses_an_unused_predictions_member(tiny_decoupled_run: Path, tmp_path: Path):
    """`compare --paired` read every method's predictions whole: a 1 MB predictions/test.npz took a gibibyte."""
    run = copy_run(tiny_decoupled_run, tmp_path / "run")
    predictions = run / "predictions" / "test.npz"
    with zipfile.ZipFile(predictions) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    _bomb(predictions, members)
    status, grown_kib, err = _peak_growth_kib("compare", str(run), "--paired", "crt", "joint")
    assert status == "0", err
    assert grown_kib < 100 * 1024, f"peak memory grew by {grown_kib // 1024} MiB"


def test_a_predictions_member_of_an_absurd_size_is_refused_unread(tiny_decoupled_run: Path, tmp_path, capsys):
    run = copy_run(tiny_decoupled_run, tmp_path / "run")
    path = run / "predictions" / "test.npz"
    with np.load(path) as archive:
        members = {f"{name}.npy": _npy(archive[name]) for name in archive.files}
    members["crt.npy"] = _npy_header((10**9,), "<i4") + bytes(64)
    _write_zip(path, [_stored(name, data) for name, data in members.items()])
    one_error_line(["compare", str(run), "--paired", "crt", "joint"], capsys, "crt", "is not")
    members["crt.npy"] = _npy_header((len(np.load(path)["labels"]),), "<i4")  # 200 labels, none of their bytes
    _write_zip(path, [_stored(name, data) for name, data in members.items()])
    one_error_line(["compare", str(run), "--paired", "crt", "joint"], capsys, "crt declares", "its member holds")


def test_a_features_member_declaring_more_than_memory_is_refused_unread(tmp_path: Path, capsys):
    members = {**_feature_arrays(), "x_train.npy": _npy_header((10**9, 10**4), "<f4") + bytes(64)}
    path = _write_zip(tmp_path / "f.npz", [_stored(name, data) for name, data in members.items()])
    one_error_line(["data", "stats", "data.name=features", f"data.path={path}"], capsys, "x_train declares")


@pytest.mark.parametrize(
    "replaced, expected",
    [
        (
            {"x_train.npy": _npy_header((10**9, 28, 28), "|u1"), "y_train.npy": _npy_header((10**9,), "<i8")},
            "x_train declares 784,000,000,000 bytes of data, but its member holds",
        ),
        ({"y_train.npy": _npy_header((10**9,), "<i8")}, "y_train is int64 of shape (1000000000,), expected 12"),
        ({"class_names.npy": _npy_header((10**6,), "<U8")}, "class_names is <U8 of shape (1000000,)"),
        ({"class_names.npy": _npy_header((2,), "<U100000000")}, "each under 1024 characters"),
    ],
    ids=["images", "labels", "names", "long-names"],
)
def test_a_member_declaring_an_absurd_size_is_refused_unread(replaced: dict, expected: str, tmp_path: Path, capsys):
    members = {**_arrays(), **{name: header + bytes(64) for name, header in replaced.items()}}
    path = _write_zip(tmp_path / "d.npz", [_stored(name, data) for name, data in members.items()])
    one_error_line(["data", "stats", "data.name=npz", f"data.path={path}"], capsys, expected)


# --- labels: no table as long as a stray huge label ---------------------------------------------------


def test_a_split_file_with_a_huge_label_is_refused(tmp_path: Path, capsys):
    path = tmp_path / "val.txt"
    path.write_text("a.jpg 0\nb.jpg 1\nc.jpg 2147483646\n")
    start = time.perf_counter()
    one_error_line(["data", "stats", str(path)], capsys, f"{path}: label 2147483646 implies 2,147,483,647 classes")
    assert time.perf_counter() - start < 5


def test_a_sparse_split_file_still_has_its_statistics(tmp_path: Path, capsys):
    path = tmp_path / "test.txt"
    path.write_text(f"a.jpg 0\nb.jpg 0\nc.jpg {FREE_CLASSES - 1}\n")
    assert main(["data", "stats", str(path)]) == 0
    assert f"{FREE_CLASSES:,} classes, 3 images" in capsys.readouterr().out


def test_class_counts_refuses_a_label_beyond_the_classes():
    assert class_counts(np.array([0, 2, 2]), 3).tolist() == [1, 0, 2]
    for labels in ([0, 2**31 - 2], [-1, 0]):
        with pytest.raises(DataError, match="expected class indices 0 to 2"):
            class_counts(np.array(labels), 3)


# --- predict: images whose declared size is a bomb ---------------------------------------------------------


@pytest.fixture(scope="module")
def model(tiny_fmnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = train_tiny_run(tiny_fmnist, tmp_path_factory.mktemp("small") / "run")
    assert main(["export", str(run), "--method", "joint"]) == 0
    return run / "export" / "joint.pt2"


def test_predict_refuses_a_decompression_bomb_in_one_line(model: Path, tmp_path: Path, capsys):
    path = tmp_path / "huge.png"
    path.write_bytes(png_header(50_000, 50_000))
    one_error_line(["predict", str(model), str(path)], capsys, "huge.png: image too large")


def _rewritten_artifact(model: Path, target: Path, member: str, data: bytes) -> Path:
    """A copy of the artifact ``model`` whose entry ending in ``member`` holds ``data`` (stored, as torch writes)."""
    with zipfile.ZipFile(model) as archive, zipfile.ZipFile(target, "w") as out:
        for info in archive.infolist():
            out.writestr(info.filename, data if info.filename.endswith(member) else archive.read(info.filename))
    return target


@pytest.mark.parametrize("member", ["extra/longtail.json", "models/model.json"])
def test_predict_refuses_json_nested_deeper_than_a_program(member: str, model: Path, tmp_path: Path, capsys):
    """A 200 KB JSON entry nested 100,000 deep was a RecursionError in the metadata reader."""
    evil = _rewritten_artifact(model, tmp_path / "evil.pt2", member, b"[" * 100_000 + b"]" * 100_000)
    image = tmp_path / "i.npy"
    np.save(image, np.zeros((28, 28), np.uint8))
    one_error_line(["predict", str(evil), str(image)], capsys, Path(member).name, "nested 100000 levels deep")


def test_an_image_check_cache_nested_too_deeply_is_ignored(tmp_path: Path):
    from longtail.data.image_check import _read_cache

    cache = tmp_path / "cache.json"
    cache.write_text("[" * 100_000 + "]" * 100_000)
    assert _read_cache(cache, "signature", 10) is None  # checked again, as for any cache it cannot use


def test_predict_refuses_an_npy_declaring_a_huge_image(model: Path, tmp_path: Path, capsys):
    path = tmp_path / "huge.npy"
    path.write_bytes(_npy_header((50_000, 50_000, 3), "|u1") + bytes(64))
    one_error_line(["predict", str(model), str(path)], capsys, "huge.npy: image too large")
