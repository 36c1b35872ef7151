"""``longtail train`` (and ``--resume``), ``decouple`` and ``eval``: the stages on a run directory."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from ..config import load_config
from ..errors import ConfigError
from ..methods import method_names, spec_of
from ..methods.ncm import FIT_WITH_EMPTY_CLASSES
from ..pipeline import decouple, evaluate, resume, train
from .common import (
    OVERRIDES_HELP,
    HelpFormatter,
    print_table,
    progress_flag,
    run_dir_arguments,
    split_config_and_overrides,
)


def _cmd_train(args: argparse.Namespace) -> None:
    if args.resume is not None:
        if args.out is not None or args.items or args.overwrite:
            raise ConfigError(
                "--resume RUN_DIR: continues with the run's own config.yaml; give no --out, --overwrite, "
                "config file or key=value overrides"
            )
        run_dir = args.resume
        results = resume(run_dir, progress=args.progress)
    elif args.out is None:
        raise ConfigError("train: give --out RUN_DIR for a new run, or --resume RUN_DIR to continue one")
    else:
        config_path, overrides = split_config_and_overrides(args.items)
        config = load_config(config_path, overrides)
        run_dir = args.out
        results = train(config, run_dir, overwrite=args.overwrite, progress=args.progress)
    print_table(results)
    # A subset that left classes empty: --method all would stop at NCM, which needs every class.
    methods = FIT_WITH_EMPTY_CLASSES if 0 in results.get("train_counts", []) else "all"
    print(f"\nrun directory: {run_dir}  (next: longtail decouple {shlex.quote(str(run_dir))} --method {methods})")


def _cmd_decouple(args: argparse.Namespace) -> None:
    methods = [m.strip() for text in args.method for m in text.split(",") if m.strip()]
    if not methods:  # `--method ""` (an unset shell variable) fitted nothing and printed the old table, exit 0
        spec_of(" ".join(args.method))  # its error: "--method '': expected one of ..."
    overrides = list(args.overrides) + ([f"decouple.features={args.features}"] if args.features else [])
    results = decouple(args.run_dir, methods, overrides, overwrite=args.overwrite)
    print_table(results)


def _cmd_eval(args: argparse.Namespace) -> None:
    results = evaluate(args.run_dir, args.split, args.overrides)
    print_table(results, args.split)


def train_parser(commands: Any, shared: argparse.Namespace) -> None:
    """``longtail train``: stage 1."""
    p = commands.add_parser(
        "train",
        parents=[shared.common],
        help="stage 1: joint training into a new run directory",
        description="Stage 1: train backbone and linear classifier jointly (instance-balanced by "
        "default). Writes config.yaml, checkpoint.pt, metrics.jsonl and results.json into --out.",
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
    p.add_argument("--out", metavar="RUN_DIR", help="the run directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace RUN_DIR if it is an existing run directory")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run from its last checkpoint, exactly as if it had not stopped "
        "(with its own config.yaml; a finished run is left as it is)",
    )
    progress_flag(p)
    p.set_defaults(func=_cmd_train)


def decouple_parser(commands: Any, shared: argparse.Namespace) -> None:
    """``longtail decouple``: stage 2."""
    p = commands.add_parser(
        "decouple",
        parents=[shared.common],
        help="stage 2: re-balance the classifier of a run",
        description="Stage 2 on the frozen backbone of RUN_DIR: cRT (re-trained linear classifier), "
        "tau_norm (weights divided by their norm^tau, tau chosen on val), LWS (learned per-class "
        "scales), NCM (nearest class mean), logit_adjust (logits - tau log prior, tau chosen on val). "
        "decouple.trainable=last_stage|all makes cRT fine-tune the backbone too. The frozen backbone runs once per "
        "split and its features are cached in RUN_DIR/features (--features cached, the default); --features online "
        "runs it in every cRT/LWS epoch on augmented images, as the official code. --method auto tries every "
        "method and hyper-parameter on the cache and keeps the best on val (decouple.select) as 'auto'. Saves "
        "classifiers/METHOD.pt and merges the metrics of every classifier into results.json. A classifier already "
        "saved with the same settings is reused; one saved with other settings is refused unless --overwrite. Only "
        "decouple.*, eval.*, device and where the data lives (data.root, data.path, data.*_list, "
        "data.num_workers, data.decode_threads) can be overridden.",
        epilog=shared.keys,
        formatter_class=HelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `longtail train`")
    p.add_argument(
        "--method",
        action="append",
        default=None,
        metavar="M",
        help=f"{', '.join(n for n in method_names() if n != 'auto')}, all (default) or auto (all, plus "
        "hyper-parameters, best on val saved as auto); repeat or comma-separate for several",
    )
    p.add_argument(
        "--features",
        choices=("cached", "online"),
        default=None,
        help="cached (default): one backbone pass per split, kept in RUN_DIR/features; online: backbone forward in "
        "every cRT/LWS epoch with training augmentation (decouple.bn=eval|train); same as decouple.features=",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="fit again, and replace, the requested methods' classifiers even where they are already saved",
    )
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value", help=OVERRIDES_HELP)
    p.set_defaults(func=_cmd_decouple)


def eval_parser(commands: Any, shared: argparse.Namespace) -> None:
    """``longtail eval``: re-score a run."""
    p = commands.add_parser(
        "eval",
        parents=[shared.common],
        help="re-score every classifier of a run and print the table",
        description="Evaluate the joint classifier and every saved stage-2 classifier of RUN_DIR on "
        "--split, print the table and refresh results.json.",
    )
    run_dir_arguments(p, "run-time overrides such as eval.many=50 device=cpu")
    p.add_argument("--split", choices=("val", "test"), default="test", help="which split to score (default: test)")
    p.set_defaults(func=_cmd_eval)
