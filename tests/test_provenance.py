"""Provenance: every artifact records what it was computed from, and nothing combines artifacts of different data.

Runs here are linear probes on small features files (data.name=features): each trains in a fraction of a second,
so the tests can regenerate, edit and swap data files freely.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from longtail.cli import main
from longtail.evaluation.predictions import read_predictions
from longtail.pipeline import load_run
from test_features_entrance import FEATURE_OVERRIDES, write_features
from test_run_integrity import Holder

FAST_STAGE2 = ["decouple.wb.weight_decay_grid=[]", "decouple.wb.thresh_grid=[]", "decouple.las.epochs=1"]


def _results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    return err


def _train(data: Path, out: Path, *extra: str) -> Path:
    assert main(["train", *FEATURE_OVERRIDES, f"data.path={data}", *extra, "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_features(tmp_path_factory.mktemp("provenance") / "features.npz", val=True)


@pytest.fixture(scope="module")
def run(data: Path) -> Path:
    """A decoupled features run (crt, tau_norm), shared read-only."""
    run = _train(data, data.parent / "run")
    assert main(["decouple", str(run), "--method", "crt,tau_norm"]) == 0
    return run


def _with_other_test_data(data: Path, to: Path) -> Path:
    """A copy of ``data`` whose test vectors are other draws of the same classes: the same labels, other data."""
    arrays = dict(np.load(data))
    arrays["x_test"] = arrays["x_test"] + np.float32(0.5)
    np.savez(to, **arrays)
    return to


def test_every_artifact_records_its_fingerprint(run: Path):
    results = _results(run)
    provenance = results["provenance"]
    assert set(provenance) == {"fingerprint", "data", "config", "program", "longtail"}
    assert len(provenance["fingerprint"]) == 12 and set(provenance["data"]) == {"train", "val", "test"}
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    assert checkpoint["provenance"] == provenance
    for method, reads, ignores in (
        ("crt", "decouple.sampler", "decouple.select"),
        ("tau_norm", "decouple.select", "decouple.sampler"),
    ):
        saved = torch.load(run / "classifiers" / f"{method}.pt", weights_only=True)
        assert saved["provenance"] == provenance["fingerprint"]
        # The keys its fit depends on, and only those: a change elsewhere does not make it stale.
        assert saved["settings"]["seed"] == 0 and reads in saved["settings"] and ignores not in saved["settings"]
        assert not any(key.startswith("decouple.lws.") for key in saved["settings"])
    for split in ("val", "test"):
        assert read_predictions(run, split)[2] == provenance["data"][split]
        assert results["scored"][split]["crt"]["data"] == provenance["data"][split]


def test_fingerprints_follow_the_content_not_the_place(run: Path, data: Path, tmp_path: Path):
    moved = tmp_path / "elsewhere.npz"
    shutil.copy(data, moved)
    loaded = load_run(run, [f"data.path={moved}"])  # a moved copy of the same data is the same data
    assert loaded.provenance == _results(run)["provenance"]


@pytest.mark.parametrize("command", ["decouple", "eval", "report", "export", "features"])
def test_commands_refuse_a_run_whose_data_changed(
    run: Path, data: Path, tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    regenerated = _with_other_test_data(data, tmp_path / "regenerated.npz")
    argv = {
        "decouple": ["decouple", str(copy), "--method", "ncm"],
        "eval": ["eval", str(copy)],
        "report": ["report", str(copy)],
        "export": ["export", str(copy), "--method", "crt", "--out", str(tmp_path / "x.pt2")],
        "features": ["features", str(copy), "--out", str(tmp_path / "f.npz")],
    }[command]
    assert main([*argv, f"data.path={regenerated}"]) == 1
    err = _error(capsys)
    assert "the test data differs from what stage 1 recorded" in err and "point them back" in err
    assert not (tmp_path / "x.pt2").exists() and not (tmp_path / "f.npz").exists()


def test_paired_comparison_refuses_runs_on_different_test_data(
    run: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """Two runs on different test vectors whose labels are the same (sorted, balanced) once got a confident
    "A better"; their fingerprints now differ and the comparison is refused."""
    other = _train(_with_other_test_data(data, tmp_path / "other.npz"), tmp_path / "other")
    assert np.array_equal(read_predictions(run)[0], read_predictions(other)[0])  # the labels alone agree
    capsys.readouterr()
    assert main(["compare", "--paired", f"{run}:joint", f"{other}:joint"]) == 1
    err = _error(capsys)
    assert "scored on different test data" in err
    # Unpaired, the table may show both, but says so.
    assert main(["compare", str(run), str(other)]) == 0
    out = capsys.readouterr().out
    assert "Test data" in out and "different test data" in out
    fingerprints = [_results(r)["provenance"]["fingerprint"] for r in (run, other)]
    assert all(fp in out for fp in fingerprints)


def test_paired_comparison_names_its_data(run: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["compare", str(run), "--paired", "crt", "joint"]) == 0
    test_data = _results(run)["provenance"]["data"]["test"][:12]
    assert f"data fingerprint {test_data}" in capsys.readouterr().out


def test_predictions_of_other_data_than_results_are_refused(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    results = _results(copy)
    results["provenance"]["data"]["test"] = "0" * 64
    (copy / "results.json").write_text(json.dumps(results))
    assert main(["compare", str(copy), "--paired", "crt", "joint"]) == 1
    assert "predictions/test.npz was scored on other test data than results.json records" in _error(capsys)


def test_predictions_of_another_classifier_are_refused_by_compare_paired(
    run: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    # Two runs of the same test data, one holding the other's predictions/test.npz (copied, or left by a tool):
    # the fingerprints agree, so `--paired A:crt B:crt` compared B with itself, "+0.0 within noise", beside a
    # table of two different scores.
    other = _train(data, tmp_path / "other", "seed=1")
    assert main(["decouple", str(other), "--method", "crt"]) == 0
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.copyfile(other / "predictions" / "test.npz", copy / "predictions" / "test.npz")
    capsys.readouterr()
    assert main(["compare", "--paired", f"{copy}:crt", f"{other}:crt"]) == 1
    assert f"{copy}: the test predictions of crt are not the scores results.json records" in _error(capsys)
    assert main(["eval", str(copy), "--split", "test"]) == 0  # which scores them again
    assert main(["compare", "--paired", f"{copy}:crt", f"{run}:crt"]) == 0


def test_an_unchanged_classifier_is_not_scored_again(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = _results(copy)
    import longtail.pipeline.scores as scores

    scored: list[str] = []
    original = scores.score_fitted

    def counting(fitted, *args, **kwargs):
        scored.extend(fitted)
        return original(fitted, *args, **kwargs)

    monkeypatch.setattr(scores, "score_fitted", counting)
    assert main(["decouple", str(copy), "--method", "ncm"]) == 0
    assert scored == ["ncm", "ncm"]  # val and test; joint, crt and tau_norm kept
    after = _results(copy)
    for method in ("joint", "crt", "tau_norm"):
        assert after["methods"][method] == before["methods"][method]
    labels, predictions, _ = read_predictions(copy)
    assert set(predictions) == {"joint", "crt", "tau_norm", "ncm"}
    scored.clear()
    assert main(["eval", str(copy), "eval.many=40"]) == 0  # other shot groups: every row is scored again
    assert sorted(scored) == ["crt", "joint", "ncm", "tau_norm"]


def test_eval_scores_again_a_row_whose_numbers_were_edited(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    # A results.json edited by hand (cRT's macro set to 99.0): its "scored" record still held, so `eval` kept
    # the row and printed 99.0 as cRT's score; `report` (which scores afresh) said otherwise.
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = _results(copy)
    edited = json.loads(json.dumps(before))
    edited["methods"]["crt"]["macro"] = 99.0
    edited["val_methods"]["tau_norm"]["per_class"][0] = (
        0.0 if before["val_methods"]["tau_norm"]["per_class"][0] else 100.0
    )
    (copy / "results.json").write_text(json.dumps(edited))
    import longtail.pipeline.scores as scores

    scored: list[str] = []
    original = scores.score_fitted
    monkeypatch.setattr(
        scores, "score_fitted", lambda fitted, *a, **k: scored.extend(fitted) or original(fitted, *a, **k)
    )
    assert main(["eval", str(copy), "--split", "test"]) == 0
    assert scored == ["crt"]  # the edited row alone; the others still agree with their predictions
    assert "99.0" not in capsys.readouterr().out
    assert _results(copy)["methods"]["crt"] == before["methods"]["crt"]
    scored.clear()
    assert main(["eval", str(copy), "--split", "val"]) == 0
    assert scored == ["tau_norm"] and _results(copy)["val_methods"]["tau_norm"] == before["val_methods"]["tau_norm"]


def test_features_takes_the_run_lock(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    with Holder(copy) as holder:
        assert main(["features", str(copy), "--out", str(tmp_path / "f.npz")]) == 1
        assert f"in use by PID {holder.pid}" in _error(capsys)


@pytest.mark.parametrize("command", ["features", "export", "compare"])
def test_no_output_replaces_a_runs_predictions(
    run: Path, tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    target = copy / "predictions" / "test.npz"
    before = target.read_bytes()
    argv = {
        "features": ["features", str(copy), "--out", str(target), "--overwrite"],
        "export": ["export", str(copy), "--method", "crt", "--out", str(copy / "predictions" / "x.pt2")],
        "compare": ["compare", str(copy), "--md", str(copy / "predictions" / "table.md"), "--overwrite"],
    }[command]
    assert main(argv) == 1
    assert "belongs to run" in (err := _error(capsys)) and "(its predictions)" in err
    assert target.read_bytes() == before


def test_features_file_records_the_runs_provenance(run: Path, tmp_path: Path):
    out = tmp_path / "f.npz"
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert main(["features", str(copy), "--out", str(out)]) == 0
    with np.load(out) as archive:
        assert json.loads(str(archive["provenance"])) == _results(copy)["provenance"]


def test_an_export_records_the_runs_provenance_and_is_not_replaced(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert main(["export", str(copy), "--method", "crt"]) == 0
    artifact = copy / "export" / "crt.pt2"
    extra = {"longtail.json": ""}
    torch.export.load(artifact, extra_files=extra)  # our own file, just written
    assert json.loads(extra["longtail.json"])["provenance"] == _results(copy)["provenance"]
    assert main(["export", str(copy), "--method", "crt"]) == 1  # a finished export stays
    assert "--overwrite" in _error(capsys)
    assert main(["export", str(copy), "--method", "crt", "--overwrite"]) == 0


# --- the grid: a cell is reused only when its provenance is the cell's --------------------------------------

GRID = ["--samplers", "instance", "--losses", "none", "--trainable", "none"]


def _grid(out: Path, data: Path, *extra: str) -> int:
    overrides = [*FEATURE_OVERRIDES, f"data.path={data}", "eval.many=50", "eval.few=20", *FAST_STAGE2]
    return main(["grid", *GRID, "--out", str(out), *extra, *overrides])


def test_grid_reuses_a_cell_only_of_the_same_data(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "grid"
    assert _grid(out, data) == 0
    cell = out / "sampler-instance"
    first = _results(cell)["provenance"]["fingerprint"]
    checkpoint = (cell / "checkpoint.pt").stat().st_mtime_ns
    assert _grid(out, data) == 0  # the same cell again: reused, not retrained
    assert (cell / "checkpoint.pt").stat().st_mtime_ns == checkpoint
    assert f"`sampler-instance` {first}" in capsys.readouterr().out  # the table says which runs it holds
    # Another data.path (a run-time key of a run): the cell holds other data, refused by name.
    other = _with_other_test_data(data, tmp_path / "other.npz")
    capsys.readouterr()
    assert _grid(out, other) == 1
    err = _error(capsys)
    assert str(cell) in err and "test data" in err and "--overwrite" in err
    assert (cell / "checkpoint.pt").stat().st_mtime_ns == checkpoint
    # A changed stage-1 key is refused by name too; --overwrite retrains.
    assert _grid(out, data, "train.lr=0.05") == 1
    assert "train.lr=0.1, wanted 0.05" in _error(capsys)
    capsys.readouterr()
    assert _grid(out, data, "--overwrite", "train.lr=0.05") == 0
    assert _results(cell)["provenance"]["fingerprint"] != first


def test_grid_doc_replaces_only_a_grid_document(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    notes = tmp_path / "notes.md"
    notes.write_text("my own notes\n")
    assert _grid(tmp_path / "grid", data, "--doc", str(notes)) == 1
    assert "is not a document `longtail grid` wrote" in _error(capsys)
    assert notes.read_text() == "my own notes\n"
    assert _grid(tmp_path / "grid", data, "--doc", str(notes), "--overwrite") == 0
    assert "Fingerprints: every cell scored on test data" in notes.read_text()
    assert _grid(tmp_path / "grid", data, "--doc", str(notes)) == 0  # a grid document is regenerated in place
