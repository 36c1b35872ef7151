"""A backbone exported elsewhere, used frozen: ``model.backbone=export:PATH``, a ``torch.export`` ``.pt2`` program.

The program maps an image batch (N, C, H, W), float32 and normalised, to
features (N, d), for any batch size (exported with a dynamic batch dimension,
``dynamic_shapes=({0: torch.export.Dim("batch")},)``). What longtail cannot read
from the program is declared in a JSON file beside it, ``PATH.json``::

    {"num_features": 512,                  # d, required: the width of the features
     "input_size": [3, 224, 224],          # optional: (C, H, W) the program takes, checked against the data
     "mean": [0.485, 0.456, 0.406],        # optional, with std: per-channel statistics of images in [0, 1]
     "std": [0.229, 0.224, 0.225]}         #   the program expects; default: the data's (data.normalize)

What a program file can do: compute tensors from tensors with ATen operators.
Loading runs no code from the file: the archive is first checked by
:func:`~longtail.safe_program.check_archive` (no pickled weights, constants or
inputs, no guard code, only arithmetic on sizes, and only ATen operators that
take tensors, numbers and mode names, so none that opens a file, prints, runs
Python or reaches a network), then read with ``torch.export.load``. ``PATH.json``
is read as bounded JSON (:mod:`longtail.safe_text`).

TorchScript files (``torchscript:PATH``) are refused, not loaded:
``torch.jit.load`` runs the file's own ``__setstate__`` and any operator it calls
(``aten::save`` writes, ``aten::from_file`` reads any path) while loading, before
anything could check it; the error says how to convert one to ``export:``.

The program is not part of the model's parameters or state dict: checkpoints
keep the file's SHA-256 instead, and a run whose file has changed is refused.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, described
from ..runs import file_sha256
from ..safe_program import UnsafeProgramError, load_program
from ..safe_text import read_json_file

KINDS = ("export",)
SPEC_KEYS = ("num_features", "input_size", "mean", "std")
MAX_SPEC_BYTES = 64 << 10  # PATH.json declares four keys: a few hundred bytes


def is_external(name: str) -> bool:
    """Whether ``model.backbone`` names a program file (``export:PATH``), not a registered network."""
    return name.partition(":")[0] in KINDS and ":" in name


def external_path(name: str) -> tuple[str, Path]:
    """``export:PATH`` -> ("export", PATH)."""
    kind, _, path = name.partition(":")
    if kind not in KINDS or not path:
        raise ConfigError(f"model.backbone={name!r}: expected export:PATH")
    return kind, Path(path)


def spec_path(path: Path) -> Path:
    """The JSON beside a backbone file: ``PATH.json``."""
    return Path(str(path) + ".json")


@dataclass(frozen=True)
class BackboneSpec:
    """What ``PATH.json`` declares about a backbone file (see the module docstring)."""

    num_features: int
    input_size: tuple[int, int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def _numbers(where: str, key: str, value: Any, length: int | None, *, integer: bool, positive: bool) -> tuple:
    kind = "integers" if integer else "numbers"
    ok = isinstance(value, list) and (length is None or len(value) == length) and len(value) > 0
    ok = ok and all(isinstance(v, int) if integer else isinstance(v, (int, float)) for v in value)
    ok = ok and all(not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive) for v in value)
    if not ok:
        count = f"{length} " if length else ""
        sign = "positive " if positive else ""
        raise ConfigError(f"{where}: {key}={value!r}, expected a list of {count}{sign}{kind}")
    return tuple(value)


def read_spec(path: Path) -> BackboneSpec:
    """The checked contents of ``PATH.json``.

    Raises:
        ConfigError: one line naming the JSON file and the key that is missing or wrong.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: backbone file not found (model.backbone)")
    where = spec_path(path)
    if not where.is_file():
        raise ConfigError(
            f"{where}: not found; a backbone file needs a JSON beside it declaring at least "
            '{"num_features": d} (optional: input_size [C, H, W], mean, std)'
        )
    try:  # bounded in size and nesting (a 200 KB file nested 100,000 deep is one line, not a RecursionError)
        spec = read_json_file(where, "backbone JSON", max_bytes=MAX_SPEC_BYTES, error=ConfigError)
    except OSError as error:
        raise ConfigError(f"{where}: cannot be read ({error.strerror or error.__class__.__name__})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a JSON object with keys {', '.join(SPEC_KEYS)}")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; expected {', '.join(SPEC_KEYS)}")
    d = spec.get("num_features")
    if not isinstance(d, int) or isinstance(d, bool) or d < 1:
        raise ConfigError(f"{where}: num_features={d!r}, expected an integer >= 1 (the width of the features)")
    size = spec.get("input_size")
    size = None if size is None else _numbers(str(where), "input_size", size, 3, integer=True, positive=True)
    if ("mean" in spec) != ("std" in spec):
        raise ConfigError(f"{where}: give both mean and std, or neither (the data's own normalisation)")
    channels = size[0] if size else None
    mean = std = None
    if "mean" in spec:
        mean = _numbers(str(where), "mean", spec["mean"], channels, integer=False, positive=False)
        std = _numbers(str(where), "std", spec["std"], len(mean), integer=False, positive=True)
    return BackboneSpec(d, size, mean, std)  # type: ignore[arg-type]


def _load_export(path: Path) -> nn.Module:
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"model.backbone=export:{path}: not a torch.export program (torch.export.save writes a zip)")
    try:
        return load_program(path).module()
    except UnsafeProgramError as error:
        raise ConfigError(f"model.backbone=export:{error}") from None
    except Exception as error:  # noqa: BLE001 - the loader raises many types for archives it cannot read
        raise ConfigError(f"model.backbone=export:{path}: torch.export.load fails ({described(error, 120)})") from None


class ExternalBackbone(nn.Module):
    """A frozen program as a backbone: ``forward_features`` (N, C, H, W) -> (N, num_features), checked.

    The program is held outside the module tree: its weights are not
    parameters (nothing trains them, optimisers and DDP never see them) nor in
    the state dict, which holds ``file_sha256`` instead; ``train()`` leaves it
    alone (an exported program's mode is fixed at export); ``.to()`` moves it.

    Args:
        name: the ``model.backbone`` value, for messages.
        program: the loaded module.
        spec: what ``PATH.json`` declares.
        sha256: the SHA-256 digest (32 bytes) of the file and its PATH.json (:func:`program_sha256`).
    """

    def __init__(self, name: str, program: nn.Module, spec: BackboneSpec, sha256: bytes) -> None:
        super().__init__()
        self.name = name
        program.requires_grad_(False)
        object.__setattr__(self, "program", program)
        self.spec = spec
        self.num_features = spec.num_features
        self.register_buffer("file_sha256", torch.tensor(list(sha256), dtype=torch.uint8))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, num_features); a program that returns another shape is a one-line error."""
        features = self.program(x)
        # x.shape[0], not len(x): len() would make torch.export (longtail export) specialise the batch size.
        ok = isinstance(features, torch.Tensor) and features.dim() == 2
        if not ok or features.shape[0] != x.shape[0] or features.shape[1] != self.num_features:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            expected = (int(x.shape[0]), self.num_features)
            raise ConfigError(
                f"model.backbone={self.name}: the program returns {shape} for a batch of {expected[0]}, but "
                f"{spec_path(external_path(self.name)[1]).name} declares num_features={self.num_features}: "
                f"expected {expected}"
            )
        return features.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def train(self, mode: bool = True) -> ExternalBackbone:
        self.training = mode  # the program keeps the mode it was exported in
        return self

    def _apply(self, fn: Any, recurse: bool = True) -> ExternalBackbone:  # .to(), .cuda(), memory formats
        super()._apply(fn, recurse)
        self.program._apply(fn)
        return self

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        stored = state_dict.get(prefix + "file_sha256")
        if stored is not None and not torch.equal(stored.cpu(), self.file_sha256.cpu()):
            raise ConfigError(
                f"model.backbone={self.name}: the file or its PATH.json changed since this run was trained (their "
                "SHA-256 differs from the checkpoint's); the run's features and classifiers belong to the old ones"
            )
        super()._load_from_state_dict(state_dict, prefix, *args)

    def extra_repr(self) -> str:
        return f"{self.name}, num_features={self.num_features}"


def program_sha256(path: Path) -> str:
    """Hex SHA-256 of a backbone file and its ``PATH.json``: the JSON's mean and std are part of the program
    (editing them changes every feature), so a run records and checks both."""
    digest = hashlib.sha256(bytes.fromhex(file_sha256(path)))
    sidecar = spec_path(path)
    digest.update(bytes.fromhex(file_sha256(sidecar)) if sidecar.is_file() else b"no PATH.json")
    return digest.hexdigest()


def create_external(name: str) -> ExternalBackbone:
    """Load the program file that ``model.backbone=export:PATH`` names, frozen.

    Raises:
        ConfigError: one line, when the file or its JSON is missing or malformed, or would run code.
    """
    _, path = external_path(name)
    spec = read_spec(path)
    program = _load_export(path)
    return ExternalBackbone(name, program, spec, bytes.fromhex(program_sha256(path)))
