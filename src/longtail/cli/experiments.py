"""``longtail demo`` (the whole recipe), ``longtail grid`` (the paper's grid, sweeps, seeds) and ``longtail auto``
(the whole recipe chosen on validation, stage 1 included)."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from ..demo import demo
from ..errors import ConfigError
from ..fs.atomic import check_can_write
from ..grid import (
    GRID_DEFAULTS,
    MAX_RUNS,
    NOTES_MARKER,
    TRAINABLE,
    check_grid_doc,
    grid_markdown,
    paper_samplers,
    rebalancing_losses,
    run_grid,
    write_grid_doc,
)
from ..grid.auto import auto_markdown, default_candidates, run_auto, write_auto
from ..runs import check_output_path
from .common import OVERRIDES_HELP, HelpFormatter, print_table, progress_flag, split_config_and_overrides


def _cmd_demo(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    results = demo(args.out, overrides=args.overrides, progress=args.progress, overwrite=args.overwrite)
    print("\nThe paper's recipe: instance-balanced stage 1, then every stage-2 method")
    print_table(results)
    recipe = results.get("chosen_recipe")
    if recipe:
        candidates = ", ".join(row["combination"]["train.sampler"] for row in recipe["record"]["rows"])
        print(f"\nThe recipe chosen on validation: stage 1 with each of {candidates}, then every stage-2 method")
        print("\n".join(recipe["table"]))
        print(f"\n{recipe['sentence']}")
    print(f"\nfinished in {time.perf_counter() - start:.0f}s; results in {Path(args.out) / 'results.json'}")


def _list_option(text: str, option: str) -> list[str]:
    """``a,b`` -> [a, b]; ``none`` -> []; an empty list (``""``, ``,``) is refused: ``none`` says "no row"."""
    if text.strip().lower() == "none":
        return []
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ConfigError(f"{option} {text!r}: expected a comma-separated list of rows, or none")
    return items


def _grid_seeds(tokens: list[str] | None) -> tuple[list[int] | None, list[str]]:
    """``--seeds`` values -> (seeds, key=value overrides that argparse gave to --seeds).

    ``--seeds 0 1 2 train.epochs=5`` hands every later word to --seeds; a
    word with ``=`` is an override, not a seed. ``0,1,2`` is also accepted.
    """
    if tokens is None:
        return None, []
    overrides = [token for token in tokens if "=" in token]
    words = [word for token in tokens if "=" not in token for word in token.split(",") if word]
    if not all(word.isdigit() for word in words):
        raise ConfigError(f"--seeds {' '.join(words)}: expected integers >= 0")
    return [int(word) for word in words], overrides


def _cmd_grid(args: argparse.Namespace) -> None:
    if args.doc:  # a grid document is regenerated in place (its notes kept); any other file needs --overwrite
        check_output_path(args.doc, overwrite=True, what="--doc")
        check_grid_doc(args.doc, overwrite=args.overwrite)
        check_can_write(Path(args.doc))  # not after the hours of training
    start = time.perf_counter()
    seeds, overrides = _grid_seeds(args.seeds)
    rows = {name: getattr(args, name) for name in ("samplers", "losses", "trainable")}
    grid = run_grid(
        args.out,
        **{name: None if text is None else _list_option(text, f"--{name}") for name, text in rows.items()},
        overrides=[*args.overrides, *overrides],
        sweeps=args.sweep or (),
        seeds=seeds,
        max_runs=args.max_runs,
        progress=args.progress,
        say=logging.getLogger("longtail").info,
        overwrite=args.overwrite,
    )
    command = shlex.join(["longtail", *args.argv])
    markdown = grid_markdown(grid, command)
    print(markdown.split(NOTES_MARKER)[0].rstrip())
    if args.doc:
        path = write_grid_doc(grid, args.doc, command)
        print(f"\nwritten to {path} in {time.perf_counter() - start:.0f}s", file=sys.stderr)


def demo_parser(commands: Any, shared: argparse.Namespace) -> None:
    """``longtail demo``: the whole recipe on Fashion-MNIST-LT."""
    p = commands.add_parser(
        "demo",
        parents=[shared.common],
        help="the whole recipe on Fashion-MNIST-LT",
        description="Stage 1, every stage-2 method and --method auto on Fashion-MNIST-LT (1000 images in the "
        "largest class, imbalance factor 100), scored on the full test set; then the recipe chosen on validation "
        "across stage-1 samplers (instance and progressive). Its own finished run at --out is reused; a run of "
        "other settings is refused unless --overwrite.",
        epilog=shared.keys,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--out", default="runs/demo", metavar="RUN_DIR", help="run directory (default: runs/demo)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a run under --out of other settings or data (else refused; the demo's own is reused)",
    )
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value", help=OVERRIDES_HELP)
    progress_flag(p)
    p.set_defaults(func=_cmd_demo)


def grid_parser(commands: Any, shared: argparse.Namespace) -> None:
    """``longtail grid``: the paper's grid, or a stage-1 sweep chosen on validation; either over seeds."""
    p = commands.add_parser(
        "grid",
        parents=[shared.common],
        help="the paper's grid: stage-1 samplers x classifiers, fine-tuning, losses",
        description="Kang et al.'s representation-learning grid on one dataset: a stage-1 run per "
        "sampler with every classifier (Joint, NCM, cRT, tau-norm, LWS), cRT re-training the classifier, "
        "the last stage or everything, and joint training with each loss plus post-hoc logit adjustment. "
        f"Defaults: Fashion-MNIST-LT with the CIFAR-10-LT profile ({' '.join(GRID_DEFAULTS)}); "
        "key=value overrides apply to every run. Finished runs under --out are reused. --sweep KEY=V1,V2 runs a "
        "stage-1 sweep chosen on validation instead; --seeds 0 1 2 makes every cell a mean ± std over seeds.",
        epilog=shared.keys,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--out", default="runs/grid", metavar="DIR", help="directory of the runs (default: runs/grid)")
    p.add_argument("--doc", metavar="FILE.md", help="also write the Markdown tables to FILE.md")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="retrain a finished run under --out that holds other settings or data than its cell (else refused), "
        "and replace a --doc file that is not a grid document",
    )
    p.add_argument("--samplers", help=f"stage-1 rows (default: {','.join(paper_samplers())})")
    p.add_argument("--losses", help=f"loss rows, or none (default: {','.join(rebalancing_losses())})")
    p.add_argument("--trainable", help=f"cRT fine-tuning rows, or none (default: {','.join(TRAINABLE)})")
    p.add_argument(
        "--sweep",
        action="append",
        metavar="KEY=V1,V2,...",
        help="instead of the paper's rows: one stage-1 run per value of the stage-1 key KEY (several --sweep: "
        "every combination), each decoupled with every method and auto; the combination best on validation is "
        "chosen (test shown, never used to choose). Runs: OUT/sweep-KEY=VALUE",
    )
    p.add_argument(
        "--seeds",
        nargs="+",
        metavar="N",
        help="repeat every run with each training seed (seed=N; data.seed fixed) and show each cell as mean ± "
        "sample standard deviation (n-1) over them; a sweep then chooses by mean validation. Runs: ...-seedN",
    )
    p.add_argument(
        "--max-runs",
        type=int,
        default=MAX_RUNS,
        metavar="N",
        help=f"refuse, before training anything, a grid of more than N stage-1 runs (default {MAX_RUNS}); the "
        "count (sweep values multiplied, times seeds) is computed without listing the combinations",
    )
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value", help=OVERRIDES_HELP)
    progress_flag(p)
    p.set_defaults(func=_cmd_grid)


def _cmd_auto(args: argparse.Namespace) -> None:
    source, overrides = split_config_and_overrides(args.items)
    seeds, seed_overrides = _grid_seeds(args.seeds)
    record = run_auto(
        args.out,
        source=source,
        overrides=[*overrides, *seed_overrides],
        candidates=args.candidates,
        epochs=args.epochs,
        seeds=seeds,
        max_runs=args.max_runs,
        progress=args.progress,
        say=logging.getLogger("longtail").info,
        overwrite=args.overwrite,
    )
    command = shlex.join(["longtail", *args.argv])
    paths = write_auto(record, args.out, command)
    print(auto_markdown(record, command).split("\n", 2)[2].strip())
    print(f"\nwritten to {paths['markdown']} and {paths['json'].name}", file=sys.stderr)


def auto_parser(commands: Any, shared: argparse.Namespace) -> None:
    """``longtail auto``: stage-1 candidates x every stage-2 method, the best on validation kept."""
    p = commands.add_parser(
        "auto",
        parents=[shared.common],
        help="the whole recipe chosen on validation: stage-1 candidates x every stage-2 method",
        description="Train one stage-1 run per candidate (default: each paper sampler and each re-balancing "
        "loss, one key at a time: a union, not a product), decouple each with every stage-2 method and its "
        "hyper-parameters (--method all,auto), and keep the candidate whose best classifier is best on "
        "validation. Test is read only to report. Runs: OUT/sweep-KEY=VALUE[-seedN]; finished runs of the same "
        "settings are reused and interrupted ones resumed, so an interrupted auto continues where it stopped. "
        "Writes OUT/auto.md and OUT/auto.json.",
        epilog=shared.keys,
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "items",
        nargs="*",
        default=[],
        metavar="[CONFIG.yaml] [key=value]",
        help="an optional YAML config, then " + OVERRIDES_HELP,
    )
    p.add_argument("--out", default="runs/auto", metavar="DIR", help="directory of the runs (default: runs/auto)")
    p.add_argument(
        "--candidates",
        nargs="+",
        metavar="KEY=V1,V2",
        help=f"stage-1 candidates, one per value (default: {' '.join(default_candidates())}); every word after "
        "--candidates is one, so give key=value overrides before it",
    )
    p.add_argument("--epochs", type=int, metavar="N", help="stage-1 budget: train.epochs=N for every candidate")
    p.add_argument(
        "--seeds",
        nargs="+",
        metavar="N",
        help="train every candidate with each training seed (seed=N; data.seed fixed) and choose by the mean "
        "validation score; scores shown as mean ± sample std. Runs: ...-seedN",
    )
    p.add_argument(
        "--max-runs",
        type=int,
        default=MAX_RUNS,
        metavar="N",
        help=f"refuse, before training anything, more than N stage-1 runs (candidates x seeds; default {MAX_RUNS})",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="retrain a finished run under --out that holds other settings or data than its candidate (else refused)",
    )
    progress_flag(p)
    p.set_defaults(func=_cmd_auto)
