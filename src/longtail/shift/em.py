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

On the family the fixed point is a root of one function of ``θ``,
``g(θ) = E_posteriors,θ[φ] − E_π_θ[φ]`` (with ``α``: the M-step's mix), and
EM's map is increasing, so from ``θ = 0`` it moves monotonically toward the
first root and never past it: each EM step from ``θ`` is a bound on the root.
Each step here is a Newton step on ``g`` (its derivative is a difference of
variances of ``φ``, from the same pass over the batch) where that lands
between the bounds so far, else the middle of the bounds once both are known
(at least EM's progress, since EM's step is one of them), else EM's own step.
Not the middle of an unknown bound: far beyond the first root the likelihood
can rise again toward a degenerate prior (a batch of 16 tail images did), and
EM, from the source, stops at the first root. The same fixed point as EM, at
Newton's quadratic rate near it instead of EM's linear one, which at many
classes and flat posteriors is hundreds of passes (measured: 158 passes at
8,142 classes stopped 23 % away from the fixed point, in relative prior terms;
the same problem now takes 14).

It stops when no class's prior moves by more than ``tolerance / C`` in one
step (``tolerance`` is in units of the uniform share ``1/C``, so that it means
the same at 10 classes and at 8,142: an absolute 1e-6 was 1 % of a uniform
share at iNaturalist's size and stopped EM after its first step), or after
``max_iterations`` steps (``converged`` says which). Everything is in float64
and in log space, deterministic for given inputs.

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

DEFAULT_TOLERANCE = 1e-5  # in units of the uniform share 1/C: 1e-6 at 10 classes, 1.2e-9 at 8,142
DEFAULT_MAX_ITERATIONS = 1000
# Newton steps of the moment matching of a restricted M-step (it converges quadratically: a handful suffice).
_NEWTON_STEPS = 60
# |θ| · (max φ - min φ) at most this: exp(±60) is beyond float64's resolution of a prior.
_THETA_LIMIT = 60.0


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
        tolerance: stop when ``max_y |π_new(y) - π(y)| <= tolerance / C`` (in units of the uniform share).
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
    if count == 0 or num_batches == 0:
        unmoved = source.expand(num_batches, num_classes).clone()
        return unmoved, torch.zeros(num_batches, dtype=torch.int64), torch.ones(num_batches, dtype=torch.bool)
    scores = log_posteriors.detach().cpu().to(torch.float64)  # no copy of a float64 table
    rows = chunk_rows(num_batches * num_classes)  # E-steps in row chunks: no (B, N, C) temporary at any size
    if not all(bool(torch.isfinite(scores[:, i : i + rows]).all()) for i in range(0, count, rows)):
        raise DataError("log posteriors: expected finite values (found NaN or infinity)")
    threshold = tolerance / num_classes
    if direction is None:
        return _saerens(scores, source, pseudo_count, threshold, max_iterations, rows)
    phi = _as_direction(direction, num_classes)
    return _power_family(scores, source, phi, pseudo_count, threshold, max_iterations, rows)


def _saerens(
    scores: torch.Tensor, source: torch.Tensor, pseudo_count: float, threshold: float, max_iterations: int, rows: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EM over the whole simplex on (B, N, C) ``scores``, E-steps in chunks of ``rows`` rows."""
    num_batches, count, num_classes = scores.shape
    prior = source.expand(num_batches, num_classes).clone()
    iterations = torch.zeros(num_batches, dtype=torch.int64)
    done = torch.zeros(num_batches, dtype=torch.bool)
    for _ in range(max_iterations):
        # E-step: p_t(y|x) ∝ p_s(y|x) π(y)/π_s(y); a class at π = 0 stays at 0 (log 0 = -inf, exp = 0). The
        # softmax normalises each row, so unnormalised scores need no log_softmax first.
        shift = (prior.log() - source.log()).unsqueeze(1)  # (B, 1, C)
        expected = torch.zeros(num_batches, num_classes, dtype=torch.float64)
        for i in range(0, count, rows):
            expected += torch.softmax(scores[:, i : i + rows] + shift, dim=2).sum(dim=1)
        updated = (expected + pseudo_count * source) / (count + pseudo_count)  # M-step: (B, C)
        active = ~done
        iterations += active.long()
        moved = (updated - prior).abs().amax(dim=1)
        prior = torch.where(active.unsqueeze(1), updated, prior)
        done = done | (moved <= threshold)
        if bool(done.all()):
            break
    return prior, iterations, done


def _power_family(
    scores: torch.Tensor,
    source: torch.Tensor,
    phi: torch.Tensor,
    pseudo_count: float,
    threshold: float,
    max_iterations: int,
    rows: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EM restricted to ``π_s · exp(θ φ)`` on (B, N, C) ``scores``, each step Newton's where it is safe (module
    docstring). One pass over the batch per step gives both ``g(θ)`` and ``g'(θ)``."""
    num_batches, count, _ = scores.shape
    weight = count / (count + pseudo_count)  # the batch's share of the M-step's mix; the rest is the source's
    source_mean = float(source @ phi)
    theta = torch.zeros(num_batches, dtype=torch.float64)
    spread = float(phi.max() - phi.min())
    # Bounds on the first root: EM's steps from below it (never past it) raise `low`, from above it lower `high`.
    # A bound is `known` once a step has set it; the initial ±limit is not one (beyond the root, far out, the
    # likelihood can rise again toward a degenerate prior, and a bisection toward it would end there).
    low = torch.full_like(theta, -_THETA_LIMIT / spread)
    high = torch.full_like(theta, _THETA_LIMIT / spread)
    low_known = torch.zeros(num_batches, dtype=torch.bool)
    high_known = torch.zeros(num_batches, dtype=torch.bool)
    prior = _family_prior(source, phi, theta)
    iterations = torch.zeros(num_batches, dtype=torch.int64)
    done = torch.zeros(num_batches, dtype=torch.bool)
    for _ in range(max_iterations):
        tilt = (theta.unsqueeze(1) * phi).unsqueeze(1)  # (B, 1, C): log π_θ/π_s up to a constant per batch
        posterior_mean = torch.zeros(num_batches, dtype=torch.float64)  # Σ_i E_{p_t(·|x_i)}[φ]
        posterior_variance = torch.zeros(num_batches, dtype=torch.float64)  # Σ_i Var_{p_t(·|x_i)}[φ]
        for i in range(0, count, rows):
            posteriors = torch.softmax(scores[:, i : i + rows] + tilt, dim=2)  # E-step of this chunk
            first, second = posteriors @ phi, posteriors @ phi.square()  # (B, M) each
            posterior_mean += first.sum(dim=1)
            posterior_variance += (second - first.square()).sum(dim=1)
        target = weight * posterior_mean / count + (1 - weight) * source_mean  # the M-step's E[φ]
        family_mean = prior @ phi
        gap = target - family_mean  # g(θ): > 0 where the root lies above θ
        slope = weight * posterior_variance / count - (prior @ phi.square() - family_mean.square())
        em_theta = _family_theta(source, phi, target)  # EM's step: toward the root, never past it
        above = gap > 0
        low, low_known = torch.where(above, em_theta, low), low_known | above
        high, high_known = torch.where(above, high, em_theta), high_known | ~above
        # Newton's step where g decreases (slope < 0) and it lands inside the bounds; else the middle of two known
        # bounds (the bracket halves, where EM crawls); else EM's own step.
        newton = theta - gap / slope.clamp_max(-1e-300)
        bracketed = low_known & high_known
        safe = (slope < 0) & (newton > low) & (newton < high)
        fallback = torch.where(bracketed, (low + high) / 2, em_theta)
        updated_theta = torch.where(safe, newton, fallback)
        updated = _family_prior(source, phi, updated_theta)
        active = ~done
        iterations += active.long()
        moved = (updated - prior).abs().amax(dim=1)
        theta = torch.where(active, updated_theta, theta)
        prior = torch.where(active.unsqueeze(1), updated, prior)
        done = done | (moved <= threshold)
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


def _family_prior(source: torch.Tensor, phi: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """(B, C) family members ``softmax(log π_s + θ φ)`` of (B,) ``theta``."""
    return torch.softmax(source.log() + theta.unsqueeze(1) * phi, dim=1)


def _family_theta(source: torch.Tensor, phi: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) ``θ`` of the family members ``softmax(log π_s + θ φ)`` whose mean of φ is (B,) ``target`` (moment
    matching: the restricted M-step).

    ``θ ↦ E_θ[φ]`` is increasing (its derivative is ``Var_θ[φ] > 0``), so Newton's method with a
    bisection bracket finds the unique root; a target at the edge of ``[min φ, max φ]`` (all mass on the
    extreme classes) gives a large finite ``θ``.
    """
    spread = float(phi.max() - phi.min())
    low = torch.full_like(target, -_THETA_LIMIT / spread)
    high = torch.full_like(target, _THETA_LIMIT / spread)
    theta = torch.zeros_like(target)
    for _ in range(_NEWTON_STEPS):
        prior = _family_prior(source, phi, theta)
        mean = prior @ phi
        variance = prior @ phi.square() - mean.square()
        above = mean > target
        high = torch.where(above, theta, high)
        low = torch.where(above, low, theta)
        step = theta - (mean - target) / variance.clamp_min(1e-300)
        inside = (step > low) & (step < high)
        theta = torch.where(inside, step, (low + high) / 2)
    return theta
