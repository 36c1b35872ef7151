"""longtail: long-tailed recognition by decoupling representation and classifier (Kang et al., ICLR 2020).

The public API, re-exported here::

    from longtail import load_config, train, resume, decouple, evaluate, demo
    from longtail.report import write_report                     # longtail report
    from longtail.export import export_run, load_artifact        # longtail export / predict
    from longtail.evaluation.compare import comparison_rows      # longtail compare
    from longtail.data import longtail_counts
    from longtail.evaluation import shot_groups
    from longtail.models import tau_normalize, NCMClassifier, LWSHead, TauNormHead
"""

__version__ = "0.1.0"

from .config import Config, load_config  # noqa: E402
from .errors import ConfigError, DataError, LongtailError, RunDirError  # noqa: E402
from .pipeline import decouple, demo, evaluate, load_run, resume, train  # noqa: E402

__all__ = [
    "Config",
    "ConfigError",
    "DataError",
    "LongtailError",
    "RunDirError",
    "__version__",
    "decouple",
    "demo",
    "evaluate",
    "load_config",
    "load_run",
    "resume",
    "train",
]
