"""The ``longtail`` command: parse arguments, call the library, print tables.

Subcommands: ``train`` (and ``train --resume``), ``decouple``, ``eval``, ``compare``, ``demo``, ``grid``,
``config``, ``data stats``, ``export``, ``predict``, ``report``, ``illustrate``, ``features``. Any
:class:`~longtail.errors.LongtailError` becomes one line on stderr and exit status 1 (a traceback only
with ``--debug``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ..config import EvalConfig, config_reference, config_to_dict, load_config
from ..data.stats import class_size_stats, dataset_counts, format_stats, plot_class_sizes, split_file_counts
from ..demo import demo
from ..engine.distributed import launch_env, reported_by_rank0, single_process
from ..errors import ConfigError, LongtailError
from ..evaluation.bootstrap import METRICS
from ..evaluation.compare import comparison_rows, format_comparison, format_paired, paired_rows
from ..evaluation.table import INTERVAL_NOTE, format_table, table_title
from ..export import export_methods, export_run, format_predictions, load_artifact, predict_images
from ..fs.atomic import write_text_atomic
from ..grid import (
    GRID_DEFAULTS,
    LOSSES,
    MAX_RUNS,
    NOTES_MARKER,
    SAMPLERS,
    TRAINABLE,
    check_grid_doc,
    grid_markdown,
    run_grid,
    write_grid_doc,
)
from ..methods import method_names
from ..pipeline import decouple, evaluate, resume, train
from ..pipeline.features_export import export_features
from ..runs import check_output_path
from ..version import __version__

OVERRIDES_HELP = (
    "config overrides as key=value, applied after the YAML file; e.g. train.epochs=5 train.lr=0.05 "
    "decouple.crt.epochs=20. `longtail config` prints every key with its default."
)


class _StderrHandler(logging.StreamHandler):
    """Log lines to whatever ``sys.stderr`` is at the time (tests swap it)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _configure_logging() -> None:
    """Status lines of the ``longtail`` loggers go to stderr as plain messages."""
    logger = logging.getLogger("longtail")
    logger.setLevel(logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions; keeps multi-line text (the key listing) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line + "\n" for line in text.splitlines())
        return super()._fill_text(text, width, indent)


def _key_listing() -> str:
    """Every config key with its default and help, for the epilog of --help."""
    rows = config_reference()
    width = max(len(f"{key} = {default!r}") for key, default, _ in rows)
    lines = [f"  {f'{key} = {default!r}'.ljust(width)}  {help}" for key, default, help in rows]
    return "config keys (key = default):\n" + "\n".join(lines)


def _split_config_and_overrides(items: Sequence[str]) -> tuple[str | None, list[str]]:
    """``[CONFIG.yaml] [key=value ...]`` -> (config path or None, overrides)."""
    items = list(items)
    config = items.pop(0) if items and "=" not in items[0] else None
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{item!r}: expected key=value (only the first argument may be a config file)")
    return config, items


def _print_table(results: dict[str, Any], split: str = "test") -> None:
    methods = results.get("methods" if split == "test" else "val_methods", {})
    print(f"\n{table_title(results, split)}")
    print(format_table(methods))
    if any(isinstance(summary, dict) and summary.get("ci") for summary in methods.values()):
        print(INTERVAL_NOTE)


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
        config_path, overrides = _split_config_and_overrides(args.items)
        config = load_config(config_path, overrides)
        run_dir = args.out
        results = train(config, run_dir, overwrite=args.overwrite, progress=args.progress)
    _print_table(results)
    print(f"\nrun directory: {run_dir}  (next: longtail decouple {run_dir} --method all)")


def _cmd_decouple(args: argparse.Namespace) -> None:
    methods = [m.strip() for text in args.method for m in text.split(",") if m.strip()]
    overrides = list(args.overrides) + ([f"decouple.features={args.features}"] if args.features else [])
    results = decouple(args.run_dir, methods, overrides, overwrite=args.overwrite)
    _print_table(results)


def _cmd_eval(args: argparse.Namespace) -> None:
    results = evaluate(args.run_dir, args.split, args.overrides)
    _print_table(results, args.split)


def _cmd_demo(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    results = demo(args.out, overrides=args.overrides, progress=args.progress)
    _print_table(results)
    print(f"\nfinished in {time.perf_counter() - start:.0f}s; results in {Path(args.out) / 'results.json'}")


def _cmd_compare(args: argparse.Namespace) -> None:
    if args.md:
        check_output_path(args.md, overwrite=args.overwrite, what="--md")
    if args.paired:
        rows = paired_rows(args.run_dirs, *args.paired, metric=args.metric or "macro")
        render = functools.partial(format_paired, rows)
    elif args.metric:
        raise ConfigError("--metric: chooses what --paired compares; give --paired A B too")
    elif not args.run_dirs:
        raise ConfigError("compare: give one or more RUN_DIRs")
    else:
        render = functools.partial(format_comparison, comparison_rows(args.run_dirs))
    print(render())
    if args.md:
        write_text_atomic(Path(args.md), render(markdown=True) + "\n")
        print(f"\nMarkdown table: {args.md}")


def _list_option(text: str) -> list[str]:
    """``a,b`` -> [a, b]; ``none`` -> []."""
    return [] if text.strip().lower() == "none" else [item.strip() for item in text.split(",") if item.strip()]


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
    start = time.perf_counter()
    seeds, overrides = _grid_seeds(args.seeds)
    rows = {name: getattr(args, name) for name in ("samplers", "losses", "trainable")}
    grid = run_grid(
        args.out,
        **{name: None if text is None else _list_option(text) for name, text in rows.items()},
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


def _cmd_data_stats(args: argparse.Namespace) -> None:
    spec, overrides = _split_config_and_overrides([args.spec, *args.overrides])
    is_list = spec is not None and not spec.endswith((".yaml", ".yml")) and not overrides
    if is_list:
        counts, source = split_file_counts(spec), spec
        many, few = args.many, args.few
    else:
        config = load_config(spec, overrides)
        counts, source, info = dataset_counts(config, args.split)
        many = config.eval.many if args.many is None else args.many
        few = config.eval.few if args.few is None else args.few
    many = EvalConfig.many if many is None else many
    few = EvalConfig.few if few is None else few
    if few > many:
        raise ConfigError(f"--few {few}: expected at most --many ({many})")
    stats = {"source": source, **class_size_stats(counts, many=many, few=few)}
    if not is_list:
        stats["val_source"] = info.get("val_source", "unknown")
    if args.plot:
        check_output_path(args.plot, overwrite=args.overwrite, what="--plot")
        stats["plot"] = str(plot_class_sizes(counts, args.plot, title=source, many=many, few=few))
    if args.json:
        print(json.dumps(stats))
        return
    print(format_stats(stats, source, unit="images" if is_list else info.get("unit", "images")))
    if args.plot:
        print(f"  class-size plot: {stats['plot']}")


def _cmd_export(args: argparse.Namespace) -> None:
    result = export_run(
        args.run_dir, args.method, args.out, onnx=args.onnx, overrides=args.overrides, overwrite=args.overwrite
    )
    classifier = result.metadata["classifier"]
    what = f"auto (= {classifier['label']})" if args.method == "auto" else classifier["label"]
    print(f"exported {what} to {result.path}  ({result.path.stat().st_size / 1e6:.1f} MB)")
    if result.onnx_path is not None:
        print(f"ONNX: {result.onnx_path}")
    if result.metadata["input"].get("kind") == "features":
        print(f"it maps (N, {result.metadata['input']['features']}) feature vectors to logits: "
              f"torch.export.load('{result.path}').module()(features)")  # fmt: skip
    else:
        print(f"next: longtail predict {result.path} IMAGE...")


def _cmd_predict(args: argparse.Namespace) -> None:
    module, metadata = load_artifact(args.model)
    if metadata.get("input", {}).get("kind") == "features":
        raise ConfigError(
            f"{args.model}: takes (N, {metadata['input'].get('features')}) feature vectors, not images; "
            "call it from Python: torch.export.load(MODEL).module()(features)"
        )
    predictions = predict_images(module, metadata, args.images, args.topk)
    if args.json:
        print(json.dumps([p.to_dict() for p in predictions]))
    else:
        print(format_predictions(predictions))


def _cmd_report(args: argparse.Namespace) -> None:
    from ..report import write_report  # matplotlib is imported only by the commands that draw

    paths = write_report(args.run_dir, args.overrides)
    print(f"report: {paths['html']} (self-contained) and {paths['markdown']} (figures in {paths['figures']})")


def _cmd_illustrate(args: argparse.Namespace) -> None:
    from ..report.illustration import write_illustration  # matplotlib is imported only by the commands that draw

    out = check_output_path(args.out, overwrite=args.overwrite, what="--out")
    print(f"illustration: {write_illustration(out, seed=args.seed)}")


def _cmd_features(args: argparse.Namespace) -> None:
    written = export_features(args.run_dir, args.out, overwrite=args.overwrite, overrides=args.overrides)
    counts = ", ".join(f"{split} {n}" for split, n in written.counts.items())
    joint = " and the joint classifier" if written.joint else ""
    print(f"features (d = {written.num_features}; {counts}){joint} written to {written.path}")
    print(f"next: longtail train data.name=features data.path={written.path} --out RUN_DIR")


def _cmd_config(args: argparse.Namespace) -> None:
    config_path, overrides = _split_config_and_overrides(args.items)
    print(yaml.safe_dump(config_to_dict(load_config(config_path, overrides)), sort_keys=False), end="")


def _run_dir_arguments(p: argparse.ArgumentParser, overrides_help: str) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `longtail train`")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=overrides_help)


def _progress_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=sys.stderr.isatty(),
        help="no progress bar; one log line per epoch instead (default when stderr is not a terminal)",
    )


def _train_parser(commands: Any, shared: argparse.Namespace) -> None:
    """``longtail train``: stage 1."""
    p = commands.add_parser(
        "train",
        parents=[shared.common],
        help="stage 1: joint training into a new run directory",
        description="Stage 1: train backbone and linear classifier jointly (instance-balanced by "
        "default). Writes config.yaml, checkpoint.pt, metrics.jsonl and results.json into --out.",
        epilog=shared.keys,
        formatter_class=_HelpFormatter,
    )
    p.add_argument(
        "items", nargs="*", metavar="[CONFIG.yaml] [key=value]", help="an optional YAML config, then " + OVERRIDES_HELP
    )
    p.add_argument("--out", metavar="RUN_DIR", help="the run directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace RUN_DIR if it is an existing run directory")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run from its last checkpoint, exactly as if it had not stopped "
        "(with its own config.yaml; a finished run is left as it is)",
    )
    _progress_flag(p)
    p.set_defaults(func=_cmd_train)


def _decouple_parser(commands: Any, shared: argparse.Namespace) -> None:
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
        formatter_class=_HelpFormatter,
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
    p.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP)
    p.set_defaults(func=_cmd_decouple)


def _eval_parser(commands: Any, shared: argparse.Namespace) -> None:
    """``longtail eval``: re-score a run."""
    p = commands.add_parser(
        "eval",
        parents=[shared.common],
        help="re-score every classifier of a run and print the table",
        description="Evaluate the joint classifier and every saved stage-2 classifier of RUN_DIR on "
        "--split, print the table and refresh results.json.",
    )
    _run_dir_arguments(p, "run-time overrides such as eval.many=50 device=cpu")
    p.add_argument("--split", choices=("val", "test"), default="test", help="which split to score (default: test)")
    p.set_defaults(func=_cmd_eval)


def _compare_parser(commands: Any, shared: argparse.Namespace) -> None:
    """``longtail compare``: a table across runs, or a paired bootstrap of two methods (``--paired``)."""
    p = commands.add_parser(
        "compare",
        parents=[shared.common],
        help="one table across runs: every method, many/medium/few/all/macro ± 95%% interval, τ, wall time",
        description="Compare the test results of several runs: one row per run and method, the best of each "
        "column marked (highest accuracy, least wall time), each accuracy with the half-width of its 95% "
        "bootstrap interval over test images. A method's wall time is stage 1 plus, for stage-2 "
        "methods, the feature pass and its own fitting (auto: all of them). With --paired A B: the paired "
        "bootstrap of A − B instead (docs/statistics.md).",
    )
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="run directories written by `longtail train`")
    p.add_argument("--md", metavar="FILE.md", help="also write the table as Markdown to FILE.md")
    p.add_argument("--overwrite", action="store_true", help="replace FILE.md if it exists")
    p.add_argument(
        "--paired",
        nargs=2,
        metavar=("A", "B"),
        help="paired bootstrap of A − B on the same test images: two method names (one line per RUN_DIR), "
        "or RUN_A:METHOD RUN_B:METHOD (two runs scored on the same test set; no other RUN_DIR)",
    )
    p.add_argument("--metric", choices=METRICS, help="the accuracy --paired compares (default: macro)")
    p.set_defaults(func=_cmd_compare)


def _demo_parser(commands: Any, shared: argparse.Namespace) -> None:
    """``longtail demo``: the whole recipe on Fashion-MNIST-LT."""
    p = commands.add_parser(
        "demo",
        parents=[shared.common],
        help="the whole recipe on Fashion-MNIST-LT",
        description="Stage 1, every stage-2 method and --method auto on Fashion-MNIST-LT (1000 images in the "
        "largest class, imbalance factor 100), scored on the full test set. Replaces --out when it "
        "is an existing run directory.",
        epilog=shared.keys,
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--out", default="runs/demo", metavar="RUN_DIR", help="run directory (default: runs/demo)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP)
    _progress_flag(p)
    p.set_defaults(func=_cmd_demo)


def _grid_parser(commands: Any, shared: argparse.Namespace) -> None:
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
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--out", default="runs/grid", metavar="DIR", help="directory of the runs (default: runs/grid)")
    p.add_argument("--doc", metavar="FILE.md", help="also write the Markdown tables to FILE.md")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="retrain a finished run under --out that holds other settings or data than its cell (else refused), "
        "and replace a --doc file that is not a grid document",
    )
    p.add_argument("--samplers", help=f"stage-1 rows (default: {','.join(SAMPLERS)})")
    p.add_argument("--losses", help=f"loss rows, or none (default: {','.join(LOSSES)})")
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
    p.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP)
    _progress_flag(p)
    p.set_defaults(func=_cmd_grid)


def _report_parser(commands: Any, shared: argparse.Namespace) -> None:
    """``longtail report``: the report of a run."""
    p = commands.add_parser(
        "report",
        parents=[shared.common],
        help="the run's figures and tables: RUN_DIR/report.html and report.md",
        description="Write RUN_DIR/report.html (one self-contained file, figures embedded, readable offline) and "
        "RUN_DIR/report.md with its PNGs in RUN_DIR/report_files: the classifier weight norms, per-class accuracy "
        "against class size, many/medium/few bars, the tau sweep, the training curves, a confusion matrix (per "
        "shot group beyond 30 classes) and the most-confused class pairs, "
        "calibration (ECE, reliability diagrams) and the paper's decision-region illustration, with the run's "
        "config, versions, dataset statistics and timing. Every classifier of the run is scored on test afresh. "
        "See docs/report.md.",
    )
    _run_dir_arguments(p, "run-time overrides such as data.root=DIR device=cpu")
    p.set_defaults(func=_cmd_report)


def _illustrate_parser(commands: Any, shared: argparse.Namespace) -> None:
    """``longtail illustrate``: the paper's illustration."""
    p = commands.add_parser(
        "illustrate",
        parents=[shared.common],
        help="the paper's decision-region illustration on a 2-D toy problem",
        description="Draw the decision regions of Joint (tau = 0), tau-norm (tau = 1), a cosine classifier and NCM "
        "side by side on a 2-D three-class long-tailed toy problem (1000 / 100 / 10 points), computed with a fixed "
        "seed, with the share of the area each gives to the head class. The format follows the suffix of --out.",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="the figure to write: .png, .svg or .pdf")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the toy data and training (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    p.set_defaults(func=_cmd_illustrate)


def _config_parser(commands: Any, shared: argparse.Namespace) -> None:
    """``longtail config``: the resolved config."""
    p = commands.add_parser(
        "config",
        parents=[shared.common],
        help="print the resolved config (defaults, YAML file, overrides)",
        description="Print the config that `longtail train` would use, as YAML.",
        epilog=shared.keys,
        formatter_class=_HelpFormatter,
    )
    p.add_argument(
        "items", nargs="*", metavar="[CONFIG.yaml] [key=value]", help="an optional YAML config, then overrides"
    )
    p.set_defaults(func=_cmd_config)


def _data_parser(commands: Any, shared: argparse.Namespace) -> None:
    """``longtail data``: dataset tools (`data stats`)."""
    p = commands.add_parser(
        "data",
        help="inspect a dataset: `longtail data stats`",
        description="Dataset tools. `longtail data stats SPEC_OR_LIST` prints class-size statistics.",
    )
    data_commands = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    p = data_commands.add_parser(
        "stats",
        parents=[shared.common],
        help="classes, images, imbalance factor, many/medium/few; --plot for a chart",
        description="Class-size statistics of a split file (one 'relative/path label' per line) or of "
        "the dataset a config describes (a YAML file and/or key=value overrides; --split chooses "
        "which split): classes, images, largest and smallest class, imbalance factor (largest / "
        "smallest), and how many classes are many-shot (> --many), medium or few-shot (< --few).",
        epilog=shared.keys,
        formatter_class=_HelpFormatter,
    )
    p.add_argument(
        "spec",
        metavar="SPEC_OR_LIST",
        help="a split file, or a YAML config (or, without one, overrides such as data.name=cifar10_lt)",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, after a YAML config")
    p.add_argument("--json", action="store_true", help="print only JSON on standard output")
    p.add_argument("--plot", metavar="FILE.png", help="write a class-size plot (PNG)")
    p.add_argument("--overwrite", action="store_true", help="replace FILE.png if it exists")
    p.add_argument("--split", choices=("train", "val", "test"), default="train", help="for a config (default: train)")
    p.add_argument("--many", type=int, metavar="N", help="many-shot: more than N images (default: eval.many, 100)")
    p.add_argument("--few", type=int, metavar="N", help="few-shot: fewer than N images (default: eval.few, 20)")
    p.set_defaults(func=_cmd_data_stats)


def _export_parser(commands: Any, shared: argparse.Namespace) -> None:
    """``longtail export``: one model file."""
    p = commands.add_parser(
        "export",
        parents=[shared.common],
        help="one self-contained model file: backbone + re-balanced classifier (+ ONNX)",
        description="Write RUN_DIR's backbone with one classifier folded into a linear layer (tau, LWS scales, "
        "logit adjustment or NCM centroids baked in) as a torch.export program (.pt2) that loads with plain "
        "PyTorch: torch.export.load(MODEL).module() maps (N, C, H, W) float images in [0, 1] to logits. The class "
        "names and the input transform are stored in the file. The run's data must be readable (data.root=DIR "
        "if it moved): the export is checked against the pipeline on validation images. See docs/export.md.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (after `longtail decouple`)")
    p.add_argument(
        "--method",
        default="auto",
        choices=export_methods(),
        help="the classifier to export (default: auto, the best on val of `longtail decouple --method auto`)",
    )
    p.add_argument("--out", metavar="MODEL", help="the file to write (default: RUN_DIR/export/METHOD.pt2)")
    p.add_argument("--overwrite", action="store_true", help="replace MODEL (and MODEL.onnx) if it exists")
    p.add_argument(
        "--onnx", action="store_true", help="also write MODEL.onnx beside it (needs pip install 'longtail[export]')"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="where the data lives, e.g. data.root=DIR")
    p.set_defaults(func=_cmd_export)


def _predict_parser(commands: Any, shared: argparse.Namespace) -> None:
    """``longtail predict``: top-k classes with an exported model."""
    p = commands.add_parser(
        "predict",
        parents=[shared.common],
        help="top-k classes of images with an exported model",
        description="Read each IMAGE (PNG, JPEG or anything Pillow reads, or .npy: uint8 or floats in [0, 1]), "
        "apply the input transform recorded in MODEL (channels, resize or resize + centre crop), and print the "
        "top-k classes with their probabilities.",
    )
    p.add_argument("model", metavar="MODEL", help="a .pt2 file written by `longtail export`")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--topk", type=int, metavar="K", help="classes per image (default: 5, or all if fewer)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.set_defaults(func=_cmd_predict)


def _features_parser(commands: Any, shared: argparse.Namespace) -> None:
    """``longtail features``: a run's features as an .npz."""
    p = commands.add_parser(
        "features",
        parents=[shared.common],
        help="write a run's frozen-backbone features of every split to an .npz (for data.name=features)",
        description="Write the test-time features of RUN_DIR's train, val and test splits by its frozen backbone "
        "(the ones stage 2 fits on, from RUN_DIR/features or computed there) to --out: x_train, y_train, x_val, "
        "y_val, x_test, y_test, class_names, and the joint classifier (joint_weight, joint_bias) when it is "
        "linear. `longtail train data.name=features data.path=FILE` trains a linear probe on them; with "
        "model.joint=file it keeps this run's joint classifier, and its stage 2 gives this run's numbers.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `longtail train`")
    p.add_argument("--out", required=True, metavar="FILE.npz", help="the .npz file to write")
    p.add_argument("--overwrite", action="store_true", help="replace FILE.npz if it exists")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="run-time overrides such as data.root=DIR")
    p.set_defaults(func=_cmd_features)


_COMMAND_PARSERS = (
    _train_parser,
    _decouple_parser,
    _eval_parser,
    _compare_parser,
    _demo_parser,
    _grid_parser,
    _report_parser,
    _illustrate_parser,
    _config_parser,
    _data_parser,
    _export_parser,
    _predict_parser,
    _features_parser,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``longtail`` and its subcommands (one ``_<command>_parser`` function each)."""
    parser = argparse.ArgumentParser(
        prog="longtail",
        description="Long-tailed recognition by decoupling representation and classifier (Kang et al., ICLR 2020).",
        epilog="Run `longtail COMMAND --help` for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"longtail {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # --debug is accepted after the command too; SUPPRESS keeps an absent one from resetting it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of errors")
    shared = argparse.Namespace(common=common, keys=_key_listing())
    for add_parser in _COMMAND_PARSERS:
        add_parser(commands, shared)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``longtail`` command; returns the exit status."""
    parser = build_parser()
    # argparse stops filling a nargs="*" positional at the first option, so
    # key=value pairs after e.g. `--method crt` come back as extras: keep them.
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extras = parser.parse_known_args(argv)
    args.argv = argv
    stray = [e for e in extras if "=" not in e or e.startswith("-")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    target = "items" if hasattr(args, "items") else "overrides"
    if extras and hasattr(args, target):
        setattr(args, target, list(getattr(args, target)) + extras)
    _configure_logging()
    if getattr(args, "method", "") is None:
        args.method = ["all"]
    try:
        env = launch_env()
        if env.distributed and args.command != "train" and env.rank != 0:
            # Stage 2, evaluation and the tools are cheap and single-process: rank 0 runs them.
            logging.getLogger("longtail").info("rank %d: `longtail %s` runs on rank 0 only", env.rank, args.command)
            return 0
        with contextlib.ExitStack() as scope:
            if env.distributed and args.command != "train":
                scope.enter_context(single_process())  # so that the train() inside demo or grid does not wait for peers
            elif env.distributed and env.rank != 0:
                args.progress = False
                scope.enter_context(contextlib.redirect_stdout(io.StringIO()))  # rank 0 prints the table
            args.func(args)
    except LongtailError as error:
        if args.debug:
            raise
        if not reported_by_rank0(error):  # an error every rank raised is printed once, by rank 0
            print(f"longtail: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # DataLoader workers have been shut down on the way out; checkpoints are only ever replaced whole.
        run_dir = getattr(args, "resume", None) or getattr(args, "out", None)
        hint = f"; continue with `longtail train --resume {run_dir}`" if args.command == "train" and run_dir else ""
        print(f"longtail: interrupted{hint}", file=sys.stderr)
        return 130
    return 0
