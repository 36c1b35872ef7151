"""What the grid's rows and columns are: stage-1 samplers and losses, the parts cRT re-trains, the classifiers.

Every name comes from a registry: the paper's samplers are those whose spec says
``in_paper``, the loss rows every loss but the cross-entropy baseline, the
classifier columns the methods with ``MethodSpec.in_paper``. A sampler or loss
registered elsewhere is a row the grid accepts, labelled by its spec.
"""

from __future__ import annotations

from ..methods import METHODS, method_names
from ..registry import LOSSES, SAMPLERS

# The parts of the network cRT can re-train (the defaults of --trainable).
TRAINABLE = ("classifier", "last_stage", "all")
# A cell's metrics, in the order of the tables.
COLUMNS = ("many", "medium", "few", "all", "macro")


def paper_samplers() -> list[str]:
    """The four stage-1 strategies the paper compares (the default of --samplers)."""
    return [spec.name for spec in SAMPLERS.values() if spec.in_paper]


def sampler_choices() -> list[str]:
    """Every registered strategy: what --samplers accepts."""
    return SAMPLERS.names()


def rebalancing_losses() -> list[str]:
    """Every registered loss but the cross-entropy baseline (the default of --losses)."""
    return [spec.name for spec in LOSSES.values() if not spec.baseline]


def loss_choices() -> list[str]:
    """Every registered loss, the baseline too: what --losses accepts."""
    return LOSSES.names()


def loss_rows(present: object) -> list[str]:
    """The loss rows of a table, the baseline first, among the names in ``present``."""
    return [name for name in sorted(LOSSES.names(), key=lambda n: not LOSSES.get(n).baseline) if name in present]


def sampler_label(name: str) -> str:
    return SAMPLERS.get(name).label


def loss_label(name: str) -> str:
    return LOSSES.get(name).label


def paper_classifiers() -> list[str]:
    """The paper's decoupled classifiers (NCM, cRT, τ-norm, LWS), the grid's columns after Joint."""
    return [name for name in method_names() if METHODS[name].in_paper]
