"""Outputs that stay readable from 10 to 10,000 classes: the table's title, per_class.csv, the shot-group
confusion, the most-confused pairs, the features dataset's name and messages, and a report at many classes."""

from __future__ import annotations

import csv
import io
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from longtail.cli import main
from longtail.data.features import features_dataset_name
from longtail.data.stats import count_difference
from longtail.evaluation.calibration import reliability
from longtail.evaluation.metrics import accuracy_summary, shot_groups
from longtail.evaluation.per_class import per_class_csv, per_class_rows, write_per_class_csv
from longtail.evaluation.table import format_table, table_title
from longtail.report.confusion import group_confusion, most_confused_pairs
from longtail.report.confusion_figures import confusion_figure, group_confusion_figure
from longtail.report.figures import calibration_figure, per_class_accuracy_figure, weight_norm_figure
from longtail.runs import PER_CLASS_FILE, RUN_OWN_NAMES

DEMO_COUNTS = [1000, 599, 359, 215, 129, 77, 46, 27, 16, 10]


def inat_counts(num_classes: int = 8142) -> list[int]:
    """An iNaturalist-like profile: 1,000 down to 2 training images, log-linear in the class rank."""
    ranks = np.arange(num_classes)
    sizes = np.exp(np.interp(ranks, [0, 80, 1200, num_classes - 1], np.log([1000, 100, 20, 2])))
    return np.round(sizes).astype(int).tolist()


def synthetic_results(counts: list[int], methods=("joint", "crt"), names=None, seed: int = 0) -> dict:
    """A results dict as results.json holds it, from random predictions: no training."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(counts)), 3)
    scores = {}
    for method in methods:
        predictions = np.where(rng.uniform(size=len(labels)) < 0.6, labels, rng.integers(0, len(counts), len(labels)))
        scores[method] = accuracy_summary(torch.from_numpy(predictions), torch.from_numpy(labels), counts)
    return {
        "dataset": "features (features.npz)",
        "num_classes": len(counts),
        "class_names": names or [str(c) for c in range(len(counts))],
        "train_counts": counts,
        "shot_thresholds": {"many": 100, "few": 20},
        "shot_groups": shot_groups(counts),
        "methods": scores,
        "val_methods": {m: dict(s) for m, s in scores.items()},
    }


# --- the results table ---------------------------------------------------------------------------------------------


def test_table_title_summarises_8142_classes_in_one_short_line():
    results = synthetic_results(inat_counts())
    title = table_title(results)
    assert "\n" not in title and len(title) < 200, title
    assert "8,142 classes, 1,000 to 2 training samples (imbalance 500)" in title
    many, medium, few = (len(members) for members in shot_groups(results["train_counts"]).values())
    assert f"many/medium/few {many:,}/{medium:,}/{few:,}" in title
    assert max(map(len, format_table(results["methods"]).splitlines())) < 120


def test_table_title_keeps_the_short_list_of_ten_classes():
    title = table_title({"dataset": "fashion_mnist_lt", "train_counts": DEMO_COUNTS, "methods": {}})
    first, second = title.splitlines()
    assert first == (
        "fashion_mnist_lt — top-1 accuracy (%) on test; 10 classes, 1,000 to 10 training samples (imbalance 100), "
        "many/medium/few 5/3/2"
    )
    assert str(DEMO_COUNTS) in second
    assert len(table_title({"dataset": "d", "train_counts": [50] * 21}).splitlines()) == 1  # 21 sizes: no list
    assert table_title({"dataset": "d"}, "val") == "d — top-1 accuracy (%) on val"  # no class sizes recorded


def test_data_mismatch_names_the_first_differing_class_not_every_size():
    assert count_difference(inat_counts(), inat_counts()[:-1]) == "8,142 classes now, 8,141 before"
    then = inat_counts()
    then[17] += 1
    then[4000] += 1
    assert count_difference(inat_counts(), then) == (
        f"class 17 has {inat_counts()[17]:,} training samples now, {then[17]:,} before (and 1 other classes)"
    )


# --- per_class.csv -------------------------------------------------------------------------------------------------


HOSTILE = ["comma, inside", 'a "quoted" one', "line\nbreak", "=HYPERLINK(1)", "", "tab\there", "ünïcødé", "\r\n"]


def test_per_class_csv_round_trips_hostile_names(tmp_path: Path):
    counts = [300, 150, 90, 60, 30, 19, 10, 5]
    results = synthetic_results(counts, methods=("joint", "tau_norm", "crt"), names=HOSTILE)
    results["methods"]["crt"]["per_class"][3] = None  # a class without test images
    path = write_per_class_csv(tmp_path, results)
    assert path == tmp_path / PER_CLASS_FILE and PER_CLASS_FILE in RUN_OWN_NAMES
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    # Test before val, methods in the results table's order.
    assert header == ["class", "name", "train_images", "group", "acc_test_joint", "acc_test_crt", "acc_test_tau_norm",
                      "acc_val_joint", "acc_val_crt", "acc_val_tau_norm"]  # fmt: skip
    assert [row[1] for row in body] == HOSTILE
    assert [int(row[0]) for row in body] == list(range(len(counts)))
    assert [int(row[2]) for row in body] == counts
    assert [row[3] for row in body] == ["many", "many", "medium", "medium", "medium", "few", "few", "few"]
    for c, row in enumerate(body):
        expected = results["methods"]["joint"]["per_class"][c]
        assert float(row[4]) == pytest.approx(expected, abs=1e-4)
    assert body[3][5] == ""  # None is an empty cell
    _, values = per_class_rows(results)
    assert len(values) == len(counts) and values[3][5] is None


def test_per_class_csv_at_8142_classes_has_a_row_per_class():
    results = synthetic_results(inat_counts())
    rows = list(csv.reader(io.StringIO(per_class_csv(results))))
    assert len(rows) == 8143 and len(rows[0]) == 4 + 2 * 2


def test_per_class_csv_needs_class_sizes(tmp_path: Path):
    assert write_per_class_csv(tmp_path, {"methods": {}}) is None
    assert not (tmp_path / PER_CLASS_FILE).exists()


# --- where the test images go: shot groups and class pairs ---------------------------------------------------------


def test_group_confusion_rows_sum_to_one_and_split_the_diagonal():
    counts = [200, 150, 50, 30, 10, 5]  # many: 0, 1; medium: 2, 3; few: 4, 5
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 5])
    predictions = np.array([0, 1, 1, 2, 2, 0, 3, 1, 4, 0, 5, 1])
    confusion = group_confusion(labels, predictions, counts)
    assert np.allclose(confusion.matrix, [[3 / 4, 1 / 4, 0], [2 / 4, 2 / 4, 0], [2 / 4, 0, 2 / 4]])
    assert np.allclose(confusion.matrix.sum(axis=1), 1.0)
    # Right class: many 0 and 1 (2 of 4), medium 2 and 3 (2 of 4), few only 4 once (1 of 4); 4 -> 5 stays in few.
    assert np.allclose(confusion.correct, [2 / 4, 2 / 4, 1 / 4])
    assert (confusion.correct <= np.diag(confusion.matrix) + 1e-12).all()
    assert confusion.images.tolist() == [4, 4, 4] and confusion.classes.tolist() == [2, 2, 2]


def test_group_confusion_of_an_empty_group_is_nan():
    confusion = group_confusion(np.array([0, 1, 1]), np.array([1, 1, 0]), [500, 5])  # no medium-shot class
    assert np.isnan(confusion.matrix[1]).all() and np.isnan(confusion.correct[1])
    assert confusion.matrix[0].tolist() == [0.0, 0.0, 1.0] and confusion.matrix[2].tolist() == [0.5, 0.0, 0.5]
    figure = group_confusion_figure({"joint": confusion})
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert texts.count("–") == 3 and "50.0%\n(50.0% right)" in texts


def test_most_confused_pairs_by_count_then_share():
    # Class sizes in test: 0 has 4 images, 1 has 2, 2 has 4.
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    predictions = np.array([1, 1, 2, 0, 0, 0, 0, 1, 2, 2])
    pairs = most_confused_pairs(labels, predictions, 3)
    found = [(p.true, p.predicted, p.count, p.share) for p in pairs]
    # (1 -> 0) and (0 -> 1) both twice: 1 -> 0 is all of class 1's images, so it leads.
    assert found == [(1, 0, 2, 1.0), (0, 1, 2, 0.5), (0, 2, 1, 0.25), (2, 0, 1, 0.25), (2, 1, 1, 0.25)]
    assert [(p.true, p.predicted) for p in most_confused_pairs(labels, predictions, 3, top=2)] == [(1, 0), (0, 1)]
    assert most_confused_pairs(labels, labels, 3) == []


def test_most_confused_pairs_at_8142_classes_without_a_matrix():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(8142), 10)
    predictions = labels.copy()
    predictions[labels == 8141] = 3  # every test image of the rarest class goes to class 3
    predictions[rng.choice(len(labels), 500, replace=False)] = 0
    pairs = most_confused_pairs(labels, predictions, 8142)
    assert (pairs[0].true, pairs[0].predicted, pairs[0].count, pairs[0].share) == (8141, 3, 10, 1.0)
    assert len(pairs) == 20 and all(p.count <= pairs[0].count for p in pairs)


def test_reliability_at_8142_classes_is_drawn_on_log_bins_from_one_over_c():
    rng = np.random.default_rng(0)
    confidence = np.clip(rng.lognormal(np.log(0.01), 1.0, 5000), 1 / 8142, 1.0)  # most far below 1/15
    correct = rng.uniform(size=5000) < confidence
    edges = np.geomspace(1 / 8142, 1.0, 16)
    figure = calibration_figure({"joint": reliability(confidence, correct, edges=edges)}, log_confidence=True)
    axes = figure.axes[0]
    assert axes.get_xscale() == "log" and axes.get_xlim()[0] == pytest.approx(1 / 8142)
    equal_width = reliability(confidence, correct)
    assert equal_width.counts[0] / 5000 > 0.9  # equal-width bins: nearly everything in the first
    assert reliability(confidence, correct, edges=edges).counts.max() / 5000 < 0.5


# --- data.name=features: its name and its messages -----------------------------------------------------------------


def test_features_dataset_name_is_unambiguous_for_a_file_called_features():
    assert features_dataset_name("/data/features.npz") == "features (features.npz)"
    assert features_dataset_name("inat_2048.pt") == "features (inat_2048.pt)"


def write_many_class_features(path: Path, num_classes: int = 60, d: int = 8, seed: int = 0) -> Path:
    """A long-tailed features file of ``num_classes`` Gaussian classes, 200 to 2 training vectors, named."""
    rng = np.random.default_rng(seed)
    counts = np.round(np.geomspace(200, 2, num_classes)).astype(int)
    centres = rng.normal(size=(num_classes, d)) * 1.5

    def draw(per_class):
        y = np.repeat(np.arange(num_classes), per_class)
        return (centres[y] + rng.normal(size=(len(y), d))).astype(np.float32), y

    x_train, y_train = draw(counts)
    x_val, y_val = draw([3] * num_classes)
    x_test, y_test = draw([6] * num_classes)
    names = np.array([f'species {c}, var. "{c % 7}"' for c in range(num_classes)])
    np.savez(path, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test,
             class_names=names)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def many_class_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60-class features run (a file called features.npz), decoupled with τ-norm and NCM, reported: seconds."""
    folder = tmp_path_factory.mktemp("many")
    data = write_many_class_features(folder / "features.npz")
    run = folder / "run"
    overrides = ["data.name=features", f"data.path={data}", "train.epochs=2", "train.batch_size=128"]
    assert main(["train", *overrides, "--out", str(run), "--no-progress"]) == 0
    assert main(["decouple", str(run), "--method", "tau_norm,ncm"]) == 0
    assert main(["report", str(run)]) == 0
    return run


def test_features_run_speaks_of_vectors_and_names_its_file(
    many_class_run: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.INFO, logger="longtail"):  # other evaluation keys: scored again, reading test
        assert main(["eval", str(many_class_run), "eval.bootstrap_resamples=1001"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("features (features.npz) — top-1 accuracy (%) on test; 60 classes, 200 to 2")
    assert "features:" not in out
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("features of")]
    assert messages == ["features of test: 360 vectors of the features file"]
    rows = list(csv.reader((many_class_run / PER_CLASS_FILE).open(newline="")))
    assert len(rows) == 61 and rows[1][1] == 'species 0, var. "0"'
    assert {"acc_test_joint", "acc_test_tau_norm", "acc_test_ncm", "acc_val_ncm"} <= set(rows[0])


def test_report_at_many_classes_shows_shot_groups_and_confused_pairs(many_class_run: Path):
    markdown = (many_class_run / "report.md").read_text()
    assert "### Figure 6. Where each shot group's test samples go" in markdown
    assert "60 classes: too many for a per-class matrix" in markdown
    assert "| true class | train | predicted as | train | test vectors | % of the true class |" in markdown
    assert f"`{PER_CLASS_FILE}` in the run directory" in markdown
    assert "training / test vectors" in markdown and "read from the features file" in markdown
    assert "All: over all test vectors (micro)" in markdown and not re.search(r"\bimages?\b", markdown)
    # Every figure was drawn, none is missing, and no line of the report carries a list of every class.
    assert len(re.findall(r"!\[Figure \d\]", markdown)) == 8
    assert max(len(line) for line in markdown.splitlines() if not line.startswith("|")) < 2000
    files = sorted(p.name for p in (many_class_run / "report_files").iterdir())
    assert "fig6_confusion.png" in files and len(files) == 8


def test_data_stats_of_a_features_file_counts_vectors(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    data = write_many_class_features(tmp_path / "features.npz")
    assert main(["data", "stats", "data.name=features", f"data.path={data}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("features (features.npz) (train): 60 classes,") and lines[0].endswith(" vectors")
    assert lines[1].startswith("  vectors per class: max 200, min 2")


def _figure_text(figure) -> str:
    """Every axis label, tick label, legend entry and colour-bar label of a figure, one per line."""
    texts = [t.get_text() for t in figure.findobj(lambda a: hasattr(a, "get_text") and callable(a.get_text))]
    return "\n".join(t for t in texts if t)


def test_figures_of_a_features_run_speak_of_vectors_not_images():
    counts = [250, 50, 10]
    norms = {"joint": np.array([2.0, 1.5, 1.0])}
    accuracy = {"joint": np.array([100.0, 90.0, 45.0])}
    matrix = np.eye(3)
    figures = [
        weight_norm_figure(norms, counts, ["a", "b", "c"], many=100, few=20, unit="vectors"),
        per_class_accuracy_figure(accuracy, counts, many=100, few=20, unit="vectors"),
        confusion_figure({"joint": matrix}, ["a", "b", "c"], unit="vectors"),
    ]
    for figure in figures:  # figures 1, 2 and 6 said "training images" in a features run whose captions said vectors
        text = _figure_text(figure)
        assert "vectors" in text and "images" not in text, text
    assert "training images" in _figure_text(weight_norm_figure(norms, counts, many=100, few=20))  # the default


# --- stage 1's validation pass --------------------------------------------------------------------------------------


def test_validation_predictions_keep_no_logit_matrix():
    """Each epoch's validation pass keeps a batch's arg-max, not its (B, C) logits: at 10,000 classes the
    20,000 validation vectors' logits took 0.8 GB (twice while concatenated), most of a 2 GB training peak."""
    import weakref

    from longtail.engine.loops import make_loader, predict
    from longtail.engine.stage1 import validation_predictions

    x, y = torch.randn(50, 8), torch.arange(50) % 7
    head = torch.nn.Linear(8, 10_000)
    outputs: list[weakref.ref] = []
    held: list[int] = []  # at each batch, how many earlier batches' logits are still alive

    def model(inputs: torch.Tensor) -> torch.Tensor:
        held.append(sum(ref() is not None for ref in outputs))
        logits = head(inputs)
        outputs.append(weakref.ref(logits))
        return logits

    loader = make_loader(torch.utils.data.TensorDataset(x, y), 16)
    predicted, labels = predict(model, loader, device=torch.device("cpu"), argmax=True)
    assert held == [0, 0, 0, 0]  # no batch's logits outlive it
    assert predicted.dtype == torch.int64 and torch.equal(predicted, head(x).argmax(1))
    assert torch.equal(labels, y)

    class Model(torch.nn.Module):
        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return model(inputs)

    outputs.clear(), held.clear()
    predicted, labels = validation_predictions(Model(), loader, None, device=torch.device("cpu"))
    assert held == [0, 0, 0, 0]
    assert torch.equal(predicted, head(x).argmax(1)) and torch.equal(labels, y)
