"""``longtail report RUN_DIR``: the run's figures and tables, as ``report.html`` (self-contained) and ``report.md``.

:func:`write_report` reads the run (:mod:`~longtail.report.collect`), draws the
figures (:mod:`~longtail.report.figures`, and the decision-region illustration
of :mod:`~longtail.report.illustration`), lays out the sections once and
renders them twice (:mod:`~longtail.report.render`). What each figure shows
and how to read it: ``docs/report.md``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.bootstrap import bootstrap_ci_from_predictions
from ..evaluation.calibration import DEFAULT_BINS, drawn_edges, reliability
from ..evaluation.metrics import shot_groups
from ..evaluation.table import format_table
from ..fs.atomic import write_binary_atomic, write_text_atomic
from ..fs.staging import staging_dir, swap_into_place
from ..methods import display_order
from ..runs import PER_CLASS_FILE, require_run_dir, run_lock
from .collect import ReportData, collect, norm_methods
from .confusion_blocks import confusion_block, with_confused_pairs
from .figures import (
    SMOOTHED_FROM,
    calibration_figure,
    figure_png,
    in_figures,
    method_label,
    per_class_accuracy_figure,
    shot_group_figure,
    smoothing_span,
    tau_sweep_figure,
    training_curves_figure,
    weight_norm_figure,
)
from .render import Code, FigureBlock, Paragraph, Section, Table, render_html, render_markdown
from .shift_blocks import shift_blocks

HTML_FILE = "report.html"
MARKDOWN_FILE = "report.md"
FILES_DIR = "report_files"  # the PNGs that report.md links
STAGING_PREFIX = ".report."  # + PID + random + ".tmp": the folder a report is built in before it is moved into place


def _decouple_hint(data: ReportData, method: str) -> str:
    return f"run `longtail decouple {data.run_dir} --method {method}`"


def _norm_figure(data: ReportData) -> FigureBlock:
    block = FigureBlock(1, "Classifier weight norms", "", "fig1_weight_norms.png")
    if not data.weight_norms:
        block.missing = "the joint classifier of this run is not linear, and no cRT / τ-norm / LWS classifier was fit"
        return block
    labels = {
        method: f"{method_label(method)} (τ = {out.summary['tau']:g})"
        for method, out in data.outputs.items()
        if isinstance(out.summary.get("tau"), (int, float))
    }
    absent = [method_label(m) for m in norm_methods() if m not in data.weight_norms]
    figure = weight_norm_figure(
        data.weight_norms, data.train_counts, data.class_names, labels, many=data.many, few=data.few, unit=data.unit
    )
    block.png = figure_png(figure)
    block.caption = (
        "The norm of each class's weight vector, classes from the largest training class to the smallest "
        "(the paper's Figure 4, left); the dotted line is the class's training size, the shaded bands the "
        "many-, medium- and few-shot classes"
        + (
            f"; with {len(data.train_counts):,} classes each method's per-class norms are drawn faint and the bold "
            f"line is their running median over {smoothing_span(len(data.train_counts))}"
            if len(data.train_counts) > SMOOTHED_FROM
            else ""
        )
        + ". Joint training with "
        "instance-balanced sampling gives the head classes the largest norms, so their logits tend to win: the "
        "paper's evidence that the bias toward the head lives in the classifier. cRT re-learns the weights with "
        "class-balanced sampling; τ-norm divides each by its norm to the power τ (shown: ||w_j||^(1−τ)); LWS "
        "rescales each class (shown: s_j·||w_j||). The flatter the curve, the more even-handed the classifier."
        + (f" Not in this run: {', '.join(absent)}." if absent else "")
    )
    return block


def _per_class(data: ReportData) -> dict[str, np.ndarray]:
    return {
        m: np.array([np.nan if v is None else v for v in out.summary["per_class"]], dtype=np.float64)
        for m, out in data.outputs.items()
        if in_figures(m)
    }


def _accuracy_figure(data: ReportData) -> FigureBlock:
    figure = per_class_accuracy_figure(
        _per_class(data), data.train_counts, many=data.many, few=data.few, class_names=data.class_names, unit=data.unit
    )
    binned = len(data.train_counts) > 50
    return FigureBlock(
        2,
        "Per-class accuracy against training-class size",
        f"Test accuracy of each class against its number of training {data.unit} (log scale)"
        + (", averaged in bins of class size" if binned else "")
        + f"; shaded: few-shot (< {data.few} {data.unit}), medium-shot ({data.few} to {data.many}) and many-shot "
        f"(> {data.many}). Joint's accuracy falls with the class size; a re-balanced classifier on the same "
        "features lifts the tail classes at a small cost on the head ones, which is the paper's main finding.",
        "fig2_per_class_accuracy.png",
        figure_png(figure),
    )


def _groups_figure(data: ReportData) -> FigureBlock:
    summaries = {m: out.summary for m, out in data.outputs.items()}
    return FigureBlock(
        3,
        "Many / medium / few / all per method",
        "Top-1 test accuracy (%) per shot group (the mean of its classes' accuracies) and over all test samples "
        "(micro), the numbers of the results table. An empty group is marked –. The paper's claim in one chart: "
        "the re-balanced classifiers trade a little many-shot accuracy for much more few-shot accuracy.",
        "fig3_shot_groups.png",
        figure_png(shot_group_figure(summaries)),
    )


def _tau_figure(data: ReportData) -> FigureBlock:
    block = FigureBlock(4, "The τ sweep", "", "fig4_tau_sweep.png")
    if not data.curves:
        block.missing = f"no τ sweep in results.json; {_decouple_hint(data, 'tau_norm')}"
        return block
    select = next(iter(data.curves.values())).get("select", f"val {data.select}")
    block.png = figure_png(tau_sweep_figure(data.curves))
    block.caption = (
        "Accuracy on all classes, the many-shot and the few-shot classes against τ: validation solid (τ is "
        f"chosen there, by {select}), test dashed (shown, never used to choose). τ = 0 is the joint classifier; "
        "as τ grows the norms even out (τ-norm) or the prior is subtracted (logit adjustment), and few-shot "
        "accuracy rises while many-shot accuracy falls: τ sets the trade-off between head and tail."
    )
    return block


def _curves_figure(data: ReportData) -> FigureBlock:
    block = FigureBlock(5, "Stage-1 training curves", "", "fig5_training_curves.png")
    if not data.history:
        block.missing = "no metrics.jsonl in the run directory"
        return block
    block.png = figure_png(training_curves_figure(data.history, augmented=not data.holds_features))
    block.caption = (
        (
            "Stage 1, a linear classifier trained on the file's feature vectors (the features are the "
            "representation; instance-balanced unless the config says otherwise), "
            if data.holds_features
            else "Stage 1, joint training of backbone and classifier (instance-balanced unless the config says "
            "otherwise), "
        )
        + "from metrics.jsonl: training loss, training and validation accuracy (val_all micro, val_macro the mean "
        "per-class accuracy), and the learning rate, per epoch. This is the representation every stage-2 "
        "classifier reuses."
    )
    return block


def _calibration_figure(data: ReportData) -> tuple[FigureBlock, dict[str, float]]:
    every = {
        m: reliability(out.confidence, out.predictions == data.labels, DEFAULT_BINS) for m, out in data.outputs.items()
    }
    diagrams = {m: d for m, d in every.items() if in_figures(m)}
    num_classes = len(data.train_counts)
    edges = drawn_edges(num_classes, DEFAULT_BINS)
    logarithmic = edges is not None
    if logarithmic:  # drawn in log-spaced bins from 1/C, titled with the ECE of the standard bins
        diagrams = {
            m: dataclasses.replace(
                reliability(data.outputs[m].confidence, data.outputs[m].predictions == data.labels, edges=edges),
                ece=every[m].ece,
            )
            for m in diagrams
        }
    bins = (
        f"{DEFAULT_BINS} log-spaced confidence bins from 1/{num_classes:,} to 1 (the top softmax probability of "
        f"{num_classes:,} classes is at least 1/{num_classes:,}, and most lie below 0.1: equal-width bins would put "
        "nearly every prediction in the first)"
        if logarithmic
        else f"{DEFAULT_BINS} equal-width confidence bins"
    )
    caption = (
        f"Reliability diagrams ({bins}; bar: accuracy in the bin, dot: mean "
        "confidence, dashed: perfect calibration, black steps: the share of the test samples in each bin, on the "
        "same 0 to 1 scale) and the expected calibration error (ECE, the gap between "
        "confidence and accuracy weighted by the share of test samples in each bin"
        + (f", over {DEFAULT_BINS} equal-width bins as everywhere" if logarithmic else "")
        + ") per method. Confidence is the "
        "largest softmax probability of the classifier's logits. Re-balancing moves the logits, and with them "
        "calibration, not only accuracy."
        + (
            " NCM has no logits: its confidence is a softmax of its scores (negative distances to the class "
            "means), a convention rather than a trained probability, so its ECE is not comparable to the others'."
            if "ncm" in diagrams
            else ""
        )
    )
    figure = calibration_figure(diagrams, log_confidence=logarithmic)
    block = FigureBlock(7, "Calibration", caption, "fig7_calibration.png", figure_png(figure))
    return block, {m: d.ece for m, d in every.items()}


@functools.lru_cache(maxsize=4)
def _illustration_png(seed: int) -> bytes:
    """The illustration as PNG bytes; it depends on the seed alone and takes seconds to fit, so it is drawn once."""
    from .illustration import illustration_figure  # drawn by its own module; imported only when needed

    return figure_png(illustration_figure(seed=seed))


def _illustration_figure(data: ReportData) -> FigureBlock:
    block = FigureBlock(8, "Decision regions: why re-balancing the classifier helps", "", "fig8_illustration.png")
    block.png = _illustration_png(data.seed)
    block.caption = (
        "The paper's decision-boundary illustration on a toy problem, not on this run: three overlapping 2-D "
        "Gaussian classes of 1000, 100 and 10 points, and the region each of four classifiers gives each class "
        "(computed, seed = the run's seed). The jointly trained linear classifier grows the largest weight norm "
        "for the head class, which widens its region. τ-normalisation (τ = 1) sets every norm to 1; with only "
        "three classes the trained directions leave it little room, so the head loses a little area and the tail "
        "gains most. A cosine classifier (weights = the class means) and NCM decide by direction or by distance "
        "to the class means, which do not grow with class size. Each panel's title gives the head's and the "
        "tail's share of the plotted area."
    )
    return block


def report_figures(data: ReportData) -> tuple[list[FigureBlock], dict[str, float]]:
    """The eight figures of the report (ten with results.json's ``"shift"`` entry: figures 9 and 10), and the ECE
    (fraction) per method drawn in figure 7."""
    calibration, ece = _calibration_figure(data)
    figures = [
        _norm_figure(data),
        _accuracy_figure(data),
        _groups_figure(data),
        _tau_figure(data),
        _curves_figure(data),
        confusion_block(data),
        calibration,
        _illustration_figure(data),
        *shift_blocks(data),
    ]
    return figures, ece


def _markdown_table(text: str) -> Table:
    """A table from :func:`~longtail.evaluation.table.format_table`'s Markdown, so both renderings share its cells."""
    lines = text.splitlines()
    cells = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in (lines[0], *lines[2:])]
    header = cells[0][:-1] + ["Note"]
    return Table(header, cells[1:], "l" + "r" * (len(header) - 2) + "l")


def _run_section(data: ReportData) -> Section:
    env = data.environment
    rows = [
        ["run directory", str(data.run_dir)],
        ["fingerprint", f"{data.fingerprint} (data, config and program of stage 1; results.json has the parts)"],
        ["dataset", data.dataset],
        ["classes", str(len(data.train_counts))],
        [f"training / test {data.unit}", f"{int(data.train_counts.sum()):,} / {len(data.labels):,}"],
        ["seed", str(data.seed)],
        ["stage-1 command", f"`{env['command']}`" if env.get("command") else "unknown"],
        ["this report", f"`longtail report {data.run_dir}{''.join(' ' + o for o in data.overrides)}`"],
    ]
    rows += [[f"{name} version", str(env[name])] for name in ("longtail", "python", "torch", "numpy") if name in env]
    if "platform" in env:
        rows.append(["platform", str(env["platform"])])
    if "device" in env:
        rows.append(["stage-1 device and precision", f"{env['device']}, {env.get('precision', 'unknown')}"])
    methods = ", ".join(method_label(m) for m in data.outputs)
    intro = Paragraph(
        f"Classifiers in this run: {methods}. Every figure and table below is computed from the run's "
        "classifier files on the test split when the report is written; τ and other choices were made on "
        "validation."
    )
    return Section("Run", "run", [intro, Table(["", ""], rows)])


def _dataset_section(data: ReportData) -> Section:
    s = data.stats
    factor = "n/a" if s["imbalance_factor"] is None else f"{s['imbalance_factor']:g}"
    summary = Table(
        ["training split", ""],
        [
            ["classes", f"{s['classes']:,}"],
            [data.unit, f"{s['images']:,}"],
            ["largest / smallest class", f"{s['max']:,} / {s['min']:,}"],
            ["imbalance factor (largest / smallest)", factor],
            [f"many-shot classes (> {data.many} {data.unit})", str(s["many"])],
            [f"medium-shot classes ({data.few} to {data.many})", str(s["medium"])],
            [f"few-shot classes (< {data.few})", str(s["few"])],
        ],
        "lr",
    )
    blocks: list = [summary]
    if len(data.train_counts) <= 50:
        methods = [m for m in data.outputs if in_figures(m)]
        test_counts = np.bincount(data.labels, minlength=len(data.train_counts))
        groups = shot_groups(data.train_counts, data.many, data.few)
        group_of = {c: g for g, members in groups.items() for c in members}
        rows = []
        for c in np.argsort(-data.train_counts, kind="stable"):
            accuracies = [data.outputs[m].summary["per_class"][c] for m in methods]
            rows.append(
                [str(c), data.class_names[c], f"{data.train_counts[c]:,}", group_of.get(c, ""), f"{test_counts[c]:,}"]
                + ["–" if a is None else f"{a:.1f}" for a in accuracies]
            )
        header = ["class", "name", f"train {data.unit}", "group", f"test {data.unit}"]
        header += [method_label(m) for m in methods]
        blocks.append(Paragraph("Per class, largest first, with the test accuracy (%) of each classifier:"))
        blocks.append(Table(header, rows, "rlrlr" + "r" * len(methods)))
    else:  # a table of thousands of rows is no read: the numbers are in a file for the tools that read them
        blocks.append(
            Paragraph(
                f"Per class ({len(data.train_counts):,} classes): `{PER_CLASS_FILE}` in the run directory has one row "
                "per class with its training size, shot group and each classifier's accuracy on test and val, as "
                "`results.json` records them."
            )
        )
    return Section("Dataset", "dataset", blocks)


def _with_intervals(data: ReportData) -> dict[str, dict[str, Any]]:
    """Each classifier's summary with its 95 % bootstrap intervals, computed as results.json computes them
    (stratified over the test images, the run's seed), on the predictions the report just made."""
    counts = data.train_counts.tolist()
    options = {"many": data.many, "few": data.few, "num_resamples": data.bootstrap_resamples, "seed": data.seed}
    summaries = {}
    for method, out in data.outputs.items():
        ci = bootstrap_ci_from_predictions(out.predictions, data.labels, counts, **options)
        summaries[method] = {**out.summary, "ci": ci}
    return summaries


def _results_section(data: ReportData, ece: dict[str, float]) -> Section:
    table = _markdown_table(format_table(_with_intervals(data), markdown=True))
    blocks: list = [
        Paragraph(
            f"Top-1 accuracy (%) on test. All: over all test {data.unit} (micro); Macro: the mean of the per-class "
            "accuracies; Many / Medium / Few: the mean accuracy of the classes in each group. ± is half the "
            f"width of the 95 % bootstrap interval over the test {data.unit} (each class resampled within itself, "
            f"{data.bootstrap_resamples:,} resamples): the noise of the test sample, not that of training "
            "(docs/statistics.md). Hyper-parameters "
            f"(τ, the automatic choice) were chosen on validation by {data.select}."
        ),
        table,
    ]
    rows = []
    for method in display_order(data.outputs):
        how = data.stage2.get(method, {})
        fit = "stage 1 (joint training)" if method == "joint" else ", ".join(f"{k}: {v}" for k, v in how.items())
        ece_text = f"{100 * ece[method]:.1f}" if method in ece else "–"
        rows.append([method_label(method), fit or "–", ece_text])
    blocks.append(Table(["Method", "how it was fit", "ECE (%)"], rows, "llr"))
    blocks.extend(Paragraph(f"Note: {note}.") for note in data.notes)
    return Section("Results", "results", blocks)


def _timing_section(data: ReportData) -> Section:
    timing = data.timing
    rows = []
    if "train_seconds" in timing:
        rows.append(["stage 1 (joint training)", f"{timing['train_seconds']:.1f}"])
    if "features_seconds" in timing:
        how = "read from the features file" if data.holds_features else "extracted or read from the cache"
        rows.append([f"stage 2: features ({how})", f"{timing['features_seconds']:.2f}"])
    for method, seconds in (timing.get("decouple_seconds") or {}).items():
        rows.append([f"stage 2: {method_label(method)}", f"{seconds:.3f}"])
    blocks: list = [Table(["step", "seconds"], rows, "lr")] if rows else [Paragraph("No timing in results.json.")]
    hits = timing.get("feature_cache_hits")
    if hits:
        read = ", ".join(f"{split}: {'cache' if hit else 'extracted'}" for split, hit in hits.items())
        blocks.append(Paragraph(f"Features of the last stage-2 command: {read}."))
    return Section("Timing", "timing", blocks)


def _config_section(data: ReportData) -> Section:
    blocks: list = [Paragraph("config.yaml of the run (stage 1 wrote it; stage 2 reads its decouple and eval keys):")]
    blocks.append(Code(data.config_text))
    if data.overrides:
        blocks.append(Paragraph("Overrides of this report: " + " ".join(f"`{o}`" for o in data.overrides)))
    return Section("Configuration", "config", blocks)


def report_sections(data: ReportData, figures: list[FigureBlock], ece: dict[str, float]) -> list[Section]:
    """The report's sections in order: run, dataset, results, figures, timing, configuration."""
    return [
        _run_section(data),
        _dataset_section(data),
        _results_section(data, ece),
        Section("Figures", "figures", with_confused_pairs(data, figures)),
        _timing_section(data),
        _config_section(data),
    ]


def _carry_over(old: Path, new: Path) -> None:
    """Copy into ``new`` what a user put in the old ``report_files/``: only figures are the report's to replace."""
    if not old.is_dir():
        return
    for entry in old.iterdir():
        if fnmatch.fnmatch(entry.name, "fig*.png") or (new / entry.name).exists():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, new / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, new / entry.name, follow_symlinks=False)


def _write_staged(staging: Path, run_dir: Path, figures: list[FigureBlock], markdown: str, page: str) -> None:
    """Write report.md, report.html and report_files/ (the figures, and what a user kept there) into ``staging``."""
    folder = staging / FILES_DIR
    folder.mkdir()
    for figure in figures:
        if figure.png is not None:
            write_binary_atomic(folder / figure.file_name, lambda handle, png=figure.png: handle.write(png))
    _carry_over(run_dir / FILES_DIR, folder)
    write_text_atomic(staging / MARKDOWN_FILE, markdown)
    write_text_atomic(staging / HTML_FILE, page)


def write_report(run_dir: str | Path, overrides: Sequence[str] = ()) -> dict[str, Path]:
    """Write ``RUN_DIR/report.html`` (self-contained) and ``RUN_DIR/report.md`` with its PNGs in ``report_files/``.

    The whole report is built in a hidden folder of the run directory and then
    renamed into place, so a report that fails part-way (a figure, a full disk)
    leaves the previous report as it was, and the folder is removed.

    Args:
        run_dir: a finished stage-1 run, with or without stage-2 classifiers.
        overrides: run-time keys, as for ``longtail eval`` (``data.root=``, ``device=``, ``eval.*``).

    Returns:
        ``{"html": path, "markdown": path, "figures": folder of the PNGs}``.

    Raises:
        RunDirError: when ``run_dir`` is not a finished run (see :func:`~longtail.pipeline.load_run`).
    """
    with run_lock(require_run_dir(run_dir), "longtail report"):
        return _write_report(collect(run_dir, overrides))


def _write_report(data: ReportData) -> dict[str, Path]:
    """:func:`write_report` of collected ``data``, under the run's lock."""
    with staging_dir(data.run_dir, STAGING_PREFIX) as staging:
        figures, ece = report_figures(data)
        sections = report_sections(data, figures, ece)
        title = f"longtail report: {data.dataset}, {data.run_dir.name} (fingerprint {data.fingerprint})"
        markdown, page = render_markdown(title, sections, FILES_DIR), render_html(title, sections)
        _write_staged(staging, data.run_dir, figures, markdown, page)
        # report_files/ first; should the Markdown not be replaceable, the old folder is put back, so the old
        # report stays whole. The HTML is self-contained: it needs nothing beside it, and goes last, alone.
        swap_into_place(staging, data.run_dir, [FILES_DIR, MARKDOWN_FILE])
        swap_into_place(staging, data.run_dir, [HTML_FILE])
    run = data.run_dir
    return {"html": run / HTML_FILE, "markdown": run / MARKDOWN_FILE, "figures": run / FILES_DIR}
