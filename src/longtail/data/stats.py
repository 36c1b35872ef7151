"""Class-size statistics of a dataset or a split file, and the class-size plot (``longtail data stats``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.metrics import shot_groups
from ..fs.figure_file import figure_format, write_figure
from .longtail import class_counts, implied_classes


def class_size_stats(counts: Sequence[int], *, many: int = 100, few: int = 20) -> dict[str, Any]:
    """Figures of a class-size distribution.

    Args:
        counts: images per class (a class may have 0).
        many, few: shot-group thresholds: many-shot ``n > many``, few-shot ``n < few``.

    Returns:
        ``{"classes", "images", "max", "min", "imbalance_factor", "many", "medium",
        "few", "empty_classes", "thresholds", "counts"}``; many / medium / few are
        numbers of classes, ``min`` and the imbalance factor (largest / smallest)
        are over the classes that have images.
    """
    counts_array = np.asarray(counts, dtype=np.int64)
    present = counts_array[counts_array > 0]
    groups = shot_groups(counts_array, many, few)
    largest = int(present.max()) if len(present) else 0
    smallest = int(present.min()) if len(present) else 0
    return {
        "classes": len(counts_array),
        "images": int(counts_array.sum()),
        "max": largest,
        "min": smallest,
        "imbalance_factor": round(largest / smallest, 4) if smallest else None,
        "many": len(groups["many"]),
        "medium": len(groups["medium"]),
        "few": len(groups["few"]),
        "empty_classes": int((counts_array == 0).sum()),
        "thresholds": {"many": many, "few": few},
        "counts": counts_array.tolist(),
    }


def count_difference(now: Sequence[int], then: Sequence[int]) -> str:
    """Where two lists of class sizes first differ, in a phrase of bounded length whatever the number of classes.

    >>> count_difference([5, 4, 3], [5, 4, 2])
    'class 2 has 3 training samples now, 2 before'
    >>> count_difference([5, 4], [5, 4, 3])
    '2 classes now, 3 before'
    """
    now, then = list(now), list(then)
    if len(now) != len(then):
        return f"{len(now):,} classes now, {len(then):,} before"
    first = next((c for c, (a, b) in enumerate(zip(now, then, strict=True)) if a != b), None)
    if first is None:
        return "the same class sizes"
    others = sum(a != b for a, b in zip(now, then, strict=True)) - 1
    more = f" (and {others:,} other classes)" if others else ""
    return f"class {first} has {now[first]:,} training samples now, {then[first]:,} before{more}"


def _classes(count: int) -> str:
    """``1 class``, ``2 classes``, ``1,000 classes``."""
    return f"{count:,} class" if count == 1 else f"{count:,} classes"


def format_stats(stats: dict[str, Any], source: str, unit: str = "images") -> str:
    """The figures as a few readable lines, as long at 10,000 classes as at 10; ``unit``: what the samples are
    ("images", or "vectors" for a features file)."""
    many, few = stats["thresholds"]["many"], stats["thresholds"]["few"]
    factor = "n/a" if stats["imbalance_factor"] is None else f"{stats['imbalance_factor']:g}"
    lines = [
        f"{source}: {_classes(stats['classes'])}, {stats['images']:,} {unit}",
        f"  {unit} per class: max {stats['max']:,}, min {stats['min']:,}, imbalance factor {factor}",
        f"  many-shot (> {many}): {_classes(stats['many'])}, medium ({few} to {many}): {stats['medium']:,}, "
        f"few-shot (< {few}): {stats['few']:,}",
    ]
    if stats["empty_classes"]:
        lines.append(f"  {_classes(stats['empty_classes'])} without {unit} (counted as few-shot)")
    if "val_source" in stats:
        lines.append(f"  validation split: {stats['val_source']}")
    return "\n".join(lines)


LOG_RANK_CLASSES = 1000  # beyond, plot_class_sizes draws the class rank on a log axis


def plot_class_sizes(
    counts: Sequence[int], path: str | Path, *, title: str, many: int = 100, few: int = 20, unit: str = "images"
) -> Path:
    """Write a figure of the class sizes, largest first, on a log scale, with the shot-group thresholds.

    Its format is ``path``'s suffix: .png, .svg or .pdf (anything else is refused before drawing).

    ``unit`` names the samples on the axis: "images", or "vectors" for a features file. Beyond
    ``LOG_RANK_CLASSES`` classes the rank axis is logarithmic (rank 1 the largest class), so the head shows.
    """
    # The object-oriented API with the Agg canvas: no GUI backend, no global pyplot state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from ..log_ticks import plain_log_ticks

    figure_format(path)  # before drawing: a .jpg name would have held PNG bytes

    sizes = np.sort(np.asarray(counts, dtype=np.int64))[::-1]
    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    # Beyond LOG_RANK_CLASSES the rank axis is logarithmic, from rank 1: on a linear one the head is lost at the
    # left edge (10,000 classes of 200 down to 2: the 30 many-shot classes took 2 pixels, the plot peaked near 100).
    log_rank = len(sizes) > LOG_RANK_CLASSES
    first = 1 if log_rank else 0
    # One step per class: class k spans [k, k + 1), so the last size is repeated at the right edge.
    edges = np.arange(len(sizes) + 1) + first
    heights = np.maximum(np.append(sizes, sizes[-1:]), 0.5)
    axes.fill_between(edges, heights, 0.5, step="post", color="tab:blue", alpha=0.7, linewidth=0)
    axes.set_yscale("log")
    plain_log_ticks(axes.yaxis)
    # Up to the many-shot line at least: a legend naming a threshold the plot does not reach reads as a bug.
    axes.set_ylim(0.5, max(float(heights.max()), many) * 1.5)
    axes.set_xlim(first, max(len(sizes), 1) + first)
    if log_rank:
        axes.set_xscale("log")
        plain_log_ticks(axes.xaxis)
    else:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # a rank is a whole number (2 classes: 0.25 steps)
    for value, label, style in ((many, f"many-shot > {many}", "--"), (few, f"few-shot < {few}", ":")):
        axes.axhline(value, color="tab:red", linestyle=style, linewidth=1, label=label)
    axes.set_xlabel("class rank (largest first" + (" = 1, log scale)" if log_rank else ")"))
    axes.set_ylabel(f"{unit} per class (log scale)")
    # Drawn literally: the title is a file's name, and an even number of "$" in it would be parsed as mathtext.
    axes.set_title(title.replace("$", r"\$"))
    axes.legend(loc="upper right")
    figure.tight_layout()
    return write_figure(figure, path)


def split_file_counts(path: str | Path) -> list[int]:
    """Images per class of a split file (``relative/path label`` lines); classes 0 to the largest label."""
    from .filelist import read_split_lines

    _, labels = read_split_lines(path)
    return class_counts(labels, implied_classes(labels, str(path))).tolist()


def dataset_counts(config: Any, split: str = "train") -> tuple[list[int], str, dict[str, Any]]:
    """Images per class of ``split`` of the dataset a config describes, its name, and its info (val source...,
    and ``unit``: "images", or "vectors" for a features file)."""
    from .registry import create_dataset
    from .transforms import holds_features

    splits = create_dataset(config.data)
    counts = class_counts(splits.split(split).labels.numpy(), splits.num_classes)
    info = {**splits.info, "unit": "vectors" if holds_features(splits) else "images"}
    return counts.tolist(), f"{splits.name} ({split})", info
