"""The process's resident memory, recorded per epoch so that a leak shows in ``metrics.jsonl``."""

from __future__ import annotations

import os
from pathlib import Path


def resident_memory_mb() -> float | None:
    """Resident set size of this process in MiB (Linux ``/proc``), or None where it cannot be read."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
