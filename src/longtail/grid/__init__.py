"""``longtail grid``: the paper's representation-learning grid, stage-1 sweeps chosen on validation, seeds.

Split as :mod:`longtail.report` is: :mod:`.run` trains, reuses and scores the
cells and returns a record; :mod:`.render` writes the record as Markdown (the
tables, captions and the reading of the paper's findings); :mod:`.rows` names
the rows (samplers, losses, what cRT re-trains) and the columns.
"""

from .render import NOTES_MARKER, check_grid_doc, grid_markdown, reading, sweep_markdown, write_grid_doc
from .rows import LOSS_LABELS, LOSSES, SAMPLER_LABELS, SAMPLERS, TRAINABLE, paper_classifiers
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
    "LOSSES",
    "LOSS_LABELS",
    "MAX_NAME_LENGTH",
    "MAX_RUNS",
    "NOTES_MARKER",
    "SAMPLERS",
    "SAMPLER_LABELS",
    "TRAINABLE",
    "check_grid_doc",
    "grid_markdown",
    "mean_std",
    "paper_classifiers",
    "parse_sweep",
    "reading",
    "run_grid",
    "sweep_combinations",
    "sweep_dir_name",
    "sweep_markdown",
    "write_grid_doc",
]
