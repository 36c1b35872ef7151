"""longtail: long-tailed recognition by decoupling representation and classifier (Kang et al., ICLR 2020).

The public API, re-exported here (imported on first use, so that ``import longtail.x`` stays light)::

    from longtail import load_config, train, resume, decouple, evaluate, demo
    from longtail.methods import METHODS, register_method                 # the stage-2 methods
    from longtail.report import write_report                             # longtail report
    from longtail.export import export_run, load_artifact                # longtail export / predict
    from longtail import export_features                                 # longtail features
    from longtail.evaluation.compare import comparison_rows              # longtail compare
    from longtail.data import longtail_counts
    from longtail.evaluation import shot_groups
"""

from __future__ import annotations

import importlib
from typing import Any

from .version import __version__

# name -> module that defines it
_EXPORTS = {
    "Config": "config",
    "load_config": "config",
    "ConfigError": "errors",
    "DataError": "errors",
    "LongtailError": "errors",
    "RunDirError": "errors",
    "decouple": "pipeline",
    "evaluate": "pipeline",
    "load_run": "pipeline",
    "resume": "pipeline",
    "train": "pipeline",
    "demo": "demo",
    "export_features": "pipeline.features_export",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'longtail' has no attribute {name!r}")
