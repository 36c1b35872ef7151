"""``longtail compare``: rows per run and method, wall time, best per column, Markdown output, bad input."""

import json
import logging
from pathlib import Path

import pytest

from longtail.cli import main
from longtail.errors import RunDirError
from longtail.evaluation.compare import PairedRow, comparison_rows, format_comparison, format_paired


def _summary(many: float, few: float, macro: float, **extra) -> dict:
    return {"many": many, "medium": 50.0, "few": few, "all": macro, "macro": macro, **extra}


def _fake_run(path: Path, methods: dict, timing: dict) -> Path:
    """A run directory as compare reads it: config, checkpoint marker, results.json."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("seed: 0\n")
    (path / "checkpoint.pt").write_bytes(b"")
    (path / "results.json").write_text(json.dumps({"methods": methods, "timing": timing}))
    return path


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    a = _fake_run(
        tmp_path / "a",
        {
            "tau_norm": _summary(80.0, 40.0, 65.0, tau=0.9),
            "joint": _summary(90.0, 10.0, 55.0),
            "crt": _summary(85.0, 45.0, 70.0),
        },
        {"train_seconds": 100.0, "features_seconds": 2.0, "decouple_seconds": {"tau_norm": 0.5, "crt": 8.0}},
    )
    b = _fake_run(
        tmp_path / "b",
        {"joint": _summary(88.0, 20.0, 60.0), "auto": _summary(84.0, 50.0, 70.0, tau=1.1, chosen="logit_adjust")},
        {"train_seconds": 60.0, "features_seconds": 1.0, "decouple_seconds": {"logit_adjust": 0.25, "auto": 0.75}},
    )
    return [a, b]


def test_rows_in_run_then_paper_order_with_wall_time(runs: list[Path]):
    rows = comparison_rows(runs)
    expected = [("a", "joint"), ("a", "crt"), ("a", "tau_norm"), ("b", "joint"), ("b", "auto")]
    assert [(r.run, r.method) for r in rows] == expected
    wall = {(r.run, r.method): r.wall_seconds for r in rows}
    assert wall[("a", "joint")] == 100.0
    assert wall[("a", "crt")] == 100.0 + 2.0 + 8.0
    assert wall[("b", "auto")] == 60.0 + 1.0 + 0.25 + 0.75  # auto needs every method fitted first
    assert [r.tau for r in rows] == [None, None, 0.9, None, 1.1]


def test_best_per_column_is_marked_ties_included(runs: list[Path]):
    text = format_comparison(comparison_rows(runs), markdown=True)
    lines = text.splitlines()
    assert lines[0] == "| Run | Method | Many | Medium | Few | All | Macro | τ | Wall (s) |"
    cells = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line for line in lines[2:]}
    assert "**90.0**" in cells[("a", "Joint")]  # best many
    assert "**50.0**" in cells[("b", "Auto (best on val)")]  # best few
    # macro 70.0 ties between a/cRT and b/Auto: both bold
    assert cells[("a", "cRT")].count("**70.0**") == 2 and cells[("b", "Auto (best on val)")].count("**70.0**") == 2
    assert "**60.0**" in cells[("b", "Joint")]  # least wall time
    assert text.count("**50.0**") == 5 + 1  # medium is 50.0 in all five rows (all best), plus Auto's few


def test_terminal_table_and_md_file(runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    md = tmp_path / "out" / "compare.md"
    md.parent.mkdir()
    assert main(["compare", *map(str, runs), "--md", str(md)]) == 0
    out = capsys.readouterr().out
    assert "90.0*" in out and "best in its column" in out
    assert md.read_text() == format_comparison(comparison_rows(runs), markdown=True) + "\n"


def test_clashing_names_use_paths(tmp_path: Path):
    timing = {"train_seconds": 1.0}
    one = _fake_run(tmp_path / "x" / "run", {"joint": _summary(1, 1, 1)}, timing)
    two = _fake_run(tmp_path / "y" / "run", {"joint": _summary(2, 2, 2)}, timing)
    assert [r.run for r in comparison_rows([one, two])] == [str(one), str(two)]


def test_not_a_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["compare", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path) in err and "not a run directory" in err


def test_run_without_scores(tmp_path: Path):
    run = _fake_run(tmp_path / "r", {}, {})
    with pytest.raises(RunDirError, match="no results.json scores"):
        comparison_rows([run])


def _paired(low: float, high: float) -> PairedRow:
    result = {"difference": (low + high) / 2, "ci": [low, high], "a_wins": 1.0, "ties": 0.0, "resamples": 1000}
    return PairedRow(run=None, a="crt", b="lws", metric="macro", result=result)


def test_the_paired_table_explains_within_noise_only_where_a_line_says_it():
    """'within noise' is defined where a line uses it; that training seeds come on top is said every time."""
    clear = format_paired([_paired(1.6, 2.5)])
    assert "A better" in clear and "within noise" not in clear and clear.endswith("`longtail grid --seeds`)")
    mixed = format_paired([_paired(1.6, 2.5), _paired(-0.8, 1.4)])
    assert mixed.splitlines()[-2].startswith("within noise: the 95% interval of A − B contains 0")
    assert mixed.endswith("`longtail grid --seeds`)")


def test_a_run_given_twice_is_shown_once(
    runs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    # `compare runs/a runs/a/` (or a run and its absolute path) printed the run's rows twice, every best cell
    # of it starred twice, with the same label.
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="longtail.evaluation.compare"):
        assert [r.run for r in comparison_rows(["a", "a/"])] == ["a", "a", "a"]
        assert [r.run for r in comparison_rows(["a", tmp_path / "a", "b"])] == ["a", "a", "a", "b", "b"]
    assert caplog.messages == [
        "compare: a: given twice; its rows are shown once",
        f"compare: {tmp_path / 'a'}: the same directory as a; its rows are shown once",
    ]


def test_a_folder_of_runs_is_compared_as_its_runs_and_named_elsewhere(runs: list[Path], tmp_path: Path, capsys):
    # `longtail auto --out D` / `grid --out D` write a folder of runs beside auto.json or grid.md: `compare D`
    # said "not a run directory (no config.yaml; create one with `longtail train --out DIR`)".
    (tmp_path / "auto.json").write_text("{}")
    assert [r.run for r in comparison_rows([tmp_path])] == ["a", "a", "a", "b", "b"]
    assert main(["report", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"longtail: error: {tmp_path}: a folder of 2 run(s) (a, b), not a run directory; give one of them "
        f"(`longtail compare {tmp_path}` compares them all)"
    )


def test_a_file_given_as_a_run_is_named_a_file(runs: list[Path]):
    # "run directory not found (create one with `longtail train --out runs/a/results.json`)": the file is
    # there, and train --out would refuse it.
    with pytest.raises(RunDirError, match=r"results.json: a file, not a directory; give its run directory, .*/a$"):
        comparison_rows([runs[0] / "results.json"])
    (runs[0] / "notes.txt").write_text("x")
    with pytest.raises(RunDirError, match=r"notes.txt: a file, not a directory, expected a run directory$"):
        comparison_rows([runs[0] / "notes.txt"])


def test_the_fingerprints_of_thirty_runs_are_not_one_line_of_thousands(tmp_path: Path):
    # 30 runs made a "fingerprints: ..." line of about 2,000 characters under a table 119 wide.
    names = [f"run-with-a-longer-name-{i:02d}" for i in range(30)]
    dirs = [_fake_run(tmp_path / name, {"joint": _summary(1, 1, 1)}, {"train_seconds": 1.0}) for name in names]
    text = format_comparison(comparison_rows(dirs))
    table_width = max(len(line) for line in text.splitlines()[:32])
    assert max(len(line) for line in text.splitlines()) <= max(table_width, 100)
    assert all(name in text for name in names) and text.count("(test data none)") == 30


def test_paired_rows_of_different_test_data_show_it_in_a_column():
    # Each row's test data was listed in the title: with many runs of different data one line of hundreds.
    rows = [_paired(1.6, 2.5), _paired(-0.8, 1.4)]
    rows[0].run, rows[1].run, rows[0].test_data, rows[1].test_data = "a", "b", "1" * 12, "2" * 12
    lines = format_paired(rows).splitlines()
    assert lines[0].endswith("(each run's in the Test data column)")
    assert lines[3].endswith("Test data")
    assert lines[5].split()[-3:] == ["A", "better", "1" * 12] and lines[6].split()[-3:] == ["within", "noise", "2" * 12]
    assert lines[-2].startswith("within noise: the 95% interval")
    same = format_paired([_paired(1.6, 2.5)]).splitlines()
    assert same[0].endswith("(data fingerprint none)") and "Test data" not in same[3]


def test_runs_whose_shot_groups_differ_say_so(tmp_path: Path):
    # A run of imbalance 10 beside one of 20 (or of another eval.many): the Many column of each is the mean of
    # other classes, and nothing said so.
    def run(name: str, counts: list[int], many: int) -> Path:
        path = _fake_run(tmp_path / name, {"joint": _summary(1, 1, 1)}, {"train_seconds": 1.0})
        results = json.loads((path / "results.json").read_text())
        results |= {"train_counts": counts, "shot_thresholds": {"many": many, "few": 20}}
        (path / "results.json").write_text(json.dumps(results))
        return path

    note = "the runs' shot groups differ (other class sizes or eval.many / eval.few)"
    same = [run("a", [100, 10], 50), run("b", [100, 10], 50)]
    assert note not in format_comparison(comparison_rows(same))
    assert note in format_comparison(comparison_rows([same[0], run("c", [100, 5], 50)]))
    assert note in format_comparison(comparison_rows([same[0], run("d", [100, 10], 40)]), markdown=True)
