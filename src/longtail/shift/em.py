"""EM re-estimation of the class prior of an unlabeled batch (Saerens, Latinne & Decaestecker 2002).

Given calibrated posteriors ``p_s(y|x_i)`` for a known source prior ``π_s`` and
N unlabeled images from a target distribution that differs only in its prior,
the maximum-likelihood target prior is the fixed point of

    E-step:  p_t(y|x_i) ∝ p_s(y|x_i) · π(y) / π_s(y)
    M-step:  π(y) = (Σ_i p_t(y|x_i) + α · π_s(y)) / (N + α)

started from ``π = π_s``. With ``α = 0`` (the default) this is Saerens' EM; the
likelihood rises at every step. ``α > 0`` is the MAP estimate under a
Dirichlet prior with parameters ``α · π_s + 1`` centred on the source prior:
``α`` pseudo-images of the source distribution, which keeps a small batch from
wandering far on little evidence (measured in ``docs/results/label_shift.md``).

A restricted family (``direction``): the prior may only move along
``π_θ(y) ∝ π_s(y) · exp(θ · φ(y))`` for a given (C,) direction ``φ``; the
M-step is then the member of that family nearest (in KL) to the unrestricted
one, i.e. the ``θ`` whose ``E_θ[φ]`` matches the posteriors' mean of ``φ`` (a
generalised EM: the likelihood still rises at every step). With ``φ = log
π_train`` the family is the powers of the training prior relative to the
source: forward-long-tailed targets (``θ > 0``), backward ones (``θ < 0``),
SADE's whole test-agnostic protocol. One parameter is determined by every
class at once, where the full prior has C - 1 free directions, some of them
nearly invisible to the classifier (two classes it confuses); a small
calibration error along those is amplified by EM into a large prior error
(measured in ``docs/results/label_shift.md``). The price: a target prior
outside the family is only approximated.

It stops when no class's prior moves by more than ``tolerance`` in one step,
or after ``max_iterations`` steps (``converged`` says which). Everything is in
float64 and in log space, deterministic for given inputs.

EM is only as good as the posteriors' calibration: on over- or under-confident
scores its fixed point is biased (the issue that motivated this module saw it
lose 5 points on label-smoothed scores and collapse on logit-adjusted ones).
Calibrate first (:mod:`.calibrate`, BCTS on validation) and pass the
calibration's prior as ``source_prior``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..data.dataset import chunk_rows
from ..errors import DataError
from .priors import PriorLike, as_prior

DEFAULT_TOLERANCE = 1e-6
DEFAULT_MAX_ITERATIONS = 1000
# Newton steps of the moment matching of a restricted M-step (it converges quadratically: a handful suffice).
_NEWTON_STEPS = 60


@dataclass(frozen=True)
class EMResult:
    """The outcome of :func:`em_prior`.

    Attributes:
        prior: (C,) float64 estimated target prior.
        iterations: EM steps taken.
        converged: whether the last step moved no class's prior by more than the tolerance.
    """

    prior: torch.Tensor
    iterations: int
    converged: bool


def _check_options(tolerance: float, max_iterations: int, pseudo_count: float) -> None:
    if not (isinstance(tolerance, int | float) and math.isfinite(tolerance) and tolerance > 0):
        raise DataError(f"EM tolerance {tolerance!r}: expected a number > 0")
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 1:
        raise DataError(f"EM max_iterations {max_iterations!r}: expected an integer >= 1")
    if not (isinstance(pseudo_count, int | float) and math.isfinite(pseudo_count) and pseudo_count >= 0):
        raise DataError(f"EM pseudo_count {pseudo_count!r}: expected a number >= 0")


def em_prior(
    log_posteriors: torch.Tensor,
    source_prior: PriorLike,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    pseudo_count: float = 0.0,
    direction: PriorLike | None = None,
) -> EMResult:
    """Estimate the prior of an unlabeled batch by EM (see the module docstring).

    Args:
        log_posteriors: (N, C) calibrated log posteriors of the batch, for ``source_prior``
            (unnormalised scores are normalised first).
        source_prior: (C,) the prior they are for, every entry > 0; EM starts there.
        tolerance: stop when ``max_y |π_new(y) - π(y)| <= tolerance``.
        max_iterations: at most this many EM steps.
        pseudo_count: ``α`` of the Dirichlet prior centred on ``source_prior`` (0: maximum likelihood).
        direction: (C,) ``φ``: restrict the prior to ``π_s · exp(θ φ)`` (e.g. the log training prior);
            None: the full simplex (Saerens).

    Returns:
        an :class:`EMResult`; an empty batch returns ``source_prior`` after 0 steps.
    """
    if not isinstance(log_posteriors, torch.Tensor) or log_posteriors.ndim != 2:
        shape = tuple(log_posteriors.shape) if isinstance(log_posteriors, torch.Tensor) else "not a tensor"
        raise DataError(f"log posteriors: expected an (N, C) tensor, got {shape}")
    priors, iterations, converged = em_priors(
        log_posteriors.unsqueeze(0),
        source_prior,
        tolerance=tolerance,
        max_iterations=max_iterations,
        pseudo_count=pseudo_count,
        direction=direction,
    )
    return EMResult(priors[0], int(iterations[0]), bool(converged[0]))


def em_priors(
    log_posteriors: torch.Tensor,
    source_prior: PriorLike,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    pseudo_count: float = 0.0,
    direction: PriorLike | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`em_prior` of B equal-sized batches at once, each on its own (for many small batches).

    Args:
        log_posteriors: (B, N, C) B batches of N images each.
        source_prior, tolerance, max_iterations, pseudo_count, direction: as in :func:`em_prior`.

    Returns:
        ``(priors, iterations, converged)``: (B, C) float64 estimates, (B,) int64 steps, (B,) bool. A batch
        stops moving once it has converged, so its result is the one :func:`em_prior` gives it alone.
    """
    _check_options(tolerance, max_iterations, pseudo_count)
    if not isinstance(log_posteriors, torch.Tensor) or log_posteriors.ndim != 3 or log_posteriors.shape[2] < 1:
        shape = tuple(log_posteriors.shape) if isinstance(log_posteriors, torch.Tensor) else "not a tensor"
        raise DataError(f"log posteriors: expected a (B, N, C) tensor, got {shape}")
    num_batches, count, num_classes = log_posteriors.shape
    source = as_prior(source_prior, num_classes, name="source prior", positive=True)
    prior = source.expand(num_batches, num_classes).clone()
    iterations = torch.zeros(num_batches, dtype=torch.int64)
    done = torch.zeros(num_batches, dtype=torch.bool)
    if count == 0 or num_batches == 0:
        return prior, iterations, torch.ones(num_batches, dtype=torch.bool)
    scores = log_posteriors.detach().cpu().to(torch.float64)  # no copy of a float64 table
    rows = chunk_rows(num_batches * num_classes)  # E-steps in row chunks: no (B, N, C) temporary at any size
    if not all(bool(torch.isfinite(scores[:, i : i + rows]).all()) for i in range(0, count, rows)):
        raise DataError("log posteriors: expected finite values (found NaN or infinity)")
    phi = None if direction is None else _as_direction(direction, num_classes)
    for _ in range(max_iterations):
        # E-step: p_t(y|x) ∝ p_s(y|x) π(y)/π_s(y); a class at π = 0 stays at 0 (log 0 = -inf, exp = 0). The
        # softmax normalises each row, so unnormalised scores need no log_softmax first.
        shift = (prior.log() - source.log()).unsqueeze(1)  # (B, 1, C)
        expected = torch.zeros(num_batches, num_classes, dtype=torch.float64)
        for i in range(0, count, rows):
            expected += torch.softmax(scores[:, i : i + rows] + shift, dim=2).sum(dim=1)
        updated = (expected + pseudo_count * source) / (count + pseudo_count)  # M-step: (B, C)
        if phi is not None:
            updated = _family_member(source, phi, updated @ phi)
        active = ~done
        iterations += active.long()
        moved = (updated - prior).abs().amax(dim=1)
        prior = torch.where(active.unsqueeze(1), updated, prior)
        done = done | (moved <= tolerance)
        if bool(done.all()):
            break
    return prior, iterations, done


def _as_direction(direction: PriorLike, num_classes: int) -> torch.Tensor:
    """(C,) float64 finite direction, centred (a constant shift of φ does not change the family)."""
    phi = torch.as_tensor(direction.detach().cpu() if isinstance(direction, torch.Tensor) else direction)
    phi = phi.to(torch.float64).reshape(-1)
    if len(phi) != num_classes or not torch.isfinite(phi).all():
        raise DataError(f"EM direction: expected {num_classes} finite numbers, got shape {tuple(phi.shape)}")
    if float(phi.max() - phi.min()) <= 0:
        raise DataError("EM direction: all its entries are equal; it moves nothing")
    return phi - phi.mean()


def _family_member(source: torch.Tensor, phi: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, C) priors ``softmax(log π_s + θ φ)`` whose mean of φ is (B,) ``target`` (moment matching).

    ``θ ↦ E_θ[φ]`` is increasing (its derivative is ``Var_θ[φ] > 0``), so Newton's method with a
    bisection bracket finds the unique root; a target at the edge of ``[min φ, max φ]`` (all mass on the
    extreme classes) gives a large finite ``θ``.
    """
    spread = float(phi.max() - phi.min())
    low = torch.full_like(target, -60.0 / spread)  # exp(±60) is beyond float64's resolution of a prior
    high = torch.full_like(target, 60.0 / spread)
    theta = torch.zeros_like(target)
    log_source = source.log()
    for _ in range(_NEWTON_STEPS):
        prior = torch.softmax(log_source + theta.unsqueeze(1) * phi, dim=1)
        mean = prior @ phi
        variance = prior @ phi.square() - mean.square()
        above = mean > target
        high = torch.where(above, theta, high)
        low = torch.where(above, low, theta)
        step = theta - (mean - target) / variance.clamp_min(1e-300)
        inside = (step > low) & (step < high)
        theta = torch.where(inside, step, (low + high) / 2)
    return torch.softmax(log_source + theta.unsqueeze(1) * phi, dim=1)
