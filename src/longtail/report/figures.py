"""The report's figures, one function each, drawn from plain arrays (no run directory needed).

Every function returns a matplotlib :class:`~matplotlib.figure.Figure` on an
Agg canvas: no GUI backend and no ``pyplot`` global state, so figures can be
drawn from any thread or test. :func:`figure_png` turns one into PNG bytes.
Classes are always shown from the largest training class to the smallest, as
in the paper's figures.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullLocator

from ..data.stats import LOG_RANK_CLASSES
from ..evaluation.calibration import Reliability
from ..log_ticks import plain_log_ticks
from ..methods import METHODS, display_order, label_of, spec_of

_SPARE_COLORS = ("tab:olive", "tab:cyan", "tab:pink", "tab:gray")
GROUP_COLORS = {"many": "#d8e7f5", "medium": "#fdf1d6", "few": "#f8d9d7"}
BARS_UP_TO = 30  # more classes than this: lines instead of bars
NAMES_UP_TO = 50  # more classes than this: class ranks on the axis instead of names
NAMES_ON_TOP_UP_TO = 20  # figure 2 names the classes above the plot up to this many
NAME_ON_TOP_CHARS = 24  # characters of a name above figure 2 (an ellipsis marks a cut)
# More classes than this: figure 1's per-class lines are drawn faint, with a running median over neighbouring
# classes on top; at 1,000 classes six raw lines of per-class noise cover one another.
SMOOTHED_FROM = 200


def new_figure(width: float, height: float) -> Figure:
    """An empty figure (inches) on an Agg canvas, laid out by matplotlib's constrained layout."""
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (no timestamp or version in the metadata, so equal figures give equal bytes)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def method_color(method: str) -> str:
    """A fixed colour per method, the same in every figure."""
    if method == "joint" or method in METHODS:
        return spec_of(method).color
    return _SPARE_COLORS[sum(map(ord, method)) % len(_SPARE_COLORS)]


def in_figures(method: str) -> bool:
    """Whether a method gets its own line, bar or panel: not ``auto``, a copy of another method's classifier,
    which drawn again would hide that method's."""
    return not (method in METHODS and METHODS[method].chooses_among_others)


def method_label(method: str, labels: Mapping[str, str] | None = None) -> str:
    """The display name of a method: ``labels`` first, then the results table's names."""
    return (labels or {}).get(method) or label_of(method)


def plain_text(text: object) -> str:
    """``text`` as matplotlib must draw it: literally, never as mathtext.

    Matplotlib parses a string with an even number of unescaped ``$`` as math
    (a class named ``a$^$b`` raises a parse error); with every ``$`` escaped
    there is no math, and matplotlib draws ``\\$`` as ``$``. Names come from
    users' folders and files, so every name drawn goes through here.
    """
    return str(text).replace("$", r"\$")


def shortened(name: str, limit: int = 18) -> str:
    """A class name cut to ``limit`` characters (an ellipsis marks the cut), so that long names leave room."""
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _label(method: str, labels: Mapping[str, str] | None = None) -> str:
    """:func:`method_label`, escaped for drawing."""
    return plain_text(method_label(method, labels))


def size_order(train_counts: Sequence[int]) -> np.ndarray:
    """(C,) class indices from the largest training class to the smallest (ties: smaller index first)."""
    counts = np.asarray(train_counts, dtype=np.int64)
    return np.argsort(-counts, kind="stable")


def _class_tick_labels(order: np.ndarray, counts: np.ndarray, class_names: Sequence[str] | None) -> list[str]:
    names = class_names if class_names is not None else [str(i) for i in range(len(counts))]
    return [plain_text(f"{names[i]} ({counts[i]})") for i in order]


def _no_data(figure: Figure, message: str) -> Figure:
    axes = figure.add_subplot()
    axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes)
    axes.set_axis_off()
    return figure


def weight_norm_figure(
    norms: Mapping[str, np.ndarray],
    train_counts: Sequence[int],
    class_names: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
    *,
    many: int | None = None,
    few: int | None = None,
    unit: str = "images",
) -> Figure:
    """Figure 1: the classifier's weight norm per class, classes sorted by training size (the paper's Figure 4, left).

    Args:
        norms: method -> (C,) effective weight norm per class (see
            :func:`longtail.report.collect.classifier_weight_norms`).
        train_counts: (C,) training images per class.
        class_names: C names, shown on the axis up to 50 classes.
        labels: method -> legend label, overriding the table's names.
        many, few: the shot-group thresholds; when given, each group's classes are shaded.
        unit: what the training samples are, for the axis and legend ("images", or "vectors" for a features run).

    Up to 30 classes a bar per class and method; beyond, a line per method; beyond 200, each line is faint
    and a running median over about 2 % of the classes is drawn on top. Beyond ``LOG_RANK_CLASSES`` (1,000)
    classes the class rank is on a log axis from 1, as in ``data stats --plot``: on a linear one the 21
    many-shot classes of 10,000 (1,000 down to 2 images) were a band under 2 pixels wide, invisible.
    """
    counts = np.asarray(train_counts, dtype=np.int64)
    order = size_order(counts)
    num_classes = len(counts)
    figure = new_figure(10, 4.8)
    if not norms:
        return _no_data(figure, "no linear classifier in this run")
    axes = figure.add_subplot()
    methods = display_order(norms)
    log_rank = num_classes > LOG_RANK_CLASSES
    positions = np.arange(num_classes) + (1 if log_rank else 0)  # rank 1 the largest class on a log axis
    if num_classes <= BARS_UP_TO:
        width = 0.8 / len(methods)
        for k, method in enumerate(methods):
            offset = (k - (len(methods) - 1) / 2) * width
            axes.bar(
                positions + offset,
                np.asarray(norms[method])[order],
                width,
                color=method_color(method),
                label=_label(method, labels),
            )
    else:
        smoothed = num_classes > SMOOTHED_FROM
        for method in methods:
            values = np.asarray(norms[method], dtype=np.float64)[order]
            color, label = method_color(method), _label(method, labels)
            if smoothed:  # every class faint, the trend over neighbouring classes on top
                axes.plot(positions, values, color=color, linewidth=0.5, alpha=0.25)
                values = (
                    log_rank_running_median(values)
                    if log_rank
                    else running_median(values, smoothing_window(num_classes))
                )
            axes.plot(positions, values, color=color, linewidth=1.6 if smoothed else 1.2, label=label)
    axes.set_ylabel("weight norm of the class" + (" (line: running median)" if num_classes > SMOOTHED_FROM else ""))
    if log_rank:
        axes.set_xscale("log")
        plain_log_ticks(axes.xaxis)
        axes.set_xlim(0.5, num_classes + 0.5)
    else:
        axes.set_xlim(-0.6, num_classes - 0.4)
    bands = (
        _rank_bands(axes, counts[order], many, few, first=positions[0]) if many is not None and few is not None else []
    )
    _class_axis(axes, order, counts, class_names, unit, log_rank=log_rank)
    # The training sizes on a second axis: the norms are meant to be read against them.
    sizes = axes.twinx()
    sizes.step(positions, counts[order], where="mid", color="0.55", linestyle=":", linewidth=1.2)
    sizes.set_yscale("log")
    plain_log_ticks(sizes.yaxis)
    sizes.set_ylabel(f"training {unit} (dotted, log scale)", color="0.4")
    sizes.tick_params(axis="y", colors="0.4")
    handles, names = axes.get_legend_handles_labels()
    handles.append(Line2D([], [], color="0.55", linestyle=":"))
    names.append(f"training {unit}")
    handles += [patch for patch, _ in bands]
    names += [name for _, name in bands]
    # Outside the axes: inside, it would hide the bars of some class.
    _legend_below(figure, handles, names)
    axes.set_title("Classifier weight norm per class (classes sorted by training size)")
    return figure


def _legend_below(figure: Figure, handles: list[Any], names: list[str]) -> None:
    """A legend under the axes in as few rows as fit the figure's width: one row of every entry, else fewer
    columns (at 10,000 classes "medium-shot: 3,516 classes" made the one row of seven entries run off both
    edges, where the demo's "medium-shot: 3 classes" fitted)."""
    columns = len(names)
    while True:
        legend = figure.legend(handles, names, loc="outside lower center", fontsize=9, ncol=columns, frameon=False)
        width = legend.get_window_extent(figure.canvas.get_renderer()).width
        if columns <= 1 or width <= figure.bbox.width:
            return
        legend.remove()
        columns = -(-columns // 2)


def _rank_bands(axes: Any, sizes: np.ndarray, many: int, few: int, *, first: int = 0) -> list[tuple[Patch, str]]:
    """Shade the many / medium / few-shot classes of an axis of classes sorted by (C,) ``sizes``, largest first
    at position ``first`` (1 on a log axis); returns a legend entry per group with its number of classes (in the
    legend, not on the axes: at 8,142 classes the 80 many-shot ones are a sliver no name fits over)."""
    spans = (("many", sizes > many), ("medium", (sizes >= few) & (sizes <= many)), ("few", sizes < few))
    entries = []
    for group, members in spans:
        ranks = np.flatnonzero(members) + first  # contiguous: the classes are sorted by size
        if len(ranks) == 0:
            continue
        axes.axvspan(ranks[0] - 0.5, ranks[-1] + 0.5, color=GROUP_COLORS[group], zorder=0, linewidth=0)
        classes = f"{len(ranks):,} class" + ("" if len(ranks) == 1 else "es")
        entries.append((Patch(color=GROUP_COLORS[group]), f"{group}-shot: {classes}"))
    return entries


def smoothing_window(num_classes: int) -> int:
    """An odd window of about 2 % of the classes (at least 5) for :func:`running_median`."""
    return max(5, num_classes // 50) | 1


def running_median(values: np.ndarray, window: int) -> np.ndarray:
    """(C,) median of each value's ``window`` neighbours (centred, the ends repeated), NaN ignored."""
    values = np.asarray(values, dtype=np.float64)
    half = window // 2
    padded = np.pad(values, (half, half), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, window)
    with warnings.catch_warnings():  # a window of NaN only (classes without a value) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(windows, axis=1)


def smoothing_span(num_classes: int) -> str:
    """What figure 1's running median of ``num_classes`` classes spans, in words, for the report's caption."""
    if num_classes > LOG_RANK_CLASSES:
        return (
            f"the classes within {LOG_WINDOW_SHARE:.0%} of the axis around each; beyond {LOG_RANK_CLASSES:,} "
            "classes the class rank is on a log scale, so that the few many-shot classes show"
        )
    return f"{smoothing_window(num_classes)} neighbouring classes"


LOG_WINDOW_SHARE = 0.02  # the running median of a log rank axis: over about 2 % of the axis's width


def log_rank_running_median(values: np.ndarray) -> np.ndarray:
    """(C,) median of each class's neighbours on a log rank axis (rank 1 the first value): those within about
    2 % of the axis's width around it. A fixed count of neighbours would span decades at the head of a log axis,
    where the edge's padding then drew a flat line over the first hundred classes."""
    values = np.asarray(values, dtype=np.float64)
    ranks = np.log10(np.arange(1, len(values) + 1))
    half = LOG_WINDOW_SHARE / 2 * max(ranks[-1], 1.0) if len(values) else 0.0
    starts = np.searchsorted(ranks, ranks - half, side="left")
    stops = np.searchsorted(ranks, ranks + half, side="right")
    with warnings.catch_warnings():  # a window of NaN only (classes without a value) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.array([np.nanmedian(values[a:b]) for a, b in zip(starts, stops, strict=True)])


def _class_axis(
    axes: Any,
    order: np.ndarray,
    counts: np.ndarray,
    class_names: Sequence[str] | None,
    unit: str = "images",
    *,
    log_rank: bool = False,
) -> None:
    """Class names (and sizes) on the x-axis up to 50 classes, else the size rank (from 1 on a log axis)."""
    if len(counts) <= NAMES_UP_TO:
        axes.set_xticks(np.arange(len(counts)))
        axes.set_xticklabels(_class_tick_labels(order, counts, class_names), rotation=40, ha="right", fontsize=8)
        axes.set_xlabel(f"class (training {unit}), largest class first")
    else:
        axes.set_xlabel("class rank by training size (largest first" + (" = 1, log scale)" if log_rank else ")"))


def _group_bands(axes: Any, lo: float, hi: float, many: int, few: int) -> None:
    """Shade the few / medium / many-shot ranges of a log x-axis spanning [lo, hi] and name them at the bottom."""
    # Class sizes are integers: few-shot is n < few, many-shot n > many, so the borders sit half-way.
    bands = (
        ("few", lo, few - 0.5, f"few-shot (< {few})"),
        ("medium", few - 0.5, many + 0.5, f"medium ({few} to {many})"),
        ("many", many + 0.5, hi, f"many-shot (> {many})"),
    )
    for group, start, stop, text in bands:
        start, stop = max(start, lo), min(stop, hi)
        if stop <= start:
            continue
        axes.axvspan(start, stop, color=GROUP_COLORS[group], zorder=0, linewidth=0)
        middle = np.sqrt(start * stop)  # the centre on a log axis
        axes.text(
            middle, 0.015, text, ha="center", va="bottom", fontsize=8, color="0.3", transform=axes.get_xaxis_transform()
        )
    axes.set_xlim(lo, hi)


def _names_on_top(axes: Any, counts: np.ndarray, class_names: Sequence[str]) -> None:
    """Class names above a log class-size x-axis, at their sizes; classes of equal size share one label."""
    names_at: dict[float, list[str]] = {}
    for count, name in zip(counts.tolist(), class_names, strict=True):
        names_at.setdefault(count, []).append(str(name))
    top = axes.secondary_xaxis("top")
    # Cut long names: rotated labels of 50 characters took the whole figure's height, matplotlib gave up its
    # layout ("axes sizes collapsed to zero", a warning on stderr) and drew them cut off at the top edge.
    labels = [plain_text(shortened(", ".join(names), NAME_ON_TOP_CHARS)) for names in names_at.values()]
    top.set_xticks(list(names_at), labels=labels)
    top.xaxis.set_minor_locator(NullLocator())
    top.tick_params(axis="x", labelsize=8, labelrotation=35)
    for label in top.get_xticklabels():
        label.set_horizontalalignment("left")


def _binned_means(x: np.ndarray, y: np.ndarray, bins: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean of y in log-spaced bins of x: (B,) geometric-mean x, (B,) mean y and (B,) members of the non-empty
    bins."""
    keep = ~np.isnan(y)
    x, y = x[keep], y[keep]
    if len(x) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64)
    edges = np.geomspace(x.min(), x.max() * 1.0001, bins + 1)
    index = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, bins - 1)
    centres, means, sizes = [], [], []
    for b in range(bins):
        members = index == b
        if members.any():
            centres.append(np.exp(np.log(x[members]).mean()))
            means.append(y[members].mean())
            sizes.append(int(members.sum()))
    return np.asarray(centres), np.asarray(means), np.asarray(sizes, dtype=np.int64)


def _mean_per_size(sizes: np.ndarray, accuracy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (C,) ``sizes``, ascending, and the mean (C,) ``accuracy`` of their classes (NaN: no test image)."""
    distinct, which = np.unique(sizes, return_inverse=True)
    scored = ~np.isnan(accuracy)
    totals = np.bincount(which[scored], weights=accuracy[scored], minlength=distinct.size)
    members = np.bincount(which[scored], minlength=distinct.size)
    with np.errstate(invalid="ignore"):  # a size none of whose classes has a test image: NaN, a gap in the line
        return distinct, totals / members


def _marker_areas(members: np.ndarray, largest: int) -> np.ndarray:
    """Marker areas (pt²) that grow with the classes a point averages: 12 for one class, 160 for the fullest bin."""
    return 12 + 148 * np.sqrt(members / max(largest, 1))


def per_class_accuracy_figure(
    per_class: Mapping[str, np.ndarray],
    train_counts: Sequence[int],
    *,
    many: int,
    few: int,
    class_names: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
    unit: str = "images",
) -> Figure:
    """Figure 2: per-class test accuracy against training-class size (log axis), one series per method.

    Args:
        per_class: method -> (C,) accuracy in percent, NaN for a class without test images.
        train_counts: (C,) training images per class.
        many, few: the shot-group thresholds (many-shot ``n > many``, few-shot ``n < few``).
        class_names: C names, written above the plot up to 20 classes.
        labels: method -> legend label.
        unit: what the training samples are, for the axis ("images", or "vectors" for a features run).

    Up to 50 classes every class is a point (joined in size order; where classes
    share a size, the line joins the mean of each size); beyond, each series is
    the mean accuracy in 12 log-spaced bins of class size.
    """
    counts = np.maximum(np.asarray(train_counts, dtype=np.float64), 0.5)  # a 0-image class still shows on log axes
    ascending = np.argsort(counts, kind="stable")
    figure = new_figure(10, 5)
    axes = figure.add_subplot()
    binned = len(counts) > NAMES_UP_TO
    tied = np.unique(counts).size < counts.size  # classes of the same size: one line point per size
    methods = display_order(per_class)
    accuracies = {m: np.asarray(per_class[m], dtype=np.float64) for m in methods}
    bins = {m: _binned_means(counts, accuracies[m]) for m in methods} if binned else {}
    largest = max((int(b[2].max(initial=0)) for b in bins.values()), default=0)
    for method in methods:
        color, label = method_color(method), _label(method, labels)
        if binned:  # a marker's area says how many classes the bin's mean is over
            x, y, members = bins[method]
            axes.plot(x, y, linewidth=1.2, color=color, label=label)
            axes.scatter(x, y, s=_marker_areas(members, largest), color=color, alpha=0.7, linewidths=0, zorder=3)
        elif tied:  # every class a point; the line joins the mean of each size (joined points would zigzag)
            axes.scatter(counts, accuracies[method], s=16, color=color, alpha=0.6, linewidths=0, zorder=3)
            axes.plot(*_mean_per_size(counts, accuracies[method]), linewidth=1.2, color=color, label=label)
        else:
            x, y = counts[ascending], accuracies[method][ascending]
            axes.plot(x, y, marker="o", markersize=4, linewidth=1.2, color=color, label=label)
    axes.set_xscale("log")
    plain_log_ticks(axes.xaxis)
    _group_bands(axes, counts.min() / 1.25, counts.max() * 1.25, many, few)
    if class_names is not None and len(counts) <= NAMES_ON_TOP_UP_TO:
        _names_on_top(axes, counts, class_names)
    axes.set_ylim(-12, 103)  # the strip below 0 holds the group names
    axes.set_yticks(range(0, 101, 20))
    axes.set_xlabel(f"training {unit} of the class (log scale)")
    axes.set_ylabel("test accuracy of the class (%)" + (", mean per size bin" if binned else ""))
    if binned:  # what the marker sizes mean, with the classes of the fullest bin; above the axes, where no point
        # lies (inside, it sat on a method's line at 100 %)
        axes.text(0.0, 1.01, f"marker area: classes in the bin (largest: {largest:,})", ha="left", va="bottom",
                  fontsize=8, color="0.3", transform=axes.transAxes)  # fmt: skip
    methods = len(per_class)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=9, ncol=min(methods, 7), frameon=False)
    axes.grid(True, axis="y", alpha=0.3)
    return figure


SHOT_COLUMNS = (("many", "Many"), ("medium", "Medium"), ("few", "Few"), ("all", "All"))


def shot_group_figure(summaries: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str] | None = None) -> Figure:
    """Figure 3: many / medium / few / all accuracy bars per method, each bar with its number.

    Args:
        summaries: method -> ``{"many", "medium", "few", "all"}`` in percent (None: an empty group).
        labels: method -> legend label.
    """
    methods = display_order(summaries)
    figure = new_figure(10, 4.8)
    axes = figure.add_subplot()
    width = 0.84 / max(len(methods), 1)
    for k, method in enumerate(methods):
        offset = (k - (len(methods) - 1) / 2) * width
        named = False  # the method's first bar carries its legend entry (the many-shot group may be empty)
        for g, (key, _) in enumerate(SHOT_COLUMNS):
            value = summaries[method].get(key)
            x = g + offset
            if value is None:  # an empty group: say so rather than draw a zero
                axes.text(x, 1, "–", ha="center", va="bottom", fontsize=8)
                continue
            axes.bar(
                x,
                value,
                width * 0.95,
                color=method_color(method),
                label=None if named else _label(method, labels),
            )
            named = True
            axes.text(x, value + 1, f"{value:.1f}", ha="center", va="bottom", fontsize=7, rotation=90)
    axes.set_xticks(range(len(SHOT_COLUMNS)))
    axes.set_xticklabels([name for _, name in SHOT_COLUMNS])
    axes.set_ylim(0, 118)  # room for the numbers above the bars
    axes.set_yticks(range(0, 101, 20))
    axes.set_ylabel("top-1 test accuracy (%)")
    axes.legend(loc="upper center", fontsize=9, ncol=min(len(methods), 7), bbox_to_anchor=(0.5, -0.08), frameon=False)
    axes.grid(True, axis="y", alpha=0.3)
    return figure


CURVE_METRICS = (("all", "all", "black"), ("many", "many-shot", "tab:blue"), ("few", "few-shot", "tab:red"))


def tau_sweep_figure(curves: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Figure 4: accuracy (all, many, few) against τ, on validation (solid) and test (dashed), chosen τ marked.

    Args:
        curves: method -> ``{"select", "chosen", "val": [{"tau", "all", "many", "few", ...}], "test": [...]}``
            as results.json holds them; one panel per method.
    """
    known = [m for m in display_order(curves) if m in METHODS and METHODS[m].sweep]
    methods = known + sorted(set(curves) - set(known))
    figure = new_figure(5.2 * max(len(methods), 1) + 0.6, 4.6)
    if not methods:
        return _no_data(figure, "no τ sweep in this run")
    panels = figure.subplots(1, len(methods), squeeze=False)[0]
    for axes, method in zip(panels, methods, strict=True):
        curve = curves[method]
        for split, style in (("val", "-"), ("test", "--")):
            points = curve.get(split) or []
            taus = [p["tau"] for p in points]
            for key, _, color in CURVE_METRICS:
                values = [np.nan if p.get(key) is None else p[key] for p in points]
                axes.plot(taus, values, linestyle=style, color=color, linewidth=1.4 if split == "val" else 1.0)
        chosen = curve.get("chosen")
        if chosen is not None:
            axes.axvline(chosen, color="tab:green", linewidth=1.2, linestyle=":")
            axes.text(
                chosen,
                1.01,
                f"chosen τ = {chosen:g}",
                color="tab:green",
                ha="center",
                va="bottom",
                fontsize=9,
                transform=axes.get_xaxis_transform(),
            )
        sweep = METHODS[method].sweep if method in METHODS else None
        axes.set_title(sweep[1] if sweep else _label(method), fontsize=10, pad=18)
        axes.set_xlabel("τ")
        axes.set_ylabel("top-1 accuracy (%)")
        axes.grid(True, alpha=0.3)
    # A shot group without classes (no few-shot class in the data) has no line, so no legend entry either.
    drawn = {key for curve in curves.values() for split in ("val", "test") for p in curve.get(split) or []
             for key, value in p.items() if value is not None}  # fmt: skip
    handles = [Line2D([], [], color=color, label=name) for key, name, color in CURVE_METRICS if key in drawn]
    handles += [
        Line2D([], [], color="0.3", linestyle="-", label="validation (selects τ)"),
        Line2D([], [], color="0.3", linestyle="--", label="test (shown only)"),
    ]
    # Three columns a panel: one panel (τ-norm alone, 5.8 inches) cannot hold the five entries in one row.
    ncol = min(len(handles), 3 * len(methods))
    figure.legend(handles=handles, loc="outside lower center", fontsize=9, ncol=ncol, frameon=False)
    return figure


# Readable names of metrics.jsonl keys, and a line style that keeps val_all visible under an equal val_macro.
CURVE_LABELS = {
    "train_loss": ("training loss", "-"),
    "train_acc": ("training (running, augmented)", "-"),
    "val_all": ("validation, all (micro)", "-"),
    "val_macro": ("validation, macro", "--"),
    "val_many": ("validation, many-shot", ":"),
    "val_medium": ("validation, medium-shot", ":"),
    "val_few": ("validation, few-shot", ":"),
    "lr": ("learning rate", "-"),
}


def _number(value: Any) -> float:
    """A metrics.jsonl value as a float; NaN for anything but a number (None: an empty group)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else np.nan


def training_curves_figure(history: Sequence[Mapping[str, Any]], *, augmented: bool = True) -> Figure:
    """Figure 5: stage-1 training curves from ``metrics.jsonl``: loss, accuracy, learning rate per epoch.

    Args:
        history: one record per epoch with ``epoch`` and any of ``train_loss``,
            ``train_acc``, ``val_all``, ``val_macro``, ``val_many`` (...), ``lr`` (other ``*_loss``
            / ``*_acc`` / ``val_*`` keys are drawn too).
        augmented: whether the training batches were augmented (not for precomputed features), for the legend.
    """
    figure = new_figure(12, 4.8)
    if not history:
        return _no_data(figure, "no metrics.jsonl in this run")
    epochs = [r["epoch"] if isinstance(r.get("epoch"), int) else i + 1 for i, r in enumerate(history)]
    keys = sorted({k for r in history for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    panels = {
        "loss": [k for k in keys if k.endswith("loss")],
        "accuracy (%)": [k for k in keys if k.endswith("_acc") or (k.startswith("val_") and not k.endswith("loss"))],
        "learning rate": [k for k in keys if k == "lr"],
    }
    for axes, (title, names) in zip(figure.subplots(1, 3), panels.items(), strict=True):
        for name in names:
            values = [_number(r.get(name)) for r in history]
            label, style = CURVE_LABELS.get(name, (plain_text(name), "-"))  # other keys are the file's own
            if name == "train_acc" and not augmented:
                label = "training (running)"
            marker = "o" if len(epochs) <= 40 else None
            axes.plot(epochs, values, linestyle=style, marker=marker, markersize=3, linewidth=1.3, label=label)
        axes.set_title(title, fontsize=10)
        axes.set_xlabel("epoch")
        axes.grid(True, alpha=0.3)
        if len(names) > 2:  # below the panel: inside, six entries hide the curves they name
            axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
        elif names:
            axes.legend(fontsize=8)
        else:
            axes.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=axes.transAxes)
    return figure


def calibration_figure(
    diagrams: Mapping[str, Reliability], labels: Mapping[str, str] | None = None, *, log_confidence: bool = False
) -> Figure:
    """Figure 7: a reliability diagram per method and the expected calibration error (ECE) of each.

    Args:
        diagrams: method -> reliability data (see :func:`longtail.evaluation.calibration.reliability`).
        labels: method -> panel title.
        log_confidence: a log confidence axis, for diagrams of log-spaced bins (many classes).
    """
    methods = display_order(diagrams)
    slots = len(methods) + 1  # one panel more: the ECE bars
    columns = min(slots, 4)
    rows = -(-slots // columns)
    figure = new_figure(3.2 * columns, 3.2 * rows)
    panels = figure.subplots(rows, columns, squeeze=False).ravel()
    for axes, method in zip(panels, methods, strict=False):  # one panel more: the ECE bars
        diagram = diagrams[method]
        lower, width = diagram.edges[:-1], np.diff(diagram.edges)
        accuracy = np.nan_to_num(diagram.accuracy, nan=0.0)
        axes.bar(
            lower,
            accuracy,
            width,
            align="edge",
            color=method_color(method),
            alpha=0.8,
            edgecolor="white",
            linewidth=0.5,
            label="accuracy",
        )
        # Where the bar falls short of the bin's mean confidence the classifier is over-confident.
        filled = diagram.counts > 0
        axes.plot(
            ((lower + width / 2)[filled]), diagram.confidence[filled], "k.", markersize=4, label="mean confidence"
        )
        diagonal = np.geomspace(diagram.edges[0], 1, 50) if log_confidence else np.array([0.0, 1.0])
        axes.plot(diagonal, diagonal, linestyle="--", color="0.5", linewidth=1)
        # Where the predictions are: at a thousand classes most confidences can sit in the lowest bins.
        share = diagram.counts / max(int(diagram.counts.sum()), 1)
        axes.stairs(share, diagram.edges, color="0.15", linewidth=1.1, label="share of samples")
        if log_confidence:
            axes.set_xscale("log")
            plain_log_ticks(axes.xaxis)
        axes.set_xlim(diagram.edges[0], 1)
        axes.set_ylim(0, 1)
        axes.set_title(f"{_label(method, labels)}: ECE {100 * diagram.ece:.1f}%", fontsize=10)
        axes.set_xlabel("confidence", fontsize=9)
        axes.set_ylabel("accuracy", fontsize=9)
    if methods:
        panels[0].legend(loc="upper left", fontsize=7)
    ece_axes = panels[len(methods)]
    values = [100 * diagrams[m].ece for m in methods]
    ece_axes.barh(range(len(methods)), values, color=[method_color(m) for m in methods])
    for y, value in enumerate(values):
        ece_axes.text(value, y, f" {value:.1f}", va="center", fontsize=8)
    ece_axes.set_yticks(range(len(methods)))
    ece_axes.set_yticklabels([_label(m, labels) for m in methods], fontsize=8)
    ece_axes.set_ylim(max(len(methods), 3) - 0.5, -0.5)  # first method on top; a lone bar stays a bar
    ece_axes.set_xlim(0, float(np.nanmax(values + [1.0])) * 1.25)
    ece_axes.set_xlabel("ECE (%)", fontsize=9)
    ece_axes.set_title("expected calibration error", fontsize=10)
    for axes in panels[slots:]:
        axes.set_axis_off()
    return figure
