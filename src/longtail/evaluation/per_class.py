"""``RUN_DIR/per_class.csv``: every class's numbers, one row per class, beside ``results.json``.

The results table and the report summarise the classes by shot group, which
stays readable at 10,000 classes; the per-class accuracies are in
``results.json`` (``per_class`` lists) and, for a spreadsheet or pandas, here:

    class,name,train_images,group,acc_test_joint,acc_test_crt,...,acc_val_joint,...
    0,T-shirt/top,1000,many,91.2,86.5,...

``class`` is the class index, ``group`` many / medium / few by the run's
thresholds, ``acc_<split>_<method>`` the top-1 accuracy (%) of the method on
the class's images of that split (empty for a class without images there).
Methods come in the results table's order, test first. Names are written as
they are (the ``csv`` module quotes commas, quotes and line breaks), so
``csv.reader`` gives them back exactly.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..fs.atomic import write_text_atomic
from ..methods import display_order
from ..runs import PER_CLASS_FILE
from .metrics import shot_groups

# results.json key of each split's summaries, in column order.
SPLIT_KEYS = (("test", "methods"), ("val", "val_methods"))
DIGITS = 4  # decimals of an accuracy in percent: 1/3 of a class's images is 33.3333


def per_class_rows(results: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The header and the C rows of ``per_class.csv`` from a results dict (as results.json holds it).

    Returns:
        ``(header, rows)``: row ``c`` is ``[c, name, train images, group, accuracies...]``, an accuracy a float
        in percent or None (no image of the class in that split). No rows without ``train_counts``.
    """
    counts = results.get("train_counts")
    if not isinstance(counts, list):
        return ["class", "name", "train_images", "group"], []
    names = results.get("class_names")
    names = names if isinstance(names, list) and len(names) == len(counts) else [str(c) for c in range(len(counts))]
    thresholds = results.get("shot_thresholds") or {}
    groups = shot_groups(counts, thresholds.get("many", 100), thresholds.get("few", 20))
    group_of = {c: group for group, members in groups.items() for c in members}
    columns: list[tuple[str, list[Any]]] = []
    for split, key in SPLIT_KEYS:
        by_method = results.get(key)
        if not isinstance(by_method, Mapping):
            continue
        for method in display_order(by_method):
            values = by_method[method].get("per_class") if isinstance(by_method[method], Mapping) else None
            if isinstance(values, list) and len(values) == len(counts):
                columns.append((f"acc_{split}_{method}", values))
    header = ["class", "name", "train_images", "group"] + [name for name, _ in columns]
    rows = []
    for c, count in enumerate(counts):
        accuracies = [None if values[c] is None else round(float(values[c]), DIGITS) for _, values in columns]
        rows.append([c, str(names[c]), count, group_of.get(c, ""), *accuracies])
    return header, rows


def per_class_csv(results: Mapping[str, Any]) -> str:
    """:func:`per_class_rows` as CSV text (``\\n`` line ends; None as an empty cell)."""
    header, rows = per_class_rows(results)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if cell is None else cell for cell in row] for row in rows])
    return buffer.getvalue()


def write_per_class_csv(run_dir: str | Path, results: Mapping[str, Any]) -> Path | None:
    """Write ``RUN_DIR/per_class.csv`` atomically from ``results``; None (nothing written) without class sizes."""
    if not isinstance(results.get("train_counts"), list):
        return None
    path = Path(run_dir) / PER_CLASS_FILE
    write_text_atomic(path, per_class_csv(results))
    return path
