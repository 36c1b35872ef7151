"""Heads to and from plain dicts (tensors, strings, numbers: readable with ``weights_only=True``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import RunDirError
from .heads import HEADS


def head_to_dict(head: nn.Module) -> dict[str, Any]:
    """``{"kind", "options", "state_dict"}``: enough to rebuild ``head`` with :func:`head_from_dict`."""
    kind = getattr(head, "kind", None)
    if kind not in HEADS:
        raise TypeError(f"cannot save a head of type {type(head).__name__}: it is not registered (register_head)")
    state = {k: v.detach().cpu() for k, v in head.state_dict().items()}
    return {"kind": kind, "options": head.options(), "state_dict": state}


def head_from_dict(saved: dict[str, Any], num_features: int, num_classes: int, source: str = "classifier") -> nn.Module:
    """Rebuild a head saved by :func:`head_to_dict` for (num_features, num_classes), in eval mode.

    Raises:
        RunDirError: naming ``source`` for an unknown kind or a head of another shape.
    """
    kind = saved.get("kind") if isinstance(saved, dict) else None
    if kind not in HEADS:
        raise RunDirError(f"{source}: unknown classifier kind {kind!r}")
    options = dict(saved.get("options") or {})
    if "metric" in saved:  # files of longtail 0.1 kept NCM's metric beside the state dict
        options.setdefault("metric", saved["metric"])
    try:
        head = HEADS[kind].from_state(num_features, num_classes, saved["state_dict"], options)
    except (RuntimeError, KeyError, TypeError, ValueError):
        raise RunDirError(
            f"{source}: classifier does not fit a backbone of {num_features} features and {num_classes} classes"
        ) from None
    return head.eval()
