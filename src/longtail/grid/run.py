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

This module runs the grid and returns its record; :mod:`~longtail.grid.render`
writes it as Markdown, and :mod:`~longtail.grid.rows` names the rows.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config, config_to_dict, load_config, parse_override
from ..data.fingerprint import short
from ..data.registry import create_dataset
from ..errors import ConfigError, OutputPathError, RunDirError
from ..fs.atomic import os_error_reason
from ..methods.selection import check_select_on_data
from ..pipeline import decouple, evaluate, resume, run_time_keys, train
from ..pipeline.provenance import KEY as PROVENANCE_KEY
from ..pipeline.provenance import differences, stage1_keys, stage1_provenance
from ..pipeline.representation import representation_splits
from ..runs import RUN_OWN_NAMES, is_run_dir, load_checkpoint, owning_run, read_results
from .rows import (
    COLUMNS,
    TRAINABLE,
    loss_choices,
    paper_classifiers,
    paper_samplers,
    rebalancing_losses,
    sampler_choices,
)

log = logging.getLogger(__name__)

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
# Characters kept in a sweep's run-directory names; anything else (a slash, a space, a quote) becomes "_".
UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._+=-]")
MAX_NAME_LENGTH = 120  # longer names are cut and made unique by a hash of the whole combination
# Stage-1 runs a grid may train unless --max-runs says more: a sweep's product grows fast (three keys of ten
# values are a thousand runs), and each run is minutes to hours; the count is checked before anything trains.
MAX_RUNS = 100


def _choices(values: Sequence[str], allowed: Sequence[str], option: str) -> list[str]:
    """``values`` of a row option, each one of ``allowed`` and given once (twice would run its row twice)."""
    for i, value in enumerate(values):
        if value not in allowed:
            raise ConfigError(f"{option} {value!r}: expected some of {', '.join(allowed)}")
        if value in values[:i]:
            raise ConfigError(f"{option} {','.join(values)}: {value} is given twice; give it once")
    return list(values)


def ensure_stage1(
    run_dir: Path,
    overrides: list[str],
    say: Callable[[str], None],
    progress: bool,
    overwrite: bool,
    source: str | Path | None = None,
    what: str = "this grid cell",
) -> None:
    """Make ``run_dir`` a finished stage-1 run of ``overrides`` (after the YAML file ``source``, if any): reuse
    a finished run of the same provenance (config, data, program, version), resume an interrupted one, train
    where there is none; a run of anything else is refused by name unless ``overwrite`` (then retrained)."""
    config = load_config(source, overrides)
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
        difference = _stage1_difference(run_dir, config) if "config" in differs else ", ".join(differs)
        raise RunDirError(
            f"{run_dir}: holds a run of other {difference} than {what} (fingerprint "
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


def check_stage1_key(key: str, option: str) -> None:
    """Refuse ``key`` as a stage-1 choice of ``option`` (``--sweep``, ``--candidates``): the seed (averaged
    over, never chosen) or a key that can change on a trained run (stage 2 is tuned on each run already)."""
    if key == "seed":
        raise ConfigError(f"{option} seed: a training seed is not chosen on validation; average with --seeds")
    if key.startswith(run_time_keys()):
        raise ConfigError(
            f"{option} {key}: not a stage-1 key (it can change on a trained run; "
            "`longtail decouple RUN --method auto` tunes stage 2 on validation)"
        )


def refuse_equal_values(option: str, key: str, values: Sequence[str], configs: Sequence[Config]) -> None:
    """Refuse two ``values`` of ``key`` whose ``configs`` are the same (``5e-4`` and ``0.0005``): one run twice."""
    resolved = [config_to_dict(config) for config in configs]
    for i, config in enumerate(resolved):
        if config in resolved[:i]:
            first = values[resolved.index(config)]
            raise ConfigError(f"{option} {key}: {first} and {values[i]} are the same value; give it once")


def make_out_dir(out: Path) -> None:
    """Create ``out``, the directory of the runs: one line, not a traceback, when a file is in the way.

    A run directory (or one of its own folders, RUN/features) is refused: the candidates' runs were written
    into it, beside its checkpoint.
    """
    try:
        resolved = out.resolve()
        run = owning_run(resolved)
    except OSError:  # a name the file system refuses: mkdir below says why
        run = None
    if run is not None and (run == resolved or resolved.relative_to(run).parts[0] in RUN_OWN_NAMES):
        where = "is a run directory" if run == resolved else f"belongs to run directory {run}"
        raise OutputPathError(f"--out {out}: {where}; choose another folder for the runs")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputPathError(f"--out {out}: {os_error_reason(error)}; expected a directory for the runs") from error


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


def _check_run_count(
    per_seed: int,
    seeds: int,
    max_runs: int,
    *,
    command: str = "grid",
    counted: str = "rows or sweep combinations",
    fewer: str = "sweep fewer values",
) -> None:
    """Refuse more than ``max_runs`` stage-1 runs: ``per_seed`` (a sweep's product, counted, never listed) x seeds.

    ``command``, ``counted`` and ``fewer``: the command refusing, what ``per_seed`` counts, and the advice.
    """
    runs = per_seed * seeds
    if isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1:
        raise ConfigError(f"--max-runs {max_runs!r}: expected an integer >= 1")
    if runs > max_runs:
        raise ConfigError(
            f"{command}: {runs:,} stage-1 runs ({counted}, times the seeds), more than --max-runs "
            f"{max_runs:,}; {fewer}, or pass --max-runs {runs} if you mean it"
        )


def _check_sweeps(
    sweeps: list[tuple[str, list[str]]], base: Sequence[str], overrides: Sequence[str], seeds: list[int | None]
) -> None:
    """Refuse a sweep that is not a stage-1 key, is given twice (or also in ``overrides``, the user's) or has a
    bad value (``base``: the grid's defaults and ``overrides``), before anything is trained."""
    given = {parse_override(text)[0] for text in overrides}
    keys = [key for key, _ in sweeps]
    for key in keys:
        check_stage1_key(key, "--sweep")
        if keys.count(key) > 1 or key in given:
            raise ConfigError(f"--sweep {key}: the key is given twice (in two --sweep or as key=value)")
    for key, values in sweeps:
        refuse_equal_values("--sweep", key, values, [load_config(None, [*base, f"{key}={v}"]) for v in values])
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
    source: str | Path | None = None  # a YAML config file read before ``base`` (``longtail auto CONFIG.yaml``)

    def config(self, overrides: Sequence[str] = ()) -> Config:
        """The config of ``source``, ``base`` and ``overrides``."""
        return load_config(self.source, [*self.base, *overrides])

    def stage1(self, name: str, overrides: list[str]) -> Path:
        """The finished stage-1 run ``out/name`` of ``base`` + ``overrides`` (reused, resumed or trained)."""
        run_dir = self.out / name
        ensure_stage1(run_dir, [*self.base, *overrides], self.say, self.progress, self.overwrite, self.source)
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
    per method (over seeds), what ``auto`` picked in each and its 95% bootstrap intervals on test (per seed;
    :mod:`longtail.evaluation.bootstrap`, computed when the run was scored)."""
    return {
        "combination": combination,
        "runs": [run_dir.name for run_dir in runs],
        "val": _mean_std_methods([results["val_methods"] for results in per_seed]),
        "test": _mean_std_methods([results["methods"] for results in per_seed]),
        "auto": [results["auto"]["chosen"]["label"] for results in per_seed],
        "auto_test_ci": [results["methods"].get("auto", {}).get("ci") for results in per_seed],
    }


def choose_on_validation(rows: Sequence[dict[str, Any]], select: str) -> int:
    """The index of the row whose ``auto`` classifier has the best (mean) validation ``select`` score; the
    first on a tie. Only ``row["val"]`` is read: a row's test cells are for display and never enter the choice."""
    if not rows:
        raise ConfigError("nothing to choose among: no candidate")
    return max(range(len(rows)), key=lambda i: rows[i]["val"]["auto"][select])


def _run_sweep(
    grid_run: _Grid, keys: list[str], combinations: Sequence[dict[str, str]], seeds: list[int | None]
) -> dict[str, Any]:
    """Train and decouple (every method, then ``auto``) one run per combination and seed; choose on validation.

    ``combinations`` are override sets ``{key: value}`` (a sweep's product, or
    ``longtail auto``'s union of single-key candidates); ``keys`` the keys any
    of them sets, in order.

    Returns:
        ``{"keys", "select", "rows", "chosen"}``: one row per combination (see
        :func:`_sweep_row`) and the index of the row :func:`choose_on_validation` picks.
    """
    select = grid_run.config().decouple.select
    rows = []
    for combination in combinations:
        name, settings = sweep_dir_name(combination), [f"{k}={v}" for k, v in combination.items()]
        runs, per_seed = [], []
        for seed in seeds:
            runs.append(grid_run.stage1(_seeded(name, seed), [*settings, *_seed_overrides(seed)]))
            per_seed.append(grid_run.decouple(runs[-1], ["all", "auto"]))
        rows.append(_sweep_row(combination, runs, per_seed))
    return {"keys": list(keys), "select": select, "rows": rows, "chosen": choose_on_validation(rows, select)}


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

    ``samplers`` rows (default :func:`paper_samplers`) get every classifier;
    ``trainable`` rows (:data:`TRAINABLE`) re-train cRT on the instance-balanced
    run (the classifier-only cRT is restored last, so that run directory ends as
    the paper's); ``losses`` rows (:func:`rebalancing_losses`) train jointly with each loss.
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
    samplers = _choices(paper_samplers() if samplers is None else samplers, sampler_choices(), "--samplers")
    losses = _choices(rebalancing_losses() if losses is None else losses, loss_choices(), "--losses")
    trainable = _choices(TRAINABLE if trainable is None else trainable, TRAINABLE, "--trainable")
    base = [*GRID_DEFAULTS, *overrides]
    seed_list = _check_seeds(seeds, overrides)
    parsed = [parse_sweep(text) for text in sweeps]
    rows_run = len(samplers) + len(losses) + (1 if trainable and "instance" not in samplers else 0)
    if not parsed and not rows_run:  # else an empty document, "Runs: .", and exit 0
        raise ConfigError("--samplers, --losses and --trainable are all none: the grid has no row to run")
    _check_run_count(math.prod(len(v) for _, v in parsed) if parsed else rows_run, len(seed_list), max_runs)
    if parsed:
        if rows_given:
            raise ConfigError("--sweep runs the sweep alone: give no --samplers, --losses or --trainable with it")
        _check_sweeps(parsed, base, overrides, seed_list)
    combinations = sweep_combinations(parsed) if parsed else [{}]  # decouple.select over an empty group: refused
    check_select_on_data(load_config(None, [*base, *(f"{k}={v}" for k, v in c.items())]) for c in combinations)
    out = Path(out)
    make_out_dir(out)
    # Run-time keys (eval thresholds, stage-2 settings) also apply to reused runs when they are scored.
    run_time = [text for text in base if parse_override(text)[0].startswith(run_time_keys())]
    start = time.perf_counter()
    grid_run = _Grid(out, base, run_time, say, progress, overwrite)
    grid: dict[str, Any] = {"samplers": {}, "trainable": {}, "losses": {}}
    if parsed:
        grid["sweep"] = _run_sweep(grid_run, [key for key, _ in parsed], sweep_combinations(parsed), seed_list)
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
