"""``longtail demo``: the whole recipe on Fashion-MNIST-LT into one run directory."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .config import load_config
from .fs.staging import replace_directory
from .pipeline import decouple, train
from .report import write_report
from .runs import check_replaceable, read_results

log = logging.getLogger(__name__)


def demo(
    out: str | Path = "runs/demo",
    *,
    overrides: Sequence[str] = (),
    progress: bool = True,
    say: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """The whole recipe on Fashion-MNIST-LT: stage 1, then every stage-2 method and ``auto``, into ``out``,
    then its report (``report.html``, ``report.md``).

    The run is built in a temporary sibling directory and moved to ``out`` only
    when complete; an existing run directory at ``out`` is replaced (said via
    ``say``), anything else there is refused.
    """
    out = Path(out)
    config = load_config(None, overrides)
    check_replaceable(out)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        train(config, partial, progress=progress)
        decouple(partial, ["auto"])  # every method, plus the best on val as "auto"
        if out.exists():
            say(f"replacing existing run directory {out}")
        replace_directory(partial, out)  # the old run goes only once the new one is in place
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    paths = write_report(out)
    say(f"report: {paths['html']} (and {paths['markdown'].name} with its figures)")
    return read_results(out)
