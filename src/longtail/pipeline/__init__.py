"""The stage commands as library functions: ``train``, ``resume``, ``decouple``, ``evaluate``.

Each reads and writes a run directory (see :mod:`longtail.runs`); the CLI only
parses arguments and calls these.
"""

from .classifiers import load_fitted
from .run_state import LoadedRun, load_run, run_time_keys
from .stage1 import resume, train
from .stage2 import decouple, evaluate, run_features

__all__ = [
    "run_time_keys",
    "LoadedRun",
    "decouple",
    "evaluate",
    "load_fitted",
    "load_run",
    "resume",
    "run_features",
    "train",
]
