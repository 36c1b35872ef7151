"""The commands as library functions: ``train``, ``decouple``, ``evaluate``, ``demo``.

Each reads and writes a run directory (see :mod:`longtail.runs`); the CLI only
parses arguments and calls these.
"""

from .demo import demo
from .run_state import RUN_TIME_KEYS, LoadedRun, load_run
from .stage1 import resume, train
from .stage2 import NEED_LINEAR_JOINT, STAGE2_METHODS, decouple, evaluate, expand_methods, load_heads, run_features

__all__ = [
    "NEED_LINEAR_JOINT",
    "RUN_TIME_KEYS",
    "STAGE2_METHODS",
    "LoadedRun",
    "decouple",
    "demo",
    "evaluate",
    "expand_methods",
    "load_heads",
    "load_run",
    "resume",
    "run_features",
    "train",
]
