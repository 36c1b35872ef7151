"""``longtail compare``, ``report`` and ``illustrate``: reading runs, as tables and figures."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

from ..config.options import INT64
from ..errors import ConfigError, one_line
from ..evaluation.bootstrap import METRICS
from ..evaluation.compare import comparison_rows, format_comparison, format_paired, paired_rows
from ..fs.atomic import write_text_atomic
from ..runs import check_output_path
from .common import run_dir_arguments


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
        print(f"\nMarkdown table: {one_line(str(args.md))}")


def _cmd_report(args: argparse.Namespace) -> None:
    from ..report import write_report  # matplotlib is imported only by the commands that draw

    paths = write_report(args.run_dir, args.overrides)
    html, markdown, figures = (one_line(str(paths[key])) for key in ("html", "markdown", "figures"))
    print(f"report: {html} (self-contained) and {markdown} (figures in {figures})")  # one line, whatever the path


def _cmd_illustrate(args: argparse.Namespace) -> None:
    from ..report.illustration import write_illustration  # matplotlib is imported only by the commands that draw

    if not 0 <= args.seed < INT64:  # torch's generator overflowed with a ValueError traceback
        raise ConfigError(f"--seed {args.seed}: expected an integer in [0, 2**63), as the seed key")
    out = check_output_path(args.out, overwrite=args.overwrite, what="--out")
    print(f"illustration: {write_illustration(out, seed=args.seed)}")


def compare_parser(commands: Any, shared: argparse.Namespace) -> None:
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
    p.add_argument(
        "run_dirs",
        nargs="*",
        default=[],
        metavar="RUN_DIR",
        help="run directories written by `longtail train`; a folder of runs (`longtail auto --out`, `grid --out`): "
        "its runs, by name",
    )
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


def report_parser(commands: Any, shared: argparse.Namespace) -> None:
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
    run_dir_arguments(p, "run-time overrides such as data.root=DIR device=cpu")
    p.set_defaults(func=_cmd_report)


def illustrate_parser(commands: Any, shared: argparse.Namespace) -> None:
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
