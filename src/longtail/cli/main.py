"""The ``longtail`` command: parse arguments, call the library, print tables.

Subcommands: ``train`` (and ``train --resume``), ``decouple``, ``eval``, ``compare``, ``demo``, ``grid``,
``config``, ``data stats``, ``export``, ``predict``, ``report``, ``illustrate``, ``features``. Any
:class:`~longtail.errors.LongtailError` becomes one line on stderr and exit status 1 (a traceback only
with ``--debug``).

Each group of commands is one module (:mod:`.stages`, :mod:`.experiments`,
:mod:`.results`, :mod:`.tools`): a ``_cmd_<command>`` function that calls the
library and prints, and a ``<command>_parser`` function that adds its parser.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import logging
import os
import shlex
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from ..engine.distributed import launch_env, reported_by_rank0, single_process
from ..errors import LongtailError, one_line
from ..runs import CONFIG_FILE
from ..version import __version__
from .common import key_listing, refuse_empty_output_paths, refuse_spaced_equals
from .experiments import auto_parser, demo_parser, grid_parser
from .results import compare_parser, illustrate_parser, report_parser
from .stages import decouple_parser, eval_parser, train_parser
from .stdout_guard import guarded_stdout
from .stream_encoding import spell_what_streams_cannot_encode
from .tools import config_parser, data_parser, export_parser, features_parser, predict_parser


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


def _configure_warnings() -> None:
    """Keep Pillow's decompression-bomb warning off stderr; its refusal stays.

    Pillow warns (``DecompressionBombWarning``) of an image file that declares
    more than ``Image.MAX_IMAGE_PIXELS`` pixels and reads it, and refuses one of
    more than twice that (``DecompressionBombError``, which the readers report
    as "too large" in one line). The refusal is longtail's limit, as for
    ``.npy`` images; the warning would be library text before the command's
    own output. DataLoader workers, forked from this process, inherit the filter.

    Also torch's own deprecation notice about its ``LeafSpec``, which torch 2.13
    issues when an exported program (a ``model.backbone=export:`` backbone) is
    copied, as `export` and `predict` do: a note from torch to itself, not to the user.
    """
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )


_COMMAND_PARSERS = (
    train_parser,
    decouple_parser,
    eval_parser,
    compare_parser,
    demo_parser,
    grid_parser,
    auto_parser,
    report_parser,
    illustrate_parser,
    config_parser,
    data_parser,
    export_parser,
    predict_parser,
    features_parser,
)


OUT_OF_MEMORY = (
    "out of memory; raise the process's memory limit (ulimit -v) or free memory, "
    "or lower the batch sizes (train.batch_size, eval.batch_size)"
)
SIGPIPE_STATUS = 128 + 13  # the shell's status of a process that SIGPIPE ended


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
    shared = argparse.Namespace(common=common, keys=key_listing())
    for add_parser in _COMMAND_PARSERS:
        add_parser(commands, shared)
    return parser


# Commands that, run again after Ctrl-C, reuse what finished (fitted classifiers, cRT's partial epochs, whole runs).
RERUN_CONTINUES = ("decouple", "auto", "grid")


def _stop_workers(interrupt: KeyboardInterrupt) -> None:
    """Let the DataLoader workers of an interrupted command stop now, a second Ctrl-C ignored meanwhile.

    The interrupted frames, which hold the DataLoader iterators, are released
    here rather than after ``main`` returns; each iterator's ``__del__`` then
    joins its workers (seconds). A KeyboardInterrupt inside ``__del__`` cannot
    propagate: Python printed its traceback under "Exception ignored in".
    """
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
    try:
        interrupt.__traceback__ = None
        interrupt.__context__ = None
        gc.collect()
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)


def _rerun_hint(args: argparse.Namespace) -> str:
    """How to go on after a command stopped half-way (Ctrl-C, out of memory), or nothing.

    Checkpoints are only ever replaced whole. Only a run directory that was made (config.yaml
    comes first) can be resumed: not one stopped while the data loaded.
    """
    run_dir = getattr(args, "resume", None) or getattr(args, "out", None)
    if args.command in RERUN_CONTINUES:
        return "; the same command again continues: what finished is kept and reused"
    if args.command == "train" and run_dir and (Path(run_dir) / CONFIG_FILE).is_file():
        return f"; continue with `longtail train --resume {shlex.quote(str(run_dir))}`"
    return ""


def _out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says that memory ran out: Python's, torch's CPU allocator's, or a GPU's."""
    if isinstance(error, MemoryError):
        return True
    cuda_oom = getattr(torch, "OutOfMemoryError", ())
    return isinstance(error, cuda_oom) or "DefaultCPUAllocator: can't allocate memory" in str(error)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``longtail`` command; returns the exit status."""
    spell_what_streams_cannot_encode()  # before --help prints its "τ"
    parser = build_parser()
    # argparse stops filling a nargs="*" positional at the first option, so
    # key=value pairs after e.g. `--method crt` come back as extras: keep them.
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        refuse_spaced_equals(argv)
    except LongtailError as error:
        parser.error(str(error))
    args, extras = parser.parse_known_args(argv)
    args.argv = argv
    stray = [e for e in extras if "=" not in e or e.startswith("-")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    target = "items" if hasattr(args, "items") else "overrides"
    if extras and hasattr(args, target):
        setattr(args, target, list(getattr(args, target)) + extras)
    _configure_logging()
    _configure_warnings()
    if getattr(args, "method", "") is None:
        args.method = ["all"]
    try:
        refuse_empty_output_paths(args)
        env = launch_env()
        if env.distributed and args.command != "train" and env.rank != 0:
            # Stage 2, evaluation and the tools are cheap and single-process: rank 0 runs them.
            logging.getLogger("longtail").info("rank %d: `longtail %s` runs on rank 0 only", env.rank, args.command)
            return 0
        with contextlib.ExitStack() as scope:
            scope.enter_context(guarded_stdout())
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
            print(f"longtail: error: {one_line(str(error))}", file=sys.stderr)  # a file's name may hold a line break
        return 1
    except (MemoryError, RuntimeError) as error:
        # `ulimit -v` below what the command needs, or a machine out of RAM: Python's bare MemoryError, or
        # torch's "DefaultCPUAllocator: can't allocate memory" RuntimeError, as a traceback.
        if args.debug or not _out_of_memory(error):
            raise
        print(f"longtail: error: {OUT_OF_MEMORY}{_rerun_hint(args)}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader of standard output went away (`longtail compare RUN | head -1`): stop quietly with the
        # status of a command that SIGPIPE ended, as `git log | head` does. Standard output then goes to
        # /dev/null, so that flushing it at exit does not raise again.
        with contextlib.suppress(OSError, ValueError):  # a stdout without a file descriptor (tests)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return SIGPIPE_STATUS
    except KeyboardInterrupt as interrupt:
        print(f"longtail: interrupted{_rerun_hint(args)}", file=sys.stderr)
        _stop_workers(interrupt)
        return 130
    return 0
