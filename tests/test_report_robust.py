"""`report` and `compare` on hostile input: odd class names, damaged run files, failures part-way, bad file names.

Every case goes through ``longtail.cli.main`` as a user would and checks the
promise of issue 14: exit status 1 and one ``longtail: error:`` line naming the
file and what was expected, no traceback, and the previous report left whole.
One tiny run on an image folder whose class names hold mathtext, a newline and
pipes is trained once for the module; cases that damage it work on a copy.
"""

from __future__ import annotations

import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from conftest import copy_run
from datagen import write_imagefolder_dataset
from longtail.cli import main
from longtail.report import build
from longtail.report.confusion_figures import confusion_figure
from longtail.report.figures import (
    figure_png,
    per_class_accuracy_figure,
    training_curves_figure,
    weight_norm_figure,
)
from longtail.report.render import Code, Paragraph, Section, Table, render_html, render_markdown

# Sorted as the imagefolder reader sorts them: class i is NAMES[i].
NAMES = sorted(["a$^$b", "c\nd", "e|f", "g\\|h", "plain"])
TRAIN = [12, 8, 6, 5, 4]
RUN_KEYS = [
    "data.image_size=16",
    "train.epochs=1",
    "train.batch_size=16",
    "eval.many=10",
    "eval.few=5",
    "eval.batch_size=64",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch run with τ-norm on class folders named with ``$``, a newline and pipes, and its report."""
    base = tmp_path_factory.mktemp("robust")
    root = write_imagefolder_dataset(base / "data", NAMES, TRAIN, test_per_class=3)
    out = base / "run"
    keys = ["data.name=imagefolder", f"data.root={root}", *RUN_KEYS]
    assert main(["train", *keys, "--out", str(out), "--no-progress"]) == 0
    assert main(["decouple", str(out), "--method", "tau_norm"]) == 0
    assert main(["report", str(out)]) == 0
    return out


@pytest.fixture
def copy(run: Path, tmp_path: Path) -> Path:
    """A copy of the module's run (with its report) that a test may damage."""
    return Path(shutil.copytree(run, tmp_path / "run", symlinks=True))


def one_error_line(capsys: pytest.CaptureFixture, *expected: str) -> str:
    """The single ``longtail: error:`` line on stderr (no traceback), holding every ``expected`` text."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("longtail: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]


def report_snapshot(run_dir: Path) -> dict[str, bytes]:
    """The bytes of report.md, report.html and every file of report_files/, by relative path."""
    files = [run_dir / "report.md", run_dir / "report.html", *sorted((run_dir / "report_files").rglob("*"))]
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in files if p.is_file()}


def staging_left(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.glob(".report.*"))


# --- 1. class names: plain text in figures, one row per class in Markdown -------------------


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[str] = []

    def handle_data(self, data: str) -> None:
        self.cells.append(data)


def test_class_names_with_mathtext_newlines_and_pipes_are_reported(run: Path):
    markdown = (run / "report.md").read_text()
    lines = markdown.splitlines()
    start = lines.index("| class | name | train images | group | test images | Joint | τ-norm |")
    end = lines.index("", start)
    table = lines[start + 2 : end]
    assert len(table) == len(NAMES)  # one Markdown row per class: the newline did not split one
    header_cells = len(lines[start].split(" | "))
    for row in table:
        # Cells are split at pipes not preceded by an escaping backslash (an escaped backslash is "\\").
        unescaped = row.replace("\\\\", "").replace("\\|", "")
        assert len(unescaped.split(" | ")) == header_cells, row
    assert r"a\$^\$b" in markdown and "c<br>d" in markdown and r"e\|f" in markdown and r"g\\\|h" in markdown
    parser = _Text()
    parser.feed((run / "report.html").read_text())
    for name in NAMES:
        assert name in parser.cells, name  # the HTML shows each name exactly, escaped and unescaped again
    assert len(list((run / "report_files").glob("fig*.png"))) == 8


def test_figures_draw_user_text_literally():
    counts = np.array([30, 9, 3])
    names = ["$x$", "a$^$b", "$\\frac{"]  # each would be mathtext, or a mathtext error, if parsed
    norms = {"joint": np.ones(3), "tau_norm": np.ones(3)}
    figures = [
        weight_norm_figure(norms, counts, names, labels={"joint": "$^$"}),
        per_class_accuracy_figure({"joint": np.array([50.0, 20.0, np.nan])}, counts, many=20, few=5, class_names=names),
        confusion_figure({"joint": np.eye(3)}, names, labels={"joint": "a$^$b"}),
        training_curves_figure([{"epoch": 1, "val_$^$": 3.0, "train_loss": "x"}, {"epoch": "2", "train_loss": 1.0}]),
    ]
    for figure in figures:
        assert figure_png(figure).startswith(b"\x89PNG")
    drawn = [t.get_text() for t in figures[0].axes[0].get_xticklabels()]
    assert drawn[1] == r"a\$^\$b (9)"  # escaped: matplotlib then draws "a$^$b (9)" as plain text


def test_markdown_tables_keep_one_line_per_row_and_html_stays_escaped():
    names = ["two\nlines", "pipe|name", "back\\", "lone`tick", "<b>&amp;</b>", "`code\n|span`", "crlf\r\nx"]
    table = Table(["name", "n"], [[name, "1"] for name in names], "lr")
    sections = [Section("T\nitle", "t", [Paragraph("p"), table, Code("a: ```\n")])]
    markdown = render_markdown("run\nname", sections, "files")
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len(rows) == len(names) + 2
    for row in rows[2:]:
        assert row.replace("\\\\", "").replace("\\|", "").count("|") == 3, row
    assert "two<br>lines" in markdown and "crlf<br>x" in markdown and "`code \\|span`" in markdown
    assert "&lt;b&gt;&amp;amp;&lt;/b&gt;" in markdown and r"lone\`tick" in markdown and r"back\\" in markdown
    assert "# run name" in markdown and "## T itle" in markdown
    assert "````yaml\na: ```\n````" in markdown  # the fence outlasts the backticks of the text
    page = render_html("t", sections)
    assert "&lt;b&gt;&amp;amp;&lt;/b&gt;" in page and "<b>" not in page
    assert "two\nlines" in page and "pipe|name" in page


# --- 2. a report that fails part-way leaves the old one whole --------------------------------


def _raise(*_args, **_kwargs):
    raise RuntimeError("injected failure")


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
@pytest.mark.parametrize("where", ["calibration_figure", "render_html", "write_text_atomic"])
def test_a_report_failing_part_way_keeps_the_old_report(copy: Path, where: str, monkeypatch):
    (copy / "report_files" / "notes.txt").write_text("mine")
    before = report_snapshot(copy)
    monkeypatch.setattr(build, where, _raise)
    with pytest.raises(RuntimeError, match="injected"):
        main(["report", str(copy)])
    assert report_snapshot(copy) == before
    assert staging_left(copy) == []


def test_a_report_failing_while_moving_into_place_puts_the_old_report_back(copy: Path, monkeypatch):
    before = report_snapshot(copy)
    real_replace = os.replace

    def replace(src, dst):  # the Markdown cannot replace the old one: the new report_files/ must go back
        if Path(dst) == copy / "report.md":
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    try:
        status = main(["report", str(copy)])
    except OSError:  # today; a full disk may become a one-line error of the CLI
        status = 1
    monkeypatch.undo()
    assert status == 1
    assert report_snapshot(copy) == before
    assert staging_left(copy) == []


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
def test_a_new_report_replaces_the_figures_keeps_user_files_and_removes_dead_staging(copy: Path):
    (copy / "report_files" / "notes.txt").write_text("mine")
    (copy / "report_files" / "fig9_gone.png").write_bytes(b"stale")
    dead = copy / ".report.4194399.x.tmp"  # above Linux's largest PID: its process cannot be alive
    live = copy / ".report.1.y.tmp"  # PID 1 is alive: another report may still be building there
    dead.mkdir()
    live.mkdir()
    assert main(["report", str(copy)]) == 0
    files = sorted(p.name for p in (copy / "report_files").iterdir())
    assert "fig9_gone.png" not in files and "notes.txt" in files and len([f for f in files if f.startswith("fig")]) == 8
    assert (copy / "report_files" / "notes.txt").read_text() == "mine"
    assert staging_left(copy) == [live.name]
    mode = (copy / "report_files").stat().st_mode & 0o777
    assert mode == 0o777 & ~_umask()  # not the 0700 of a temporary folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- 3. damaged metrics.jsonl and results.json of the wrong shape ----------------------------


@pytest.mark.parametrize(
    "line, expected",
    [
        ('{"epoch": 1, "train_loss": 2.0', ["metrics.jsonl:2", "not valid JSON"]),
        ("[1, 2]", ["metrics.jsonl:2", "a list of 2 items", "expected an object"]),
        ('{"epoch": "one"}', ["metrics.jsonl:2", "epoch is a string ('one')", "expected an integer"]),
        ("[" * 100_000 + "]" * 100_000, ["metrics.jsonl:2", "nested 100000 levels deep, at most 64"]),
    ],
)
def test_damaged_metrics_line_is_one_error_and_keeps_the_report(copy: Path, line: str, expected, capsys):
    before = report_snapshot(copy)
    metrics = copy / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines()[0] + "\n" + line + "\n")
    assert main(["report", str(copy)]) == 1
    one_error_line(capsys, str(metrics), *expected)
    assert report_snapshot(copy) == before


def test_metrics_that_is_not_utf8_names_the_line(copy: Path, capsys):
    (copy / "metrics.jsonl").write_bytes(b'{"epoch": 1}\n{"epoch": 2, "x": "\xff"}\n')
    assert main(["report", str(copy)]) == 1
    one_error_line(capsys, "metrics.jsonl:2", "not UTF-8")


def _damage(results: dict, change: str) -> object:
    """``results`` with one thing wrong, as a user's edit or another tool might leave it."""
    if change == "top-level list":
        return [results]
    if change == "methods list":
        return {**results, "methods": list(results["methods"])}
    if change == "score string":
        results["methods"]["joint"]["all"] = "98.1"
    elif change == "per_class item":
        results["methods"]["joint"]["per_class"][1] = {"a": 1}
    elif change == "method not an object":
        results["methods"]["joint"] = 55.0
    elif change == "timing string":
        results["timing"]["train_seconds"] = "12s"
    elif change == "decouple seconds":
        results["timing"]["decouple_seconds"] = {"crt": None}
    elif change == "curve without tau":
        results["tau_curve"] = {"val": [{"all": 1.0}]}
    elif change == "auto chosen string":
        results["auto"] = {"chosen": "crt"}
    elif change == "stage2 entry":
        results["stage2"] = {"crt": "cached"}
    elif change in VALUE_CHANGES:
        *keys, value = VALUE_CHANGES[change][0]
        entry = results
        for key in keys[:-1]:
            entry = entry.setdefault(key, {})
        entry[keys[-1]] = value
    return results


# Values of the right type that no results.json of longtail holds: printed as scores before (a NaN, an
# infinity, a column of 300 digits for 1e308), or a traceback in `report` (provenance), `eval` (scored) and
# `compare --paired` (shot_thresholds). Each: (key path..., value), then the texts of the one-line error.
VALUE_CHANGES = {
    "score NaN": (("methods", "joint", "all", float("nan")), "methods.joint.all is the number nan"),
    "score 1e308": (("methods", "joint", "macro", 1e308), "methods.joint.macro is the number 1e+308"),
    "score negative": (("methods", "joint", "few", -5.0), "methods.joint.few is the number -5.0"),
    "score above 100": (("methods", "joint", "many", 150.0), "methods.joint.many is the number 150.0"),
    "interval infinite": (("methods", "joint", "ci", "all", [1.0, float("inf")]), "methods.joint.ci.all is a list"),
    "tau infinite": (("methods", "tau_norm", "tau", float("inf")), "methods.tau_norm.tau is the number inf"),
    "seconds negative": (("timing", "train_seconds", -3.0), "timing.train_seconds is the number -3.0"),
    "count negative": (("train_counts", [5, -1]), "train_counts[1] is the number -1"),
    "provenance list": (("provenance", [1]), "provenance is a list of 1 item"),
    "data fingerprint number": (("provenance", "data", {"test": 3}), "provenance.data.test is the number 3"),
    "scored list": (("scored", [1]), "scored is a list of 1 item"),
    "scored record": (("scored", {"test": {"crt": {"data": None}}}), "scored.test.crt.data is null"),
    "threshold string": (("shot_thresholds", {"many": "a"}), "shot_thresholds.many is a string ('a')"),
}


CHANGES = {
    "top-level list": ["the top level is a list of 1 item", "expected an object"],
    "methods list": ["methods is a list", "expected an object"],
    "score string": ["methods.joint.all is a string ('98.1')", "expected a percentage 0 to 100, or null"],
    "per_class item": ["methods.joint.per_class[1] is an object", "expected a percentage 0 to 100, or null"],
    "method not an object": ["methods.joint is the number 55.0", "expected an object"],
    "timing string": ["timing.train_seconds is a string ('12s')", "expected a number of seconds (0 or more)"],
    "decouple seconds": ["timing.decouple_seconds.crt is null", "expected a number"],
    "curve without tau": ["tau_curve.val[0].tau is null", "expected a number (τ)"],
    "auto chosen string": ["auto.chosen is a string ('crt')", "expected an object"],
    "stage2 entry": ["stage2.crt is a string ('cached')", "expected an object"],
}


def _compare_run(path: Path) -> Path:
    """A run directory as compare reads it: config, checkpoint marker and a results.json longtail would write."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("seed: 0\n")
    (path / "checkpoint.pt").write_bytes(b"")
    summary = {"many": 90.0, "medium": 50.0, "few": 10.0, "all": 60.0, "macro": 55.0, "per_class": [90.0, 10.0]}
    results = {
        "methods": {"joint": dict(summary), "tau_norm": {**summary, "tau": 0.9}},
        "timing": {"train_seconds": 10.0, "features_seconds": 1.0, "decouple_seconds": {"tau_norm": 0.5}},
    }
    (path / "results.json").write_text(json.dumps(results))
    return path


@pytest.mark.parametrize("change", [*CHANGES, *VALUE_CHANGES])
def test_compare_on_results_of_the_wrong_shape_or_values_no_run_writes_is_one_error(change: str, tmp_path, capsys):
    good, bad = _compare_run(tmp_path / "good"), _compare_run(tmp_path / "bad")
    results = bad / "results.json"
    results.write_text(json.dumps(_damage(json.loads(results.read_text()), change)))
    assert main(["compare", str(good), str(bad)]) == 1
    said = CHANGES[change] if change in CHANGES else [VALUE_CHANGES[change][1], "expected"]
    one_error_line(capsys, str(results), *said, "longtail eval")


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
@pytest.mark.parametrize("change", ["provenance list", "scored list"])
def test_eval_and_report_on_a_damaged_record_are_one_error(change: str, tiny_run: Path, tmp_path: Path, capsys):
    # `report` read results.json's provenance, `eval` its scored records, as objects: AttributeError tracebacks.
    run = copy_run(tiny_run, tmp_path / "run")
    results = run / "results.json"
    results.write_text(json.dumps(_damage(json.loads(results.read_text()), change)))
    for command in ("eval", "report"):
        assert main([command, str(run)]) == 1
        one_error_line(capsys, str(results), VALUE_CHANGES[change][1], "expected an object")


@pytest.mark.parametrize(
    "content, expected",
    [
        (b'{"methods": {"joint": ', "not valid JSON (JSONDecodeError)"),
        (b'{"methods": "\xff\xfe"}', "results.json:1: not UTF-8 text"),
        (b"[" * 100_000, "not valid JSON for longtail (nested 100000 levels deep, at most 64)"),
    ],
    ids=["truncated", "not-utf8", "nested"],
)
def test_compare_on_results_that_are_not_json_is_one_error(content: bytes, expected: str, tmp_path: Path, capsys):
    bad = _compare_run(tmp_path / "bad")
    (bad / "results.json").write_bytes(content)
    assert main(["compare", str(bad)]) == 1
    one_error_line(capsys, str(bad / "results.json"), expected)


def test_compare_still_reads_extra_keys_and_nulls(tmp_path: Path, capsys):
    run_dir = _compare_run(tmp_path / "run")
    results = json.loads((run_dir / "results.json").read_text())
    results["methods"]["joint"]["few"] = None  # an empty shot group
    results["notes"] = ["a user's own key"]
    (run_dir / "results.json").write_text(json.dumps(results))
    assert main(["compare", str(run_dir)]) == 0
    assert "Joint" in capsys.readouterr().out


@pytest.mark.parametrize("change", ["top-level list", "score string", "auto chosen string"])
def test_report_on_results_of_the_wrong_shape_is_one_error_and_keeps_the_report(copy: Path, change: str, capsys):
    before = report_snapshot(copy)
    results = copy / "results.json"
    results.write_text(json.dumps(_damage(json.loads(results.read_text()), change)))
    assert main(["report", str(copy)]) == 1
    one_error_line(capsys, str(results), *CHANGES[change])
    assert report_snapshot(copy) == before


# --- 4. file names that are not UTF-8 in an image folder -----------------------------------


def _stats(root: Path) -> int:
    return main(["data", "stats", "data.name=imagefolder", f"data.root={root}", "data.image_size=16"])


@pytest.mark.parametrize("where", ["image", "class folder", "sub-folder"])
def test_image_folder_name_that_is_not_utf8_is_named_by_its_bytes(where: str, tmp_path: Path, capsys):
    root = write_imagefolder_dataset(tmp_path / "data", ["a", "b"], [4, 3], test_per_class=1)
    image = next((root / "train" / "a").iterdir()).read_bytes()
    folder = os.fsencode(root / "train")
    if where == "image":
        folder += b"/a"
        bad = b"bad\xff.png"
    elif where == "class folder":
        bad = b"cl\xe9ss"
        os.mkdir(folder + b"/" + bad)
        with open(folder + b"/" + bad + b"/0.png", "wb") as handle:
            handle.write(image)
    else:
        folder += b"/a"
        bad = b"sub\xc3"
        os.mkdir(folder + b"/" + bad)
    if where != "class folder":
        with open(folder + b"/" + bad + (b"/0.png" if where == "sub-folder" else b""), "wb") as handle:
            handle.write(image)
    assert _stats(root) == 1
    one_error_line(capsys, os.fsdecode(folder), repr(bad), "not valid UTF-8")


def test_image_folder_ignores_a_non_utf8_file_that_is_not_an_image(tmp_path: Path, capsys):
    root = write_imagefolder_dataset(tmp_path / "data", ["a", "b"], [4, 3], test_per_class=1, val_per_class=1)
    with open(os.fsencode(root / "train" / "a") + b"/notes\xff.txt", "wb") as handle:
        handle.write(b"not an image")
    assert _stats(root) == 0
    assert "Traceback" not in capsys.readouterr().err
