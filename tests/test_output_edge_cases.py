"""Outputs at the edges: odd run and file names, closed pipes, one-panel and one-class figures, data read whole."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from longtail.cli import main
from longtail.config import config_to_dict, load_config
from longtail.data.stats import plot_class_sizes
from longtail.evaluation.compare import ComparisonRow, comparison_rows, format_comparison
from longtail.evaluation.table import COLUMNS
from longtail.grid import grid_markdown
from longtail.grid.run import GRID_DEFAULTS
from longtail.report.figures import tau_sweep_figure


def test_the_tau_sweep_legend_fits_a_figure_of_one_panel():
    # A run decoupled with τ-norm alone (no logit adjustment) has one panel, 5.8 inches wide: the legend's six
    # entries in one row ran off both edges ("ll" ... "test (show").
    points = [{"tau": t, "all": 50 + t, "many": 60 - t, "few": 30 + 5 * t} for t in (0.0, 0.5, 1.0)]
    figure = tau_sweep_figure({"tau_norm": {"select": "val macro", "chosen": 0.5, "val": points, "test": points}})
    renderer = figure.canvas.get_renderer()
    figure.canvas.draw()
    legend = figure.legends[0].get_window_extent(renderer)
    assert legend.x0 >= 0 and legend.x1 <= figure.bbox.width


def test_compare_markdown_keeps_its_notes_out_of_the_table():
    # A line right after a Markdown table is one more row of it (GitHub, markdown-it): the fingerprints note
    # was rendered as a row of the comparison.
    row = ComparisonRow("run", "joint", dict.fromkeys(COLUMNS, 50.0), None, 1.0, fingerprint="a" * 12)
    lines = format_comparison([row], markdown=True).splitlines()
    last_row = max(i for i, line in enumerate(lines) if line.startswith("|"))
    assert lines[last_row + 1] == "" and lines[last_row + 2].startswith("fingerprints: run aaaaaaaaaaaa")


def test_compare_keeps_one_line_per_row_for_run_names_with_a_newline_or_a_pipe(tmp_path: Path):
    # Run directories named "a|b" and "new<newline>line": the Markdown row split at the "|" into one cell too
    # many, and both tables (and the fingerprints note) broke the row over two lines.
    runs = []
    for name in ("a|b", "new\nline"):
        run = tmp_path / name
        run.mkdir()
        results = {"methods": {"joint": {"many": 50.0, "medium": None, "few": 10.0, "all": 40.0, "macro": 30.0}}}
        (run / "results.json").write_text(json.dumps(results))
        (run / "config.yaml").write_text("seed: 0\n")
        (run / "checkpoint.pt").write_bytes(b"")  # compare reads results.json alone
        runs.append(run)
    rows = comparison_rows(runs)
    markdown = format_comparison(rows, markdown=True).splitlines()
    table = [line for line in markdown if line.startswith("|")]
    assert len(table) == 4 and all(len(re.findall(r"(?<!\\)\|", line)) == 10 for line in table)
    assert "| a\\|b | Joint |" in table[2] and "| new\\nline | Joint |" in table[3]
    terminal = format_comparison(rows).splitlines()
    assert terminal[2].startswith("a|b ") and terminal[3].startswith("new\\nline ")
    assert terminal[4] == "fingerprints: a|b none (test data none), new\\nline none (test data none)"


def test_the_grid_document_describes_data_used_whole_as_it_is():
    # `grid data.name=features data.path=F.npz`: the document said "5000 images in the largest class, imbalance
    # factor 100 (exp profile, data seed 0); validation 20 per class from training images outside the subset",
    # the grid's defaults for a drawn subset, of a file read whole (its largest class held 200 vectors).
    cell = dict.fromkeys(COLUMNS, 50.0)
    grid = {"samplers": {"instance": dict.fromkeys(["joint", "ncm", "crt", "tau_norm", "lws"], cell)}}
    grid |= {"trainable": {}, "losses": {}, "seconds": 1.0}
    config = load_config(None, [*GRID_DEFAULTS, "data.name=features", "data.path=f.npz"])
    markdown = grid_markdown({**grid, "config": config_to_dict(config)}, "longtail grid")
    data = next(line for line in markdown.splitlines() if line.startswith("Data: "))
    assert "largest class" not in data and "subset" not in data
    assert data.startswith("Data: `features` (`f.npz`), read whole: its own class sizes;")
    drawn = grid_markdown({**grid, "config": config_to_dict(load_config(None, GRID_DEFAULTS))}, "longtail grid")
    assert "Data: `fashion_mnist_lt`, 5000 images in the largest class, imbalance factor 100" in drawn


class _ClosedPipe(io.StringIO):
    """Standard output whose reader has gone (`longtail compare RUN | head -1`)."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_reader_that_stops_reading_ends_the_command_quietly(tmp_path: Path, monkeypatch, capsys):
    # `longtail data stats ... | head -3` and `longtail compare RUN ... | head -1` ended in a BrokenPipeError
    # traceback: the status of a command ended by SIGPIPE, no traceback, nothing on stderr.
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"methods": {"joint": dict.fromkeys(COLUMNS, 50.0)}}))
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "checkpoint.pt").write_bytes(b"")  # compare reads results.json alone
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["compare", str(run)]) == 141
    assert capsys.readouterr().err == ""


def test_data_stats_plots_a_split_file_whose_name_holds_dollars(tmp_path: Path):
    # `longtail data stats 'l$^$ist.txt' --plot p.png`: the title, the file's name, was parsed as mathtext and
    # ended in a ParseSyntaxException traceback; it is drawn literally.
    listing = tmp_path / "l$^$ist.txt"
    listing.write_text("a/1.png 0\na/2.png 1\na/3.png 1\n")
    assert main(["data", "stats", str(listing), "--plot", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")


def test_data_stats_plots_in_the_format_its_name_says(tmp_path: Path, capsys: pytest.CaptureFixture):
    # `--plot p.svg` wrote PNG bytes under an .svg name (unreadable as SVG), `--plot p.jpg` or `--plot p` too;
    # now the suffix picks the format, as `illustrate --out` does, and another one is refused before drawing.
    listing = tmp_path / "list.txt"
    listing.write_text("a/1.png 0\na/2.png 1\na/3.png 1\n")
    for name, head in (("p.svg", b"<?xml"), ("p.PDF", b"%PDF")):
        assert main(["data", "stats", str(listing), "--plot", str(tmp_path / name)]) == 0
        assert (tmp_path / name).read_bytes().startswith(head)
    capsys.readouterr()
    for name in ("p.jpg", "p"):
        assert main(["data", "stats", str(listing), "--plot", str(tmp_path / name)]) == 1
        assert "expected a file name ending in .png, .svg, .pdf" in capsys.readouterr().err
        assert not (tmp_path / name).exists()


def test_the_class_size_plot_of_two_classes_has_whole_class_ranks(tmp_path: Path):
    # At 2 classes the rank axis read 0.00, 0.25, ..., 2.00: ranks of no class.
    from matplotlib.figure import Figure

    drawn: list[Figure] = []
    original = Figure.savefig
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Figure, "savefig", lambda self, *a, **k: (drawn.append(self), original(self, *a, **k))[1])
        plot_class_sizes([200, 2], tmp_path / "p.png", title="two")
        plot_class_sizes([200, 2], tmp_path / "v.png", title="features", unit="vectors")
    ticks = drawn[0].axes[0].get_xticks()
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)
    # A features file's samples are vectors, as `data stats` says in its text.
    assert drawn[0].axes[0].get_ylabel() == "images per class (log scale)"
    assert drawn[1].axes[0].get_ylabel() == "vectors per class (log scale)"


def test_a_shot_group_of_one_class_is_named_in_the_singular():
    # Figure 1's legend read "many-shot: 1 classes".
    from matplotlib.figure import Figure

    from longtail.report.figures import _rank_bands

    axes = Figure().add_subplot()
    names = [name for _, name in _rank_bands(axes, np.array([500, 60, 50, 5]), many=100, few=20)]
    assert names == ["many-shot: 1 class", "medium-shot: 2 classes", "few-shot: 1 class"]


def test_an_error_naming_a_path_with_a_line_break_stays_on_one_line(tmp_path: Path, capsys):
    # The message quoted the name as it is: a line break in it broke the one line of the error in two.
    assert main(["eval", str(tmp_path / "no\nrun")]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "no\\nrun" in err and err.startswith("longtail: error: ")


def test_a_file_in_the_way_of_an_output_folder_is_named(tmp_path: Path):
    # `export RUN --out f.txt/m.pt2` said "f.txt/m.pt2: file exists", as if the output itself existed.
    from longtail.errors import StorageError
    from longtail.fs.atomic import write_text_atomic

    (tmp_path / "f.txt").write_text("mine")
    for out in (tmp_path / "f.txt" / "m.pt2", tmp_path / "f.txt" / "sub" / "m.pt2"):
        with pytest.raises(StorageError) as error:
            write_text_atomic(out, "x")
        assert str(error.value) == f"{out}: {tmp_path / 'f.txt'} is a file, not a directory; nothing was written"
    assert (tmp_path / "f.txt").read_text() == "mine"


def test_the_class_size_plot_of_10000_classes_shows_its_head_on_a_log_rank_axis(tmp_path: Path):
    # 10,000 classes of 200 down to 2 on a linear rank axis: the 30 classes above 100 took 2 pixels at the left
    # edge and the plot seemed to peak near 100. Beyond 1,000 classes the rank axis is logarithmic, from rank 1.
    from matplotlib.figure import Figure

    drawn: list[Figure] = []
    original = Figure.savefig
    sizes = np.round(np.exp(np.linspace(np.log(200), np.log(2), 10_000))).astype(int).tolist()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Figure, "savefig", lambda self, *a, **k: (drawn.append(self), original(self, *a, **k))[1])
        plot_class_sizes(sizes, tmp_path / "big.png", title="big", unit="vectors")
        plot_class_sizes(sizes[:1000], tmp_path / "small.png", title="small", unit="vectors")
    big, small = drawn[0].axes[0], drawn[1].axes[0]
    assert big.get_xscale() == "log" and big.get_xlim() == (1, 10_001)
    assert "log scale" in big.get_xlabel()
    assert "10,000" in [label.get_text() for label in big.get_xticklabels()]  # plain numbers, no 10^4
    assert small.get_xscale() == "linear" and small.get_xlabel() == "class rank (largest first)"


def test_long_class_names_above_figure_2_are_cut_and_keep_its_layout():
    # Ten names of 55 characters, rotated above the plot, took the figure's height: matplotlib warned
    # "constrained_layout not applied because axes sizes collapsed to zero" on stderr and drew them cut off.
    import warnings

    from longtail.report.figures import NAME_ON_TOP_CHARS, figure_png, per_class_accuracy_figure

    names = [f"class number {i} with a rather long descriptive name" for i in range(10)]
    counts = [20, 14, 10, 7, 5, 3, 2, 2, 2, 1]
    per_class = {"joint": np.linspace(0, 100, 10), "crt": np.linspace(100, 0, 10)}
    figure = per_class_accuracy_figure(per_class, counts, many=100, few=20, class_names=names, unit="vectors")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure_png(figure)
    top = [a for a in figure.axes[0].child_axes if a.get_label() != ""] or figure.axes[0].child_axes
    labels = [t.get_text() for t in top[0].get_xticklabels()]
    assert labels and all(len(t) <= NAME_ON_TOP_CHARS for t in labels) and labels[0].endswith("…")
    assert figure.axes[0].get_legend() is not None


def test_report_names_a_run_with_a_line_break_on_one_line(tmp_path: Path, monkeypatch, capsys):
    # `longtail report 'dir<newline>run'` printed its "report: ..." line broken over four lines.
    import longtail.report

    run = tmp_path / "new\nline"
    paths = {"html": run / "report.html", "markdown": run / "report.md", "figures": run / "report_files"}
    monkeypatch.setattr(longtail.report, "write_report", lambda run_dir, overrides: paths)
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "new\\nline/report.html (self-contained)" in out


def test_compare_shows_a_method_key_it_did_not_write_as_one_short_cell():
    # results.json edited with a method "my<newline>method" and one of 300 characters: the first broke its row
    # over two lines, the second widened every row of the table to 390 characters.
    scores = dict.fromkeys(COLUMNS, 50.0)
    rows = [ComparisonRow("run", name, scores, None, None) for name in ("joint", "my\nmethod", "m" * 300)]
    lines = format_comparison(rows).splitlines()
    assert lines[3].startswith("run  my\\nmethod ") and lines[4].startswith("run  mmm")
    assert "(300 characters)" in lines[4] and max(len(line) for line in lines[:5]) < 150
