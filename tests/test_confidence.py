"""Confidence intervals of every method in results.json, the tables, the report, and ``compare --paired``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import copy_run
from longtail.cli import main
from longtail.errors import RunDirError
from longtail.evaluation.bootstrap import METRICS
from longtail.evaluation.compare import PairedRow, format_paired, paired_rows
from longtail.evaluation.metrics import accuracy_summary
from longtail.evaluation.predictions import predictions_path, read_predictions, write_predictions
from longtail.evaluation.table import format_table


def _results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


@pytest.fixture(scope="module")
def other_labels_run(tiny_decoupled_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the decoupled run whose test labels are those of another test set (rolled by one), its test
    scores those of its predictions on them (compare --paired refuses predictions that are not its scores)."""
    run = copy_run(tiny_decoupled_run, tmp_path_factory.mktemp("confidence") / "other_labels")
    labels, predictions, fingerprint = read_predictions(run)
    labels = np.roll(labels, 1)
    write_predictions(run, "test", labels, predictions, fingerprint=fingerprint)
    results = _results(run)
    many, few = results["shot_thresholds"]["many"], results["shot_thresholds"]["few"]
    for method, predicted in predictions.items():
        summary = accuracy_summary(torch.as_tensor(predicted), torch.as_tensor(labels), results["train_counts"],
                                   many=many, few=few)  # fmt: skip
        results["methods"][method].update(summary)
    (run / "results.json").write_text(json.dumps(results))
    return run


def test_every_method_has_an_interval_covering_its_score(tiny_decoupled_run: Path):
    results = _results(tiny_decoupled_run)
    assert {"joint", "crt", "tau_norm", "lws", "ncm", "auto"} <= set(results["methods"])
    for key in ("methods", "val_methods"):
        for method, row in results[key].items():
            assert set(row["ci"]) == set(METRICS), (key, method)
            for metric in METRICS:
                value, interval = row[metric], row["ci"][metric]
                if value is None:  # an empty group has no interval either
                    assert interval is None
                    continue
                low, high = interval
                # 1e-9: the resampled and the observed accuracies are sums of fractions in another order
                assert 0.0 <= low <= value + 1e-9 and value - 1e-9 <= high <= 100.0, (key, method, metric)
    low, high = results["methods"]["crt"]["ci"]["macro"]
    assert high > low  # a method with partly right classes has a real interval


def test_stage_1_writes_intervals_and_predictions(tiny_run: Path):
    results = _results(tiny_run)
    for key, split in (("methods", "test"), ("val_methods", "val")):
        assert set(results[key]["joint"]["ci"]) == set(METRICS)
        labels, predictions, _ = read_predictions(tiny_run, split)
        assert list(predictions) == ["joint"] and predictions["joint"].shape == labels.shape


def test_predictions_file_holds_every_method_and_gives_its_scores(tiny_decoupled_run: Path):
    results = _results(tiny_decoupled_run)
    for split, key in (("test", "methods"), ("val", "val_methods")):
        labels, predictions, _ = read_predictions(tiny_decoupled_run, split)
        assert set(predictions) == set(results[key])
        for method, predicted in predictions.items():
            assert 100.0 * np.mean(predicted == labels) == pytest.approx(results[key][method]["all"])


def test_same_seed_same_intervals(tiny_decoupled_run: Path, tmp_path: Path):
    run = copy_run(tiny_decoupled_run, tmp_path / "run")
    before = _results(run)["methods"]
    assert main(["eval", str(run)]) == 0
    after = _results(run)["methods"]
    assert {m: r["ci"] for m, r in after.items()} == {m: r["ci"] for m, r in before.items()}


def test_tables_show_half_widths(tiny_decoupled_run: Path, capsys: pytest.CaptureFixture[str]):
    methods = _results(tiny_decoupled_run)["methods"]
    low, high = methods["crt"]["ci"]["macro"]
    cell = f"{methods['crt']['macro']:.1f} ±{(high - low) / 2:.1f}"
    table = format_table(methods)
    assert cell in table and max(map(len, table.splitlines())) <= 100
    assert cell in format_table(methods, markdown=True)
    assert main(["compare", str(tiny_decoupled_run)]) == 0
    out = capsys.readouterr().out
    assert "±" in out and "95% bootstrap interval" in out and max(map(len, out.splitlines())) <= 120


def test_report_intervals_are_those_of_results(tiny_decoupled_run: Path):
    from longtail.report.build import _with_intervals
    from longtail.report.collect import collect

    methods = _results(tiny_decoupled_run)["methods"]
    summaries = _with_intervals(collect(tiny_decoupled_run))
    for method, summary in summaries.items():
        assert summary["ci"] == methods[method]["ci"], method  # same predictions, same seed: same resamples


def test_paired_with_itself_is_exactly_zero_and_said_to_be_the_same_classifier(
    tiny_decoupled_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    # `--paired crt crt` (or RUN:crt RUN/:crt) was "+0.0 [+0.0, +0.0] ... within noise", as if two classifiers
    # agreed: now the row says it is one classifier, and stderr says so as for a run given twice
    (row,) = paired_rows([tiny_decoupled_run], "crt", "crt")
    assert row.result["difference"] == 0.0 and row.result["ci"] == [0.0, 0.0]
    assert row.result["ties"] == 1.0 and row.result["a_wins"] == 0.0 and row.itself
    assert main(["compare", str(tiny_decoupled_run), "--paired", "crt", "crt"]) == 0
    captured = capsys.readouterr()
    (line,) = [line for line in captured.out.splitlines() if "[+0.0, +0.0]" in line]
    assert line.endswith("the same classifier") and "within noise" not in captured.out
    assert "--paired crt crt: the same classifier twice; its difference is 0 by construction" in captured.err
    (across,) = paired_rows([], f"{tiny_decoupled_run}:crt", f"{tiny_decoupled_run}/:crt")
    assert across.itself
    copy = copy_run(tiny_decoupled_run, tmp_path / "copy")  # two runs, one classifier name: a real comparison
    assert not paired_rows([], f"{tiny_decoupled_run}:crt", f"{copy}:crt")[0].itself
    assert not paired_rows([tiny_decoupled_run], "crt", "joint")[0].itself


def test_paired_verdicts():
    def result(low: float, high: float) -> dict:
        return {"difference": (low + high) / 2, "ci": [low, high], "a_wins": 0.5, "ties": 0.0, "resamples": 1000}

    rows = [
        PairedRow("r", "cRT", "Joint", "macro", result(1.0, 3.0)),
        PairedRow("r", "Joint", "cRT", "macro", result(-3.0, -1.0)),
        PairedRow("r", "cRT", "LWS", "macro", result(-0.5, 0.5)),
        PairedRow("r", "cRT", "LWS", "few", None),
    ]
    lines = format_paired(rows).splitlines()[5:9]
    verdicts = [line.split("  ")[-1] for line in lines]
    assert verdicts == ["A better", "B better", "within noise", "no few-shot test image"]
    assert "[+1.0, +3.0]" in lines[0] and "50.0%" in lines[0]


def test_paired_within_each_run_and_markdown(
    tiny_decoupled_run: Path, other_labels_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    md = tmp_path / "paired.md"
    runs = [str(tiny_decoupled_run), str(other_labels_run)]
    assert main(["compare", *runs, "--paired", "tau_norm", "joint", "--metric", "few", "--md", str(md)]) == 0
    rows = paired_rows(runs, "tau_norm", "joint", metric="few")
    assert len(rows) == 2 and {r.run for r in rows} == {"tiny_decoupled_run", "other_labels"}
    result = rows[0].result
    low, high = result["ci"]
    assert low <= result["difference"] <= high
    assert result["a_wins"] + result["ties"] + result["b_wins"] == pytest.approx(1.0)
    assert md.read_text() == format_paired(rows, markdown=True) + "\n"
    assert "| Run | A | B |" in md.read_text()


def test_paired_across_two_runs_on_one_test_set(tiny_decoupled_run: Path, tmp_path: Path):
    copy = copy_run(tiny_decoupled_run, tmp_path / "copy")
    (row,) = paired_rows([], f"{tiny_decoupled_run}:lws", f"{copy}:lws")
    assert row.run is None and row.result["ci"] == [0.0, 0.0]
    assert row.a == "tiny_decoupled_run: LWS" and row.b == "copy: LWS"


def test_paired_across_runs_with_other_test_labels_is_one_line(
    tiny_decoupled_run: Path, other_labels_run: Path, capsys: pytest.CaptureFixture[str]
):
    args = ["compare", "--paired", f"{tiny_decoupled_run}:crt", f"{other_labels_run}:crt"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not scored on the same test set" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--paired", "crt", "{run}:joint"], "give two method names, or two RUN_DIR:METHOD"),
        (["{run}", "--paired", "{run}:crt", "{run}:joint"], "give no other RUN_DIR"),
        (["--paired", "crt", "joint"], "give the RUN_DIR(s)"),
        (["{run}", "--paired", "crt", "nosuch"], "no test predictions of method 'nosuch'"),
        (["{run}", "--metric", "few"], "give --paired A B too"),
    ],
)
def test_paired_usage_errors_are_one_line(
    tiny_decoupled_run: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
):
    assert main(["compare", *(a.format(run=tiny_decoupled_run) for a in args)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_run_without_predictions_says_how_to_write_them(tiny_decoupled_run: Path, tmp_path: Path):
    run = copy_run(tiny_decoupled_run, tmp_path / "old")
    predictions_path(run, "test").unlink()
    with pytest.raises(RunDirError, match=r"no per-image predictions; run `longtail eval .* --split test`"):
        paired_rows([run], "crt", "joint")
    predictions_path(run, "test").write_bytes(b"not a zip file")
    with pytest.raises(RunDirError, match="not a readable .npz file.*to rewrite it"):
        paired_rows([run], "crt", "joint")


def test_malformed_interval_in_results_is_one_line(tiny_decoupled_run: Path, tmp_path: Path):
    run = copy_run(tiny_decoupled_run, tmp_path / "bad")
    results = _results(run)
    results["methods"]["crt"]["ci"]["macro"] = "wide"
    (run / "results.json").write_text(json.dumps(results))
    with pytest.raises(RunDirError, match=r"methods\.crt\.ci\.macro is a string .*expected \[low, high\]"):
        paired_rows([run], "crt", "joint")
