"""Mixed precision for training: the autocast context and the fp16 gradient scaler of ``train.precision``.

- ``auto`` (the default): ``bf16`` where the device computes bfloat16 natively
  (a CUDA GPU that supports it; a CPU whose oneDNN build has bfloat16 kernels,
  e.g. AVX-512 or AMX x86) and the model has a backbone, else ``fp32``
  (:func:`resolve_precision`). On the
  project's 2-core AMD EPYC it cuts a demo epoch from 1.2 s to 0.9 s; the demo's
  validation scores did not move beyond noise (docs/results/demo.md).
- ``fp32``: plain float32, no autocast.
- ``bf16``: forward passes under ``torch.autocast(dtype=bfloat16)``; bfloat16 has
  float32's exponent range, so gradients need no scaling.
- ``fp16`` (CUDA only): autocast to float16 plus a :class:`torch.amp.GradScaler`,
  which multiplies the loss before ``backward`` so that small gradients do not
  flush to zero in float16, and skips steps whose gradients overflowed.

Losses are computed in float32 in every case (the training loop casts the
logits first): a softmax over many classes loses too much in 16 bits.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from ..errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU with bfloat16 support, or a CPU for which
    torch's oneDNN has bfloat16 kernels (elsewhere bfloat16 autocast is emulated, slower than float32)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN, or without the query
        return False


def resolve_precision(precision: str, device: torch.device, *, backbone: str = "") -> str:
    """``train.precision`` as it runs on ``device``: ``auto`` becomes ``bf16`` (:func:`native_bf16`) or ``fp32``,
    and ``fp32`` for ``backbone="identity"`` (a linear probe on feature files: nothing for bfloat16 to speed up,
    and its 8-bit mantissa would round the features themselves)."""
    if precision == "auto":
        return "bf16" if backbone != "identity" and native_bf16(device) else "fp32"
    return precision


def check_precision(precision: str, device: torch.device) -> None:
    """Raise a :class:`ConfigError` when ``train.precision=precision`` cannot run on ``device``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"train.precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    precision = resolve_precision(precision, device)
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.precision=bf16: this GPU has no bfloat16 support; use train.precision=fp16")
    if precision == "fp16" and device.type != "cuda":
        # torch 2.13 runs float16 autocast on the CPU, but its float16 convolution backward
        # there took 140x the float32 time (resnet8, batch 32: 7 s vs 0.05 s a step); bf16 is the CPU's format.
        raise ConfigError(
            f"train.precision=fp16: needs CUDA (device is {device.type}, where float16 training is about 100x "
            "slower than fp32); use train.precision=bf16"
        )


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The context the forward pass runs in: ``torch.autocast`` for bf16/fp16, nothing for fp32."""
    dtype = _DTYPES.get(resolve_precision(precision, device))
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def make_grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler for ``fp16`` (one per training: its scale adapts over steps), else ``None``."""
    if resolve_precision(precision, device) != "fp16":
        return None
    check_precision(precision, device)
    if not hasattr(torch.amp, "GradScaler"):  # torch < 2.3
        return torch.cuda.amp.GradScaler()
    return torch.amp.GradScaler(device.type)
