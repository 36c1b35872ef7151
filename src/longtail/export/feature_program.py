"""The exported model of a run on precomputed features (``data.name=features``): feature vectors in, logits out.

Such a run has no backbone (``model.backbone=identity``), so its ``.pt2``
program is the folded classifier alone: (N, d) float32 features, as the
features file held them, -> (N, num_classes) logits. It is loaded like any
artifact (``torch.export.load(path).module()``); its metadata says
``"input": {"kind": "features", "layout": "ND", "features": d, ...}``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .artifact import MAX_BATCH
from .fold import FoldedHead


class FeatureClassifier(nn.Module):
    """(N, d) features -> (N, num_classes) logits through one folded classifier (no normalisation: none was used)."""

    def __init__(self, head: FoldedHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)


def feature_input_spec(num_features: int) -> dict[str, Any]:
    """The input of a features model, as metadata."""
    return {"kind": "features", "layout": "ND", "dtype": "float32", "features": int(num_features),
            "normalized_inside": False}  # fmt: skip


def export_feature_program(head: FoldedHead, num_features: int) -> torch.export.ExportedProgram:
    """``torch.export`` of the folded ``head`` for (N, num_features) float32 input, N dynamic."""
    module = FeatureClassifier(head).cpu().eval()
    example = torch.rand(2, num_features)  # a batch of 2: torch.export specialises a dimension it sees as 0 or 1
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with torch.no_grad():
        return torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
