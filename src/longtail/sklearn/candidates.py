"""One pass of the recipe on one training split: the joint probe, then every candidate classifier to choose among.

A *candidate* is one classifier the estimator could end with: the joint
probe (``joint``), the class-weighted joint classifier (``joint_balanced``,
scikit-learn's ``LogisticRegression(class_weight="balanced")`` when solved
exactly), each stage-2 method's fit, each of its ``variants`` (cRT, LWS at
other learning rates), and, for a method that sweeps τ (τ-normalisation,
logit adjustment), each τ of its grid: the choice of τ is made across folds
like every other choice, not inside one fold on its own validation samples.
Candidates are identified by :attr:`Candidate.key`, the same in every pass
over the same configuration, so that k-fold selection can pool their
held-out scores (:mod:`longtail.sklearn.selection`).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..config import Config
from ..engine.exact_linear import fit_linear_exact
from ..engine.head_training import Features, train_head
from ..methods import FitContext, Fitted, expand_methods, iter_specs, spec_of, train_on_features
from ..methods.crt import fresh_linear_head
from ..models.heads import LinearHead
from .exact_heads import WITH_HEADS, NotACandidate, exact_trainer, refusing_trainer

JOINT_METHODS = ("joint", "joint_balanced")  # the estimator's own candidates, beside the registered methods


@dataclass(frozen=True)
class Solver:
    """How the joint classifiers learn: ``lbfgs`` (solved exactly: penalty ``l2 / 2 ||W||^2`` on the mean loss,
    to ``tol`` within ``max_iter`` iterations) or ``sgd`` (the ``train`` section's recipe, weight decay ``l2``).

    ``l2=None``: ``1 / n`` on ``n`` training samples, scikit-learn's ``LogisticRegression`` at ``C=1``.
    ``grid``: factors on that penalty, one probe each (the estimator's list of ``weight_decay`` values is
    ``l2=1`` and the values); every method's candidates are fit on every probe, and the choice includes it.
    ``train_heads``: under ``lbfgs``, ``auto`` also tries the class-weighted probe and every head solved
    exactly (cRT), each a solve of its own on every fold; without, only what is built on the probe (see
    :func:`fit_pass`). Under ``sgd`` ``auto`` tries everything.
    """

    name: str
    l2: float | None = None
    tol: float = 1e-4
    max_iter: int = 1000
    grid: tuple[float, ...] = (1.0,)
    train_heads: bool = False  # lbfgs, auto: also the candidates with a solve of their own (joint_balanced, cRT)

    def penalty(self, num_samples: int, factor: float = 1.0) -> float:
        """The L2 strength of a fit on ``num_samples`` samples at ``factor`` of the grid."""
        return factor * (1.0 / max(num_samples, 1) if self.l2 is None else self.l2)


@dataclass
class Candidate:
    """One classifier to choose among.

    Attributes:
        method: ``joint``, ``joint_balanced`` or a registered method.
        fitted: its fit (a variant's fit for ``variant > 0``).
        variant: position among the method's ``variants`` (0: the configured fit).
        tau: a point of the method's τ sweep, set on its head (``head.tau``) when it scores; None: no sweep.
        probe: position of the joint classifier it was fit on in the solver's ``grid``.
        joint: that joint classifier.
        weight_decay: that joint classifier's L2 penalty, shown in ``params`` as ``joint_weight_decay`` when the
            grid has several (None: not shown).
    """

    method: str
    fitted: Fitted
    variant: int = 0
    tau: float | None = None
    probe: int = 0
    joint: nn.Module | None = None
    weight_decay: float | None = None

    @property
    def key(self) -> tuple[str, int, float | None, int]:
        return (self.method, self.variant, self.tau, self.probe)

    @property
    def params(self) -> dict[str, Any]:
        """Its hyper-parameters: the fit's (less the learning rate of a head solved exactly), and τ."""
        params = dict(self.fitted.params)
        if self.fitted.settings.get("solver") == "lbfgs":
            params.pop("lr", None)  # an exact solution has no learning rate
        if self.weight_decay is not None:
            params["joint_weight_decay"] = round(self.weight_decay, 8)
        return params if self.tau is None else {**params, "tau": self.tau}

    @property
    def label(self) -> str:
        """E.g. ``crt (lr=0.05)`` or ``logit_adjust (tau=1)``."""
        text = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params.items())
        return f"{self.method} ({text})" if text else self.method

    def head(self) -> nn.Module:
        """The classifier itself: its fit's head, with τ set on a copy for a sweep point."""
        if self.tau is None:
            return self.fitted.head
        head = copy.deepcopy(self.fitted.head)
        head.tau.fill_(self.tau)
        return head


@torch.no_grad()
def held_out_scores(candidates: list[Candidate], x: torch.Tensor) -> dict[tuple, torch.Tensor]:
    """Each candidate's key -> its (N, C) float32 scores of ``x`` (N, d) on the CPU (float32: K x N x C of them
    are kept for the choice). The points of a τ sweep share one head: it is set up once and run per τ."""
    out: dict[tuple, torch.Tensor] = {}
    groups: dict[int, list[Candidate]] = {}
    for candidate in candidates:
        groups.setdefault(id(candidate.fitted.head), []).append(candidate)
    for group in groups.values():
        head = group[0].fitted.head.eval()
        tensors = [*head.parameters(), *head.buffers()]
        rows = x.to(tensors[0].device) if tensors else x
        if all(c.tau is None for c in group):
            scores = head(rows).float().cpu()
            out.update((c.key, scores) for c in group)
            continue
        saved = head.tau.clone()
        try:
            for candidate in group:
                head.tau.fill_(candidate.tau)
                out[candidate.key] = head(rows).float().cpu()
        finally:
            head.tau.copy_(saved)
    return out


@dataclass
class Pass:
    """The candidates of one training split, and the joint classifiers they start from (one per grid point)."""

    joints: list[LinearHead] = field(default_factory=list)
    balanced: list[LinearHead] = field(default_factory=list)  # empty unless joint_balanced is a candidate
    candidates: list[Candidate] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # method -> why it is not a candidate


def train_joint(
    train: Features,
    num_classes: int,
    config: Config,
    device: torch.device,
    solver: Solver,
    *,
    balanced: bool = False,
    factor: float = 1.0,
    init: LinearHead | None = None,
) -> LinearHead:
    """The joint linear classifier, in eval mode on ``device``.

    ``lbfgs``: multinomial logistic regression solved exactly (from ``init``'s weights when given: a warm start
    with the same answer), class-weighted (``N / (C n_c)``) when ``balanced``. ``sgd``: a fresh (seeded) linear
    layer trained with ``config.train`` (instance-balanced sampling; class-balanced when ``balanced``).
    The L2 penalty is ``solver.penalty(n, factor)``. ``head.n_iter``: L-BFGS iterations, or SGD epochs.
    """
    if solver.name == "lbfgs":
        head = LinearHead(train.x.shape[1], num_classes)  # its initialisation is overwritten: no seeding needed
        start = None if init is None else (init.weight.detach().double(), init.bias.detach().double())
        weight, bias, solution = fit_linear_exact(
            train.x.to(device),
            train.y.to(device),
            num_classes,
            solver.penalty(len(train.y), factor),
            class_weight="balanced" if balanced else None,
            init=start,
            tol=solver.tol,
            max_iter=solver.max_iter,
            return_solution=True,
        )
        with torch.no_grad():
            head.weight.copy_(weight)
            head.bias.copy_(bias)
        head.n_iter = solution.iterations  # the estimator's n_iter_
        return head.to(device).eval()
    head = fresh_linear_head(train.x.shape[1], num_classes, config.seed)
    section = dataclasses.replace(config.train, weight_decay=solver.penalty(len(train.y), factor))
    sampling = dataclasses.replace(config.train, sampler="class") if balanced else config.train
    head = train_head(head, train, section, sampling=sampling, seed=config.seed, device=device)
    head.n_iter = section.epochs  # the estimator's n_iter_: epochs, as scikit-learn's SGDClassifier counts
    return head


def fit_pass(
    method: str,
    train: Features,
    val: Features,
    num_classes: int,
    config: Config,
    device: torch.device,
    solver: Solver,
    *,
    sweeps: dict[str, list[float]] | None = None,
    warm: Pass | None = None,
) -> Pass:
    """Fit the joint probe on ``train`` and every candidate of ``method`` (``auto``: all of them).

    ``val`` is what the methods see as their validation split (their display-only test split is empty): their
    own choices are recorded but not used, the sweeps being expanded into one candidate per τ of ``sweeps``
    (method -> grid; see :func:`split_sweeps`). ``warm``: the pass on all the data, whose joint classifiers
    start the exact solves here (same answers, fewer iterations); without it, the class-weighted probe starts
    from the plain one. Under ``lbfgs``, ``auto`` chooses among the probe and the methods built on it without
    a training of their own (:func:`~longtail.sklearn.exact_heads.refusing_trainer` says why each other is
    left out): each fold then costs one solve, the probe's. With ``solver.train_heads`` it also tries the
    class-weighted probe and the heads solved exactly (not those only SGD trains). A method asked for by
    name is solved exactly where it can be, else trained by SGD.
    """
    sweeps = sweeps or {}
    result = Pass()
    counts = torch.bincount(train.y, minlength=num_classes).tolist()
    # The protocol's "test" split feeds display-only curves, which the estimator does not show: none.
    nothing = Features(train.x[:0], train.y[:0])
    splits = {"train": train, "val": val, "test": nothing}
    sgd = train_on_features(splits.__getitem__, config, device)
    trainer = sgd
    lean = solver.name == "lbfgs" and method == "auto" and not solver.train_heads  # one solve per fold
    if lean:
        trainer = refusing_trainer
        result.skipped["joint_balanced"] = f"joint_balanced: a probe of its own to solve on every fold ({WITH_HEADS})"
    elif solver.name == "lbfgs":
        starts = {} if warm is None else {c.method: c.fitted.head for c in warm.candidates if c.variant == 0}
        fallback = None if method == "auto" else sgd  # auto leaves out the heads only SGD trains
        trainer = exact_trainer(
            splits.__getitem__,
            config,
            device,
            tol=solver.tol,
            max_iter=solver.max_iter,
            fallback=fallback,
            starts=starts,
        )
    for probe, factor in enumerate(solver.grid):
        shown = solver.penalty(len(train.y), factor) if len(solver.grid) > 1 else None
        common = {"probe": probe, "weight_decay": shown}
        # Warm starts: the same probe on all the data, else the previous probe of the grid.
        previous = result.joints[-1] if result.joints else None
        init = warm.joints[probe] if warm is not None else previous
        joint = train_joint(train, num_classes, config, device, solver, factor=factor, init=init)
        result.joints.append(joint)
        if method in ("joint", "auto"):
            result.candidates.append(Candidate("joint", Fitted(joint), joint=joint, **common))
        if method == "joint_balanced" or (method == "auto" and not lean):
            # Warm starts: the same on all the data, else the previous of the grid, else this probe unweighted.
            previous = result.balanced[-1] if result.balanced else joint
            init = warm.balanced[probe] if warm is not None else previous
            balanced = train_joint(train, num_classes, config, device, solver, balanced=True, factor=factor, init=init)
            result.balanced.append(balanced)
            result.candidates.append(Candidate("joint_balanced", Fitted(balanced), joint=joint, **common))
        if method in JOINT_METHODS:
            continue
        context = FitContext(splits.__getitem__, joint.requires_grad_(False), counts, config, device, trainer)
        for spec in iter_specs(expand_methods([method])):
            if spec.chooses_among_others or spec.name in result.skipped or (warm and spec.name in warm.skipped):
                continue  # auto's own choice is made across folds (fitting.choose); skipped once, skipped on all
            try:
                fitted = spec.fit(context)
            except NotACandidate as reason:
                result.skipped[spec.name] = str(reason)
                continue
            context.fitted[spec.name] = fitted
            result.candidates += [
                dataclasses.replace(c, joint=joint, **common) for c in _expand(spec.name, fitted, context, sweeps)
            ]
    return result


def _expand(method: str, fitted: Fitted, context: FitContext, sweeps: dict[str, list[float]]) -> list[Candidate]:
    """The candidates of one method's fit: its variants (not for a head solved exactly: the learning rate
    changes nothing there), and every τ of its sweep (``sweeps``) when its head carries its τ (``head.tau``)."""
    spec = spec_of(method)
    fits = [fitted]
    if spec.variants is not None and fitted.settings.get("solver") != "lbfgs":
        fits = spec.variants(context, fitted)
    taus = sweeps.get(method) if isinstance(getattr(fitted.head, "tau", None), torch.Tensor) else None
    return [Candidate(method, variant, index, tau) for index, variant in enumerate(fits) for tau in (taus or [None])]


def split_sweeps(method: str, config: Config) -> tuple[Config, dict[str, list[float]]]:
    """The τ grids of ``method``'s sweeping methods, and the config their fits get: each grid cut to its first
    point, since the candidates are every point of it (the method's own choice would only cost time).

    A sweeping method is one with a ``sweep`` whose config section has a ``values()`` grid (a
    :class:`~longtail.config.TauConfig`) and whose head carries its τ. Others (a plugin's sweep of another
    kind, WB's grid) keep their grid and choose on their own, on the held-out fold that then scores them:
    a choice that flatters them a little.
    """
    if method in JOINT_METHODS:
        return config, {}
    sections = dict(config.decouple.sections)
    grids: dict[str, list[float]] = {}
    for spec in iter_specs(expand_methods([method])):
        section = config.decouple.sections.get(spec.section or "") if spec.sweep is not None else None
        if section is None or not callable(getattr(section, "values", None)):
            continue
        grid = list(section.values())
        grids[spec.name] = grid
        sections[spec.section] = dataclasses.replace(section, min=grid[0], max=grid[0], steps=1)
    decouple = copy.copy(config.decouple)
    decouple.sections = sections
    return dataclasses.replace(config, decouple=decouple), grids
