"""Heads to and from plain dicts, for classifier files in a run directory."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import RunDirError
from .heads import CosineHead, LogitAdjustedHead, LWSHead, TauNormHead
from .ncm import NCMHead


def head_to_dict(head: nn.Module) -> dict[str, Any]:
    """``{"kind", "state_dict", ...}`` enough to rebuild ``head`` with :func:`head_from_dict`."""
    state = {k: v.detach().cpu() for k, v in head.state_dict().items()}
    if isinstance(head, nn.Linear):
        return {"kind": "linear", "state_dict": state}
    if isinstance(head, TauNormHead):
        return {"kind": "tau_norm", "state_dict": state}
    if isinstance(head, LWSHead):
        return {"kind": "lws", "state_dict": state}
    if isinstance(head, LogitAdjustedHead):
        return {"kind": "logit_adjust", "state_dict": state}
    if isinstance(head, CosineHead):
        return {"kind": "cosine", "state_dict": state}
    if isinstance(head, NCMHead):
        return {"kind": "ncm", "state_dict": state, "metric": head.metric}
    raise TypeError(f"cannot serialise head of type {type(head).__name__}")


def head_from_dict(saved: dict[str, Any], num_features: int, num_classes: int, source: str = "classifier") -> nn.Module:
    """Rebuild a head saved by :func:`head_to_dict` for (num_features, num_classes)."""
    kind = saved.get("kind")
    zeros_w = torch.zeros(num_classes, num_features)
    if kind == "linear":
        head: nn.Module = nn.Linear(num_features, num_classes)
    elif kind == "tau_norm":
        head = TauNormHead(zeros_w, 0.0)
    elif kind == "lws":
        head = LWSHead(zeros_w, torch.zeros(num_classes) if "bias" in saved["state_dict"] else None)
    elif kind == "logit_adjust":
        head = LogitAdjustedHead(zeros_w, None, torch.zeros(num_classes), 0.0)
    elif kind == "cosine":
        head = CosineHead(num_features, num_classes)
    elif kind == "ncm":
        head = NCMHead(zeros_w, torch.zeros(num_features), saved["metric"])
    else:
        raise RunDirError(f"{source}: unknown classifier kind {kind!r}")
    try:
        head.load_state_dict(saved["state_dict"])
    except RuntimeError:
        raise RunDirError(
            f"{source}: classifier does not fit a backbone of {num_features} features and {num_classes} classes"
        ) from None
    return head.eval()
