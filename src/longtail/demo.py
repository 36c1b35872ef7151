"""``longtail demo``: the whole recipe on Fashion-MNIST-LT into one run directory, the paper's and the one
chosen on validation.

The paper's recipe is the run directory itself: instance-balanced stage 1, then
every stage-2 method and ``auto``. The recipe chosen on validation is
``longtail auto`` over :data:`DEMO_CANDIDATES` into ``OUT/auto/``; its
instance-balanced candidate is the paper's run (a copy, so it is not trained
twice), so the demo trains one more stage-1 run than the paper's recipe needs.
On a CPU with two cores or more that run trains in a second process while the
paper's trains (:mod:`~longtail.grid.beside`), half the cores each.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .config import Config, load_config, parse_override
from .engine.device import resolve_device
from .fs.staging import replace_directory
from .grid.auto import auto_table, run_auto, write_auto
from .grid.beside import BesideTraining, split_cores, start_beside, torch_threads
from .grid.rows import sampler_label
from .grid.run import ensure_stage1, sweep_dir_name
from .pipeline import decouple, train
from .report import write_report
from .runs import check_replaceable, is_run_dir, read_results

log = logging.getLogger(__name__)

# Stage-1 candidates of the demo's recipe chosen on validation, besides the config's own sampler. Progressive
# balancing: on this data it beat instance-balanced stage 1 after decoupling (docs/results/finding2.md). One
# more stage-1 training is what the 3-minute demo budget affords; `longtail auto` tries every sampler and loss.
DEMO_CANDIDATES = ("progressive",)
AUTO_DIR = "auto"


def _auto_candidates(config_sampler: str) -> list[str]:
    return [f"train.sampler={','.join(dict.fromkeys([config_sampler, *DEMO_CANDIDATES]))}"]


def _without_sampler(overrides: Sequence[str]) -> list[str]:
    """``overrides`` less ``train.sampler``, which each stage-1 candidate sets."""
    return [text for text in overrides if parse_override(text)[0] != "train.sampler"]


def _seed_paper_run(run: Path, candidates_dir: Path, sampler: str) -> None:
    """Copy the paper's run (stage 1 and its classifiers) to where ``longtail auto`` looks for its
    ``train.sampler=<sampler>`` candidate, which has the same provenance: it is reused, not trained again."""
    target = candidates_dir / sweep_dir_name({"train.sampler": sampler})
    if target.exists():  # a reused demo: the candidate is there already (and checked by provenance when reused)
        return
    shutil.copytree(run, target, ignore=shutil.ignore_patterns(AUTO_DIR, "tensorboard", ".longtail.lock"))


def recipe_sentence(record: dict[str, Any], paper_sampler: str) -> str:
    """Which recipe won on validation and by how much (validation and test) against the paper's."""
    select, rows = record["select"], record["rows"]
    chosen = rows[record["chosen"]]
    paper = next(row for row in rows if row["combination"] == {"train.sampler": paper_sampler})

    def score(row: dict[str, Any], split: str) -> float:
        return row[split]["auto"][select]

    def label(row: dict[str, Any]) -> str:
        return f"{sampler_label(row['combination']['train.sampler']).lower()} stage 1"

    name = f"{label(chosen)} + {', '.join(chosen['auto'])}"
    if chosen is paper:
        others = [row for row in rows if row is not paper]
        runner = max(others, key=lambda row: score(row, "val")) if others else None
        against = (
            ""
            if runner is None
            else f", ahead of {label(runner)} by "
            f"{score(paper, 'val') - score(runner, 'val'):+.1f} points on validation "
            f"({score(paper, 'test') - score(runner, 'test'):+.1f} on test)"
        )
        verdict = f"On this data the paper's recipe is also the one chosen on validation ({name}){against}."
    else:
        verdict = (
            f"On this data the recipe chosen on validation is {name}: {select} {score(chosen, 'val'):.1f} against "
            f"{score(paper, 'val'):.1f} for the paper's recipe on validation "
            f"({score(chosen, 'val') - score(paper, 'val'):+.1f}), {score(chosen, 'test'):.1f} against "
            f"{score(paper, 'test'):.1f} on test ({score(chosen, 'test') - score(paper, 'test'):+.1f})."
        )
    return f"{verdict} The choice read validation only; test is shown, never used to choose."


def demo(
    out: str | Path = "runs/demo",
    *,
    overrides: Sequence[str] = (),
    progress: bool = True,
    say: Callable[[str], None] = log.info,
    auto: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """The whole recipe on Fashion-MNIST-LT: stage 1, then every stage-2 method and ``auto``, into ``out``,
    then its report (``report.html``, ``report.md``); with ``auto``, also the recipe chosen on validation
    across stage-1 candidates into ``out/auto`` (:func:`~longtail.grid.auto.run_auto`).

    A new run is built in a temporary sibling directory and moved to ``out``
    only when complete. A run already at ``out`` is kept: reused when it is
    this demo's stage 1 (the same provenance: config, data, program, version;
    resumed if interrupted), its missing classifiers and candidates added;
    a run of anything else is refused by name unless ``overwrite`` (then a new
    run replaces it once complete). Anything else at ``out`` is refused.

    Returns:
        ``out``'s results (``results.json``) and, with ``auto``, ``"chosen_recipe"``:
        ``{"record", "table", "sentence"}`` of the choice across stage-1 candidates (``table``: its lines).
    """
    out = Path(out)
    config = load_config(None, overrides)
    check_replaceable(out)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    recipe: dict[str, Any] | None = None
    held = is_run_dir(out) or (out / "config.yaml").is_file()  # a finished or an interrupted run
    if held and not overwrite:
        ensure_stage1(out, list(overrides), say, progress, overwrite=False, what="this demo")  # or refused
        decouple(out, ["auto"])  # classifiers of the same settings are reused
        if auto:
            recipe = _chosen_recipe(out, overrides, config.train.sampler, progress, say)
    else:
        staging = out.parent / f".{out.name}.candidates-{os.getpid()}"
        beside = _start_candidates(config, overrides, staging, say) if auto else []
        try:
            with torch_threads(split_cores(1 + len(beside)) if beside else 0):
                train(config, partial, progress=progress)
                decouple(partial, ["auto"])  # every method, plus the best on val as "auto"
            if auto:
                _collect_candidates(beside, partial / AUTO_DIR, say)
                recipe = _chosen_recipe(partial, overrides, config.train.sampler, progress, say)
            if held:
                say(f"replacing existing run directory {out} (--overwrite)")
            replace_directory(partial, out)  # the old run goes only once the new one is in place
        finally:
            for child in beside:
                child.stop()
            shutil.rmtree(partial, ignore_errors=True)
            shutil.rmtree(staging, ignore_errors=True)
    paths = write_report(out)
    say(f"report: {paths['html']} (and {paths['markdown'].name} with its figures)")
    results = read_results(out)
    if recipe is not None:
        results["chosen_recipe"] = recipe
    return results


def _start_candidates(
    config: Config, overrides: Sequence[str], staging: Path, say: Callable[[str], None]
) -> list[BesideTraining]:
    """On a CPU with a core for each, start the stage-1 training of every extra candidate in its own process
    (:mod:`~longtail.grid.beside`), to run beside the paper's; elsewhere none (``longtail auto`` trains them
    after it, as ever)."""
    extra = [sampler for sampler in DEMO_CANDIDATES if sampler != config.train.sampler]
    threads = split_cores(1 + len(extra))
    if not extra or threads == 0 or resolve_device(config.device).type != "cpu":
        return []
    base = _without_sampler(overrides)
    staging.mkdir(parents=True, exist_ok=True)
    started = []
    for sampler in extra:
        run = staging / sweep_dir_name({"train.sampler": sampler})
        child = start_beside(run, [*base, f"train.sampler={sampler}"], threads)
        if child is not None:
            say(f"training {run.name} in a second process beside the paper's run ({threads} thread(s) each)")
            started.append(child)
    return started


def _collect_candidates(beside: list[BesideTraining], candidates_dir: Path, say: Callable[[str], None]) -> None:
    """Wait for the candidates trained beside the paper's run and move each finished one to where ``longtail
    auto`` looks for it (it checks their provenance before it reuses them); a failed one is trained there."""
    for child in beside:
        why = child.wait()
        if why is not None:
            say(f"the second process did not finish {child.out.name} ({why}); training it here")
            continue
        candidates_dir.mkdir(parents=True, exist_ok=True)
        child.out.rename(candidates_dir / child.out.name)


def _chosen_recipe(
    run: Path, overrides: Sequence[str], sampler: str, progress: bool, say: Callable[[str], None]
) -> dict[str, Any]:
    """``longtail auto`` over the demo's candidates into ``run/auto``, the paper's run reused as its candidate."""
    candidates_dir = run / AUTO_DIR
    _seed_paper_run(run, candidates_dir, sampler)
    base = _without_sampler(overrides)
    candidates = _auto_candidates(sampler)
    record = run_auto(candidates_dir, overrides=base, candidates=candidates, progress=progress, say=say)
    command = "longtail auto --candidates " + " ".join(candidates) + "".join(f" {text}" for text in base)
    write_auto(record, candidates_dir, command)
    return {
        "record": record,
        "table": auto_table(record),
        "sentence": recipe_sentence(record, sampler),
    }
