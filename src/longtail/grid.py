"""The paper's representation-learning grid (Kang et al. 2020, Figure 1 and Table 2) on the user's data.

Rows are stage-1 sampling strategies, columns the classifiers (Joint, NCM, cRT,
τ-norm, LWS). Below: frozen versus fine-tuned representation for cRT
(``decouple.trainable``), and joint training with each re-weighting loss plus
post-hoc logit adjustment. Every run is a normal run directory under ``out``;
a finished run whose config matches is reused, so an interrupted grid resumes.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .version import __version__
from .config import Config, config_to_dict, load_config, parse_override
from .errors import ConfigError
from .methods import METHODS, label_of, method_names
from .io import write_text_atomic
from .pipeline import RUN_TIME_KEYS, decouple, evaluate, train
from .runs import RESULTS_FILE, is_run_dir, read_results

log = logging.getLogger(__name__)

SAMPLERS = ("instance", "class", "sqrt", "progressive")
LOSSES = ("focal", "class_balanced", "ldam_drw", "balanced_softmax", "logit_adjusted")
TRAINABLE = ("classifier", "last_stage", "all")


def paper_classifiers() -> list[str]:
    """The paper's decoupled classifiers (NCM, cRT, τ-norm, LWS), the grid's columns after Joint."""
    return [name for name in method_names() if METHODS[name].in_paper]

# Fashion-MNIST-LT with the CIFAR-10-LT profile: 5000 in the largest class, imbalance 100 (12,406 images).
# Its smallest class has 50 images, so the default shot thresholds (100 / 20) would leave "few" empty;
# ten times larger ones split its 10 classes 4 / 3 / 3.
GRID_DEFAULTS = (
    "data.n_max=5000",
    "data.imbalance_factor=100",
    "data.val_per_class=20",
    "train.epochs=20",
    "eval.many=1000",
    "eval.few=200",
)
SAMPLER_LABELS = {
    "instance": "Instance-balanced",
    "class": "Class-balanced",
    "sqrt": "Square-root",
    "progressive": "Progressively-balanced",
    "class_aware": "Class-aware (blocked)",
    "power": "Power",
}
LOSS_LABELS = {
    "ce": "Cross-entropy",
    "focal": "Focal",
    "class_balanced": "Class-balanced CE",
    "ldam_drw": "LDAM-DRW",
    "balanced_softmax": "Balanced softmax",
    "logit_adjusted": "Logit-adjusted CE",
}
NOTES_MARKER = "<!-- notes: text below this line is kept when the file is regenerated -->"
COLUMNS = ("many", "medium", "few", "all", "macro")


def _choices(values: Sequence[str], allowed: Sequence[str], option: str) -> list[str]:
    for value in values:
        if value not in allowed:
            raise ConfigError(f"{option} {value!r}: expected some of {', '.join(allowed)}")
    return list(values)


def _stage1_keys(config: Config) -> dict[str, Any]:
    """The config as ``{dotted key: value}`` without the keys that may change after stage 1 (``eval.*``, ...)."""
    flat: dict[str, Any] = {}

    def walk(tree: dict[str, Any], prefix: str) -> None:
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif not f"{prefix}{key}".startswith(RUN_TIME_KEYS):
                flat[f"{prefix}{key}"] = value

    walk(config_to_dict(config), "")
    return flat


def _stage1(run_dir: Path, overrides: list[str], say: Callable[[str], None], progress: bool) -> None:
    """Train ``run_dir`` unless it already holds a finished run whose stage-1 config is this one."""
    config = load_config(None, overrides)
    if is_run_dir(run_dir) and (run_dir / RESULTS_FILE).is_file():
        done = load_config(run_dir / "config.yaml")
        if _stage1_keys(done) == _stage1_keys(config) and "joint" in read_results(run_dir).get("methods", {}):
            say(f"reusing {run_dir}")
            return
    say(f"training {run_dir}")
    train(config, run_dir, overwrite=True, progress=progress)


def run_grid(
    out: str | Path,
    *,
    samplers: Sequence[str] = SAMPLERS,
    losses: Sequence[str] = LOSSES,
    trainable: Sequence[str] = TRAINABLE,
    overrides: Sequence[str] = (),
    progress: bool = False,
    say: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Run the grid into ``out``; returns ``{"samplers", "trainable", "losses", "config", "seconds"}``.

    ``samplers`` rows get every classifier; ``trainable`` rows re-train cRT on the
    instance-balanced run (the classifier-only cRT is restored last, so that run
    directory ends as the paper's); ``losses`` rows train jointly with each loss.
    ``overrides`` apply to every run, after :data:`GRID_DEFAULTS`.
    """
    samplers = _choices(samplers, SAMPLERS + ("class_aware", "power"), "--samplers")
    losses = _choices(losses, LOSSES + ("ce",), "--losses")
    trainable = _choices(trainable, TRAINABLE, "--trainable")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = [*GRID_DEFAULTS, *overrides]
    # Run-time keys (eval thresholds, stage-2 settings) also apply to reused runs when they are scored.
    run_time = [text for text in base if parse_override(text)[0].startswith(RUN_TIME_KEYS)]
    start = time.perf_counter()
    grid: dict[str, Any] = {"samplers": {}, "trainable": {}, "losses": {}}
    for sampler in samplers:
        run_dir = out / f"sampler-{sampler}"
        _stage1(run_dir, [*base, f"train.sampler={sampler}"], say, progress)
        methods = paper_classifiers() + (["logit_adjust"] if sampler == "instance" else [])
        grid["samplers"][sampler] = decouple(run_dir, methods, [*run_time, "decouple.trainable=classifier"])["methods"]
    if trainable:
        run_dir = out / "sampler-instance"
        if "instance" not in samplers:
            _stage1(run_dir, [*base, "train.sampler=instance"], say, progress)
        # Classifier-only last, so the run directory's saved cRT is the paper's.
        for part in sorted(trainable, key=lambda p: p == "classifier"):
            say(f"cRT re-training {part} on {run_dir}")
            results = decouple(run_dir, ["crt"], [*run_time, f"decouple.trainable={part}"])
            grid["trainable"][part] = results["methods"]["crt"]
        grid["trainable"]["joint"] = results["methods"]["joint"]
    for loss in losses:
        run_dir = out / f"loss-{loss}"
        _stage1(run_dir, [*base, f"train.loss={loss}"], say, progress)
        grid["losses"][loss] = evaluate(run_dir, "test", run_time)["methods"]["joint"]
    if "instance" in samplers:
        grid["losses"]["ce"] = grid["samplers"]["instance"]["joint"]
        grid["losses"]["post_hoc"] = grid["samplers"]["instance"]["logit_adjust"]
    grid["config"] = config_to_dict(load_config(None, base))
    grid["seconds"] = time.perf_counter() - start
    # Reused runs were trained by an earlier invocation: report their training time as well.
    grid["train_seconds"] = sum(
        read_results(run_dir).get("timing", {}).get("train_seconds", 0.0)
        for run_dir in out.iterdir()
        if run_dir.name.startswith(("sampler-", "loss-")) and (run_dir / RESULTS_FILE).is_file()
    )
    return grid


def _cell(metrics: dict[str, Any] | None) -> str:
    if metrics is None:
        return "–"
    return " / ".join("–" if metrics.get(c) is None else f"{metrics[c]:.1f}" for c in COLUMNS)


def _row(metrics: dict[str, Any]) -> str:
    return " | ".join("–" if metrics.get(c) is None else f"{metrics[c]:.1f}" for c in COLUMNS)


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
        f"{SAMPLER_LABELS[balanced_best].lower()} sampling (the best other row): "
        + ("**reproduced**." if helps else "**not reproduced** here.")
    )
    decoupled = {s: _best_decoupled(rows[s]) for s in rows}
    winner = max(rows, key=lambda s: decoupled[s][1])
    method, value = decoupled["instance"]
    second = (
        f"- **Finding 2, after decoupling: the instance-balanced representation is best.** The best decoupled "
        f"classifier reaches {value:.1f} macro on the instance-balanced representation "
        f"({label_of(method)}); the best over all rows is {decoupled[winner][1]:.1f} "
        f"({SAMPLER_LABELS[winner].lower()}, {label_of(decoupled[winner][0])}): "
        + ("**reproduced**." if winner == "instance" else "**not reproduced** here.")
    )
    return [first, second]


def grid_markdown(grid: dict[str, Any], command: str, notes: str = "") -> str:
    """The generated document: tables, the command, wall time, environment, the computed reading."""
    cfg = grid["config"]
    data, train_cfg = cfg["data"], cfg["train"]
    lines = [
        "# The paper's representation-learning grid",
        "",
        f"Generated by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d} "
        f"({platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"longtail {__version__}): {grid['seconds'] / 60:.0f} min for this invocation; the stage-1 runs it "
        f"used took {grid.get('train_seconds', 0.0) / 60:.0f} min of training (finished runs are reused).",
        "",
        f"Data: `{data['name']}`, {data['n_max']} images in the largest class, imbalance factor "
        f"{data['imbalance_factor']:g} ({data['profile']} profile, data seed {data['seed']}); validation "
        f"{data['val_per_class']} per class from training images outside the subset; the full test set. "
        f"Backbone `{cfg['model']['backbone']}`, {train_cfg['epochs']} epochs, batch {train_cfg['batch_size']}, "
        f"lr {train_cfg['lr']:g}, seed {cfg['seed']}; τ (τ-norm, logit adjustment) chosen on validation by "
        f"{cfg['decouple']['select']} accuracy. Cells: top-1 % on test, many / medium / few / all / macro; "
        f"many-shot classes have more than {cfg['eval']['many']} training images, few-shot fewer than "
        f"{cfg['eval']['few']}.",
    ]
    if grid["samplers"]:
        lines += ["", "## Stage-1 sampling × classifier", ""]
        columns = ["joint", *paper_classifiers()]
        lines += ["| Stage-1 sampling | " + " | ".join(label_of(m) for m in columns) + " |"]
        lines += ["|---" * (len(columns) + 1) + "|"]
        for sampler, methods in grid["samplers"].items():
            cells = [_cell(methods.get(m)) for m in columns]
            lines.append(f"| {SAMPLER_LABELS[sampler]} | " + " | ".join(cells) + " |")
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
        for loss in ("ce", *LOSSES):
            if loss in grid["losses"]:
                lines.append(f"| {LOSS_LABELS[loss]} | {_row(grid['losses'][loss])} |")
        if "post_hoc" in grid["losses"]:
            tau = grid["losses"]["post_hoc"].get("tau", 0.0)
            lines.append(f"| CE + post-hoc logit adjustment (τ = {tau:g}) | {_row(grid['losses']['post_hoc'])} |")
    lines += ["", "## Reading (computed from the tables above)", "", *reading(grid), "", NOTES_MARKER, notes]
    return "\n".join(lines).rstrip() + "\n"


def write_grid_doc(grid: dict[str, Any], path: str | Path, command: str) -> Path:
    """Write :func:`grid_markdown` to ``path``, keeping the notes below the marker of an existing file."""
    path = Path(path)
    notes = ""
    if path.is_file() and NOTES_MARKER in path.read_text():
        notes = path.read_text().split(NOTES_MARKER, 1)[1].strip("\n")
    write_text_atomic(path, grid_markdown(grid, command, notes))
    return path
