"""Stage-2 heads solved exactly on features in memory (``solver="lbfgs"``), instead of trained by SGD.

A method trains its head through the protocol's trainer
(:class:`~longtail.methods.base.HeadTrainer`); this one minimises, by
full-batch L-BFGS (:func:`~longtail.engine.exact_linear.minimize_cross_entropy`),
the loss that SGD with the configured sampler minimises in expectation: each
class ``j`` weighted by the probability ``p_j`` that the sampler draws it,
spread over its ``n_j`` samples (per-sample weight ``p_j / n_j``), plus the
section's weight decay as an L2 penalty (not on biases). The section's
epochs, batch size and learning rate do not apply.

Only a training with a unique optimum is solved: plain cross-entropy (no
loss of the method's own, no projection after each step) with weight
decay > 0. cRT qualifies (class-balanced cross-entropy, weight decay 5e-4);
LWS does not (no weight decay on its scales: on training data the joint
classifier separates, the scales would grow without end), nor WB (MaxNorm
projection) or LAS (label-aware smoothing). Those are handed to ``fallback``
(SGD), or refused with :class:`NotACandidate` where none is given.

``auto`` under ``lbfgs`` trains no head by default (:func:`refusing_trainer`):
it chooses among the joint probe and the methods built on it without a
training of their own (logit adjustment, τ-normalisation, NCM), so that every
fold costs the probe's solve and nothing more; ``train_heads=True`` adds the
heads this module solves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..config import Config
from ..engine.exact_linear import fit_linear_exact, minimize_cross_entropy
from ..engine.head_training import Features
from ..errors import ConfigError
from ..methods import Fitted, HeadTraining
from ..methods.base import HeadTrainer, with_sampler
from ..models.heads import LinearHead
from ..registry import SAMPLERS

WITH_HEADS = "train_heads=True adds it"  # how auto's skipped_ says to get a candidate that needs its own solve


class NotACandidate(Exception):
    """A method ``auto`` leaves out under ``lbfgs``: its head needs a training (the message says why)."""


def why_not_exact(section: Any, how: HeadTraining) -> str | None:
    """Why this training cannot be solved exactly (a phrase), or None when it can."""
    if how.needs_images():
        return "it needs images"
    if how.criterion is not None:
        return "it has a loss of its own"
    if how.after_step is not None:
        return "it projects its weights after every step"
    if not getattr(section, "weight_decay", 0) > 0:
        return "without weight decay its optimum need not exist"
    return None


def class_probabilities(counts: torch.Tensor, sampling: Any) -> torch.Tensor:
    """(C,) float64 probability of drawing each class under the sampler that ``sampling`` (a ``decouple``
    section) names, over a whole training: its spec's ``class_shares``.

    Raises:
        ConfigError: a sampler whose spec does not say its class shares (no exact solution for it).
    """
    spec = SAMPLERS.get(sampling.sampler)
    if spec.class_shares is None:
        raise ConfigError(f"decouple.sampler={spec.name}: its class shares are unknown; use solver='sgd'")
    section = getattr(sampling, spec.name, None) if spec.config is not None else None
    return spec.class_shares(counts, section).to(torch.float64)


def sample_weights(y: torch.Tensor, num_classes: int, sampling: Any) -> torch.Tensor:
    """(N,) float64 weight ``p_j / n_j`` of each sample of class ``j``: the sampler's expected loss."""
    counts = torch.bincount(y.cpu(), minlength=num_classes)
    per_class = class_probabilities(counts, sampling) / counts.clamp_min(1).to(torch.float64)
    return per_class[y.cpu()]


def exact_trainer(
    features: Callable[[str], Features],
    config: Config,
    device: torch.device,
    *,
    tol: float,
    max_iter: int,
    fallback: HeadTrainer | None,
    starts: Mapping[str, nn.Module] | None = None,
) -> HeadTrainer:
    """A :class:`HeadTrainer` that solves each head exactly where it can (see the module), else ``fallback``.

    ``starts``: training name (``HeadTraining.tag``) -> a linear head solved for the same method on more data,
    whose weights start the solve (the same optimum, fewer iterations).
    """
    starts = starts or {}
    solved: dict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = {}  # the same problem, solved once

    def trainer(head: nn.Module, section: Any, how: HeadTraining) -> Fitted:
        reason = why_not_exact(section, how)
        if reason is not None:
            if fallback is None:
                raise NotACandidate(f"{how.method}: {reason}")
            return fallback(head, section, how)
        train = features("train")
        num_classes = int(head.as_linear().weight.shape[0])
        sampling = with_sampler(config.decouple, how.sampler)
        if type(head) is LinearHead and all(p.requires_grad for p in head.parameters()):
            # A unique optimum: the same training (data, sampler, decay) gives the same head, whatever its start.
            sampler_section = repr(getattr(sampling, sampling.sampler, None))  # the strategy's own keys, if any
            key = (how.tag, sampling.sampler, sampler_section, float(section.weight_decay), *head.weight.shape)
            if key not in solved:
                start = starts.get(how.tag)
                usable = isinstance(start, nn.Linear) and start.weight.shape == head.weight.shape
                init = (start.weight.detach().double(), _maybe_double(start.bias)) if usable else None
                solved[key] = _solve_linear(
                    train,
                    num_classes,
                    sampling,
                    float(section.weight_decay),
                    bias=head.bias is not None,
                    device=device,
                    tol=tol,
                    max_iter=max_iter,
                    init=init,
                )
            weight, bias = solved[key]
            with torch.no_grad():
                head.weight.copy_(weight)
                if head.bias is not None:
                    head.bias.copy_(bias)
            return Fitted(head.to(device).eval(), settings={"features": "cached", "solver": "lbfgs"})
        weights = sample_weights(train.y, num_classes, sampling)
        head = head.to(device=device, dtype=torch.float64)
        named = [(name, p) for name, p in head.named_parameters() if p.requires_grad]
        minimize_cross_entropy(
            head,
            [p for _, p in named],
            train.x.to(device),
            train.y.to(device),
            sample_weight=weights.to(device),
            l2=float(section.weight_decay),
            penalized=[p for name, p in named if name.rsplit(".", 1)[-1] != "bias"],  # biases are not decayed
            max_iter=max_iter,
            tol=tol,
        )
        return Fitted(head.float().eval(), settings={"features": "cached", "solver": "lbfgs"})

    return trainer


def refusing_trainer(head: nn.Module, section: Any, how: HeadTraining) -> Fitted:
    """``auto``'s trainer under ``lbfgs``: refuses every head training with :class:`NotACandidate`, saying why.

    A trained head costs a solve per fold and for the refit, as much as the probe (cRT solved exactly is the
    class-weighted probe at another penalty); the heads only SGD trains have no optimum to solve for. Each is
    fitted when asked for by name, by ``train_heads=True`` (those solved exactly) or by ``solver="sgd"``'s
    ``auto``.
    """
    reason = why_not_exact(section, how)
    if reason is None:
        reason = f"a head of its own to solve on every fold ({WITH_HEADS})"
    else:
        reason = f"only SGD trains it: {reason}"
    raise NotACandidate(f"{how.method}: {reason}")


def _solve_linear(
    train: Features,
    num_classes: int,
    sampling: Any,
    l2: float,
    *,
    bias: bool,
    device: torch.device,
    tol: float,
    max_iter: int,
    init: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(W, b)`` of a whole linear classifier (cRT's): multinomial logistic regression with the sampler's class
    weights ``p_j / n_j``, from ``init`` or zero (a random initialisation does not change the optimum), by
    :func:`fit_linear_exact`."""
    counts = torch.bincount(train.y.cpu(), minlength=num_classes)
    per_class = class_probabilities(counts, sampling) / counts.clamp_min(1).to(torch.float64)
    return fit_linear_exact(
        train.x.to(device),
        train.y.to(device),
        num_classes,
        l2,
        class_weight=per_class,
        bias=bias,
        init=init,
        tol=tol,
        max_iter=max_iter,
    )


def _maybe_double(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.detach().double()
