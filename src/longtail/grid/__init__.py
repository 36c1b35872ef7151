"""``longtail grid``: the paper's representation-learning grid, stage-1 sweeps chosen on validation, seeds.

Split as :mod:`longtail.report` is: :mod:`.run` trains, reuses and scores the
cells and returns a record; :mod:`.render` writes the record as Markdown (the
tables, captions and the reading of the paper's findings); :mod:`.rows` names
the rows (samplers, losses, what cRT re-trains) and the columns.
"""

from .render import NOTES_MARKER, check_grid_doc, grid_markdown, reading, sweep_markdown, write_grid_doc
from .rows import TRAINABLE, loss_label, paper_classifiers, paper_samplers, rebalancing_losses, sampler_label
from .run import (
    GRID_DEFAULTS,
    MAX_NAME_LENGTH,
    MAX_RUNS,
    mean_std,
    parse_sweep,
    run_grid,
    sweep_combinations,
    sweep_dir_name,
)

__all__ = [
    "GRID_DEFAULTS",
    "MAX_NAME_LENGTH",
    "MAX_RUNS",
    "NOTES_MARKER",
    "TRAINABLE",
    "check_grid_doc",
    "grid_markdown",
    "loss_label",
    "mean_std",
    "paper_classifiers",
    "paper_samplers",
    "parse_sweep",
    "reading",
    "rebalancing_losses",
    "run_grid",
    "sampler_label",
    "sweep_combinations",
    "sweep_dir_name",
    "sweep_markdown",
    "write_grid_doc",
]
