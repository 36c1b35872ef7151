"""The grid's Markdown: its tables, the captions (data, fingerprints, seeds), the computed reading of the
paper's two findings, and the document file whose notes survive regeneration.

:func:`~longtail.grid.run.run_grid` returns the record these render; nothing here trains or reads a run.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..errors import OutputPathError
from ..fs.atomic import write_text_atomic
from ..methods import display_order, label_of
from ..registry import DATASETS
from ..version import __version__
from .rows import COLUMNS, TRAINABLE, loss_label, loss_rows, paper_classifiers, sampler_label

NOTES_MARKER = "<!-- notes: text below this line is kept when the file is regenerated -->"


def _value(metrics: dict[str, Any], key: str) -> str:
    """``78.8``, or over seeds ``78.8 ± 1.1`` (mean ± sample std); ``–`` for None (an empty group)."""
    value = metrics.get(key)
    if value is None:
        return "–"
    spread = metrics.get("std", {}).get(key)
    return f"{value:.1f}" if spread is None else f"{value:.1f} ± {spread:.1f}"


def _cell(metrics: dict[str, Any] | None) -> str:
    if metrics is None:
        return "–"
    return " / ".join(_value(metrics, c) for c in COLUMNS)


def _row(metrics: dict[str, Any]) -> str:
    return " | ".join(_value(metrics, c) for c in COLUMNS)


def _tau(metrics: dict[str, Any]) -> str:
    """The τ a method chose: one value, or over seeds the mean ± std of the per-seed choices."""
    tau, spread = metrics.get("tau", 0.0), metrics.get("std", {}).get("tau")
    return f"τ = {tau:g}" if spread is None else f"τ = {tau:.2f} ± {spread:.2f}, chosen per seed"


def _best_decoupled(methods: dict[str, Any], key: str = "macro") -> tuple[str, float]:
    name = max(paper_classifiers(), key=lambda m: methods[m][key])
    return name, methods[name][key]


def reading(grid: dict[str, Any]) -> list[str]:
    """The paper's two findings, checked against the numbers of ``grid`` (one bullet each)."""
    rows = grid["samplers"]
    if "instance" not in rows or len(rows) < 2:
        return ["- Both findings need the instance-balanced row and at least one other sampler."]
    others = [s for s in rows if s != "instance"]
    joint = {s: rows[s]["joint"]["macro"] for s in rows}
    balanced_best = max(others, key=joint.get)
    helps = joint[balanced_best] > joint["instance"]
    first = (
        f"- **Finding 1, joint training: better balancing helps.** Joint macro accuracy is "
        f"{joint['instance']:.1f} with instance-balanced sampling and {joint[balanced_best]:.1f} with "
        f"{sampler_label(balanced_best).lower()} sampling (the best other row): "
        + ("**reproduced**." if helps else "**not reproduced** here.")
    )
    decoupled = {s: _best_decoupled(rows[s]) for s in rows}
    winner = max(rows, key=lambda s: decoupled[s][1])
    method, value = decoupled["instance"]
    second = (
        f"- **Finding 2, after decoupling: the instance-balanced representation is best.** The best decoupled "
        f"classifier reaches {value:.1f} macro on the instance-balanced representation "
        f"({label_of(method)}); the best over all rows is {decoupled[winner][1]:.1f} "
        f"({sampler_label(winner).lower()}, {label_of(decoupled[winner][0])}): "
        + ("**reproduced**." if winner == "instance" else "**not reproduced** here.")
    )
    return [first, second]


def data_caption(data: dict[str, Any]) -> str:
    """The data of ``data`` (a config's ``data`` section) in one sentence: a drawn long-tailed subset's
    profile, or, for a reader that reads its data whole, where it is (``n_max`` and the profile do not apply
    there, and stating them would describe data the runs never saw)."""
    if DATASETS.get(data["name"]).draws_subset:
        return (
            f"Data: `{data['name']}`, {data['n_max']} images in the largest class, imbalance factor "
            f"{data['imbalance_factor']:g} ({data['profile']} profile, data seed {data['seed']}); validation "
            f"{data['val_per_class']} per class from training images outside the subset; the full test set."
        )
    where = data.get("path") or data.get("root")
    return (
        f"Data: `{data['name']}`" + (f" (`{where}`)" if where else "") + ", read whole: its own class sizes; "
        f"its own validation split where it has one, else up to {data['val_per_class']} per class held out of "
        "the training set; its test set."
    )


def grid_markdown(grid: dict[str, Any], command: str, notes: str = "") -> str:
    """The generated document: tables, the command, wall time, environment, the computed reading.

    A sweep's document has its two tables (validation, which chooses, and test,
    for display) and the chosen combination instead of the paper's tables.
    """
    cfg = grid["config"]
    data, train_cfg = cfg["data"], cfg["train"]
    seeds, sweep = grid.get("seeds"), grid.get("sweep")
    seed_text = f"seed {cfg['seed']}" if not seeds else f"training seeds {', '.join(map(str, seeds))}"
    if sweep:
        cells_text = f"Cells: {sweep['select']} top-1 % of each combination's run decoupled with `--method all,auto`; "
    else:
        cells_text = "Cells: top-1 % on test, many / medium / few / all / macro; "
    lines = [
        "# Stage-1 sweep chosen on validation" if sweep else "# The paper's representation-learning grid",
        "",
        f"Generated by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d} "
        f"({platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"longtail {__version__}): {grid['seconds'] / 60:.0f} min for this invocation; the stage-1 runs it "
        f"used took {grid.get('train_seconds', 0.0) / 60:.0f} min of training (finished runs are reused).",
        "",
        f"{data_caption(data)} Backbone `{cfg['model']['backbone']}`, {train_cfg['epochs']} epochs, "
        f"batch {train_cfg['batch_size']}, "
        f"lr {train_cfg['lr']:g}, {seed_text}; τ (τ-norm, logit adjustment) chosen on validation by "
        f"{cfg['decouple']['select']} accuracy. {cells_text}"
        f"many-shot classes have more than {cfg['eval']['many']} training images, few-shot fewer than "
        f"{cfg['eval']['few']}.",
    ]
    if grid.get("fingerprints"):
        lines += ["", _fingerprint_caption(grid["fingerprints"])]
    if seeds:
        lines += ["", _seeds_caption(seeds, data["seed"])]
        if not sweep:
            lines[-1] += " The reading below compares means: a difference below the spreads is within seed noise."
    if sweep:
        lines += ["", *sweep_markdown(sweep), "", NOTES_MARKER, notes]
        return "\n".join(lines).rstrip() + "\n"
    if grid["samplers"]:
        lines += ["", "## Stage-1 sampling × classifier", ""]
        columns = ["joint", *paper_classifiers()]
        lines += ["| Stage-1 sampling | " + " | ".join(label_of(m) for m in columns) + " |"]
        lines += ["|---" * (len(columns) + 1) + "|"]
        for sampler, methods in grid["samplers"].items():
            cells = [_cell(methods.get(m)) for m in columns]
            lines.append(f"| {sampler_label(sampler)} | " + " | ".join(cells) + " |")
    if grid["trainable"]:
        lines += ["", "## Frozen versus fine-tuned representation in stage 2 (cRT, instance-balanced stage 1)", ""]
        lines += ["| Stage 2 re-trains | Many | Medium | Few | All | Macro |", "|---|---|---|---|---|---|"]
        lines.append(f"| nothing (Joint) | {_row(grid['trainable']['joint'])} |")
        for part in TRAINABLE:
            if part in grid["trainable"]:
                label = {"classifier": "classifier (cRT)", "last_stage": "last stage + classifier"}.get(part, part)
                lines.append(f"| {label} | {_row(grid['trainable'][part])} |")
    if grid["losses"]:
        lines += ["", "## Joint training with re-weighting losses (instance-balanced sampling)", ""]
        lines += ["| Loss | Many | Medium | Few | All | Macro |", "|---|---|---|---|---|---|"]
        for loss in loss_rows(grid["losses"]):
            lines.append(f"| {loss_label(loss)} | {_row(grid['losses'][loss])} |")
        if "post_hoc" in grid["losses"]:
            post_hoc = grid["losses"]["post_hoc"]
            lines.append(f"| CE + post-hoc logit adjustment ({_tau(post_hoc)}) | {_row(post_hoc)} |")
    lines += ["", "## Reading (computed from the tables above)", "", *reading(grid), "", NOTES_MARKER, notes]
    return "\n".join(lines).rstrip() + "\n"


def _fingerprint_caption(fingerprints: dict[str, Any]) -> str:
    """Which data every cell was scored on, and each run's fingerprint (longtail.pipeline.provenance)."""
    val = fingerprints["val"]
    val_text = (
        f"validation data {val[0]}" if len(val) == 1 else f"validation data differ across runs ({', '.join(val)})"
    )
    runs = ", ".join(f"`{name}` {fingerprint}" for name, fingerprint in fingerprints["runs"].items())
    return f"Fingerprints: every cell scored on test data {', '.join(fingerprints['test'])}; {val_text}. Runs: {runs}."


def _seeds_caption(seeds: Sequence[int], data_seed: int) -> str:
    return (
        f"Every cell is the mean ± the sample standard deviation (denominator n − 1) over n = {len(seeds)} training "
        f"seeds ({', '.join(map(str, seeds))}; `seed=`), one run directory each; the data seed stays {data_seed}, "
        "so every seed trains on the same long-tailed subset and is scored on the same validation and test images."
        + (" With n = 1 there is no spread to show." if len(seeds) == 1 else "")
    )


def _combination_text(combination: dict[str, str]) -> str:
    return ", ".join(f"`{key}={value}`" for key, value in combination.items())


def sweep_markdown(sweep: dict[str, Any]) -> list[str]:
    """A sweep's sections: validation (which chooses) and test (display) per combination and method, the choice."""
    select, rows, keys = sweep["select"], sweep["rows"], sweep["keys"]
    methods = display_order(name for row in rows for name in row["val"])
    chosen = rows[sweep["chosen"]]

    def table(split: str, title: str) -> list[str]:
        header = [*keys, *(label_of(m) for m in methods)] + (["Auto picked"] if split == "val" else [])
        lines = ["", f"### {title}", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        for index, row in enumerate(rows):
            values = [f"`{row['combination'][key]}`" for key in keys]
            if index == sweep["chosen"]:
                values[0] = f"**{values[0]}** (chosen)"
            cells = [("–" if row[split].get(m) is None else _value(row[split][m], select)) for m in methods]
            picks = [", ".join(row["auto"])] if split == "val" else []
            lines.append("| " + " | ".join([*values, *cells, *picks]) + " |")
        return lines

    auto_val, auto_test = chosen["val"]["auto"], chosen["test"]["auto"]
    return [
        f"## Sweep over {', '.join(f'`{key}`' for key in keys)}",
        "",
        f"One stage-1 run per combination{' and seed' if any(len(r['auto']) > 1 for r in rows) else ''}, each "
        f"decoupled with every method and `auto` (the best method and hyper-parameters on validation). The "
        f"combination whose `auto` has the best {'mean ' if len(chosen['auto']) > 1 else ''}validation {select} "
        "accuracy is chosen; the test numbers are shown for reading only and never enter the choice.",
        *table("val", f"Validation {select} accuracy (chooses)"),
        *table("test", f"Test {select} accuracy (display only)"),
        "",
        f"**Chosen on validation: {_combination_text(chosen['combination'])}**: `auto` reaches "
        f"{_value(auto_val, select)} {select} on validation and {_value(auto_test, select)} on test "
        f"(runs: {', '.join(f'`{name}`' for name in chosen['runs'])}).",
    ]


def check_grid_doc(path: str | Path, *, overwrite: bool) -> None:
    """Refuse ``--doc FILE`` that exists and is not a grid document (no notes marker), unless ``overwrite``;
    a grid document is regenerated in place, its notes kept."""
    path = Path(path)
    if path.is_file() and not overwrite and NOTES_MARKER not in _text(path):
        raise OutputPathError(
            f"{path}: exists and is not a document `longtail grid` wrote; pass --overwrite to replace it, "
            "or choose another --doc"
        )


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def write_grid_doc(grid: dict[str, Any], path: str | Path, command: str) -> Path:
    """Write :func:`grid_markdown` to ``path``, keeping the notes below the marker of an existing file."""
    path = Path(path)
    text = _text(path) if path.is_file() else ""
    notes = text.split(NOTES_MARKER, 1)[1].strip("\n") if NOTES_MARKER in text else ""
    write_text_atomic(path, grid_markdown(grid, command, notes))
    return path
