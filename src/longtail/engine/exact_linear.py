"""Linear classifiers on features in memory, solved exactly: full-batch L-BFGS on a convex objective.

A linear classifier on frozen features (the joint probe, cRT's re-trained
classifier, LWS's scales) minimises a convex loss; where the features fit in
memory there is no reason to approach its optimum by SGD for a fixed number of
epochs. :func:`fit_linear_exact` is multinomial logistic regression with an L2
penalty, solved to a gradient tolerance by L-BFGS with a backtracking line
search (:func:`lbfgs`), deterministic (full batch, zero start)::

    min_{W, b}  sum_i s_i CE(W x_i + b, y_i) / sum_i s_i  +  l2 / 2 * ||W||^2

``s_i`` is the class weight of ``y_i`` (1 by default, ``"balanced"``:
``N / (C n_c)``); the bias is not penalised. This is scikit-learn's
``LogisticRegression`` objective with ``l2 = 1 / (C_sklearn * sum_i s_i)``, and
the same as SGD's ``weight_decay = l2`` on the mean loss (without decay on the
bias). :func:`minimize_cross_entropy` is the same solver for any head whose
logits are a differentiable function of its parameters (LWS's scales).

:func:`lbfgs` works on NumPy arrays or torch tensors alike: on the CPU in
float64 the objective is computed with NumPy (on a few hundred rows torch's
per-operation dispatch costs more than the arithmetic), elsewhere with torch.
Rows go through in chunks of ``chunk_rows`` whose gradients accumulate, so
memory holds one (chunk, C) block of logits at a time, and float32 features are
cast chunk by chunk, never copied whole. L-BFGS keeps ``history`` pairs of
parameter-sized vectors (10, scipy's default, as scikit-learn uses). Nothing
here needs scipy.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch.nn import functional as F

ClassWeight = str | Sequence[float] | torch.Tensor | None
BACKENDS = ("auto", "numpy", "torch")
ABSENT_CLASS_MARGIN = 30.0  # bias of a class with no sample, below the smallest fitted one (e^-30 of its odds)


class NotConvergedWarning(UserWarning):
    """L-BFGS stopped at ``max_iter`` before the gradient fell under ``tol``: the result is approximate."""


@dataclass(frozen=True)
class Solution:
    """How a solve ended: ``iterations`` of L-BFGS, the final ``loss`` and max |gradient|, whether it ``converged``."""

    iterations: int
    loss: float
    grad_max: float
    converged: bool


def class_weights(y: torch.Tensor, num_classes: int, class_weight: ClassWeight) -> torch.Tensor:
    """(C,) float64 weight of each class: ones (None), ``N / (C n_c)`` (``"balanced"``; 0 for an absent class),
    or the (C,) weights given (each >= 0).

    Raises:
        ValueError: an unknown string, a wrong length, or a negative or non-finite weight.
    """
    if class_weight is None:
        return torch.ones(num_classes, dtype=torch.float64)
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(f"class_weight={class_weight!r}: expected None, 'balanced' or (C,) weights")
        counts = torch.bincount(y.cpu(), minlength=num_classes).to(torch.float64)
        present = counts > 0
        weights = torch.zeros(num_classes, dtype=torch.float64)
        weights[present] = len(y) / (int(present.sum()) * counts[present])
        return weights
    weights = torch.as_tensor(class_weight, dtype=torch.float64).cpu()
    if weights.shape != (num_classes,) or not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError(f"class_weight: expected {num_classes} finite weights >= 0; got {weights.tolist()}")
    return weights


def minimize_cross_entropy(
    forward: Callable[[torch.Tensor], torch.Tensor],
    parameters: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    sample_weight: torch.Tensor | None = None,
    l2: float = 0.0,
    penalized: Sequence[torch.Tensor] | None = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    history: int = 10,
    chunk_rows: int = 16384,
) -> Solution:
    """Minimise ``sum_i w_i CE(forward(x_i), y_i) / sum_i w_i + l2 / 2 * sum ||p||^2`` over ``parameters`` in place.

    Args:
        forward: (n, d) rows of ``x`` (cast to the parameters' dtype) -> (n, C) logits.
        parameters: the tensors to optimise, in place (leaf tensors, one dtype and device; their ``requires_grad``
            is set for the solve and restored after).
        x: (N, d) features, any float dtype, on the parameters' device.
        y: (N,) int64 classes.
        sample_weight: (N,) weights >= 0, not all zero; None: ones.
        penalized: the parameters under the L2 penalty (default: all of ``parameters``).
        max_iter: L-BFGS iterations at most (each one or more evaluations of the full objective).
        tol: converged when every |gradient| entry is at most ``tol``.
        history: L-BFGS memory (pairs of parameter-sized vectors).
        chunk_rows: rows per forward/backward pass (bounds the memory of the logits).

    Returns:
        How the solve ended; a :class:`NotConvergedWarning` is issued when it did not converge.
    """
    parameters = list(parameters)
    penalized = parameters if penalized is None else list(penalized)
    dtype = parameters[0].dtype
    weights = _normalised_weights(sample_weight, len(y), dtype, x.device)

    def objective() -> torch.Tensor:
        value = torch.zeros((), dtype=dtype, device=x.device)
        for rows in _chunks(len(y), chunk_rows):
            losses = F.cross_entropy(forward(x[rows].to(dtype)), y[rows], reduction="none")
            chunk = (losses * weights[rows]).sum()
            chunk.backward()
            value += chunk.detach()
        if l2 > 0:
            penalty = 0.5 * l2 * sum(p.pow(2).sum() for p in penalized)
            penalty.backward()
            value += penalty.detach()
        return value

    flags = [p.requires_grad for p in parameters]
    for p in parameters:
        p.requires_grad_(True)
    try:
        return run_lbfgs(parameters, objective, max_iter=max_iter, tol=tol, history=history)
    finally:
        for p, flag in zip(parameters, flags, strict=True):
            p.requires_grad_(flag)


def run_lbfgs(
    parameters: Sequence[torch.Tensor],
    objective: Callable[[], torch.Tensor],
    *,
    max_iter: int = 1000,
    tol: float = 1e-6,
    history: int = 10,
) -> Solution:
    """Minimise ``objective()`` over ``parameters`` (in place) by :func:`lbfgs`.

    ``objective()`` returns the loss (a 0-d tensor) and *adds* its gradient to each parameter's ``.grad``
    (zeroed here before every call): by ``backward()`` or written directly.

    Returns:
        How the solve ended; a :class:`NotConvergedWarning` is issued when it did not converge.
    """
    parameters = list(parameters)

    def flat_objective(flat: torch.Tensor) -> tuple[float, torch.Tensor]:
        _assign(parameters, flat)
        for p in parameters:
            p.grad = torch.zeros_like(p) if p.grad is None else p.grad.zero_()
        with torch.enable_grad():
            loss = float(objective())
        return loss, torch.cat([p.grad.reshape(-1) for p in parameters])

    start = torch.cat([p.detach().reshape(-1) for p in parameters])
    solution, solution_info = lbfgs(flat_objective, start, max_iter=max_iter, tol=tol, history=history)
    _assign(parameters, solution)  # the last evaluation may have been a rejected step
    for p in parameters:
        p.grad = None
    return solution_info


Vector = TypeVar("Vector", np.ndarray, torch.Tensor)


def lbfgs(
    objective: Callable[[Vector], tuple[float, Vector]],
    start: Vector,
    *,
    max_iter: int = 1000,
    tol: float = 1e-6,
    history: int = 10,
) -> tuple[Vector, Solution]:
    """Minimise ``objective`` from ``start`` by L-BFGS with a backtracking line search.

    ``objective(x)`` returns ``(loss, gradient)`` at the 1-D vector ``x``: a NumPy array or a torch tensor
    (any device), the gradient of the same kind and a new object each call; only arithmetic, ``dot``,
    ``abs``, ``sum`` and ``max`` are used, so one algorithm serves both. Each iteration takes the
    quasi-Newton direction of the last ``history`` steps (the two-loop recursion, scaled by ``s.y / y.y``),
    then halves the step from 1 until the loss falls by at least 1e-4 of what the slope promises (Armijo);
    a pair whose curvature ``s.y`` is not positive is not kept. On the convex objectives here that takes
    as many iterations as scipy's strong-Wolfe L-BFGS-B (measured on the estimator's benchmark matrices),
    with less work per iteration, and it needs neither scipy nor ``torch.optim`` (whose first use imports
    ``torch._dynamo``: seconds).

    Returns:
        ``(x, solution)``: the last accepted point, and how the solve ended (converged when every |gradient|
        entry is at most ``tol``); a :class:`NotConvergedWarning` is issued when it did not converge.
    """
    x = start
    loss, grad = objective(x)
    pairs: list[tuple[Vector, Vector, float]] = []  # (s, y, 1 / s.y), oldest first
    iterations, stalled = 0, False
    while float(abs(grad).max()) > tol and iterations < max_iter:
        direction = _two_loop(grad, pairs)
        slope = float(grad.dot(direction))
        if not slope < 0:  # curvature information gone bad: start again from the gradient
            pairs.clear()
            direction = -grad
            slope = float(grad.dot(direction))
        step = 1.0 if pairs else min(1.0, 1.0 / float(abs(grad).sum()))
        for _ in range(MAX_HALVINGS):
            trial = x + step * direction
            new_loss, new_grad = objective(trial)
            if new_loss <= loss + ARMIJO * step * slope:
                break
            step *= 0.5
        else:  # no decrease at any step: the loss cannot be resolved any finer
            stalled = True
            break
        s_step, y_step = trial - x, new_grad - grad
        curvature = float(s_step.dot(y_step))
        if curvature > 1e-12 * float(y_step.dot(y_step)):
            pairs = [*pairs[-(history - 1) :], (s_step, y_step, 1.0 / curvature)] if history > 1 else []
        x, loss, grad = trial, new_loss, new_grad
        iterations += 1
    grad_max = float(abs(grad).max())
    converged = grad_max <= tol
    if not converged:
        why = "no further progress: tol may be below what float precision resolves" if stalled else "max_iter"
        warnings.warn(
            f"L-BFGS stopped after {iterations} iterations ({why}) with max |gradient| {grad_max:.2g} > tol={tol:g}; "
            "the answer is approximate",
            NotConvergedWarning,
            stacklevel=3,
        )
    return x, Solution(iterations, loss, grad_max, converged)


MAX_HALVINGS = 50  # of the line search's step, from 1 (or the first iteration's 1 / |g|_1)
ARMIJO = 1e-4  # the share of the slope's promised decrease a step must achieve


@torch.no_grad()
def _assign(parameters: list[torch.Tensor], flat: torch.Tensor) -> None:
    """Set the parameters to the consecutive pieces of ``flat``, in order."""
    offset = 0
    for p in parameters:
        p.copy_(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()


def _two_loop(grad: Vector, pairs: list[tuple[Vector, Vector, float]]) -> Vector:
    """``-H grad`` for L-BFGS's inverse-Hessian estimate ``H`` from the ``(s, y, 1 / s.y)`` pairs (oldest first)."""
    q = -grad
    alphas = []
    for s, y, rho in reversed(pairs):
        alpha = rho * float(s.dot(q))
        q -= alpha * y
        alphas.append(alpha)
    if pairs:
        s, y, _ = pairs[-1]
        q *= float(s.dot(y)) / float(y.dot(y))
    for (s, y, rho), alpha in zip(pairs, reversed(alphas), strict=True):
        beta = rho * float(y.dot(q))
        q += (alpha - beta) * s
    return q


def _normalised_weights(sample_weight: torch.Tensor | None, n: int, dtype: torch.dtype, device: Any) -> torch.Tensor:
    """(N,) sample weights summing to 1 (uniform when None)."""
    weights = torch.ones(n, dtype=dtype, device=device) if sample_weight is None else sample_weight.to(device, dtype)
    total = float(weights.sum())
    if not total > 0:
        raise ValueError("the sample weights sum to 0: nothing to fit")
    return weights / total


def _chunks(n: int, chunk_rows: int) -> list[slice]:
    return [slice(start, start + chunk_rows) for start in range(0, n, chunk_rows)]


def fit_linear_exact(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    l2: float,
    *,
    class_weight: ClassWeight = None,
    bias: bool = True,
    init: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    dtype: torch.dtype = torch.float64,
    chunk_rows: int = 16384,
    return_solution: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None] | tuple[torch.Tensor, torch.Tensor | None, Solution]:
    """Multinomial logistic regression with an L2 penalty on the weight, solved to ``tol`` by full-batch L-BFGS.

    Args:
        x: (N, d) features (any float dtype; cast chunk by chunk to ``dtype``), on the device to solve on.
        y: (N,) int64 classes in ``[0, num_classes)``. A class with no sample has no finite optimum (its
            bias would fall without end): it gets a weight row of zeros and a bias ``ABSENT_CLASS_MARGIN``
            below the smallest other one, so that it is practically never predicted.
        num_classes: C.
        l2: the penalty ``l2 / 2 * ||W||^2`` on the mean loss (>= 0); scikit-learn's ``C`` is ``1 / (l2 * N)``
            (``1 / (l2 * sum of the class weights)`` with class weights).
        class_weight: None, ``"balanced"`` (``N / (C n_c)``) or (C,) weights; see :func:`class_weights`.
        bias: fit an (unpenalised) bias.
        init: ``(W, b)`` to start from (a warm start); default zeros, which makes the answer deterministic.
        max_iter, tol: L-BFGS iterations at most; converged when every |gradient| entry is at most ``tol``.
        dtype: the solve's precision (float64 default; float32 halves memory on large problems).
        chunk_rows: rows per pass (memory of one (chunk_rows, C) block of logits).
        return_solution: also return how the solve ended (a :class:`Solution`: iterations, loss, gradient).
        backend: where the objective is computed, for the same :func:`lbfgs`: ``"numpy"`` (CPU, float64: a few
            NumPy operations per evaluation, the faster on small problems, where torch pays a dispatch per
            operation), ``"torch"`` (any device and dtype) or ``"auto"``: NumPy where it applies, else torch.

    Returns:
        ``(W (C, d), b (C,) or None)`` in ``dtype`` on ``x``'s device, detached (and the :class:`Solution`
        with ``return_solution``). Without a penalty on it the bias is defined up to a constant shared by all
        classes; from the zero start its classes sum to 0.

    Raises:
        ValueError: ``l2 < 0``, labels out of range, shapes that do not match, or a backend that cannot run.
    """
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"fit_linear_exact: expected x (N, d) and y (N,); got {tuple(x.shape)} and {tuple(y.shape)}")
    if not l2 >= 0:
        raise ValueError(f"fit_linear_exact: l2={l2!r}, expected a number >= 0")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"fit_linear_exact: labels must lie in [0, {num_classes}); got {int(y.min())}..{int(y.max())}")
    if backend not in BACKENDS:
        raise ValueError(f"fit_linear_exact: backend={backend!r}, expected one of {', '.join(BACKENDS)}")
    on_numpy = x.device.type == "cpu" and dtype == torch.float64
    if backend == "numpy" and not on_numpy:
        raise ValueError("fit_linear_exact: backend='numpy' needs x on the CPU and dtype float64")
    y = y.to(device=x.device, dtype=torch.int64)
    counts = torch.bincount(y, minlength=num_classes)
    present = torch.nonzero(counts > 0).flatten()
    if len(present) == 0:
        raise ValueError("fit_linear_exact: no sample to fit")
    # A class with no sample has no finite optimum (its bias falls without end): solve for the others.
    compact = torch.full((num_classes,), -1, dtype=torch.int64, device=x.device)
    compact[present] = torch.arange(len(present), device=x.device)
    d = x.shape[1]
    theta = torch.zeros(len(present), d + int(bias), dtype=dtype, device=x.device)  # W, and b as its last column
    if init is not None:
        theta[:, :d] = init[0][present]
        if bias and init[1] is not None:
            theta[:, d] = init[1][present]
    per_class = class_weights(y, num_classes, class_weight).to(device=x.device, dtype=dtype)
    weights = _normalised_weights(per_class[y], len(y), dtype, x.device)
    make = _numpy_objective if backend == "numpy" or (backend == "auto" and on_numpy) else _torch_objective
    objective = make(x, compact[y], weights, l2, classes=len(present), bias=bias, chunk_rows=chunk_rows)
    start = theta.numpy().ravel() if make is _numpy_objective else theta.reshape(-1)
    flat, solution = lbfgs(objective, start, max_iter=max_iter, tol=tol)
    theta = torch.as_tensor(flat, device=x.device).reshape(theta.shape)
    weight, offset = theta[:, :d], (theta[:, d] if bias else None)
    full_weight = torch.zeros(num_classes, x.shape[1], dtype=dtype, device=x.device)
    full_weight[present] = weight.detach()
    full_bias = None
    if offset is not None:
        lowest = float(offset.min()) - ABSENT_CLASS_MARGIN
        full_bias = torch.full((num_classes,), lowest, dtype=dtype, device=x.device)
        full_bias[present] = offset.detach()
    return (full_weight, full_bias, solution) if return_solution else (full_weight, full_bias)


def _torch_objective(
    x: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    l2: float,
    *,
    classes: int,
    bias: bool,
    chunk_rows: int,
) -> Callable[[torch.Tensor], tuple[float, torch.Tensor]]:
    """The weighted cross-entropy plus ``l2 / 2 ||W||^2`` and its gradient, at flat ``(K, d [+ 1])`` parameters
    (W, and b as the last column): torch, on ``x``'s device, in ``weights``' dtype. ``targets`` (N,) in
    ``[0, K)``; ``weights`` (N,) summing to 1."""
    d, dtype = x.shape[1], weights.dtype
    chunks = _chunks(len(targets), chunk_rows)
    whole = x.to(dtype) if len(chunks) == 1 else None  # one chunk: cast once, not at every evaluation

    def objective(flat: torch.Tensor) -> tuple[float, torch.Tensor]:
        theta = flat.view(classes, -1)
        weight, offset = theta[:, :d], (theta[:, d] if bias else None)
        grad = torch.zeros_like(theta)
        value = 0.0
        for rows in chunks:
            features = whole if whole is not None else x[rows].to(dtype)
            log_p = F.linear(features, weight, offset).log_softmax(1)
            w, t = weights[rows], targets[rows]
            value -= float((log_p.gather(1, t.unsqueeze(1)).squeeze(1) * w).sum())
            # The gradient written out (no autograd): dL/dlogits = w_i (softmax - onehot), then two products.
            delta = log_p.exp_().mul_(w.unsqueeze(1))
            delta[torch.arange(len(t), device=x.device), t] -= w
            grad[:, :d].addmm_(delta.T, features)
            if bias:
                grad[:, d] += delta.sum(0)
        if l2 > 0:
            value += 0.5 * l2 * float(weight.pow(2).sum())
            grad[:, :d].add_(weight, alpha=l2)
        return value, grad.reshape(-1)

    return objective


def _numpy_objective(
    x: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    l2: float,
    *,
    classes: int,
    bias: bool,
    chunk_rows: int,
) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """:func:`_torch_objective` on float64 NumPy arrays (``x`` on the CPU).

    Classes by rows, samples by columns: the per-sample reductions (max and sum over the C classes) then run
    along contiguous memory, twice as fast as across it when C is small. With one chunk both layouts of
    ``x`` are made once (two float64 copies); with more, each chunk is cast as it goes.
    """
    d = x.shape[1]
    w, t = weights.double().numpy(), targets.numpy()
    chunks = _chunks(len(t), chunk_rows)
    # Per chunk: its weights and the flat positions of its (class, sample) targets in the (K, n) logits.
    picks = [(w[rows], t[rows] * len(w[rows]) + np.arange(len(w[rows]))) for rows in chunks]
    source = x.detach()
    whole = source.double().numpy() if len(chunks) == 1 else None
    whole_t = np.ascontiguousarray(whole.T) if whole is not None else None

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        params = flat.reshape(classes, -1)
        weight = params[:, :d]
        grad = np.zeros_like(params)
        value = 0.5 * l2 * float(np.vdot(weight, weight))
        for rows, (w_rows, targets_flat) in zip(chunks, picks, strict=True):
            features = whole if whole is not None else source[rows].double().numpy()
            logits = weight @ (whole_t if whole_t is not None else features.T)  # (K, n)
            if bias:
                logits += params[:, d:]
            logits -= logits.max(0)  # a shift per sample changes no softmax
            picked = logits.take(targets_flat)
            np.exp(logits, out=logits)
            total = logits.sum(0)
            value += float(w_rows @ (np.log(total) - picked))
            logits *= w_rows / total  # w_i softmax_i, and after the next line dL/dlogits
            logits.ravel()[targets_flat] -= w_rows
            grad[:, :d] += logits @ features
            if bias:
                grad[:, d] += logits.sum(1)
        grad[:, :d] += l2 * weight
        return value, grad.ravel()

    return objective
