"""Tick labels of a log axis as plain numbers: ``3``, ``40``, ``600``, ``10,000``, ``0.5``.

matplotlib labels a log axis that spans less than a decade in scientific
notation (``3 × 10⁰``, ``4 × 10²``), which is how the class-size axes of the
report read on a run whose classes hold 3 to 5 images, or 330 to 1,000. The
figures of ``longtail report`` and ``longtail data stats --plot`` use this one
formatter for every log axis. matplotlib is imported by this module: import it
where a figure is drawn.
"""

from __future__ import annotations

from typing import Any

from matplotlib.ticker import LogFormatter


class PlainLogFormatter(LogFormatter):
    """matplotlib's choice of which ticks of a log axis get a label, written as a plain number."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        if not super().__call__(x, pos):  # a tick matplotlib leaves unlabelled (crowded minor ticks) stays so
            return ""
        return f"{x:,.0f}" if x >= 1 else f"{x:.2g}"


def plain_log_ticks(axis: Any) -> None:
    """Label the major and minor ticks of ``axis`` (an ``axes.xaxis`` or ``axes.yaxis`` on a log scale) plainly."""
    axis.set_major_formatter(PlainLogFormatter())
    axis.set_minor_formatter(PlainLogFormatter())
