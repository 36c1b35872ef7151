"""The decision-boundary illustration of Kang et al. (section 4): how each classifier splits the feature space.

The toy problem: points in the plane from three Gaussian clusters whose centres
sit on a circle around the origin, 120° apart, with long-tailed counts
(1000 / 100 / 10; class 0 is the head, class 2 the tail). The clusters overlap,
as the features of hard classes do. Everything is computed from one seed with a
private random generator; nothing is placed by hand:

- **Joint (τ = 0)**: a bias-free linear classifier ``W`` (3, 2) trained with
  cross-entropy on every point (instance-balanced, full-batch gradient descent).
  Its class regions are cones from the origin. The head gets most of the
  gradient and grows the largest weight norm ``||w_0||``, and its cone is the
  widest: it reaches into the other clusters.
- **τ-norm (τ = 1)**: the same ``W`` with every row divided by its norm, so only
  the directions decide. The head's cone narrows, but only a little here: the
  rows of a softmax classifier trained from a small initialisation sum to zero
  (cross-entropy's gradient sums to zero over the classes), and three vectors
  summing to zero form a triangle, so in this toy their directions are tied to
  their norms and still lean towards the head. With hundreds of classes, as in
  the paper, that one constraint hardly binds and the directions are free.
- **Cosine**: a cosine classifier (:class:`~longtail.models.heads.CosineHead`)
  whose weights are the class means, as the paper's figure draws it (imprinted
  weights, Qi et al. 2018). The regions depend only on the angle to each mean,
  not on any norm nor on the class sizes. (A cosine head *trained* with
  cross-entropy on these imbalanced points learns the class prior into its
  directions and gives the head as much area as Joint or more.)
- **NCM**: nearest class mean under the Euclidean distance; the regions are the
  Voronoi cells of the three means.

The figure shows the four side by side on the same axes: regions shaded, the
points on top, the weights as arrows (the class means as crosses for NCM), the
Joint boundaries dashed in the other panels, and for each the share of the
plotted square given to the head, which is largest for Joint and shrinks for the
other three. ``longtail illustrate --out FILE`` writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.nn import functional as F

from ..engine.device import one_thread
from ..fs.figure_file import figure_format, write_figure
from ..methods.ncm import NCMClassifier
from ..methods.tau_norm import TauNormHead, tau_normalize
from ..models.heads import CosineHead, weight_norms

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CLASS_COUNTS = (1000, 100, 10)  # head, medium, tail: imbalance factor 100
CLASS_ANGLES_DEG = (90.0, 210.0, 330.0)  # cluster directions, 120° apart around the origin
CLUSTER_RADIUS = 2.0  # distance of each cluster centre from the origin
CLUSTER_STD = 0.8  # wide enough that neighbouring clusters overlap
COSINE_SCALE = 16.0  # the usual scale of a cosine classifier; it does not move the regions
JOINT_STEPS, JOINT_LR = 400, 0.1  # SGD, momentum 0.9: converged (1,000 steps give the same regions)
# Stronger than the paper's 5e-4 so that the toy's norms settle within the steps instead of drifting.
WEIGHT_DECAY = 5e-3
GRID_SIZE = 241  # points per axis of the region grid

# Light region shades and strong point colours, one per class (head, medium, tail).
_REGION_COLOURS = ("#c6dbef", "#fdd0a2", "#c7e9c0")
_POINT_COLOURS = ("#2171b5", "#d94801", "#238b45")
_CLASS_NAMES = ("head", "medium", "tail")


@dataclass(frozen=True)
class MethodRegions:
    """One classifier's decision regions on the grid.

    Attributes:
        name: "joint", "tau_norm", "cosine" or "ncm".
        title: the panel title.
        predictions: (G, G) int64 predicted class at ``(grid_x[j], grid_y[i])`` in row ``i``, column ``j``.
        area_share: (C,) fraction of the grid (the plotted square) predicted as each class.
        weight_norms: (C,) ``||w_j||`` of the weights the classifier scores with (all 1 once normalised);
            None for NCM.
        anchors: (C, 2) what the classifier compares points with: weight rows, or class means for NCM.
    """

    name: str
    title: str
    predictions: np.ndarray
    area_share: np.ndarray
    weight_norms: np.ndarray | None
    anchors: np.ndarray


@dataclass(frozen=True)
class IllustrationData:
    """The toy problem and the four classifiers' regions.

    Attributes:
        points: (N, 2) float32 training points.
        labels: (N,) int64 their classes.
        counts: points per class.
        grid_x, grid_y: (G,) coordinates of the grid columns and rows.
        methods: Joint, τ-norm, cosine, NCM, in that order.
    """

    points: np.ndarray
    labels: np.ndarray
    counts: tuple[int, ...]
    grid_x: np.ndarray
    grid_y: np.ndarray
    methods: tuple[MethodRegions, ...]

    def method(self, name: str) -> MethodRegions:
        """The regions of the method called ``name``."""
        for regions in self.methods:
            if regions.name == name:
                return regions
        raise KeyError(name)


def toy_data(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2) points and (N,) labels of the three long-tailed Gaussian clusters."""
    points, labels = [], []
    for label, (count, angle) in enumerate(zip(CLASS_COUNTS, CLASS_ANGLES_DEG, strict=True)):
        radians = np.deg2rad(angle)
        centre = CLUSTER_RADIUS * torch.tensor([np.cos(radians), np.sin(radians)], dtype=torch.float32)
        points.append(centre + CLUSTER_STD * torch.randn(count, 2, generator=generator))
        labels.append(torch.full((count,), label, dtype=torch.int64))
    return torch.cat(points), torch.cat(labels)


def train_joint(points: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The bias-free linear classifier trained on every point (instance-balanced).

    Args:
        points: (N, 2); labels: (N,).
        generator: draws the small random initialisation.

    Returns:
        W (C, 2).
    """
    weight = (0.01 * torch.randn(len(CLASS_COUNTS), 2, generator=generator)).requires_grad_()
    optimizer = torch.optim.SGD([weight], lr=JOINT_LR, momentum=0.9, weight_decay=WEIGHT_DECAY)
    for _ in range(JOINT_STEPS):
        optimizer.zero_grad()
        F.cross_entropy(points @ weight.T, labels).backward()
        optimizer.step()
    return weight.detach()


def class_means(points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(C, 2) mean point of each class."""
    return torch.stack([points[labels == label].mean(dim=0) for label in range(len(CLASS_COUNTS))])


def mean_cosine_head(means: torch.Tensor) -> CosineHead:
    """A :class:`CosineHead` whose weights are the (C, d) class means."""
    with torch.random.fork_rng(devices=[]):  # CosineHead draws an initialisation from the global RNG: keep it intact
        head = CosineHead(means.shape[1], means.shape[0])
    with torch.no_grad():
        head.weight.copy_(means)
    return head


def _grid(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The square around the origin and every point: (G,) axis and (G*G, 2) grid points, row by row in y."""
    half = float(np.ceil(float(points.abs().max()) + 0.25))
    axis = torch.linspace(-half, half, GRID_SIZE)
    grid_y, grid_x = torch.meshgrid(axis, axis, indexing="ij")
    return axis, torch.stack([grid_x.flatten(), grid_y.flatten()], dim=1)


def _regions(
    name: str, title: str, scores: torch.Tensor, norms: torch.Tensor | None, anchors: torch.Tensor
) -> MethodRegions:
    """(G*G, C) scores on the grid -> :class:`MethodRegions`."""
    num_classes = scores.shape[1]
    predicted = scores.argmax(dim=1)
    side = round(len(predicted) ** 0.5)
    share = torch.bincount(predicted, minlength=num_classes).double() / len(predicted)
    return MethodRegions(
        name=name,
        title=title,
        predictions=predicted.reshape(side, side).numpy(),
        area_share=share.numpy(),
        weight_norms=None if norms is None else norms.double().numpy(),
        anchors=anchors.detach().numpy(),
    )


def illustration_data(seed: int = 0) -> IllustrationData:
    """Generate the toy problem, fit the four classifiers and compute their regions on the grid.

    Deterministic in ``seed``: every random draw comes from one private
    :class:`torch.Generator`, none from the global RNG.
    """
    with one_thread():
        return _compute(seed)


def _compute(seed: int) -> IllustrationData:
    """:func:`illustration_data`, on the current threads."""
    generator = torch.Generator().manual_seed(seed)
    points, labels = toy_data(generator)
    axis, grid = _grid(points)
    joint = train_joint(points, labels, generator)
    means = class_means(points, labels)
    tau_head = TauNormHead(joint, 1.0)
    unit_joint = tau_normalize(joint, 1.0)
    cosine = mean_cosine_head(means)
    ncm = NCMClassifier("l2").fit(points, labels, len(CLASS_COUNTS))
    with torch.no_grad():
        unit_means = F.normalize(means, dim=1)
        methods = (
            _regions("joint", "Joint (τ = 0)", grid @ joint.T, weight_norms(joint), joint),
            _regions("tau_norm", "τ-norm (τ = 1)", tau_head(grid), weight_norms(unit_joint), unit_joint),
            _regions(
                "cosine",
                "Cosine (class means as weights)",
                COSINE_SCALE * cosine(grid),
                weight_norms(unit_means),
                unit_means,
            ),
            _regions("ncm", "NCM (Euclidean)", ncm.decision_function(grid), None, ncm.centroids_),
        )
    return IllustrationData(
        points=points.numpy(),
        labels=labels.numpy(),
        counts=CLASS_COUNTS,
        grid_x=axis.numpy(),
        grid_y=axis.numpy().copy(),
        methods=methods,
    )


def illustration_figure(seed: int = 0) -> Figure:
    """The four panels side by side: shaded regions, the points, the weights or means, the head's area share."""
    # The object-oriented API with the Agg canvas: no GUI backend, no global pyplot state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    data = illustration_data(seed)
    figure = Figure(figsize=(16, 5.3), dpi=100)
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, len(data.methods), sharex=True, sharey=True)
    joint = data.method("joint")
    half = float(data.grid_x[-1])
    for axes, regions in zip(panels, data.methods, strict=True):
        # One image rather than a mesh of G*G cells: a mesh makes a huge, slow SVG.
        step = float(data.grid_x[1] - data.grid_x[0])
        axes.imshow(
            regions.predictions,
            origin="lower",
            extent=(
                data.grid_x[0] - step / 2,
                data.grid_x[-1] + step / 2,
                data.grid_y[0] - step / 2,
                data.grid_y[-1] + step / 2,
            ),
            cmap=ListedColormap(_REGION_COLOURS),
            vmin=-0.5,
            vmax=len(data.counts) - 0.5,
            interpolation="nearest",
        )
        _draw_boundaries(axes, data, regions.predictions, colors="black", linestyles="solid")
        if regions is not joint:
            # Where Joint drew its boundaries, to see how far they moved.
            _draw_boundaries(axes, data, joint.predictions, colors="0.25", linestyles="dashed")
        _draw_points(axes, data)
        _draw_anchors(axes, regions, half)
        axes.set_title(_panel_title(regions), fontsize=10)
        axes.set_aspect("equal")
        axes.set_xlim(-half, half)
        axes.set_ylim(-half, half)
        axes.tick_params(labelsize=8)
        axes.label_outer()
    handles = [
        Line2D([], [], marker="o", linestyle="", color=_POINT_COLOURS[label], label=f"class {label}: {name}, n = {n}")
        for label, (name, n) in enumerate(zip(_CLASS_NAMES, data.counts, strict=True))
    ]
    handles += [
        Line2D([], [], color="black", label="arrows: weights $w_j$ (length ∝ norm); ✕: class means"),
        Line2D([], [], color="0.25", linestyle="dashed", label="Joint's boundaries"),
    ]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=9)
    counts = " / ".join(str(n) for n in data.counts)
    figure.suptitle(
        f"Decision regions on a 2-D long-tailed toy problem ({counts} points per class, seed {seed}): "
        "the head's region shrinks once the classifier stops favouring it",
        fontsize=12,
    )
    figure.tight_layout(rect=(0, 0.05, 1, 0.95))
    return figure


def _panel_title(regions: MethodRegions) -> str:
    """The method, the head's share of the area, and the weight norms where they matter."""
    head, tail = 100 * regions.area_share[0], 100 * regions.area_share[-1]
    lines = [regions.title, f"head's region: {head:.1f}% of the area (tail {tail:.1f}%)"]
    if regions.name == "joint":
        lines.append("‖w‖ = " + " / ".join(f"{norm:.2f}" for norm in regions.weight_norms))
    elif regions.weight_norms is not None:
        lines.append("‖w‖ = 1 for every class")
    else:
        lines.append("regions: Voronoi cells of the means")
    return "\n".join(lines)


def _draw_boundaries(axes: Any, data: IllustrationData, predictions: np.ndarray, **style: Any) -> None:
    """Lines where the predicted class changes: the contour of each class's indicator at 1/2."""
    for label in range(len(data.counts)):
        inside = (predictions == label).astype(float)
        if 0 < inside.mean() < 1:
            axes.contour(data.grid_x, data.grid_y, inside, levels=[0.5], linewidths=1, **style)


def _draw_points(axes: Any, data: IllustrationData) -> None:
    """The training points, head first so that the few tail points are drawn on top and stay visible."""
    for label in range(len(data.counts)):
        chosen = data.labels == label
        axes.scatter(
            data.points[chosen, 0],
            data.points[chosen, 1],
            s=3 if label == 0 else 10,
            color=_POINT_COLOURS[label],
            alpha=0.45 if label == 0 else 0.9,
            linewidths=0,
        )


def _draw_anchors(axes: Any, regions: MethodRegions, half: float) -> None:
    """Weights as arrows from the origin (length proportional to their norm), or class means as crosses."""
    if regions.weight_norms is None:
        for label, (x, y) in enumerate(regions.anchors):
            axes.scatter([x], [y], marker="X", s=120, color=_POINT_COLOURS[label], edgecolors="black", linewidths=1)
        return
    scale = 0.55 * half / float(regions.weight_norms.max())
    for label, (x, y) in enumerate(regions.anchors):
        axes.annotate(
            "",
            xy=(scale * x, scale * y),
            xytext=(0, 0),
            arrowprops={
                "arrowstyle": "-|>",
                "color": _POINT_COLOURS[label],
                "linewidth": 2.2,
                "shrinkA": 0,
                "shrinkB": 0,
                "mutation_scale": 16,
            },
        )


def write_illustration(out: Path, seed: int = 0) -> Path:
    """Write the figure to ``out`` in the format its suffix names (.png, .svg, .pdf), atomically.

    The figure goes to a temporary file beside ``out``, which is then renamed
    over it: a crash leaves the old file or the new one, never half of one.

    Raises:
        ConfigError: the suffix is not one of those.
    """
    figure_format(out)  # before the seconds of training the toy heads
    return write_figure(illustration_figure(seed), out)
