"""`longtail report`: the self-contained HTML, the Markdown and its PNGs, the figures and their arrays."""

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.collections import PathCollection

from conftest import copy_run
from longtail.cli import main
from longtail.data.fashion_mnist import CLASS_NAMES
from longtail.evaluation.calibration import reliability
from longtail.methods import expand_methods
from longtail.methods.lws import LWSHead
from longtail.methods.tau_norm import TauNormHead
from longtail.models.heads import LinearHead
from longtail.report import collect
from longtail.report.collect import classifier_weight_norms, norm_methods
from longtail.report.confusion import confusion_matrix
from longtail.report.confusion_figures import confusion_figure
from longtail.report.figures import (
    calibration_figure,
    figure_png,
    per_class_accuracy_figure,
    shot_group_figure,
    tau_sweep_figure,
    training_curves_figure,
    weight_norm_figure,
)
from longtail.report.render import FigureBlock, Paragraph, Section, Table, render_html, render_markdown

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URI = "data:image/png;base64,"


@pytest.fixture(scope="module")
def runs(tiny_run: Path, tiny_decoupled_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Copies of the shared tiny run with every stage-2 method and ``auto``, and of it after stage 1 alone;
    both reported."""
    base = tmp_path_factory.mktemp("report_runs")
    full, stage1 = copy_run(tiny_decoupled_run, base / "full"), copy_run(tiny_run, base / "stage1")
    for run in (full, stage1):
        assert main(["report", str(run)]) == 0
    return {"full": full, "stage1": stage1}


class _Elements(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(path: Path) -> _Elements:
    parser = _Elements()
    parser.feed(path.read_text())
    parser.close()
    return parser


def test_html_is_self_contained_with_eight_figures_and_the_class_names(runs):
    page = _parse(runs["full"] / "report.html")
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    assert len(images) == 8
    for attrs in images:
        assert attrs["src"].startswith(DATA_URI)
        assert base64.b64decode(attrs["src"][len(DATA_URI) :]).startswith(PNG_SIGNATURE)
    assert not [tag for tag, _ in page.tags if tag in ("script", "link", "iframe", "object", "embed")]
    for _, attrs in page.tags:
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            assert not value.startswith(("http:", "https:", "//")), value
        if "href" in attrs:
            assert attrs["href"].startswith("#")  # only links within the page
    text = "".join(page.text)
    for name in CLASS_NAMES:
        assert name in text
    for number in range(1, 9):
        assert f"Figure {number}." in text
    assert "Not available" not in text
    for section in ("Run", "Dataset", "Results", "Figures", "Configuration", "Timing"):
        assert section in [t for t in page.text]


def test_markdown_links_the_png_files_beside_it(runs):
    run = runs["full"]
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (run / "report.md").read_text())
    assert len(links) == 8
    for link in links:
        assert not link.startswith(("http:", "https:", "/"))
        assert (run / link).read_bytes().startswith(PNG_SIGNATURE)
    assert sorted(p.name for p in (run / "report_files").iterdir()) == sorted(Path(link).name for link in links)


def test_the_report_scores_match_results_json_and_carry_config_and_timing(runs):
    run = runs["full"]
    results = json.loads((run / "results.json").read_text())
    data = collect(run)
    assert list(data.outputs) == ["joint", *expand_methods(["auto"])]
    for method, out in data.outputs.items():
        for key in ("many", "medium", "few", "all", "macro"):
            expected = results["methods"][method][key]
            assert (out.summary[key] is None and expected is None) or out.summary[key] == pytest.approx(expected)
        assert out.predictions.shape == out.confidence.shape == data.labels.shape
        assert ((out.confidence > 0) & (out.confidence <= 1)).all()
    assert set(data.weight_norms) == set(norm_methods()) >= {"joint", "crt", "tau_norm", "lws"}
    assert set(data.curves) == {"tau_norm", "logit_adjust"}
    markdown = (run / "report.md").read_text()
    assert "imbalance factor" in markdown and "train.epochs" not in markdown  # config.yaml is nested YAML
    assert "epochs: 4" in markdown and f"seed: {data.seed}" in markdown
    assert "stage 1 (joint training)" in markdown  # the timing table
    joint_all = f"{results['methods']['joint']['all']:.1f}"
    assert re.search(rf"\| Joint \|.*\| {re.escape(joint_all)} ±\d+\.\d \|", markdown)  # ± its 95 % interval


def test_a_run_with_stage_1_only_gets_a_joint_report(runs):
    run = runs["stage1"]
    page = _parse(run / "report.html")
    text = "".join(page.text)
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    assert len(images) == 7  # no τ sweep without τ-norm
    assert "Not available: no τ sweep in results.json" in text
    assert "--method tau_norm" in text
    data = collect(run)
    assert list(data.outputs) == ["joint"] and list(data.weight_norms) == ["joint"]
    assert not (run / "report_files" / "fig4_tau_sweep.png").exists()


def test_report_on_a_directory_that_is_not_a_run_is_one_line_and_status_1(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a run")
    assert main(["report", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a run directory" in err[0] and str(tmp_path) in err[0]
    assert not (tmp_path / "report.html").exists()


# --- the arrays and figures, without a run ---------------------------------------------------------------------------


def test_confusion_matrix_rows_sum_to_one_with_an_other_column():
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 3])
    predictions = np.array([0, 1, 3, 1, 1, 0, 3, 2])
    full = confusion_matrix(labels, predictions, np.arange(4), 4)
    assert full.shape == (4, 4)
    assert full[0].tolist() == pytest.approx([1 / 3, 1 / 3, 0, 1 / 3])
    assert np.allclose(full.sum(axis=1), 1.0)
    part = confusion_matrix(labels, predictions, np.array([3, 0]), 4)  # class 3 first, then 0, plus "other"
    assert part.shape == (2, 3)
    assert np.allclose(part, [[0.5, 0.0, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    empty = confusion_matrix(labels, predictions, np.arange(5), 5)
    assert np.isnan(empty[4]).all() and np.allclose(empty[:4].sum(axis=1), 1.0)


def test_effective_weight_norms_of_each_head():
    torch.manual_seed(0)
    linear = LinearHead(8, 5)
    norms = linear.weight.detach().norm(dim=1).double().numpy()
    assert classifier_weight_norms(linear) == pytest.approx(norms)
    assert classifier_weight_norms(TauNormHead(linear.weight, 1.0)) == pytest.approx(np.ones(5))
    assert classifier_weight_norms(TauNormHead(linear.weight, 0.5)) == pytest.approx(np.sqrt(norms), rel=1e-6)
    lws = LWSHead.from_linear(linear)
    with torch.no_grad():
        lws.scales.copy_(torch.arange(1.0, 6.0))
    assert classifier_weight_norms(lws) == pytest.approx(norms * np.arange(1, 6), rel=1e-6)
    assert "ncm" not in norm_methods() and {"joint", "crt", "tau_norm", "lws"} <= set(norm_methods())


def _bars(axes) -> int:
    """Bars drawn with ``bar`` (not the shaded spans of the shot groups)."""
    return sum(1 for c in axes.containers for p in c.patches if p.get_width() > 0 and p.get_height() > 0)


def test_weight_norms_are_bars_for_few_classes_and_lines_for_many():
    rng = np.random.default_rng(0)
    few = weight_norm_figure({"joint": rng.uniform(1, 2, 10), "crt": rng.uniform(1, 2, 10)}, np.arange(10, 0, -1))
    assert _bars(few.axes[0]) == 20
    counts = rng.integers(5, 1300, size=1000)
    # Norms that grow with the class size: drawn largest class first, each line falls.
    norms = {m: np.sqrt(counts) * k for k, m in enumerate(("joint", "tau_norm", "lws"), start=1)}
    some = weight_norm_figure({m: v[:100] for m, v in norms.items()}, counts[:100])
    assert _bars(some.axes[0]) == 0 and len(some.axes[0].lines) == 3  # 100 classes: one plain line per method
    many = weight_norm_figure(norms, counts, many=100, few=20)
    # 1,000 classes: per method a faint line of every class and, labelled, its running median.
    axes = many.axes[0]
    assert _bars(axes) == 0 and len(axes.lines) == 6
    medians = [line for line in axes.lines if not line.get_label().startswith("_")]
    assert [line.get_label() for line in medians] == ["Joint", "τ-norm", "LWS"]
    for line in axes.lines:
        assert (np.diff(line.get_ydata()) <= 0).all()
    legend = [t.get_text() for t in many.legends[0].get_texts()]
    groups = [f"{g}-shot: {n:,} classes" for g, n in zip(("many", "medium", "few"), _group_sizes(counts), strict=True)]
    assert legend[-3:] == groups
    assert figure_png(many).startswith(PNG_SIGNATURE)


def _group_sizes(counts: np.ndarray) -> list[int]:
    return [int((counts > 100).sum()), int(((counts >= 20) & (counts <= 100)).sum()), int((counts < 20).sum())]


def test_per_class_accuracy_has_one_series_per_method_and_bins_beyond_50_classes():
    rng = np.random.default_rng(0)
    counts = np.repeat([500, 60, 8], 4)
    accuracy = {"joint": rng.uniform(0, 100, 12), "crt": rng.uniform(0, 100, 12)}
    accuracy["crt"][3] = np.nan  # a class without test images
    figure = per_class_accuracy_figure(accuracy, counts, many=100, few=20, class_names=[f"c{i}" for i in range(12)])
    axes = figure.axes[0]
    assert axes.get_xscale() == "log"
    # Four classes share each size: every class is a point, and each line joins the mean of each size.
    points = [c for c in axes.collections if isinstance(c, PathCollection)]
    assert [len(c.get_offsets()) for c in points] == [12, 12]
    assert len(axes.lines) == 2 and list(axes.lines[0].get_xdata()) == [8, 60, 500]
    crt_means = axes.lines[1].get_ydata()
    assert crt_means[2] == pytest.approx(np.mean(accuracy["crt"][:3]))  # the class without test images left out
    labels = [t.get_text() for t in axes.texts]
    assert labels == ["few-shot (< 20)", "medium (20 to 100)", "many-shot (> 100)"]
    big = per_class_accuracy_figure({"joint": rng.uniform(0, 100, 300)}, rng.integers(1, 1000, 300), many=100, few=20)
    assert 1 < len(big.axes[0].lines[0].get_xdata()) <= 12
    # Binned, a marker's area grows with the classes of its bin: the fullest bin gets the largest.
    (markers,) = [c for c in big.axes[0].collections if isinstance(c, PathCollection)]
    assert markers.get_sizes().max() == pytest.approx(160) and markers.get_sizes().min() >= 12
    (note,) = [t for t in big.axes[0].texts if t.get_text().startswith("marker area: classes in the bin")]
    assert note.get_position()[1] > 1  # above the axes: inside, it covered the points of a method at 100 %


@pytest.mark.parametrize("num_classes", [10, 10_000])
def test_the_weight_norm_legend_fits_the_figure(num_classes: int):
    """At 10,000 classes the groups' entries ("medium-shot: 3,516 classes") made one row run off both edges."""
    counts = np.maximum(2, 200 * (2 / 200) ** (np.arange(num_classes) / (num_classes - 1))).astype(int)
    norms = {m: np.ones(num_classes) for m in ("joint", "crt", "lws")}
    figure = weight_norm_figure(norms, counts, many=100, few=20)
    extent = figure.legends[0].get_window_extent(figure.canvas.get_renderer())
    assert 0 <= extent.x0 and extent.x1 <= figure.bbox.width
    assert len(figure.legends) == 1 and len(figure.legends[0].get_texts()) == 7


def test_the_many_shot_band_of_10000_classes_is_visible():
    """10,000 classes of 1,000 down to 2 images (a Zipf profile): the 21 many-shot classes were a band under
    2 pixels wide at the left edge of a linear rank axis. Beyond 1,000 classes the rank axis is logarithmic."""
    ranks = np.arange(1, 10_001)
    counts = np.maximum(2, 1000 / ranks**0.75).astype(int)
    assert _group_sizes(counts)[0] == 21
    norms = {"joint": np.sqrt(counts), "crt": np.ones(len(counts))}
    figure = weight_norm_figure(norms, counts, many=100, few=20)
    axes = figure.axes[0]
    assert axes.get_xscale() == "log" and "log scale" in axes.get_xlabel()
    renderer = figure.canvas.get_renderer()
    width = axes.get_window_extent(renderer).width
    bands = [patch.get_window_extent(renderer).width for patch in axes.patches]  # many, medium, few
    assert len(bands) == 3 and min(bands) > 0.1 * width  # each group a band the eye finds
    # The running median follows the classes of its region of the log axis: monotone norms stay monotone, and
    # the head is not the flat line the edge's padding made of a fixed count of neighbours.
    (joint,) = [line for line in axes.lines if line.get_label() == "Joint"]
    assert (np.diff(joint.get_ydata()) <= 0).all() and joint.get_ydata()[0] > joint.get_ydata()[20]
    assert list(joint.get_xdata()[:2]) == [1, 2]  # rank 1 is the largest class
    thousand = weight_norm_figure({"joint": np.ones(1000)}, np.arange(1000, 0, -1), many=100, few=20).axes[0]
    assert thousand.get_xscale() == "linear"  # up to 1,000 classes, as before


def test_distinct_sizes_are_joined_class_by_class():
    accuracy = {"joint": np.array([90.0, 40.0, 70.0])}
    axes = per_class_accuracy_figure(accuracy, [500, 8, 60], many=100, few=20).axes[0]
    assert list(axes.lines[0].get_xdata()) == [8, 60, 500] and list(axes.lines[0].get_ydata()) == [40, 70, 90]


@pytest.mark.parametrize("counts", [[5, 4, 4, 3, 3, 3], [1000, 900, 700, 500, 330], [1000, 300, 40, 10]])
def test_log_axes_are_labelled_with_plain_numbers(counts: list[int]):
    """Less than a decade of class sizes: matplotlib's default labels read '3 × 10⁰'; ours read '3'."""
    accuracy = {"joint": np.linspace(20, 90, len(counts))}
    figures = [
        (per_class_accuracy_figure(accuracy, counts, many=100, few=20), lambda f: f.axes[0].xaxis),
        (weight_norm_figure({"joint": np.ones(len(counts))}, counts), lambda f: f.axes[1].yaxis),
    ]
    for figure, axis_of in figures:
        figure.canvas.draw()
        axis = axis_of(figure)
        labels = [t.get_text() for t in axis.get_ticklabels() + axis.get_ticklabels(minor=True) if t.get_text()]
        assert labels, counts
        assert all(re.fullmatch(r"[0-9][0-9,]*|0\.[0-9]+", label) for label in labels), labels


def test_shot_bars_print_their_numbers_and_mark_an_empty_group():
    summaries = {
        "joint": {"many": 80.0, "medium": 50.0, "few": None, "all": 60.0},
        "lws": {"many": 75.0, "medium": 61.25, "few": None, "all": 66.0},
    }
    axes = shot_group_figure(summaries).axes[0]
    texts = [t.get_text() for t in axes.texts]
    assert "61.2" in texts and "80.0" in texts and texts.count("–") == 2
    assert _bars(axes) == 6


def test_tau_sweep_marks_the_chosen_tau_and_training_curves_handle_missing_keys():
    points = [{"tau": t, "all": 50 + t, "many": 60 - t, "few": 30 + 5 * t, "medium": None} for t in (0.0, 0.5, 1.0)]
    figure = tau_sweep_figure({"tau_norm": {"select": "val macro", "chosen": 0.5, "val": points, "test": points}})
    assert any("chosen τ = 0.5" in t.get_text() for t in figure.axes[0].texts)
    assert len(figure.axes[0].lines) == 3 * 2 + 1  # 3 metrics x (val, test) + the chosen τ
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert legend[:3] == ["all", "many-shot", "few-shot"]
    no_few = [{**p, "few": None} for p in points]  # data without a few-shot class: no line, no legend entry
    figure = tau_sweep_figure({"tau_norm": {"select": "val macro", "chosen": 0.5, "val": no_few, "test": no_few}})
    assert "few-shot" not in [t.get_text() for t in figure.legends[0].get_texts()]
    history = [
        {"epoch": 1, "train_loss": 2.0, "lr": 0.1, "val_few": None},
        {"epoch": 2, "train_loss": 1.0, "lr": 0.05, "val_few": 40.0},
    ]
    loss, accuracy, lr = training_curves_figure(history).axes
    assert len(loss.lines) == 1 and len(lr.lines) == 1 and len(accuracy.lines) == 1
    assert np.isnan(accuracy.lines[0].get_ydata()[0])


def test_confusion_and_calibration_figures_from_arrays():
    labels = np.repeat(np.arange(100), 3)
    predictions = np.where(np.arange(300) % 3 == 0, 0, labels)
    classes = np.arange(70, 100)  # 30 of the 100 classes, and "other"
    matrix = confusion_matrix(labels, predictions, classes, 100)
    figure = confusion_figure({"joint": matrix}, [f"class {c}" for c in classes])
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()][-1] == "other"
    assert np.allclose(matrix.sum(axis=1), 1.0) and matrix[:, -1] == pytest.approx(np.full(30, 1 / 3))
    rng = np.random.default_rng(0)
    diagrams = {m: reliability(rng.uniform(0.1, 1, 500), rng.uniform(size=500) < 0.6) for m in ("joint", "crt", "ncm")}
    figure = calibration_figure(diagrams)
    titles = [a.get_title() for a in figure.axes]
    assert any(t.startswith("Joint: ECE") for t in titles) and "expected calibration error" in titles
    assert figure_png(figure).startswith(PNG_SIGNATURE)


def test_rendering_escapes_class_names_and_inlines_figures():
    hostile = "<script>alert('x')</script> & *bold* | pipe"
    sections = [
        Section(
            "Data", "data", [Paragraph(f"class {hostile} and `code`"), Table(["name", "n"], [[hostile, "3"]], "lr")]
        ),
        Section(
            "Figures",
            "figures",
            [
                FigureBlock(1, "A figure", f"about {hostile}", "fig1.png", PNG_SIGNATURE + b"x"),
                FigureBlock(2, "Missing", "", "fig2.png", missing="no data"),
            ],
        ),
    ]
    page = render_html("Title <b>", sections)
    assert "<script>" not in page and "&lt;script&gt;" in page and "<code>code</code>" in page
    assert f'src="{DATA_URI}{base64.b64encode(PNG_SIGNATURE + b"x").decode()}"' in page
    assert "Not available: no data" in page
    markdown = render_markdown("Title", sections, "files")
    assert "<script>" not in markdown and r"\|" in markdown and r"\*bold\*" in markdown
    assert "![Figure 1](files/fig1.png)" in markdown and "fig2.png" not in markdown
