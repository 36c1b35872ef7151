"""What the grid's rows and columns are: stage-1 samplers and losses, the parts cRT re-trains, the classifiers.

Every name the grid lists lives here, so that one place reads the registries
when samplers and losses have their own (as methods do:
:func:`paper_classifiers` reads ``MethodSpec.in_paper``).
"""

from __future__ import annotations

from ..methods import METHODS, method_names

# The paper's rows (the defaults of --samplers, --losses and --trainable).
SAMPLERS = ("instance", "class", "sqrt", "progressive")
LOSSES = ("focal", "class_balanced", "ldam_drw", "balanced_softmax", "logit_adjusted")
TRAINABLE = ("classifier", "last_stage", "all")
# What --samplers and --losses also accept: the other samplers, and plain cross-entropy as a row of its own.
SAMPLER_CHOICES = (*SAMPLERS, "class_aware", "power")
LOSS_CHOICES = (*LOSSES, "ce")
SAMPLER_LABELS = {
    "instance": "Instance-balanced",
    "class": "Class-balanced",
    "sqrt": "Square-root",
    "progressive": "Progressively-balanced",
    "class_aware": "Class-aware (blocked)",
    "power": "Power",
}
LOSS_LABELS = {
    "ce": "Cross-entropy",
    "focal": "Focal",
    "class_balanced": "Class-balanced CE",
    "ldam_drw": "LDAM-DRW",
    "balanced_softmax": "Balanced softmax",
    "logit_adjusted": "Logit-adjusted CE",
}
# A cell's metrics, in the order of the tables.
COLUMNS = ("many", "medium", "few", "all", "macro")


def paper_classifiers() -> list[str]:
    """The paper's decoupled classifiers (NCM, cRT, τ-norm, LWS), the grid's columns after Joint."""
    return [name for name in method_names() if METHODS[name].in_paper]
