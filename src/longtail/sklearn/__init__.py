"""longtail as a scikit-learn estimator on feature matrices (needs ``pip install longtail[sklearn]``).

:class:`DecoupledClassifier` trains a joint linear classifier on ``X`` and
re-balances it with any stage-2 method of :mod:`longtail.methods`, choosing
hyper-parameters on a validation split held out of ``X``; see docs/sklearn.md.
"""

from __future__ import annotations

try:
    import sklearn  # noqa: F401
except ImportError:  # an optional dependency: say how to get it
    raise ImportError("longtail.sklearn needs scikit-learn: pip install 'longtail[sklearn]'") from None

from .estimator import (  # noqa: E402
    DecoupledClassifier,
    FeatureScaleWarning,
    HoldoutWarning,
    PriorNotAppliedWarning,
    shot_accuracy,
)

__all__ = ["DecoupledClassifier", "FeatureScaleWarning", "HoldoutWarning", "PriorNotAppliedWarning", "shot_accuracy"]
