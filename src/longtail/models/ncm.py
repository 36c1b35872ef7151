"""Nearest-class-mean classifier on features, with the scikit-learn estimator contract."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError, DataError

NCM_METRICS = ("cl2n", "l2", "cosine")


def _embed(features: torch.Tensor, mean: torch.Tensor, metric: str) -> torch.Tensor:
    """Features as the metric compares them: raw for "l2", centred and L2-normalised otherwise."""
    if metric == "l2":
        return features
    return F.normalize(features - mean, dim=1)


def ncm_scores(features: torch.Tensor, centroids: torch.Tensor, mean: torch.Tensor, metric: str) -> torch.Tensor:
    """(N, d) features -> (N, C) scores against (C, d) centroids; higher is closer."""
    queries = _embed(features.to(centroids.dtype), mean, metric)
    if metric == "cosine":
        return queries @ F.normalize(centroids, dim=1).T
    return -torch.cdist(queries, centroids)


class NCMClassifier:
    """Classify a feature by its nearest class centroid.

    Metrics:
        ``"cl2n"`` (official default): subtract the global training-feature mean,
        L2-normalise, average per class (centroids not re-normalised); score by
        negative L2 distance.
        ``"l2"``: raw features and centroids, negative L2 distance.
        ``"cosine"``: the cl2n centroids, scored by cosine similarity (as if the
        centroids were re-normalised).

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

        Raises:
            DataError: naming the first class (below ``num_classes``) with no feature.
        """
        features = features.float()
        labels = labels.long()
        num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
        counts = torch.bincount(labels, minlength=num_classes)
        empty = (counts == 0).nonzero().flatten()
        if len(empty):
            raise DataError(f"class {int(empty[0])} has no training images: NCM needs at least one per class")
        self.mean_ = torch.zeros(features.shape[1]) if self.metric == "l2" else features.mean(dim=0)
        sums = torch.zeros(num_classes, features.shape[1]).index_add_(
            0, labels, _embed(features, self.mean_, self.metric)
        )
        self.centroids_ = sums / counts.unsqueeze(1)
        return self

    def decision_function(self, features: torch.Tensor) -> torch.Tensor:
        """(N, d) features -> (N, C) scores, higher is closer."""
        return ncm_scores(features, self.centroids_, self.mean_, self.metric)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """(N, d) features -> (N,) predicted classes."""
        return self.decision_function(features).argmax(dim=1)

    def to_head(self) -> NCMHead:
        """The fitted classifier as a head module, to put on a backbone."""
        return NCMHead(self.centroids_, self.mean_, self.metric)


class NCMHead(nn.Module):
    """A fitted NCM classifier as a head: (N, d) features -> (N, C) scores.

    Args:
        centroids: (C, d) class centroids.
        mean: (d,) global training-feature mean.
        metric: "cl2n", "l2" or "cosine" (see :class:`NCMClassifier`).
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
