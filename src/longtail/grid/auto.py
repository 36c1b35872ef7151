"""``longtail auto``: the whole recipe chosen on validation, stage 1 included.

Stage-1 candidates (by default every paper sampler and every re-balancing loss,
read from the registries: :func:`~longtail.grid.rows.paper_samplers`,
:func:`~longtail.grid.rows.rebalancing_losses`) are a *union* of single-key
override sets, not a product: ``train.sampler=progressive`` keeps the config's
loss, ``train.loss=balanced_softmax`` its sampler. Each candidate is trained
(once per seed) and decoupled with every stage-2 method and ``auto`` (every
method and its hyper-parameters, the best on validation), so a candidate is
judged by the best validation score it reaches after stage 2. The candidate
with the best (mean) validation score wins. Test is read only to report.

It is :func:`~longtail.grid.run._run_sweep` over an explicit list of override
sets: runs under ``OUT/sweep-KEY=VALUE[-seedN]``, a finished run of the same
provenance reused, an interrupted one resumed, one of anything else refused
unless ``overwrite``. :func:`auto_markdown` renders the record; :func:`write_auto`
writes ``OUT/auto.md`` and ``OUT/auto.json`` atomically.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config import config_to_dict, load_config, parse_override
from ..errors import ConfigError
from ..fs.atomic import write_json_atomic, write_text_atomic
from ..methods.selection import check_select_on_data
from ..pipeline import run_time_keys
from ..pipeline.provenance import flatten
from ..runs import read_results
from .render import data_caption
from .rows import paper_samplers, rebalancing_losses
from .run import (
    MAX_RUNS,
    _check_run_count,
    _check_seeds,
    _fingerprints,
    _Grid,
    _run_sweep,
    check_stage1_key,
    make_out_dir,
    refuse_equal_values,
    sweep_dir_name,
)

log = logging.getLogger(__name__)

# The run-time sections of a config file that stage 2 and scoring read: passed on to every run, reused ones too.
RUN_TIME_SECTIONS = ("decouple.", "eval.")


def default_candidates() -> list[str]:
    """``train.sampler=<each paper sampler>`` then ``train.loss=<each re-balancing loss>`` (the registries')."""
    return [f"train.sampler={','.join(paper_samplers())}", f"train.loss={','.join(rebalancing_losses())}"]


def parse_candidates(texts: Sequence[str]) -> list[dict[str, str]]:
    """``["train.sampler=instance,progressive", "train.loss=balanced_softmax"]`` -> one override set per value:
    ``[{"train.sampler": "instance"}, {"train.sampler": "progressive"}, {"train.loss": "balanced_softmax"}]``
    (a union, in the order given; a candidate given twice is refused)."""
    candidates: list[dict[str, str]] = []
    for text in texts:
        key, sep, values = text.partition("=")
        items = [value.strip() for value in values.split(",")]
        if not sep or not key.strip() or not all(items):
            raise ConfigError(f"--candidates {text!r}: expected KEY=v1,v2,... (a stage-1 key, then non-empty values)")
        for value in items:
            candidate = {key.strip(): value}
            if candidate in candidates:
                raise ConfigError(f"--candidates: {key.strip()}={value} is given twice")
            candidates.append(candidate)
    if not candidates:
        raise ConfigError("--candidates: expected at least one KEY=v1,v2,...")
    return candidates


def _check_candidates(grid_run: _Grid, candidates: list[dict[str, str]], seeds: list[int | None]) -> None:
    """Refuse, before anything trains, a candidate key that is not a stage-1 key, is the training seed or is
    also given as key=value, a bad value, and two candidates that would share a run directory."""
    given = {parse_override(text)[0] for text in grid_run.base}
    for candidate in candidates:
        for key in candidate:
            check_stage1_key(key, "--candidates")
            if key in given:
                raise ConfigError(f"--candidates {key}: the key is also given as key=value (or by --epochs)")
        for seed in seeds:  # unknown keys and bad values fail here, not after an hour of training
            grid_run.config([f"{k}={v}" for k, v in candidate.items()] + ([] if seed is None else [f"seed={seed}"]))
    for key in dict.fromkeys(k for candidate in candidates for k in candidate):
        values = [candidate[key] for candidate in candidates if key in candidate]
        refuse_equal_values("--candidates", key, values, [grid_run.config([f"{key}={v}"]) for v in values])
    names = [sweep_dir_name(candidate) for candidate in candidates]
    if len(set(names)) < len(names):
        raise ConfigError("--candidates: two candidates give the same run-directory name; use plainer values")


def file_run_time(source: str | Path | None) -> list[str]:
    """The run-time keys (stage 2, scoring) of the config file ``source`` as overrides, so that a reused run
    is decoupled and scored with the file's settings, not with those it was trained under."""
    if source is None:
        return []
    flat = flatten(config_to_dict(load_config(source)))
    return [f"{key}={_yaml(value)}" for key, value in flat.items() if key.startswith(RUN_TIME_SECTIONS)]


def _yaml(value: Any) -> str:
    """A config value as override text: ``null``, ``[0.25, 1.0]`` (JSON is YAML); a string as it is (an
    override keeps a string's raw text, quotes included)."""
    return value if isinstance(value, str) else json.dumps(value)


def run_auto(
    out: str | Path,
    *,
    source: str | Path | None = None,
    overrides: Sequence[str] = (),
    candidates: Sequence[str] | None = None,
    epochs: int | None = None,
    seeds: Sequence[int] | None = None,
    max_runs: int = MAX_RUNS,
    progress: bool = False,
    say: Callable[[str], None] = log.info,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train, decouple and choose on validation; returns the record :func:`auto_markdown` renders.

    ``source`` (a YAML config) then ``overrides`` apply to every run; ``epochs``
    overrides ``train.epochs``; ``candidates`` are ``KEY=v1,v2`` texts
    (:func:`parse_candidates`; default :func:`default_candidates`). ``seeds``
    repeat every candidate once per training seed and choose by mean
    validation. More than ``max_runs`` stage-1 runs are refused before any trains.

    Returns:
        ``{"select", "candidates", "rows", "chosen", "seeds", "config",
        "fingerprints", "seconds", "train_seconds"}``; each row has the
        candidate's ``val``/``test`` cells per method (mean ± std over seeds),
        ``auto`` (what stage 2's auto picked, per seed) and ``auto_test_ci``.
    """
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ConfigError(f"--epochs {epochs!r}: expected an integer >= 1")
    parsed = parse_candidates(default_candidates() if candidates is None else candidates)
    seed_list = _check_seeds(seeds, overrides)
    _check_run_count(
        len(parsed),
        len(seed_list),
        max_runs,
        command="auto",
        counted="candidates",
        fewer="give fewer candidates or seeds",
    )
    base = [*overrides, *([] if epochs is None else [f"train.epochs={epochs}"])]
    out = Path(out)
    run_time = [*file_run_time(source), *(t for t in base if parse_override(t)[0].startswith(run_time_keys()))]
    grid_run = _Grid(out, base, run_time, say, progress, overwrite, source=source)
    _check_candidates(grid_run, parsed, seed_list)
    check_select_on_data(grid_run.config([f"{k}={v}" for k, v in c.items()]) for c in parsed)
    make_out_dir(out)
    start = time.perf_counter()
    keys = list(dict.fromkeys(key for candidate in parsed for key in candidate))
    sweep = _run_sweep(grid_run, keys, parsed, seed_list)
    used = list(dict.fromkeys(grid_run.used))
    return {
        **sweep,
        "candidates": [_candidate_text(c) for c in parsed],
        "seeds": None if seeds is None else list(seed_list),
        "config": config_to_dict(grid_run.config()),
        "fingerprints": _fingerprints(used),
        "seconds": time.perf_counter() - start,
        "train_seconds": sum(read_results(r).get("timing", {}).get("train_seconds", 0.0) for r in used),
    }


def _candidate_text(candidate: dict[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in candidate.items())


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """The chosen candidate in brief: ``{"candidate", "method", "val", "test", "test_ci", "select"}``
    (``method``: what stage 2's auto picked, per seed; ``test_ci``: per seed, 95% bootstrap)."""
    select, row = record["select"], record["rows"][record["chosen"]]
    return {
        "candidate": _candidate_text(row["combination"]),
        "method": row["auto"],
        "val": row["val"]["auto"][select],
        "test": row["test"]["auto"][select],
        "test_ci": [(ci or {}).get(select) for ci in row.get("auto_test_ci", [])],
        "select": select,
    }


def choice_sentence(record: dict[str, Any]) -> str:
    """One sentence: "chosen on validation: X (val …); test is shown, never used to choose"."""
    brief = summary(record)
    row = record["rows"][record["chosen"]]
    return (
        f"chosen on validation: {brief['candidate']} with {', '.join(brief['method'])} "
        f"(val {_score(row['val']['auto'], brief['select'])} {brief['select']}; test "
        f"{_test_text(row, brief['select'])}); test is shown, never used to choose"
    )


def _score(cell: dict[str, Any], key: str) -> str:
    """``84.5``, or over seeds ``84.5 ± 0.6`` (mean ± sample std)."""
    value, spread = cell.get(key), (cell.get("std") or {}).get(key)
    if value is None:
        return "–"
    return f"{value:.1f}" if spread is None else f"{value:.1f} ± {spread:.1f}"


def _test_text(row: dict[str, Any], select: str) -> str:
    """The test score of a row's auto with its 95% bootstrap interval (one seed) or intervals (several)."""
    intervals = [(ci or {}).get(select) for ci in row.get("auto_test_ci", [])]
    text = _score(row["test"]["auto"], select)
    shown = [f"[{lo:.1f}, {hi:.1f}]" for lo, hi in (i for i in intervals if i)]
    return f"{text} {' '.join(shown)}".rstrip()


def auto_table(record: dict[str, Any]) -> list[str]:
    """The table of every candidate (best stage-2 method, validation and test scores, Joint's; the winner
    marked), then the sentence of :func:`choice_sentence`."""
    select = record["select"]
    lines = [
        f"| Candidate | Best stage 2 (on val) | Val {select} (chooses) | Test {select} [95% CI] | Joint val | "
        "Joint test |",
        "|---|---|---|---|---|---|",
    ]
    for index, row in enumerate(record["rows"]):
        name = f"`{_candidate_text(row['combination'])}`"
        if index == record["chosen"]:
            name = f"**{name}** (chosen)"
        joint_val, joint_test = row["val"].get("joint") or {}, row["test"].get("joint") or {}
        lines.append(
            f"| {name} | {', '.join(row['auto'])} | {_score(row['val']['auto'], select)} | "
            f"{_test_text(row, select)} | {_score(joint_val, select)} | {_score(joint_test, select)} |"
        )
    sentence = choice_sentence(record)
    return [*lines, "", sentence[0].upper() + sentence[1:] + "."]


def auto_markdown(record: dict[str, Any], command: str) -> str:
    """The document: the command, wall time, data and settings, then :func:`auto_table`."""
    select, seeds = record["select"], record.get("seeds")
    cfg = record["config"]
    many = seeds and len(seeds) > 1
    lines = [
        "# The recipe chosen on validation, stage 1 included",
        "",
        f"Generated by `{command}`: {record['seconds'] / 60:.1f} min for this invocation; its stage-1 runs took "
        f"{record['train_seconds'] / 60:.1f} min of training (finished runs are reused).",
        "",
        f"{data_caption(cfg['data'])} Backbone `{cfg['model']['backbone']}`, {cfg['train']['epochs']} "
        f"epochs; {'training seeds ' + ', '.join(map(str, seeds)) if seeds else 'seed ' + str(cfg['seed'])}. "
        f"Each stage-1 candidate is decoupled with every stage-2 method and its hyper-parameters (`--method "
        f"all,auto`); its score is the best on validation ({select} top-1 %), the one that chooses."
        + (" Scores are mean ± sample std over the seeds; test intervals are per seed." if many else "")
        + " Test: 95% stratified bootstrap interval.",
        "",
        *auto_table(record),
        "",
    ]
    return "\n".join(lines)


def write_auto(record: dict[str, Any], out: str | Path, command: str) -> dict[str, Path]:
    """``OUT/auto.md`` (:func:`auto_markdown`) and ``OUT/auto.json`` (the record and the command), atomically."""
    out = Path(out)
    paths = {"markdown": out / "auto.md", "json": out / "auto.json"}
    write_text_atomic(paths["markdown"], auto_markdown(record, command))
    write_json_atomic(paths["json"], {"command": command, **record, "summary": summary(record)})
    return paths
