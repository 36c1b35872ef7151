"""The decision-region illustration: the computed toy problem, the figure, and `longtail illustrate`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from longtail.cli import main
from longtail.errors import LongtailError
from longtail.report.illustration import (
    CLASS_COUNTS,
    IllustrationData,
    illustration_data,
    illustration_figure,
    write_illustration,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data() -> IllustrationData:
    return illustration_data(seed=0)


def test_the_toy_problem_is_long_tailed(data: IllustrationData):
    assert data.counts == CLASS_COUNTS == (1000, 100, 10)
    assert data.points.shape == (sum(CLASS_COUNTS), 2)
    assert np.bincount(data.labels).tolist() == list(CLASS_COUNTS)
    assert [m.name for m in data.methods] == ["joint", "tau_norm", "cosine", "ncm"]
    for regions in data.methods:
        assert regions.predictions.shape == (len(data.grid_y), len(data.grid_x))
        assert regions.area_share.sum() == pytest.approx(1.0)
        # Every class keeps a region: nothing degenerate.
        assert (regions.area_share > 0.1).all(), regions.name


def test_the_head_region_is_widest_for_joint_and_shrinks_for_the_others(data: IllustrationData):
    head = {m.name: float(m.area_share[0]) for m in data.methods}
    assert head["joint"] > head["tau_norm"] > head["ncm"]
    assert head["joint"] > head["cosine"]
    # The class means split the plane about evenly: three clusters 120° apart at the same radius.
    assert head["ncm"] == pytest.approx(1 / 3, abs=0.05)
    # The head's region goes beyond a fair third under Joint.
    assert head["joint"] > 0.4
    # What τ-norm takes away from Joint's bias goes to the tail.
    assert data.method("tau_norm").area_share[2] > data.method("joint").area_share[2]


def test_weight_norms(data: IllustrationData):
    joint = data.method("joint").weight_norms
    assert joint[0] == joint.max()
    assert joint[0] > joint[1] > joint[2]  # the norms follow the class sizes, as in the paper's Figure 4
    np.testing.assert_allclose(data.method("tau_norm").weight_norms, 1.0, atol=1e-6)
    np.testing.assert_allclose(data.method("cosine").weight_norms, 1.0, atol=1e-6)
    assert data.method("ncm").weight_norms is None


def test_the_regions_are_those_of_the_weights_and_means(data: IllustrationData):
    grid_y, grid_x = np.meshgrid(data.grid_y, data.grid_x, indexing="ij")
    grid = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
    for name in ("joint", "tau_norm", "cosine"):
        regions = data.method(name)
        scores = grid @ regions.anchors.T
        if name == "cosine":
            scores = scores / np.linalg.norm(regions.anchors, axis=1)
        agree = (scores.argmax(axis=1).reshape(regions.predictions.shape) == regions.predictions).mean()
        assert agree > 0.999, name  # float32 against float64: ties on a boundary may differ
    ncm = data.method("ncm")
    means = np.stack([data.points[data.labels == label].mean(axis=0) for label in range(3)])
    np.testing.assert_allclose(ncm.anchors, means, atol=1e-5)
    nearest = ((grid[:, None, :] - means[None]) ** 2).sum(axis=2).argmin(axis=1)
    assert (nearest.reshape(ncm.predictions.shape) == ncm.predictions).mean() > 0.999


def test_same_seed_same_arrays_other_seed_same_ordering(data: IllustrationData):
    state = torch.random.get_rng_state()
    threads = torch.get_num_threads()
    again = illustration_data(seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    assert torch.get_num_threads() == threads
    np.testing.assert_array_equal(again.points, data.points)
    np.testing.assert_array_equal(again.labels, data.labels)
    for first, second in zip(data.methods, again.methods, strict=True):
        np.testing.assert_array_equal(first.predictions, second.predictions)
        np.testing.assert_array_equal(first.area_share, second.area_share)
        np.testing.assert_array_equal(first.anchors, second.anchors)
    other = illustration_data(seed=1)
    assert not np.array_equal(other.points, data.points)
    head = {m.name: float(m.area_share[0]) for m in other.methods}
    assert head["joint"] > head["tau_norm"] > head["ncm"] and head["joint"] > head["cosine"]


def test_the_figure_has_four_panels_with_the_head_share_in_the_titles(data: IllustrationData):
    figure = illustration_figure(seed=0)
    panels = figure.axes
    assert len(panels) == 4
    for axes, regions in zip(panels, data.methods, strict=True):
        assert regions.title in axes.get_title()
        assert f"{100 * regions.area_share[0]:.1f}%" in axes.get_title()
    legend = " ".join(text.get_text() for text in figure.legends[0].get_texts())
    assert "n = 1000" in legend and "n = 100" in legend and "n = 10" in legend


def test_cli_writes_png_and_svg(tmp_path: Path, capsys: pytest.CaptureFixture):
    from PIL import Image

    png = tmp_path / "figs" / "regions.png"
    assert main(["illustrate", "--out", str(png)]) == 0
    assert str(png) in capsys.readouterr().out
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        width, height = image.size
        assert width > 2 * height > 600
    assert [p.name for p in png.parent.iterdir()] == ["regions.png"]  # no temporary file left behind

    svg = tmp_path / "regions.svg"
    assert main(["illustrate", "--out", str(svg), "--seed", "3"]) == 0
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and text.rstrip().endswith("</svg>")


def test_a_bad_suffix_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "regions.jpg"
    assert main(["illustrate", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "regions.jpg" in err and ".png" in err and ".svg" in err and ".pdf" in err
    assert not out.exists()
    with pytest.raises(LongtailError, match="regions.txt"):
        write_illustration(tmp_path / "regions.txt")


@pytest.mark.parametrize("seed", ["99999999999999999999", "-1"])
def test_a_seed_beyond_the_generator_is_one_line(seed: str, tmp_path: Path, capsys: pytest.CaptureFixture):
    # 10^20 was a ValueError traceback ("Overflow when unpacking long long") from torch's generator; the range
    # is the seed key's.
    out = tmp_path / "regions.png"
    assert main(["illustrate", "--seed", seed, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"longtail: error: --seed {seed}: expected an integer in [0, 2**63), as the seed key"
    assert not out.exists()
