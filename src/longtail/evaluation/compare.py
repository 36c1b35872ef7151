"""``longtail compare``: one table across runs and methods, the best of each column marked.

Rows are (run, method) pairs from each run's ``results.json`` (test split);
columns are many / medium / few / all / macro top-1 (%), τ where the method
has one, and wall time. A method's wall time is what it took from scratch:
stage-1 training, plus (for stage-2 methods) the feature pass and its own
fitting; ``auto`` needs every method fitted first, so it counts all of them.
The best cell of a column (highest accuracy, least time; every tie) is bold in
Markdown and starred in the terminal; each accuracy carries the half-width of
its 95 % bootstrap interval (``78.8 ±1.1``) where results.json has one.

``compare --paired A B`` is the paired bootstrap of the difference between two
methods (of each run, or of two runs on one test set) from the runs' per-image
test predictions (:mod:`longtail.evaluation.predictions`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.fingerprint import short
from ..errors import ConfigError, RunDirError, one_line, shown
from ..methods import METHODS, display_order, label_of
from ..runs import CONFIG_FILE, read_results, require_run_dir, runs_in
from .bootstrap import METRICS, paired_bootstrap
from .metrics import shot_groups, summary_agrees
from .predictions import read_predictions
from .table import COLUMNS, INTERVAL_NOTE, render_table, with_interval

HEADER = ("Run", "Method", "Many", "Medium", "Few", "All", "Macro", "τ", "Wall (s)")
METHOD_CHARS = 30  # characters of a method's name in the table (longtail's own are at most 18)
NOTE_WIDTH = 100  # characters of a note's line under a table narrower than this

logger = logging.getLogger(__name__)


@dataclass
class ComparisonRow:
    """One method of one run: its test accuracies (%), τ and wall time (s); None where it does not apply."""

    run: str
    method: str
    scores: dict[str, float | None]
    tau: float | None
    wall_seconds: float | None
    # Column -> 95 % bootstrap interval [low, high] from results.json (empty for older results).
    ci: dict[str, list[float] | None] = field(default_factory=dict)
    # The run's fingerprint and its test data's (short forms; "none" for a run of an older longtail).
    fingerprint: str = "none"
    test_data: str = "none"
    # What defines the run's many / medium / few groups: its class sizes and thresholds (None: not recorded).
    groups: tuple[Any, ...] | None = None


def run_fingerprints(results: dict[str, Any]) -> tuple[str, str]:
    """(run fingerprint, test-data fingerprint) of a results.json, short forms; "none" where it records none."""
    provenance = results.get("provenance")
    if not isinstance(provenance, dict):
        return "none", "none"
    data = provenance.get("data") if isinstance(provenance.get("data"), dict) else {}
    return short(provenance.get("fingerprint")), short(data.get("test"))


def _wall_seconds(method: str, timing: dict[str, Any]) -> float | None:
    train = timing.get("train_seconds")
    if train is None:
        return None
    if method == "joint":
        return train
    stage2 = timing.get("decouple_seconds", {})
    if method not in stage2:
        return None
    chooses = method in METHODS and METHODS[method].chooses_among_others  # auto needs every method fitted first
    fitting = sum(stage2.values()) if chooses else stage2[method]
    return train + timing.get("features_seconds", 0.0) + fitting


def _groups_of(results: dict[str, Any]) -> tuple[Any, ...] | None:
    """(class sizes, many, few) of a results.json, what its shot groups are made of; None where it has none."""
    counts = results.get("train_counts")
    if not isinstance(counts, list):
        return None
    thresholds = results.get("shot_thresholds") or {}
    return tuple(counts), thresholds.get("many", 100), thresholds.get("few", 20)


def _run_labels(run_dirs: Sequence[Path]) -> list[str]:
    """Directory names, or the paths as given where two names clash; control characters as escapes
    (``new\\nline``), so that a name with a line break keeps its row on one line."""
    names = [p.name for p in run_dirs]
    labels = [p.name if names.count(p.name) == 1 else str(p) for p in run_dirs]
    return [one_line(label) for label in labels]


def expand_run_dirs(run_dirs: Sequence[str | Path]) -> list[Path]:
    """The runs to compare: each run directory as given, a folder of runs (`longtail auto --out`, `grid --out`)
    as its runs by name; every one checked (:func:`require_run_dir`), and each once.

    A run given again (``compare runs/* runs/a``, or ``run`` and ``run/``) is kept where it came first and said
    so on stderr: twice, it was two identical rows, each best cell starred twice, as if two runs agreed to the
    last digit.

    Raises:
        RunDirError: a path that is neither a run nor a folder of runs.
    """
    dirs: list[Path] = []
    for given in map(Path, run_dirs):
        folder = given.is_dir() and not (given / CONFIG_FILE).is_file()
        dirs.extend((folder and runs_in(given)) or [given])
    seen: dict[Path, Path] = {}
    for path in map(require_run_dir, dirs):
        same = seen.setdefault(path.resolve(), path)
        if same is not path:
            again = "given twice" if str(same) == str(path) else f"the same directory as {one_line(str(same))}"
            logger.info("compare: %s: %s; its rows are shown once", one_line(str(path)), again)
    return list(seen.values())


def comparison_rows(run_dirs: Sequence[str | Path]) -> list[ComparisonRow]:
    """Every method of every run, runs in the order given (a folder of runs: its runs, by name), methods in
    the paper's order.

    Raises:
        RunDirError: a directory that is not a run, a run given twice, or a run without test results yet.
    """
    dirs = expand_run_dirs(run_dirs)
    rows = []
    for run_dir, label in zip(dirs, _run_labels(dirs), strict=True):
        results = read_results(run_dir)
        methods = results.get("methods")
        if not methods:
            raise RunDirError(
                f"{run_dir}: no results.json scores yet; "
                f"`longtail train --resume {run_dir}` finishes stage 1 and scores it"
            )
        timing = results.get("timing", {})
        fingerprint, test_data = run_fingerprints(results)
        groups = _groups_of(results)
        for method in display_order(methods):
            summary = methods[method]
            scores = {c: summary.get(c) for c in COLUMNS}
            wall = _wall_seconds(method, timing)
            ci = dict(summary.get("ci") or {})
            row = ComparisonRow(label, method, scores, summary.get("tau"), wall, ci, fingerprint, test_data, groups)
            rows.append(row)
    return rows


def _best(values: list[float | None], *, lowest: bool) -> float | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return min(present) if lowest else max(present)


def format_comparison(rows: Sequence[ComparisonRow], *, markdown: bool = False) -> str:
    """The rows as a Markdown table or aligned terminal text, best cell per column marked."""
    columns: list[list[float | None]] = [[r.scores[c] for r in rows] for c in COLUMNS]
    columns.append([r.wall_seconds for r in rows])
    best = [_best(values, lowest=False) for values in columns[:-1]] + [_best(columns[-1], lowest=True)]
    digits = [1] * (len(COLUMNS) + 1)

    def cell(value: float | None, column: int, interval: list[float] | None) -> str:
        if value is None:
            return "–"
        # Compare what is shown: two cells that print alike are both best.
        text = f"{value:.{digits[column]}f}"
        if best[column] is not None and text == f"{best[column]:.{digits[column]}f}":
            text = f"**{text}**" if markdown else f"{text}*"
        return with_interval(text, interval)

    # Runs scored on different test data are marked in a column of their own: their numbers are not
    # comparable image for image (and `compare --paired` refuses them).
    mixed = len({r.test_data for r in rows}) > 1
    header = (*HEADER, "Test data") if mixed else HEADER
    table = []
    for index, row in enumerate(rows):
        intervals = [row.ci.get(c) for c in COLUMNS] + [None]  # wall time has no interval
        numbers = [cell(values[index], i, intervals[i]) for i, values in enumerate(columns)]
        tau = "–" if row.tau is None else f"{row.tau:g}"
        # A method key of results.json that longtail did not write (an edit, another tool) is shown as one short
        # line: a line break split its row, 300 characters widened every row.
        label = one_line(shown(label_of(row.method), METHOD_CHARS, quote=False))
        table.append([row.run, label, *numbers[:-1], tau, numbers[-1], *([row.test_data] if mixed else [])])
    rendered = render_table(header, table, markdown=markdown, left={0, 1, len(HEADER)})
    notes = [_fingerprint_note(rows, width=max(NOTE_WIDTH, *map(len, rendered.splitlines())))]
    if mixed:
        notes.append(
            "the runs were scored on different test data (the Test data column): their numbers are not comparable "
            "image for image"
        )
    if len({r.groups for r in rows if r.groups is not None}) > 1:
        # Another data seed, imbalance, dataset or eval.many / eval.few: the same column, other classes.
        notes.append(
            "the runs' shot groups differ (other class sizes or eval.many / eval.few): their Many, Medium and Few "
            "columns are means over other classes"
        )
    if not markdown:
        notes.append("* best in its column (highest accuracy, least wall time)")
        if any(r.ci for r in rows):
            notes.append(INTERVAL_NOTE)
    # In Markdown a blank line ends the table: a line right after it would be read as one more row.
    gap = "\n\n" if markdown else "\n"
    return rendered + gap + gap.join(notes)


def _fingerprint_note(rows: Sequence[ComparisonRow], *, width: int = NOTE_WIDTH) -> str:
    """ "fingerprints: run_a 3f2a9c1e07b4 (test data 9a8b…), ...", each run once, in lines of at most ``width``
    characters (30 runs made one line of 2,000), a run's entry never split."""
    seen = dict.fromkeys((r.run, r.fingerprint, r.test_data) for r in rows)
    entries = [f"{run} {fp} (test data {test})" for run, fp, test in seen]
    lines = [f"fingerprints: {entries[0]}"] if entries else ["fingerprints:"]
    for entry in entries[1:]:
        if len(lines[-1]) + 2 + len(entry) <= width:
            lines[-1] += f", {entry}"
        else:
            lines[-1] += ","
            lines.append(f"  {entry}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- compare --paired

PAIRED_RESAMPLES = 1000
PAIRED_HEADER = ("Run", "A", "B", "A − B", "95% interval", "A wins", "Ties", "")
WITHIN_NOISE_NOTE = (
    "within noise: the 95% interval of A − B contains 0, so resampling the test images alone can reverse it"
)
SEEDS_NOTE = "(differences between training seeds come on top: `longtail grid --seeds`)"


@dataclass
class PairedRow:
    """One paired comparison of A and B: two methods of one run (``run`` set) or of two runs (``run`` None).

    ``result`` is :func:`~longtail.evaluation.bootstrap.paired_bootstrap`'s dict, None where the metric is
    undefined on the test set (an empty shot group).
    """

    run: str | None
    a: str
    b: str
    metric: str
    result: dict[str, Any] | None
    test_data: str = "none"  # the test data's fingerprint (short form)
    itself: bool = False  # A and B are one classifier: its 0 is by construction, not a finding


@dataclass
class _ScoredRun:
    """What a paired comparison reads of a run: results.json and the per-image test predictions."""

    path: Path
    results: dict[str, Any]
    labels: np.ndarray
    predictions: dict[str, np.ndarray]
    test_data: str  # the full data fingerprint of the test split both results.json and the predictions record

    @classmethod
    def read(cls, run_dir: str | Path, methods: Sequence[str]) -> _ScoredRun:
        """The run's results and the test predictions of ``methods`` (no other member is decompressed)."""
        path = require_run_dir(run_dir)
        results = read_results(path)
        if not isinstance(results.get("train_counts"), list):
            raise RunDirError(f"{path}: no train_counts in results.json; finish `longtail train` first")
        labels, predictions, fingerprint = read_predictions(path, "test", methods)
        provenance = results.get("provenance") if isinstance(results.get("provenance"), dict) else {}
        recorded = (provenance.get("data") or {}).get("test") if isinstance(provenance.get("data"), dict) else None
        rescore = f"run `longtail eval {path}` to score it again and record them"
        if not isinstance(recorded, str) or fingerprint is None:
            raise RunDirError(f"{path}: its test scores record no data fingerprint (an older longtail); {rescore}")
        if fingerprint != recorded:
            raise RunDirError(
                f"{path}: predictions/test.npz was scored on other test data than results.json records "
                f"({short(fingerprint)} vs {short(recorded)}); {rescore}"
            )
        scored = cls(path, results, labels, predictions, recorded)
        scored.check_against_results(methods, rescore)
        return scored

    def check_against_results(self, methods: Sequence[str], rescore: str) -> None:
        """Refuse predictions whose accuracies are not results.json's: a paired comparison of them would
        contradict the table (a predictions file copied from another run of the same test data, a results.json
        edited by hand)."""
        counts, many, few = self.groups_setting()
        rows = self.results.get("methods") or {}
        for method in methods:
            row, predicted = rows.get(method), self.predictions.get(method)
            if not isinstance(row, dict) or predicted is None or not 0 <= self.labels.min(initial=0):
                continue
            if self.labels.max(initial=0) < len(counts) and not summary_agrees(
                row, predicted, self.labels, counts, many=many, few=few
            ):
                raise RunDirError(
                    f"{self.path}: the test predictions of {method} are not the scores results.json records "
                    f"(predictions/test.npz of another classifier, or results.json edited); {rescore}"
                )

    def correct(self, method: str) -> np.ndarray:
        """(N,) whether ``method`` got each test image right."""
        if method not in self.predictions:
            have = ", ".join(self.predictions) or "none"
            raise RunDirError(f"{self.path}: no test predictions of method {method!r} (it has: {have})")
        return self.predictions[method] == self.labels

    def groups_setting(self) -> tuple[list[int], int, int]:
        """Training class sizes and the many / few thresholds, which define the shot groups."""
        thresholds = self.results.get("shot_thresholds", {})
        return self.results["train_counts"], thresholds.get("many", 100), thresholds.get("few", 20)


def _split_side(text: str) -> tuple[str | None, str]:
    """``METHOD`` -> (None, METHOD); ``RUN_DIR:METHOD`` -> (RUN_DIR, METHOD) (a method name has no colon)."""
    run, colon, method = text.rpartition(":")
    if not method:
        raise ConfigError(f"--paired {text!r}: expected METHOD or RUN_DIR:METHOD")
    return (run, method) if colon else (None, method)


def _paired(a: _ScoredRun, method_a: str, b: _ScoredRun, method_b: str, metric: str, resamples: int) -> Any:
    """The paired bootstrap of A − B on their shared test set (A's seed), or None for an empty group."""
    if a.test_data != b.test_data:
        raise RunDirError(
            f"{a.path} and {b.path}: scored on different test data (fingerprints {short(a.test_data)} and "
            f"{short(b.test_data)}); a paired comparison needs the same images in the same order"
        )
    if not np.array_equal(a.labels, b.labels):
        raise RunDirError(
            f"{a.path} and {b.path}: not scored on the same test set (their test labels differ); "
            "a paired comparison needs the same images in the same order"
        )
    counts, many, few = a.groups_setting()
    if metric in ("many", "medium", "few") and b.groups_setting() != (counts, many, few):
        raise RunDirError(
            f"{a.path} and {b.path}: their {metric}-shot groups differ (other class sizes or thresholds); "
            "compare --metric macro or all"
        )
    if len(b.groups_setting()[0]) != len(counts):
        raise RunDirError(f"{a.path} and {b.path}: different numbers of classes")
    members = shot_groups(counts, many, few).get(metric)
    if members is not None and not np.isin(a.labels, members).any():
        return None  # an empty group: no difference to measure
    seed = a.results.get("seed")
    options = {"metric": metric, "many": many, "few": few, "num_resamples": resamples}
    options["seed"] = seed if isinstance(seed, int) and not isinstance(seed, bool) else 0  # the run's seed
    try:
        return paired_bootstrap(a.correct(method_a), b.correct(method_b), a.labels, counts, **options)
    except ValueError as error:  # labels beyond the class count: a damaged predictions file
        raise RunDirError(f"{a.path}: {error}") from None


def paired_rows(
    run_dirs: Sequence[str | Path], a: str, b: str, *, metric: str = "macro", resamples: int = PAIRED_RESAMPLES
) -> list[PairedRow]:
    """``compare --paired A B``: A − B by paired bootstrap, for each run (A, B methods) or across two runs.

    ``a`` and ``b`` are both method names (compared within every run of ``run_dirs``) or both
    ``RUN_DIR:METHOD`` (one comparison across two runs scored on the same test set; no ``run_dirs``).

    Raises:
        ConfigError: A and B of different forms, no run to compare in, an unknown metric.
        RunDirError: a run without per-image predictions or without the method, two runs whose test labels
            differ.
    """
    if metric not in METRICS:
        raise ConfigError(f"--metric {metric!r}: expected one of {', '.join(METRICS)}")
    (run_a, method_a), (run_b, method_b) = _split_side(a), _split_side(b)
    if (run_a is None) != (run_b is None):
        raise ConfigError(f"--paired {a} {b}: give two method names, or two RUN_DIR:METHOD")
    if run_a is not None and run_b is not None:
        if run_dirs:
            raise ConfigError(f"--paired {a} {b}: RUN_DIR:METHOD names its runs; give no other RUN_DIR")
        first, second = _ScoredRun.read(run_a, [method_a]), _ScoredRun.read(run_b, [method_b])
        name_a, name_b = _run_labels([first.path, second.path])
        result = _paired(first, method_a, second, method_b, metric, resamples)
        sides = f"{name_a}: {label_of(method_a)}", f"{name_b}: {label_of(method_b)}"
        itself = method_a == method_b and first.path.resolve() == second.path.resolve()
        _note_itself(a, b, itself)
        return [PairedRow(None, *sides, metric, result, short(first.test_data), itself)]
    if not run_dirs:
        raise ConfigError(f"--paired {a} {b}: give the RUN_DIR(s) to compare them in")
    rows = []
    run_dirs = expand_run_dirs(run_dirs)
    _note_itself(a, b, method_a == method_b)
    for run_dir, label in zip(run_dirs, _run_labels(run_dirs), strict=True):
        run = _ScoredRun.read(run_dir, [method_a, method_b])
        result = _paired(run, method_a, run, method_b, metric, resamples)
        sides = label_of(method_a), label_of(method_b)
        rows.append(PairedRow(label, *sides, metric, result, short(run.test_data), method_a == method_b))
    return rows


def _note_itself(a: str, b: str, itself: bool) -> None:
    """Say on stderr that ``--paired A B`` names one classifier twice, as :func:`expand_run_dirs` says of a run
    given twice: its "+0.0 [+0.0, +0.0]" was shown as "within noise", a finding of two classifiers that agree."""
    if itself:
        logger.info("compare: --paired %s %s: the same classifier twice; its difference is 0 by construction", a, b)


def _points(value: float) -> str:
    return f"{value + 0.0:+.1f}"  # + 0.0 turns -0.0 into 0.0: an exact tie prints +0.0


def _verdict(interval: list[float]) -> str:
    low, high = interval
    if low <= 0.0 <= high:
        return "within noise"
    return "A better" if low > 0 else "B better"


def _paired_cells(row: PairedRow) -> list[str]:
    result = row.result
    if result is None or result["ci"] is None:
        return ["–", "–", "–", "–", f"no {row.metric}-shot test image"]  # no class in the group, or none scored
    low, high = result["ci"]
    verdict = "the same classifier" if row.itself else _verdict(result["ci"])
    return [
        _points(result["difference"]),
        f"[{_points(low)}, {_points(high)}]",
        f"{100 * result['a_wins']:.1f}%",
        f"{100 * result['ties']:.1f}%",
        verdict,
    ]


def format_paired(rows: Sequence[PairedRow], *, markdown: bool = False) -> str:
    """The paired comparisons as a titled Markdown or terminal table, with what "within noise" means."""
    within_run = any(r.run is not None for r in rows)
    # Runs of different test data: each row's in a column (a list in the title ran to hundreds of characters).
    mixed = len({r.test_data for r in rows}) > 1
    header = list(PAIRED_HEADER if within_run else PAIRED_HEADER[1:]) + (["Test data"] if mixed else [])
    table = [
        ([r.run or ""] if within_run else []) + [r.a, r.b, *_paired_cells(r)] + ([r.test_data] if mixed else [])
        for r in rows
    ]
    metric = rows[0].metric if rows else "macro"
    resamples = next((r.result["resamples"] for r in rows if r.result), PAIRED_RESAMPLES)
    data = (
        "each run's in the Test data column" if mixed else f"data fingerprint {rows[0].test_data if rows else 'none'}"
    )
    title = (
        f"Paired bootstrap of A − B, {metric} top-1 accuracy in points on test ({data})\n"
        f"({resamples} resamples of the test images within each class, the same for A and B)"
    )
    verdict = len(header) - (2 if mixed else 1)
    left = ({0, 1, 2} if within_run else {0, 1}) | {verdict, len(header) - 1}
    rendered = render_table(header, table, markdown=markdown, left=left)
    # What "within noise" means, where a line says it; that a test set does not capture training noise, always.
    notes = [WITHIN_NOISE_NOTE] if any(row[verdict] == "within noise" for row in table) else []
    return "\n".join([f"{title}\n\n{rendered}\n", *notes, SEEDS_NOTE])
