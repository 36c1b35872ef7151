"""Initial backbone weights from a local file (``model.pretrained=PATH``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..safe_torch import load_tensors

log = logging.getLogger(__name__)

# Prefixes a saved state dict may carry in front of the backbone's own names:
# DataParallel / DDP wrappers, and the ``backbone.`` of a longtail Classifier.
_PREFIXES = ("module.", "backbone.")
# Classifier weights in a whole-network file: not part of the backbone, dropped.
_CLASSIFIER_PREFIXES = ("fc.", "head.", "classifier.")


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside what ``torch.load`` returned (bare, or under "state_dict" / "model")."""
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"model.pretrained={str(path)!r}: not a state dict (a mapping of names to tensors)")
    return obj


def _strip(name: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix) :], True
    return name


def _list(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _projection_shortcut_hint(unexpected: list[str]) -> str:
    """A pointer to the likely cause when the leftover names are 1x1 projection shortcuts (``*.shortcut.*``).

    The CIFAR-style ResNets have parameter-free option-A shortcuts, so a file
    of a CIFAR ResNet with projection shortcuts (another library's, or an older
    longtail's) carries exactly these extra weights.
    """
    if any(".shortcut." in key for key in unexpected):
        return "; the CIFAR-style ResNets have parameter-free option-A shortcuts, this file has projection shortcuts"
    return ""


def load_pretrained(backbone: nn.Module, path: str | Path, name: str = "backbone") -> None:
    """Copy the weights in ``path`` into ``backbone``.

    The file is a state dict (``torch.save(model.state_dict())``), possibly
    under a ``state_dict`` or ``model`` key; ``module.`` prefixes (DataParallel)
    and a ``backbone.`` prefix (a longtail checkpoint) are removed, and a
    classifier (``fc.*``, ``head.*``) is dropped. Only weights are read
    (``weights_only``), so the file cannot run code.

    Raises:
        ConfigError: one line naming the file, when it is missing, unreadable, or
            its weights do not fit ``backbone`` (missing, unexpected or misshaped names).
    """
    path = Path(path)
    where = f"model.pretrained={str(path)!r}"
    if not path.is_file():
        raise ConfigError(f"{where}: file not found")
    try:
        loaded = load_tensors(path)
    except Exception as error:  # torch raises many types for files it cannot read
        raise ConfigError(f"{where}: not a PyTorch weights file ({error.__class__.__name__})") from None
    state = {_strip(k): v for k, v in _unwrap(loaded, path).items()}
    state = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    expected = backbone.state_dict()
    # BatchNorm's batch counter is bookkeeping that older files lack; keep the model's own.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = ([f"missing {_list(missing)}"] if missing else []) + (
            [f"unexpected {_list(unexpected)}"] if unexpected else []
        )
        hint = _projection_shortcut_hint(unexpected)
        raise ConfigError(f"{where}: weights do not fit model.backbone={name!r} ({'; '.join(parts)}){hint}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ConfigError(
                f"{where}: {key} has shape {tuple(value.shape)}, model.backbone={name!r} expects "
                f"{tuple(expected[key].shape)}"
            )
    backbone.load_state_dict({**expected, **state})


def configure_backbone(model: nn.Module, *, backbone: str, pretrained: str | None, trainable: str) -> None:
    """Apply ``model.pretrained`` and ``model.trainable`` to a freshly built stage-1 ``Classifier``.

    ``trainable="last_stage"`` freezes every backbone layer but the last stage:
    no gradients, and BatchNorm statistics kept as loaded (those layers stay in
    eval mode); the last stage and the classifier train. ``trainable="none"``
    freezes the whole backbone: the classifier alone trains (a linear probe).
    """
    if pretrained is not None:
        load_pretrained(model.backbone, pretrained, backbone)
    if trainable == "last_stage":
        if pretrained is None:
            log.warning("model.trainable=last_stage without model.pretrained: the frozen layers stay at random init")
        if not hasattr(model.backbone, "last_stage"):
            raise ConfigError(f"model.trainable='last_stage': backbone {backbone!r} has no stages to keep")
        model.freeze_backbone(keep_last_stage=True)
    elif trainable == "none":
        if pretrained is None and any(True for _ in model.backbone.parameters()):
            log.warning("model.trainable=none without model.pretrained: a linear probe on random features")
        model.freeze_backbone()
    elif trainable != "all":
        raise ConfigError(f"model.trainable={trainable!r}: expected 'all', 'last_stage' or 'none'")
