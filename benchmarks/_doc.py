"""What the benchmark scripts share: writing a table into its own section of a Markdown document,
and one line describing the machine it was measured on.

Several scripts write ``docs/performance.md``; each replaces only its own
``## `` sections, so they can be re-run independently and in any order.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from longtail.fs.atomic import write_text_atomic


def write_section(doc: Path, heading: str, section: str) -> None:
    """Replace the section of ``doc`` headed ``heading`` (a ``## `` line) with ``section``, or append it.

    ``section`` is the whole new section, heading line included. A section runs
    from its heading to the next ``## `` heading (or the end); every other
    section is kept as it is. A missing document is created with a
    ``# Performance`` title.
    """
    text = doc.read_text() if doc.is_file() else "# Performance\n"
    lines = text.splitlines(keepends=True)
    # Match the whole heading line: one heading may be a prefix of another.
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading.rstrip()), None)
    body = section.rstrip("\n") + "\n"
    if start is None:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        rest = "".join(lines[end:])
        text = "".join(lines[:start]) + body + ("\n" + rest if rest else "")
    write_text_atomic(doc, text)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(load: float | None = None) -> str:
    """One sentence naming the machine and the software, with a 1-minute load average (how busy it was).

    Args:
        load: the load average to report, e.g. one read when the measurement
            started; None: the current one.
    """
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{os.cpu_count()} CPU cores ({cpu_model()}), 1-minute load average {load:.1f}; "
        f"Python {platform.python_version()}, torch {torch.__version__} with {torch.get_num_threads()} threads."
    )
