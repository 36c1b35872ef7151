"""NCM, nearest class mean (Kang et al. 2020, Section 4): class centroids of the training features, no training.

Metrics (``decouple.ncm.metric``):

- ``cl2n`` (the official default): subtract the global training-feature mean,
  L2-normalise, average per class (centroids not re-normalised); score by the
  negative *squared* Euclidean distance, as the official code does.
- ``l2``: raw features and centroids, negative squared Euclidean distance.
- ``cosine``: the cl2n centroids, scored by cosine similarity. This is true
  cosine similarity (centroids re-normalised); the official "cos" divides the
  dot product by the query norm only, which ranks classes differently when
  centroid norms differ (they do: a class's centroid of unit vectors is shorter
  the more its features spread).

Squared and plain distances rank classes alike, so predictions do not depend on
the choice, but probabilities do (ECE, reliability diagrams, exported
probabilities): ours are the official ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..config import option
from ..engine.feature_rows import float_chunks
from ..errors import ConfigError, DataError
from ..models.heads import LinearForm, register_head
from ..samplers.base import as_label_tensor
from . import register_method
from .base import FitContext, Fitted, MethodSpec

NCM_METRICS = ("cl2n", "l2", "cosine")


def _embed(features: torch.Tensor, mean: torch.Tensor, metric: str) -> torch.Tensor:
    """Features as the metric compares them: raw for "l2", centred and L2-normalised otherwise."""
    if metric == "l2":
        return features
    return F.normalize(features - mean, dim=1)


def ncm_scores(features: torch.Tensor, centroids: torch.Tensor, mean: torch.Tensor, metric: str) -> torch.Tensor:
    """(N, d) features -> (N, C) scores against (C, d) centroids; higher is closer.

    ``cosine``: cosine similarity; otherwise ``-||z - c||²``, computed as
    ``2 z·c - ||c||² - ||z||²`` (one matrix product; the form export folds).
    """
    queries = _embed(features.to(centroids.dtype), mean, metric)
    if metric == "cosine":
        return queries @ F.normalize(centroids, dim=1).T
    squared = queries.pow(2).sum(1, keepdim=True) - 2 * queries @ centroids.T + centroids.pow(2).sum(1)
    return -squared.clamp_min(0.0)


def _as_features(features: Any) -> torch.Tensor:
    """(N, d) features as a floating tensor (a tensor of floats as it is: no copy), or a one-line DataError:
    NumPy's and torch's own errors (``'list' object has no attribute 'long'``) say nothing of what was expected."""
    if not isinstance(features, torch.Tensor):
        values = np.asarray(features)
        if values.dtype.kind not in "biuf":
            raise DataError(f"features: expected numbers, got {values.dtype} values")
        features = torch.from_numpy(values)
    if not features.is_floating_point():
        features = features.float()
    if features.dim() != 2 or 0 in features.shape:
        raise DataError(f"features: expected (N, d) with N, d >= 1, got shape {tuple(features.shape)}")
    return features


class NCMClassifier:
    """Classify a feature by its nearest class centroid (scikit-learn estimator contract).

    Attributes set by :meth:`fit`:
        centroids_: (C, d) class centroids.
        mean_: (d,) global training-feature mean (zeros for ``"l2"``).
    """

    def __init__(self, metric: str = "cl2n") -> None:
        if metric not in NCM_METRICS:
            raise ConfigError(f"metric={metric!r}: expected one of {', '.join(NCM_METRICS)}")
        self.metric = metric

    def fit(self, features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> NCMClassifier:
        """Compute centroids from (N, d) features and (N,) labels; returns ``self``.

        Features and labels may be tensors, arrays or nested lists.

        Raises:
            DataError: naming the first class (below ``num_classes``) with no feature; input that is not
                (N, d) features with (N,) class indices below ``num_classes``, or features that are not finite.
        """
        features = _as_features(features)
        labels = as_label_tensor(labels)
        if len(labels) != len(features):
            raise DataError(f"labels: {len(labels)} labels for {len(features)} rows of features; expected one per row")
        num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
        if int(labels.max()) >= num_classes:
            raise DataError(f"labels: class index {int(labels.max())} for num_classes={num_classes}")
        counts = torch.bincount(labels, minlength=num_classes)
        empty = (counts == 0).nonzero().flatten()
        if len(empty):
            raise DataError(f"class {int(empty[0])} has no training images: NCM needs at least one per class")
        # Row chunks in float32: neither a float32 copy of float16 features nor an embedded copy of the matrix.
        dim = features.shape[1]
        if self.metric == "l2":
            self.mean_ = torch.zeros(dim)
        else:
            total = sum((chunk.sum(0, dtype=torch.float64) for _, chunk in float_chunks(features)), torch.zeros(dim))
            self.mean_ = (total / len(features)).float()
        sums = torch.zeros(num_classes, dim)
        for start, chunk in float_chunks(features):
            sums.index_add_(0, labels[start : start + len(chunk)], _embed(chunk.float(), self.mean_, self.metric))
        centroids = sums / counts.unsqueeze(1)
        if not (torch.isfinite(centroids).all() and torch.isfinite(self.mean_).all()):  # O(C d), not a pass over N
            raise DataError("features: NaN or infinite values; expected finite features")
        self.centroids_ = centroids
        return self

    def decision_function(self, features: torch.Tensor) -> torch.Tensor:
        """(N, d) features -> (N, C) scores, higher is closer."""
        if not hasattr(self, "centroids_"):
            raise DataError("NCMClassifier: not fitted; call fit(features, labels) first")
        features = _as_features(features)
        if features.shape[1] != self.centroids_.shape[1]:
            raise DataError(
                f"features: {features.shape[1]} per row; expected {self.centroids_.shape[1]}, as in training"
            )
        return ncm_scores(features, self.centroids_, self.mean_, self.metric)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """(N, d) features -> (N,) predicted classes."""
        return self.decision_function(features).argmax(dim=1)

    def to_head(self) -> NCMHead:
        """The fitted classifier as a head module, to put on a backbone."""
        return NCMHead(self.centroids_, self.mean_, self.metric)


@register_head("ncm")
class NCMHead(nn.Module):
    """A fitted NCM classifier as a head: (N, d) features -> (N, C) scores.

    Args:
        centroids: (C, d) class centroids.
        mean: (d,) global training-feature mean.
        metric: "cl2n", "l2" or "cosine" (see the module docstring).
    """

    def __init__(self, centroids: torch.Tensor, mean: torch.Tensor, metric: str) -> None:
        super().__init__()
        if metric not in NCM_METRICS:
            raise ConfigError(f"metric={metric!r}: expected one of {', '.join(NCM_METRICS)}")
        self.metric = metric
        self.register_buffer("centroids", centroids.detach().clone())
        self.register_buffer("mean", mean.detach().clone())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N, C)."""
        return ncm_scores(features, self.centroids, self.mean, self.metric)

    def as_linear(self) -> LinearForm:
        """Exactly: cosine is a linear layer on centred, normalised features; ``-||z - c||²`` is
        ``2c·z - ||c||²`` minus ``||z||²`` (:class:`LinearForm` ``squared_distance``)."""
        centroids = self.centroids.detach().float()
        center = None if self.metric == "l2" else self.mean.detach()  # the l2 metric compares raw features
        if self.metric == "cosine":
            return LinearForm(F.normalize(centroids, dim=1), None, center=center, l2_normalize=True)
        squared_norms = centroids.pow(2).sum(dim=1)
        return LinearForm(
            2.0 * centroids, -squared_norms, center=center, l2_normalize=self.metric != "l2", squared_distance=True
        )

    def options(self) -> dict[str, Any]:
        return {"metric": self.metric}

    @classmethod
    def from_state(
        cls, num_features: int, num_classes: int, state_dict: dict[str, torch.Tensor], options: dict[str, Any]
    ) -> NCMHead:
        head = cls(torch.zeros(num_classes, num_features), torch.zeros(num_features), options.get("metric", "cl2n"))
        head.load_state_dict(state_dict)
        return head


@dataclass
class NCMConfig:
    """decouple.ncm: how a feature is compared with the class means."""

    metric: Literal["cl2n", "l2", "cosine"] = option("cl2n", "cl2n (official), l2 or cosine")


# Methods that fit with classes that have no training image (no class-aware sampling, no class mean): what a run
# whose subset left classes empty is told to name instead of --method all.
FIT_WITH_EMPTY_CLASSES = "tau_norm,logit_adjust,wb"


def fit(context: FitContext) -> Fitted:
    """Centroids of the training features (test-time transform) under ``decouple.ncm.metric``."""
    empty = [c for c, n in enumerate(context.counts) if n == 0]
    if empty:
        # Checked here, before any feature is read, for a run whose subset left classes empty: --method all
        # and auto fit NCM first, so the line says how to fit the methods that need no such class.
        raise DataError(
            f"class {empty[0]} has no training images ({len(empty)} such classes): NCM needs at least one per "
            f"class, and --method all and auto include it; name the others, e.g. --method {FIT_WITH_EMPTY_CLASSES}"
        )
    train = context.features("train")
    metric = context.config.decouple.ncm.metric
    head = NCMClassifier(metric).fit(train.x, train.y, context.num_classes).to_head()
    return Fitted(head)


SPEC = register_method(
    MethodSpec(
        name="ncm",
        summary="nearest class mean: classify by the (centred, L2-normalised) class means of the training features",
        label="NCM",
        color="tab:purple",
        fit=fit,
        order=10,
        section="ncm",
        config=NCMConfig,
        in_paper=True,
        reads=(),
        renamed={"ncm_metric": "metric"},
    )
)
