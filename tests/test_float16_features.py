"""float16 features: files written and read as float16, kept so in memory, used in float32; the cache's dtype key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from longtail.cli import main
from longtail.config import load_config
from longtail.data.features import load_features
from longtail.engine.feature_cache import cached_features, feature_path
from longtail.engine.feature_rows import float_chunks, predicted_classes
from longtail.errors import ConfigError, DataError
from longtail.methods.ncm import NCMClassifier
from longtail.methods.norm_sweep import tau_sweep_predictions
from longtail.models.heads import LinearHead
from longtail.safe_npz import open_npz
from test_features_entrance import write_features


def test_float16_file_round_trip_stays_float16_in_memory(tmp_path: Path) -> None:
    path = write_features(tmp_path / "f.npz", dtype=np.float16, val=True)
    loaded = load_features(path)
    with np.load(path) as archive:  # our own file: compare with what was written
        for split in ("train", "val", "test"):
            assert loaded["x"][split].dtype == torch.float16
            assert np.array_equal(loaded["x"][split].numpy(), archive[f"x_{split}"])


def test_bad_feature_dtype_is_one_line_error_naming_the_file(tmp_path: Path) -> None:
    path = write_features(tmp_path / "ints.npz", x_train=np.zeros((221, 12), np.int32))
    with pytest.raises(DataError) as error:
        load_features(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "x_train is int32" in message
    assert "expected float16/32/64" in message


def test_float16_chunks_and_predictions_are_float32_arithmetic() -> None:
    x = torch.randn(50, 8).half()
    head = LinearHead(8, 4).eval()
    chunks = list(float_chunks(x, rows=16))
    assert [start for start, _ in chunks] == [0, 16, 32, 48]
    assert all(chunk.dtype == torch.float32 for _, chunk in chunks)
    with torch.no_grad():
        expected = head(x.float()).argmax(1)
    assert torch.equal(predicted_classes(head, x, rows=16), expected)
    assert torch.equal(predicted_classes(head, x), expected)  # rows from the head's width
    empty = predicted_classes(head, x[:0])
    assert empty.shape == (0,) and empty.dtype == torch.int64


def test_ncm_and_tau_sweep_on_float16_equal_float32_of_the_same_values() -> None:
    x16 = (torch.randn(300, 6) + torch.arange(3).repeat(100).unsqueeze(1)).half()
    y = torch.arange(3).repeat(100)
    x32 = x16.float()
    half, full = NCMClassifier("cl2n").fit(x16, y, 3), NCMClassifier("cl2n").fit(x32, y, 3)
    assert torch.allclose(half.centroids_, full.centroids_, atol=1e-6)
    weight = torch.randn(3, 6)
    taus = [0.0, 0.5, 1.0]
    assert torch.equal(tau_sweep_predictions(x16, weight, taus), tau_sweep_predictions(x32, weight, taus))


def test_cache_dtype_key_declared_checked_and_defaults_to_float32() -> None:
    assert load_config(None, []).decouple.cache_dtype == "float32"
    assert load_config(None, ["decouple.cache_dtype=float16"]).decouple.cache_dtype == "float16"
    with pytest.raises(ConfigError, match="decouple.cache_dtype"):
        load_config(None, ["decouple.cache_dtype=float64"])


def test_float16_cache_is_stored_half_and_stale_for_float32(tmp_path: Path) -> None:
    labels = torch.arange(4)
    calls = []

    def compute() -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(1)
        return torch.randn(4, 3), labels

    x, _, hit = cached_features(tmp_path, "train", {"split": "train"}, labels, compute, torch.float16)
    assert x.dtype == torch.float16 and not hit
    x, _, hit = cached_features(tmp_path, "train", {"split": "train"}, labels, compute, torch.float16)
    assert x.dtype == torch.float16 and hit and len(calls) == 1
    assert feature_path(tmp_path, "train").is_file()
    x, _, hit = cached_features(tmp_path, "train", {"split": "train"}, labels, compute)  # float32 asked: recomputed
    assert x.dtype == torch.float32 and not hit and len(calls) == 2


def test_features_command_writes_float16(tiny_run: Path, tmp_path: Path) -> None:
    from conftest import copy_run

    run = copy_run(tiny_run, tmp_path / "run")
    out = tmp_path / "half.npz"
    assert main(["features", str(run), "--out", str(out), "--dtype", "float16"]) == 0
    with open_npz(out, what="features") as archive:
        assert all(archive.read(f"x_{split}").dtype == np.float16 for split in ("train", "val", "test"))
    assert load_features(out)["x"]["train"].dtype == torch.float16


def test_features_beyond_float16_are_refused_not_written_as_inf(tmp_path: Path, capsys) -> None:
    from hostile import one_error_line
    from test_features_entrance import FEATURE_OVERRIDES

    # A linear probe on features of magnitude ~1e5: `longtail features --dtype float16` wrote them as inf
    # (with NumPy's overflow warning) and exited 0; `longtail train` on that file then refused it.
    source = write_features(tmp_path / "big.npz", counts=(30, 10, 6), d=4, val=True)
    with np.load(source) as arrays:
        scaled = {k: v * 1e5 if k.startswith("x_") else v for k, v in arrays.items()}
    np.savez(source, **scaled)
    run = tmp_path / "run"
    assert main(["train", *FEATURE_OVERRIDES, "train.epochs=1", f"data.path={source}", "--out", str(run)]) == 0
    capsys.readouterr()
    out = tmp_path / "half.npz"
    one_error_line(["features", str(run), "--out", str(out), "--dtype", "float16"], capsys,
                   "--dtype float16: the train features reach", "--dtype float32")  # fmt: skip
    assert not out.exists()
    assert main(["features", str(run), "--out", str(out)]) == 0  # float32 holds them


def test_a_float16_cache_refuses_features_beyond_its_range(tmp_path: Path) -> None:
    labels = torch.arange(4)
    big = torch.full((4, 3), 7e4)  # float16's largest is 65504: cached as inf, stage 2 fitted on inf
    with pytest.raises(DataError, match=r"decouple.cache_dtype=float16: the train features reach 7e\+04"):
        cached_features(tmp_path, "train", {"split": "train"}, labels, lambda: (big, labels), torch.float16)
    assert not feature_path(tmp_path, "train").exists()
    x, _, _ = cached_features(tmp_path, "train", {"split": "train"}, labels, lambda: (big, labels))
    assert torch.equal(x, big)
