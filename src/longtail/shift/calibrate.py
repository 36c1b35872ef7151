"""Calibration fitted on the validation split: temperature scaling, PCTS and BCTS.

Temperature scaling (Guo et al. 2017) maps logits ``z`` to ``z / T``; BCTS
(Alexandari et al., ICML 2020) to ``z / T + b`` with one bias per class; PCTS
(prior-corrected temperature scaling, here) to ``z / T + β · log π_train``
(centred): one bias *direction*, the one along which the methods differ
(Joint's scores carry the training prior, logit adjustment subtracts ``τ log
π_train``, re-balanced heads roughly nothing), two parameters where BCTS has
C + 1. All are fitted by minimising the negative log-likelihood of the
validation labels, full batch, with L-BFGS in float64 (strong Wolfe line
search) from ``T = 1, b = 0``: deterministic, and exact to the optimiser's
tolerance. ``T = exp(θ)`` keeps it positive. ``Σ b = 0`` is kept (softmax
ignores a common shift).

Why a bias for label shift: a method's scores are posteriors for some implicit
prior (Joint: the training prior; cRT, WB: roughly uniform; τ-norm, LWS, logit
adjustment: in between or beyond). Fitted on validation, the bias absorbs
whatever that prior is, so the calibrated posteriors are for the *validation*
prior ``π_v`` (its measured class shares), the one known source prior EM and
the Bayes adjustment need. Plain temperature cannot move a prior; its
posteriors keep the method's implicit one, which the caller then has to state.
BCTS's C biases from a small validation split (20 images per class in the
demo) are noisy, and EM amplifies that noise; PCTS's single β is not, but
cannot follow a prior that is not a power of the training prior. Which fits a
method better is for cross-validation on the validation split to say
(:mod:`.select`).

A tiny ridge (:data:`RIDGE`, on ``θ`` and ``b``) keeps the minimiser finite and
unique when the validation split is separable (NLL then falls forever as
``T → 0``); it moves the fit by far less than the NLL's own noise.

The NLL and its gradient are computed by hand, in row chunks
(:func:`nll_and_gradient`): no autograd graph and no copy of the (N, C) table,
so a fit costs one pass over the logits per L-BFGS evaluation and a few chunks
of memory. With autograd over the whole table, one method's fit on 20,000 ×
10,000 validation logits had run 17 minutes and taken 15 GB when it was stopped.

Test data never enters: :func:`fit_calibration` is the only function here that
takes labels, and :class:`Calibration` applies to logits alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from ..data.dataset import chunk_rows
from ..errors import DataError
from .priors import PriorLike, as_prior, check_logits, class_shares, log_normalise_

CalibrationKind = Literal["none", "temperature", "pcts", "bcts"]
CALIBRATION_KINDS: tuple[str, ...] = ("none", "temperature", "pcts", "bcts")
RIDGE = 1e-4
"""Weight of the ridge ``RIDGE · (θ² + mean(b²))`` added to the mean validation NLL."""
MAX_ITERATIONS = 500


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration: ``logits / temperature + bias``, and the prior its posteriors are for.

    Attributes:
        kind: ``none`` (identity), ``temperature``, ``pcts`` or ``bcts``.
        temperature: T > 0.
        bias: (C,) per-class bias (all 0 for ``none`` and ``temperature``), summing to 0.
        prior: (C,) the source prior of the calibrated posteriors: the validation class shares for
            ``pcts`` and ``bcts``; for ``none`` and ``temperature`` the method's implicit prior as the
            caller stated it (default: the validation shares too).
        nll_before, nll_after: mean validation NLL of the raw and the calibrated logits (nats).
        iterations: L-BFGS function evaluations (0 for ``none``).
        exponent: ``β`` of ``pcts`` (its bias is ``β`` times the centred log training prior), else 0.
    """

    kind: CalibrationKind
    temperature: float
    bias: tuple[float, ...]
    prior: tuple[float, ...]
    nll_before: float = float("nan")
    nll_after: float = float("nan")
    iterations: int = 0
    exponent: float = 0.0
    _bias_tensor: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in CALIBRATION_KINDS:
            raise DataError(f"calibration kind {self.kind!r}: expected one of {', '.join(CALIBRATION_KINDS)}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise DataError(f"calibration temperature {self.temperature!r}: expected a finite number > 0")
        if len(self.bias) != len(self.prior):
            raise DataError(f"calibration: {len(self.bias)} biases for {len(self.prior)} classes")
        bias = torch.tensor(self.bias, dtype=torch.float64)
        if not torch.isfinite(bias).all():
            raise DataError("calibration bias: expected finite numbers")
        as_prior(self.prior, len(self.prior), name="calibration prior", positive=True)
        object.__setattr__(self, "_bias_tensor", bias)

    @property
    def num_classes(self) -> int:
        return len(self.bias)

    def logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, C) scores -> (N, C) float64 calibrated logits ``logits / T + b`` (a new table, the only copy made)."""
        scores = check_logits(logits, float64=False)
        if scores.shape[1] != self.num_classes:
            raise DataError(f"logits: {scores.shape[1]} classes, the calibration was fitted for {self.num_classes}")
        return scores.to(torch.float64, copy=True).div_(self.temperature).add_(self._bias_tensor)

    def log_posteriors(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, C) scores -> (N, C) float64 calibrated log posteriors (for the prior :attr:`prior`)."""
        return log_normalise_(self.logits(logits))  # a new table, normalised in place

    def prior_tensor(self) -> torch.Tensor:
        """(C,) float64 :attr:`prior`."""
        return torch.tensor(self.prior, dtype=torch.float64)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; :meth:`from_dict` reads it back."""
        return {
            "kind": self.kind,
            "temperature": self.temperature,
            "bias": list(self.bias),
            "prior": list(self.prior),
            "nll_before": self.nll_before,
            "nll_after": self.nll_after,
            "iterations": self.iterations,
            "exponent": self.exponent,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "calibration") -> Calibration:
        """A calibration from :meth:`to_dict`'s data (e.g. read from JSON); :class:`DataError` naming ``source``."""
        try:
            return cls(
                kind=data["kind"],
                temperature=float(data["temperature"]),
                bias=tuple(float(b) for b in data["bias"]),
                prior=tuple(float(p) for p in data["prior"]),
                nll_before=float(data.get("nll_before", float("nan"))),
                nll_after=float(data.get("nll_after", float("nan"))),
                iterations=int(data.get("iterations", 0)),
                exponent=float(data.get("exponent", 0.0)),
            )
        except DataError as error:
            raise DataError(f"{source}: {error}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise DataError(
                f"{source}: expected kind, temperature, bias and prior ({error.__class__.__name__}: {error})"
            ) from None


def identity_calibration(num_classes: int, prior: PriorLike | None = None) -> Calibration:
    """No calibration (T = 1, b = 0), its posteriors taken to be for ``prior`` (default uniform)."""
    shares = as_prior(prior, num_classes, positive=True) if prior is not None else torch.ones(num_classes) / num_classes
    return Calibration("none", 1.0, (0.0,) * num_classes, tuple(shares.tolist()))


def fit_calibration(
    val_logits: torch.Tensor,
    val_labels: torch.Tensor | Sequence[int],
    kind: CalibrationKind = "bcts",
    *,
    implicit_prior: PriorLike | None = None,
    train_prior: PriorLike | None = None,
    rows: torch.Tensor | None = None,
) -> Calibration:
    """Fit a calibration on the validation split: the only place labels enter.

    Args:
        val_logits: (N_val, C) a method's scores of the validation images.
        val_labels: (N_val,) their labels.
        kind: ``bcts`` (T and a bias per class), ``pcts`` (T and β along the log training prior),
            ``temperature`` (T alone) or ``none``.
        implicit_prior: (C,) for ``none`` / ``temperature``: the prior the method's scores are for
            (Joint: the training class shares). Default: the validation class shares. Ignored by ``pcts``
            and ``bcts``, whose bias makes their posteriors those of the validation prior.
        train_prior: (C,) the training class shares (or sizes); needed by ``pcts``.
        rows: (M,) indices of the rows to fit on (default all): cross-validation's folds, without a copy of the
            table.

    Returns:
        the fitted :class:`Calibration`.
    """
    if kind not in CALIBRATION_KINDS:
        raise DataError(f"calibration kind {kind!r}: expected one of {', '.join(CALIBRATION_KINDS)}")
    scores = check_logits(val_logits, "validation logits", float64=False)
    num_samples, num_classes = scores.shape
    labels = torch.as_tensor(val_labels).detach().cpu().long().reshape(-1)
    if len(labels) != num_samples:
        raise DataError(f"validation labels: {len(labels)} labels for {num_samples} rows of logits")
    rows = _checked_rows(rows, num_samples)
    shares = class_shares(labels if rows is None else labels[rows], num_classes)
    if kind in ("pcts", "bcts") or implicit_prior is None:
        prior = shares
    else:
        prior = as_prior(implicit_prior, num_classes, name="implicit prior", positive=True)
    if (prior <= 0).any():
        missing = int(torch.nonzero(prior <= 0)[0, 0])
        raise DataError(f"validation split: class {missing} has no image; calibration needs every class")
    before = nll_and_gradient(scores, labels, rows, 1.0, torch.zeros(num_classes, dtype=torch.float64))[0]
    if kind == "none":
        return Calibration("none", 1.0, (0.0,) * num_classes, tuple(prior.tolist()), before, before, 0)

    direction = _bias_direction(kind, train_prior, num_classes)
    size = {"temperature": 0, "pcts": 1, "bcts": num_classes}[kind]
    log_t = torch.zeros((), dtype=torch.float64)
    weights = torch.zeros(size, dtype=torch.float64)  # bias (bcts) or β (pcts)
    params = [log_t, weights] if size else [log_t]

    def bias_of(weights: torch.Tensor) -> torch.Tensor:
        if kind == "bcts":
            return weights
        return weights.sum() * direction if kind == "pcts" else torch.zeros(num_classes, dtype=torch.float64)

    optimiser = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=MAX_ITERATIONS,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:  # L-BFGS reads the gradients from .grad: set by hand, no autograd graph
        loss, grad_log_t, grad_bias = nll_and_gradient(scores, labels, rows, math.exp(float(log_t)), bias_of(weights))
        log_t.grad = torch.tensor(grad_log_t + 2 * RIDGE * float(log_t), dtype=torch.float64)
        if kind == "bcts":
            weights.grad = grad_bias + 2 * RIDGE * weights / size
        elif kind == "pcts":
            weights.grad = (grad_bias @ direction + 2 * RIDGE * weights.sum()).reshape(1)
        ridge = RIDGE * (float(log_t) ** 2 + (float(weights.pow(2).mean()) if size else 0.0))
        return torch.tensor(loss + ridge, dtype=torch.float64)

    optimiser.step(closure)
    evaluations = int(optimiser.state[log_t].get("func_evals", 0))  # L-BFGS keeps its state on the first parameter
    temperature = math.exp(float(log_t))
    bias = bias_of(weights)
    centred = bias - bias.mean()
    after = nll_and_gradient(scores, labels, rows, temperature, centred)[0]
    exponent = float(weights.sum()) if kind == "pcts" else 0.0
    bias_values = tuple(centred.tolist())
    return Calibration(kind, temperature, bias_values, tuple(prior.tolist()), before, after, evaluations, exponent)


def _checked_rows(rows: torch.Tensor | None, num_samples: int) -> torch.Tensor | None:
    """``rows`` as (M,) int64 indices into N samples (None: all rows), or a :class:`DataError`."""
    if rows is None:
        return None
    index = torch.as_tensor(rows).long().reshape(-1)
    if not len(index) or int(index.min()) < 0 or int(index.max()) >= num_samples:
        raise DataError(f"calibration rows: expected indices in [0, {num_samples})")
    return index


def row_chunks(scores: torch.Tensor, rows: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(index, scores[index])`` over ``rows`` of (N, C) ``scores`` (None: all), a few thousand values a
    chunk, each chunk (M, C) float64: the one loop every pass over a logit table makes."""
    index = torch.arange(len(scores)) if rows is None else rows
    step = chunk_rows(scores.shape[1])
    for start in range(0, len(index), step):
        part = index[start : start + step]
        yield part, scores.index_select(0, part).to(torch.float64)


def nll_and_gradient(
    scores: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor | None, temperature: float, bias: torch.Tensor
) -> tuple[float, float, torch.Tensor]:
    """Mean NLL of ``scores[rows] / T + bias`` against ``labels[rows]``, and its gradients.

    Args:
        scores: (N, C) logits; labels: (N,); rows: (M,) indices (None: all N); bias: (C,) float64.

    Returns:
        the mean NLL (nats), its derivative in ``log T`` and its (C,) gradient in ``bias``. With ``a = z / T +
        b`` and ``p = softmax(a)``: ``∂/∂b = mean(p - onehot(y))``, ``∂/∂log T = -mean(Σ_c (p - onehot(y)) z / T)``.
    """
    total, grad_log_t = 0.0, 0.0
    grad_bias = torch.zeros(scores.shape[1], dtype=torch.float64)
    count = 0
    for index, chunk in row_chunks(scores, rows):
        y = labels[index].unsqueeze(1)
        scaled = chunk.div_(temperature)  # z / T, in place: the chunk is this loop's own copy
        calibrated = scaled + bias
        log_norm = torch.logsumexp(calibrated, dim=1, keepdim=True)
        total += float((log_norm.squeeze(1) - calibrated.gather(1, y).squeeze(1)).sum())
        posteriors = calibrated.sub_(log_norm).exp_()  # softmax, reusing the calibrated chunk's memory
        grad_bias += posteriors.sum(dim=0)
        grad_log_t -= float((posteriors * scaled).sum()) - float(scaled.gather(1, y).sum())
        count += len(index)
    grad_bias -= torch.bincount(labels if rows is None else labels[rows], minlength=scores.shape[1]).double()
    return total / count, grad_log_t / count, grad_bias / count


def _bias_direction(kind: str, train_prior: PriorLike | None, num_classes: int) -> torch.Tensor:
    """(C,) centred log training prior for ``pcts`` (zeros otherwise)."""
    if kind != "pcts":
        return torch.zeros(num_classes, dtype=torch.float64)
    if train_prior is None:
        raise DataError("calibration 'pcts': expected the training class prior (train_prior)")
    values = torch.as_tensor(train_prior.detach().cpu() if isinstance(train_prior, torch.Tensor) else train_prior)
    values = values.to(torch.float64).reshape(-1)
    if len(values) == num_classes and torch.isfinite(values).all() and (values >= 0).all() and values.sum() > 0:
        values = values / values.sum()  # class sizes are welcome too
    shares = as_prior(values, num_classes, name="training prior", positive=True)
    log_prior = shares.log()
    return log_prior - log_prior.mean()
