"""Figures 9 and 10 of the report, drawn from results.json's ``"shift"`` entry (``eval.shift``): accuracy against
the test set's imbalance with and without prior adaptation, and each method's calibration on validation.

Both read only per-method, per-distribution numbers and per-bin counts, so their size depends on the number of
methods, never on the number of classes. The entry's layout: :mod:`longtail.pipeline.shift_scores`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..log_ticks import plain_log_ticks
from ..methods import display_order
from .figures import _label, _no_data, in_figures, method_color, new_figure

PANELS_PER_ROW = 4


def imbalance_position(name: str) -> float:
    """x of a distribution: ``forward-F`` at −ln F, ``uniform`` at 0, ``backward-F`` at +ln F (the log-imbalance
    axis: forward long tails on the left, reversed ones on the right)."""
    direction, _, factor = name.partition("-")
    if direction == "uniform":
        return 0.0
    sign = {"forward": -1.0, "backward": 1.0}.get(direction)
    if sign is None or not factor:
        raise ValueError(f"distribution {name!r}: expected forward-F, uniform or backward-F")
    return sign * math.log(float(factor))


def _short(name: str) -> str:
    """``forward-50`` -> ``F50``, ``backward-2`` -> ``B2``, ``uniform`` stays."""
    direction, _, factor = name.partition("-")
    return {"forward": "F", "backward": "B"}.get(direction, direction) + factor


def _methods(shift: Mapping[str, Any]) -> list[str]:
    return [m for m in display_order(shift.get("methods", {})) if in_figures(m)]


def shift_accuracy_figure(shift: Mapping[str, Any]) -> Figure:
    """Figure 9: top-1 accuracy (%) per method on each shifted test set, ``none`` solid and ``em`` dashed (left),
    and ``em`` − ``none`` in points (right), against the log-imbalance position of the test set.

    Args:
        shift: results.json's ``"shift"`` entry (``distributions``; per method ``none`` / ``em`` cells with
            ``accuracy``, and ``adapter.enabled``).
    """
    methods = _methods(shift)
    names = list(shift.get("distributions", []))
    if not methods or not names:
        return _no_data(new_figure(8, 3), "no shifted test set in results.json")
    figure = new_figure(13, 4.8)
    x = np.array([imbalance_position(n) for n in names])
    order = np.argsort(x, kind="stable")
    x, names = x[order], [names[i] for i in order]
    accuracy_axes, gain_axes = figure.subplots(1, 2, width_ratios=[3, 2])
    handles = []
    for method in methods:
        row, color = shift["methods"][method], method_color(method)
        none = np.array([row["none"][n]["accuracy"] for n in names])
        em = np.array([row["em"][n]["accuracy"] for n in names])
        accuracy_axes.plot(x, none, "-o", color=color, markersize=3, linewidth=1.6)
        accuracy_axes.plot(x, em, "--", color=color, linewidth=1.4)
        gain_axes.plot(x, em - none, "-o", color=color, markersize=3, linewidth=1.4)
        off = row.get("adapter", {}).get("enabled") is False
        handles.append(Line2D([], [], color=color, linewidth=2, label=_label(method) + (" (em off)" if off else "")))
    gain_axes.axhline(0.0, color="0.4", linewidth=0.8)
    for axes in (accuracy_axes, gain_axes):
        axes.set_xticks(x)
        # ln 2 apart from uniform: upright names would overlap there
        axes.set_xticklabels([_short(n) for n in names], fontsize=8, rotation=45)
        axes.axvline(0.0, color="0.85", linewidth=0.8, zorder=0)  # the balanced test set of the results table
        axes.grid(axis="y", color="0.92")
    figure.supxlabel(
        "test set: forward long tail (F, training order)  ←  uniform  →  backward long tail (B, reversed); "
        "x = ±ln(imbalance)",
        fontsize=9,
    )
    accuracy_axes.set_ylabel("top-1 accuracy (%)", fontsize=9)
    accuracy_axes.set_title("accuracy: none (solid) and em (dashed)", fontsize=10)
    gain_axes.set_ylabel("em − none (points)", fontsize=9)
    gain_axes.set_title("what EM prior adaptation changes", fontsize=10)
    styles = [
        Line2D([], [], color="0.3", linestyle="-", marker="o", markersize=3, label="none: the method's argmax"),
        Line2D([], [], color="0.3", linestyle="--", label="em: prior estimated on the test set"),
    ]
    figure.legend(handles=handles + styles, loc="outside right center", fontsize=8, frameon=False)
    return figure


def _draw_bins(axes: Any, bins: Mapping[str, Any], **style: Any) -> None:
    """One reliability curve: each non-empty bin's accuracy at its mean confidence."""
    points = [
        (conf, acc)
        for conf, acc, count in zip(bins["confidence"], bins["accuracy"], bins["count"], strict=True)
        if count and conf is not None and acc is not None
    ]
    if points:
        conf, acc = zip(*points, strict=True)
        axes.plot(conf, acc, **style)


def shift_calibration_figure(shift: Mapping[str, Any]) -> Figure:
    """Figure 10: a reliability diagram per method on the validation split, its own softmax before and its
    fitted calibration after (out of fold), with each one's ECE and the calibration's kind.

    Args:
        shift: results.json's ``"shift"`` entry; methods without a ``reliability`` record are left out.
    """
    methods = [m for m in _methods(shift) if isinstance(shift["methods"][m].get("reliability"), Mapping)]
    if not methods:
        return _no_data(new_figure(8, 3), "no calibration record in results.json: run longtail eval with eval.shift")
    columns = min(len(methods), PANELS_PER_ROW)
    rows = -(-len(methods) // columns)
    figure = new_figure(3.3 * columns, 3.1 * rows + 0.5)
    panels = figure.subplots(rows, columns, squeeze=False).ravel()
    for axes, method in zip(panels, methods, strict=False):
        row = shift["methods"][method]
        record, color = row["reliability"], method_color(method)
        before, after = record["before"], record["after"]
        edges = np.asarray(record["edges"], dtype=np.float64)
        logarithmic = edges[0] > 0  # bins log-spaced from 1/C at many classes (pipeline.shift_scores)
        diagonal = np.geomspace(edges[0], 1, 50) if logarithmic else np.array([0.0, 1.0])
        axes.plot(diagonal, diagonal, linestyle=":", color="0.5", linewidth=1)
        _draw_bins(axes, before, color="0.45", linestyle="--", marker="s", markersize=3, linewidth=1.2)
        _draw_bins(axes, after, color=color, linestyle="-", marker="o", markersize=4, linewidth=1.8)
        counts = np.asarray(after["count"], dtype=np.float64)
        axes.stairs(counts / max(counts.sum(), 1.0), edges, color=color, alpha=0.25, fill=True)
        kind = row.get("adapter", {}).get("calibration", {}).get("kind", "calibration")
        axes.set_title(
            f"{_label(method)} ({kind})\nECE {100 * before['ece']:.1f}% → {100 * after['ece']:.1f}%", fontsize=9
        )
        if logarithmic:
            axes.set_xscale("log")
            plain_log_ticks(axes.xaxis)
        axes.set_xlim(edges[0] if logarithmic else 0, 1)
        axes.set_ylim(0, 1)
        axes.set_xlabel("confidence" + (" (log scale, from 1/C)" if logarithmic else ""), fontsize=8)
        axes.set_ylabel("accuracy", fontsize=8)
        axes.tick_params(labelsize=7)
    for axes in panels[len(methods) :]:
        axes.set_axis_off()
    legend = [
        Line2D([], [], color="0.45", linestyle="--", marker="s", markersize=3, label="before: the method's softmax"),
        Line2D([], [], color="0.2", linestyle="-", marker="o", markersize=4, label="after: calibrated (out of fold)"),
        Line2D([], [], color="0.5", linestyle=":", label="perfect calibration"),
    ]
    figure.legend(handles=legend, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return figure
