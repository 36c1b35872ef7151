"""The paper's representation-learning grid (Kang et al. 2020, Figure 1 and Table 2) on the user's data,
stage-1 sweeps chosen on validation, and both over training seeds.

Rows are stage-1 sampling strategies, columns the classifiers (Joint, NCM, cRT,
τ-norm, LWS). Below: frozen versus fine-tuned representation for cRT
(``decouple.trainable``), and joint training with each re-weighting loss plus
post-hoc logit adjustment. Every run is a normal run directory under ``out``;
a finished run whose config matches is reused, so an interrupted grid resumes.

A sweep (``sweeps``, ``--sweep KEY=v1,v2``) replaces those rows: one stage-1
run per combination of values (several keys make a product), each decoupled
with every method and ``auto``; the combination whose ``auto`` classifier is
best on validation is chosen (test is shown, never read for the choice).

Seeds (``seeds``, ``--seeds 0 1 2``) repeat every run of either kind once per
training seed (``seed=``; ``data.seed`` stays, so the long-tailed subset is the
same) and make every cell the mean and sample standard deviation over them
(:func:`mean_std`); a sweep then chooses by mean validation score.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..config import Config, config_to_dict, load_config, parse_override
from ..data.fingerprint import short
from ..data.registry import create_dataset
from ..errors import ConfigError, OutputPathError, RunDirError
from ..fs.atomic import write_text_atomic
from ..methods import METHODS, display_order, label_of, method_names
from ..methods.selection import check_select_on_data
from ..pipeline import RUN_TIME_KEYS, decouple, evaluate, resume, train
from ..pipeline.provenance import KEY as PROVENANCE_KEY
from ..pipeline.provenance import differences, stage1_keys, stage1_provenance
from ..pipeline.representation import representation_splits
from ..runs import is_run_dir, load_checkpoint, read_results
from ..version import __version__

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
    "train.weight_decay=5e-4",  # the paper's (the demo's default is larger, tuned)
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
# Characters kept in a sweep's run-directory names; anything else (a slash, a space, a quote) becomes "_".
UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._+=-]")
MAX_NAME_LENGTH = 120  # longer names are cut and made unique by a hash of the whole combination
# Stage-1 runs a grid may train unless --max-runs says more: a sweep's product grows fast (three keys of ten
# values are a thousand runs), and each run is minutes to hours; the count is checked before anything trains.
MAX_RUNS = 100
NOTES_MARKER = "<!-- notes: text below this line is kept when the file is regenerated -->"
COLUMNS = ("many", "medium", "few", "all", "macro")


def _choices(values: Sequence[str], allowed: Sequence[str], option: str) -> list[str]:
    for value in values:
        if value not in allowed:
            raise ConfigError(f"{option} {value!r}: expected some of {', '.join(allowed)}")
    return list(values)


def _stage1(run_dir: Path, overrides: list[str], say: Callable[[str], None], progress: bool, overwrite: bool) -> None:
    """Make ``run_dir`` a finished stage-1 run of ``overrides``: reuse a finished run of the same provenance
    (config, data, program, version), resume an interrupted one, train where there is none; a run of anything
    else is refused by name unless ``overwrite`` (then retrained)."""
    config = load_config(None, overrides)
    if (run_dir / "config.yaml").is_file() and not is_run_dir(run_dir):  # killed before its first checkpoint
        if _stage1_difference(run_dir, config) == "config":
            say(f"resuming {run_dir}")
            resume(run_dir, progress=progress)
            return
    if not is_run_dir(run_dir):
        say(f"training {run_dir}")
        train(config, run_dir, overwrite=overwrite, progress=progress)  # an occupied non-run is refused there
        return
    splits = representation_splits(config, create_dataset(config.data))
    wanted = stage1_provenance(config, splits)
    recorded = load_checkpoint(run_dir).get(PROVENANCE_KEY)
    differs = differences(recorded, wanted)
    if not differs:
        if "joint" in read_results(run_dir).get("methods", {}):
            say(f"reusing {run_dir} (fingerprint {wanted['fingerprint']})")
        else:
            say(f"resuming {run_dir}")
            resume(run_dir, progress=progress)
        return
    if not overwrite:
        what = _stage1_difference(run_dir, config) if "config" in differs else ", ".join(differs)
        raise RunDirError(
            f"{run_dir}: holds a run of other {what} than this grid cell (fingerprint "
            f"{short((recorded or {}).get('fingerprint'))}, wanted {wanted['fingerprint']}); pass --overwrite to "
            "retrain it, or choose another --out"
        )
    say(f"retraining {run_dir} (--overwrite; it held a run of other {', '.join(differs)})")
    train(config, run_dir, overwrite=True, progress=progress)


def _stage1_difference(run_dir: Path, config: Config) -> str:
    """The first stage-1 key whose value differs between the run's config.yaml and ``config``, as text."""
    done = stage1_keys(config_to_dict(load_config(run_dir / "config.yaml")))
    wanted = stage1_keys(config_to_dict(config))
    key = next((k for k in wanted if done.get(k, "<absent>") != wanted[k]), None)
    return "config" if key is None else f"config ({key}={done.get(key, '<absent>')!r}, wanted {wanted[key]!r})"


def parse_sweep(text: str) -> tuple[str, list[str]]:
    """``KEY=v1,v2,...`` (one ``--sweep``) -> ``(KEY, [v1, v2, ...])``, values as override strings."""
    key, sep, values = text.partition("=")
    items = [value.strip() for value in values.split(",")]
    if not sep or not key.strip() or not all(items):
        raise ConfigError(f"--sweep {text!r}: expected KEY=v1,v2,... (a config key, then non-empty values)")
    if len(set(items)) < len(items):
        raise ConfigError(f"--sweep {text!r}: a value is given twice")
    return key.strip(), items


def sweep_combinations(sweeps: Sequence[tuple[str, list[str]]]) -> list[dict[str, str]]:
    """Every combination of the sweeps' values, ``{key: value}`` in order (the first key varies slowest)."""
    keys = [key for key, _ in sweeps]
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(values for _, values in sweeps))]


def sweep_dir_name(combination: dict[str, str]) -> str:
    """``sweep-KEY=VALUE__KEY2=VALUE2``, with characters unsafe in a file name replaced by ``_``."""
    name = "sweep-" + "__".join(UNSAFE_NAME_CHARACTERS.sub("_", f"{k}={v}") for k, v in combination.items())
    if len(name) > MAX_NAME_LENGTH:
        digest = hashlib.sha256(repr(sorted(combination.items())).encode()).hexdigest()[:10]
        name = f"{name[: MAX_NAME_LENGTH - 11]}-{digest}"
    return name


def _seeded(name: str, seed: int | None) -> str:
    """A run directory's name for one training seed (None: a grid without ``--seeds``, the plain name)."""
    return name if seed is None else f"{name}-seed{seed}"


def _seed_overrides(seed: int | None) -> list[str]:
    return [] if seed is None else [f"seed={seed}"]


def _check_seeds(seeds: Sequence[int] | None, overrides: Sequence[str]) -> list[int | None]:
    """The seeds to run: ``[None]`` (each run once, with the config's seed) without ``seeds``."""
    if seeds is None:
        return [None]
    seeds = list(seeds)
    if not seeds:
        raise ConfigError("--seeds: expected at least one seed")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"--seeds {seed!r}: expected integers >= 0")
    if len(set(seeds)) < len(seeds):
        raise ConfigError(f"--seeds {' '.join(map(str, seeds))}: a seed is given twice")
    if any(parse_override(text)[0] == "seed" for text in overrides):
        raise ConfigError("seed=...: give the training seeds with --seeds alone")
    return seeds


def _check_run_count(per_seed: int, seeds: int, max_runs: int) -> None:
    """Refuse more than ``max_runs`` stage-1 runs: ``per_seed`` (a sweep's product, counted, never listed) x seeds."""
    runs = per_seed * seeds
    if isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1:
        raise ConfigError(f"--max-runs {max_runs!r}: expected an integer >= 1")
    if runs > max_runs:
        raise ConfigError(
            f"grid: {runs:,} stage-1 runs (rows or sweep combinations, times the seeds), more than --max-runs "
            f"{max_runs:,}; sweep fewer values, or pass --max-runs {runs} if you mean it"
        )


def _check_sweeps(
    sweeps: list[tuple[str, list[str]]], base: Sequence[str], overrides: Sequence[str], seeds: list[int | None]
) -> None:
    """Refuse a sweep that is not a stage-1 key, is given twice (or also in ``overrides``, the user's) or has a
    bad value (``base``: the grid's defaults and ``overrides``), before anything is trained."""
    given = {parse_override(text)[0] for text in overrides}
    keys = [key for key, _ in sweeps]
    for key in keys:
        if key == "seed":
            raise ConfigError("--sweep seed: a training seed is not chosen on validation; average with --seeds")
        if key.startswith(RUN_TIME_KEYS):
            raise ConfigError(
                f"--sweep {key}: not a stage-1 key (it can change on a trained run; "
                "`longtail decouple RUN --method auto` tunes stage 2 on validation)"
            )
        if keys.count(key) > 1 or key in given:
            raise ConfigError(f"--sweep {key}: the key is given twice (in two --sweep or as key=value)")
    for combination in sweep_combinations(sweeps):
        for seed in seeds:  # unknown keys and bad values fail here, not after hours of training
            load_config(None, [*base, *(f"{k}={v}" for k, v in combination.items()), *_seed_overrides(seed)])
    names = [sweep_dir_name(c) for c in sweep_combinations(sweeps)]
    if len(set(names)) < len(names):
        raise ConfigError("--sweep: two combinations give the same run-directory name; use plainer values")


def mean_std(cells: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """One cell over seeds: the mean of each metric, its sample standard deviation (n − 1) and n.

    ``cells`` are a method's metrics dicts (many / medium / few / all / macro,
    perhaps ``tau``), one per seed. One cell is returned as it is. The result
    has each metric's mean, ``"std"`` (``{metric: sample std}``; None for n = 1)
    and ``"n"``; a metric that is None in any seed (an empty shot group) is None.
    None if the method is missing in a seed.
    """
    if any(cell is None for cell in cells):
        return None
    if len(cells) == 1:
        return cells[0]
    merged: dict[str, Any] = {"std": {}, "n": len(cells)}
    for key in (*COLUMNS, "tau"):
        if not any(key in cell for cell in cells):
            continue
        values = [cell.get(key) for cell in cells]
        if any(value is None for value in values):
            merged[key] = merged["std"][key] = None
            continue
        merged[key] = statistics.fmean(values)
        merged["std"][key] = statistics.stdev(values)
    return merged


def _mean_std_methods(per_seed: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{method: cell}`` per seed -> ``{method: mean_std}`` for the methods of the first seed, in its order."""
    return {name: mean_std([methods.get(name) for methods in per_seed]) for name in per_seed[0]}


def _mean_std_grid(grids: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The paper grid's ``samplers``, ``trainable`` and ``losses`` of each seed, cell by cell over the seeds."""
    first = grids[0]
    return {
        "samplers": {row: _mean_std_methods([g["samplers"][row] for g in grids]) for row in first["samplers"]},
        "trainable": _mean_std_methods([g["trainable"] for g in grids]) if first["trainable"] else {},
        "losses": _mean_std_methods([g["losses"] for g in grids]) if first["losses"] else {},
    }


@dataclass
class _Grid:
    """What every cell of one grid invocation shares: where its runs go, the overrides of every run (``base``)
    and of their scoring (``run_time``), whether finished runs of other settings may be replaced, and the run
    directories used so far."""

    out: Path
    base: list[str]
    run_time: list[str]
    say: Callable[[str], None]
    progress: bool
    overwrite: bool
    used: list[Path] = field(default_factory=list)

    def stage1(self, name: str, overrides: list[str]) -> Path:
        """The finished stage-1 run ``out/name`` of ``base`` + ``overrides`` (reused, resumed or trained)."""
        run_dir = self.out / name
        _stage1(run_dir, [*self.base, *overrides], self.say, self.progress, self.overwrite)
        self.used.append(run_dir)
        return run_dir

    def decouple(self, run_dir: Path, methods: list[str], overrides: Sequence[str] = (), **kw: Any) -> dict[str, Any]:
        """``decouple`` with the grid's run-time keys (a classifier of the same settings is reused)."""
        return decouple(run_dir, methods, [*self.run_time, *overrides], overwrite=kw.get("overwrite", self.overwrite))


def _paper_grid(grid_run: _Grid, seed: int | None, rows: tuple[list[str], list[str], list[str]]) -> dict[str, Any]:
    """The paper's rows for one training seed."""
    samplers, losses, trainable = rows
    seeded = _seed_overrides(seed)
    grid: dict[str, Any] = {"samplers": {}, "trainable": {}, "losses": {}}
    for sampler in samplers:
        run_dir = grid_run.stage1(_seeded(f"sampler-{sampler}", seed), [*seeded, f"train.sampler={sampler}"])
        methods = paper_classifiers() + (["logit_adjust"] if sampler == "instance" else [])
        grid["samplers"][sampler] = grid_run.decouple(run_dir, methods, ["decouple.trainable=classifier"])["methods"]
    if trainable:
        run_dir = grid_run.stage1(_seeded("sampler-instance", seed), [*seeded, "train.sampler=instance"])
        # Classifier-only last, so the run directory's saved cRT is the paper's. Each row replaces the one
        # before it in classifiers/crt.pt: the grid's own sequence, so it always overwrites.
        for part in sorted(trainable, key=lambda p: p == "classifier"):
            grid_run.say(f"cRT re-training {part} on {run_dir}")
            results = grid_run.decouple(run_dir, ["crt"], [f"decouple.trainable={part}"], overwrite=True)
            grid["trainable"][part] = results["methods"]["crt"]
        grid["trainable"]["joint"] = results["methods"]["joint"]
    for loss in losses:
        run_dir = grid_run.stage1(_seeded(f"loss-{loss}", seed), [*seeded, f"train.loss={loss}"])
        grid["losses"][loss] = evaluate(run_dir, "test", grid_run.run_time)["methods"]["joint"]
    if "instance" in samplers:
        grid["losses"]["ce"] = grid["samplers"]["instance"]["joint"]
        grid["losses"]["post_hoc"] = grid["samplers"]["instance"]["logit_adjust"]
    return grid


def _sweep_row(combination: dict[str, str], runs: list[Path], per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """One combination of a sweep: its run directories' names (one per seed), their validation and test cells
    per method (over seeds) and what ``auto`` picked in each."""
    return {
        "combination": combination,
        "runs": [run_dir.name for run_dir in runs],
        "val": _mean_std_methods([results["val_methods"] for results in per_seed]),
        "test": _mean_std_methods([results["methods"] for results in per_seed]),
        "auto": [results["auto"]["chosen"]["label"] for results in per_seed],
    }


def _run_sweep(grid_run: _Grid, sweeps: list[tuple[str, list[str]]], seeds: list[int | None]) -> dict[str, Any]:
    """Train and decouple (every method, then ``auto``) one run per combination and seed; choose on validation.

    Returns:
        ``{"keys", "select", "rows", "chosen"}``: one row per combination (see
        :func:`_sweep_row`) and the index of the row whose ``auto`` has the best
        mean validation ``decouple.select`` score (the first on a tie).
    """
    select = load_config(None, grid_run.base).decouple.select
    rows = []
    for combination in sweep_combinations(sweeps):
        name, settings = sweep_dir_name(combination), [f"{k}={v}" for k, v in combination.items()]
        runs, per_seed = [], []
        for seed in seeds:
            runs.append(grid_run.stage1(_seeded(name, seed), [*settings, *_seed_overrides(seed)]))
            per_seed.append(grid_run.decouple(runs[-1], ["all", "auto"]))
        rows.append(_sweep_row(combination, runs, per_seed))
    # Validation only: the test cells are in the rows for display and never enter this choice.
    chosen = max(range(len(rows)), key=lambda i: rows[i]["val"]["auto"][select])
    return {"keys": [key for key, _ in sweeps], "select": select, "rows": rows, "chosen": chosen}


def run_grid(
    out: str | Path,
    *,
    samplers: Sequence[str] | None = None,
    losses: Sequence[str] | None = None,
    trainable: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    sweeps: Sequence[str] = (),
    seeds: Sequence[int] | None = None,
    max_runs: int = MAX_RUNS,
    progress: bool = False,
    say: Callable[[str], None] = log.info,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run the grid into ``out``; returns ``{"samplers", "trainable", "losses", "sweep", "seeds", "config",
    "fingerprints", "seconds", "train_seconds"}``.

    A finished run under ``out`` whose provenance (stage-1 config, data, program, version) is a cell's is
    reused, an interrupted one resumed; one of anything else is refused by name unless ``overwrite``
    (then retrained). Every cell must be scored on the same test data: the table says which (its fingerprint).

    ``samplers`` rows (default :data:`SAMPLERS`) get every classifier;
    ``trainable`` rows (:data:`TRAINABLE`) re-train cRT on the instance-balanced
    run (the classifier-only cRT is restored last, so that run directory ends as
    the paper's); ``losses`` rows (:data:`LOSSES`) train jointly with each loss.
    ``overrides`` apply to every run, after :data:`GRID_DEFAULTS`.

    ``sweeps`` (``"KEY=v1,v2,..."`` each, stage-1 keys) run a sweep instead of
    those rows (giving rows too is refused): ``"sweep"`` is then
    :func:`_run_sweep`'s record, the run directories ``sweep-KEY=VALUE...``.

    ``seeds`` run everything once per training seed (directories ``...-seedN``)
    and make each cell :func:`mean_std` over them; ``"seeds"`` is the list
    (None without). Without ``seeds`` the runs use the config's ``seed``.

    A grid of more than ``max_runs`` stage-1 runs is refused before anything trains.
    """
    rows_given = any(rows is not None for rows in (samplers, losses, trainable))
    samplers = _choices(SAMPLERS if samplers is None else samplers, SAMPLERS + ("class_aware", "power"), "--samplers")
    losses = _choices(LOSSES if losses is None else losses, LOSSES + ("ce",), "--losses")
    trainable = _choices(TRAINABLE if trainable is None else trainable, TRAINABLE, "--trainable")
    base = [*GRID_DEFAULTS, *overrides]
    seed_list = _check_seeds(seeds, overrides)
    parsed = [parse_sweep(text) for text in sweeps]
    rows_run = len(samplers) + len(losses) + (1 if trainable and "instance" not in samplers else 0)
    _check_run_count(math.prod(len(v) for _, v in parsed) if parsed else rows_run, len(seed_list), max_runs)
    if parsed:
        if rows_given:
            raise ConfigError("--sweep runs the sweep alone: give no --samplers, --losses or --trainable with it")
        _check_sweeps(parsed, base, overrides, seed_list)
    combinations = sweep_combinations(parsed) if parsed else [{}]  # decouple.select over an empty group: refused
    check_select_on_data(load_config(None, [*base, *(f"{k}={v}" for k, v in c.items())]) for c in combinations)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Run-time keys (eval thresholds, stage-2 settings) also apply to reused runs when they are scored.
    run_time = [text for text in base if parse_override(text)[0].startswith(RUN_TIME_KEYS)]
    start = time.perf_counter()
    grid_run = _Grid(out, base, run_time, say, progress, overwrite)
    grid: dict[str, Any] = {"samplers": {}, "trainable": {}, "losses": {}}
    if parsed:
        grid["sweep"] = _run_sweep(grid_run, parsed, seed_list)
    else:
        rows = (samplers, losses, trainable)
        per_seed = [_paper_grid(grid_run, seed, rows) for seed in seed_list]
        grid.update(per_seed[0] if seeds is None else _mean_std_grid(per_seed))
    used = list(dict.fromkeys(grid_run.used))
    grid["fingerprints"] = _fingerprints(used)
    grid["seeds"] = None if seeds is None else list(seed_list)
    grid["config"] = config_to_dict(load_config(None, base))
    grid["seconds"] = time.perf_counter() - start
    # Reused runs were trained by an earlier invocation: report their training time as well.
    grid["train_seconds"] = sum(read_results(run_dir).get("timing", {}).get("train_seconds", 0.0) for run_dir in used)
    return grid


def _fingerprints(runs: Sequence[Path]) -> dict[str, Any]:
    """``{"test", "val": [short fingerprints], "runs": {name: fingerprint}}`` of the grid's runs.

    Raises:
        RunDirError: when two cells were scored on different test data: one table cannot hold them.
    """
    provenance = {run.name: read_results(run).get(PROVENANCE_KEY) or {} for run in runs}
    data = {name: record.get("data") or {} for name, record in provenance.items()}
    tests = {name: short(d.get("test")) for name, d in data.items()}
    names = list(tests)
    odd = next((name for name in names if tests[name] != tests[names[0]]), None)
    if odd is not None:
        raise RunDirError(
            f"grid: {names[0]} and {odd} were scored on different test data ({tests[names[0]]} vs {tests[odd]}); "
            "one table cannot compare them"
        )
    return {
        "test": sorted(set(tests.values())),
        "val": sorted({short(d.get("val")) for d in data.values()}),
        "runs": {name: short(record.get("fingerprint")) for name, record in provenance.items()},
    }


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
        f"Data: `{data['name']}`, {data['n_max']} images in the largest class, imbalance factor "
        f"{data['imbalance_factor']:g} ({data['profile']} profile, data seed {data['seed']}); validation "
        f"{data['val_per_class']} per class from training images outside the subset; the full test set. "
        f"Backbone `{cfg['model']['backbone']}`, {train_cfg['epochs']} epochs, batch {train_cfg['batch_size']}, "
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
