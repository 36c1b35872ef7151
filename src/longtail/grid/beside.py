"""A stage-1 training in a second process, beside the caller's own: two CPU trainings at once.

On a CPU, two small trainings on half the cores each finish sooner than one
after the other on all of them: a ResNet-8 step on 28-pixel images uses two
threads poorly (measured on the project's 2-core machine, bf16: 0.9 s an epoch
on two threads, 1.45 s on one thread with a second training beside it, so two
80-epoch runs take 116 s instead of 144 s). ``longtail demo`` trains its
validation candidate this way while it trains the paper's run.

The child is ``python -m longtail train`` with the same overrides, so its run
has the provenance that :func:`~longtail.grid.run.ensure_stage1` checks when the
run is later reused; when the child fails, the caller is told why (the child's
last error line) and trains the run itself as before. Nothing here is needed
for correctness: it only moves a training earlier.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch

log = logging.getLogger(__name__)


@dataclass
class BesideTraining:
    """A running ``longtail train`` child process.

    Attributes:
        out: the run directory it trains into.
        process: the child.
        errors: a temporary file holding the child's standard error.
    """

    out: Path
    process: subprocess.Popen[bytes]
    errors: IO[bytes]

    def wait(self) -> str | None:
        """Wait for the child; None when it finished a run, else why not (its last error line)."""
        code = self.process.wait()
        self.errors.seek(0)
        lines = [line for line in self.errors.read().decode(errors="replace").splitlines() if line.strip()]
        self.errors.close()
        if code == 0:
            return None
        return lines[-1] if lines else f"exit status {code}"

    def stop(self) -> None:
        """End the child if it still runs (the caller was interrupted or failed)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.errors.close()


def start_beside(out: Path, overrides: Sequence[str], threads: int) -> BesideTraining | None:
    """Start ``longtail train --out OUT OVERRIDES`` on ``threads`` threads; None (logged) when it cannot start."""
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "longtail", "train", "--out", str(out), "--no-progress", *overrides]
    errors = tempfile.TemporaryFile()
    try:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors, env=environment
        )
    except OSError as error:
        errors.close()
        log.warning("could not start a second training process (%s); training one after the other", error)
        return None
    return BesideTraining(out, process, errors)


def split_cores(parts: int) -> int:
    """Threads for each of ``parts`` trainings sharing this machine's cores (at least 1); 0 when there are fewer
    cores than trainings (then side by side is no faster)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores // parts if cores >= parts else 0


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """This process's torch threads set to ``threads`` inside the block (unchanged for 0), restored after."""
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
