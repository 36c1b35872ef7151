"""The shape of a run's JSON files (``results.json``, ``metrics.jsonl``), checked when they are read.

Longtail writes both files, but they are plain JSON that a user may edit, a
tool may damage or a colleague may send. Valid JSON of the wrong shape (a list
at the top, a score that is a string) would otherwise surface as a traceback
deep inside ``report`` or ``compare``; the checks here name the file, the key
and what was expected, in one line. Only keys longtail reads are checked, so a
file with extra keys (a newer version, a user's notes) still reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import RunDirError, shown
from .safe_text import parse_json

# Accuracy (%) and τ entries of a method's summary and of a τ-sweep point; None marks an empty shot group.
ACCURACY_KEYS = ("many", "medium", "few", "all", "macro")
SCORE_KEYS = (*ACCURACY_KEYS, "tau")
_SHOWN = 40  # characters of a value or key quoted in a message: a message stays one short line


def describe(value: Any) -> str:
    """A JSON value in a few words, for a message: ``a string ('abc')``, ``a list of 3 items``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, (int, float)):
        return f"the number {shown(value, _SHOWN)}"
    if isinstance(value, str):
        return f"a string ({shown(value, _SHOWN)})"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    return "an object" if isinstance(value, dict) else shown(type(value).__name__, _SHOWN, quote=False)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    """A number that is not NaN or infinite (Python's JSON reader accepts ``NaN`` and ``Infinity``)."""
    return _is_number(value) and math.isfinite(value)


def _is_percent(value: Any) -> bool:
    """An accuracy as longtail writes it: a finite percentage, 0 to 100."""
    return _is_finite(value) and 0.0 <= value <= 100.0


def _is_percent_or_null(value: Any) -> bool:
    return value is None or _is_percent(value)


def _is_seconds(value: Any) -> bool:
    return _is_finite(value) and value >= 0.0


class _Checker:
    """Checks one decoded file; every failure is a :class:`RunDirError` naming the file, the key path and the type."""

    def __init__(self, path: Path, hint: str) -> None:
        self.path, self.hint = path, hint

    def fail(self, where: str, value: Any, expected: str) -> None:
        raise RunDirError(f"{self.path}: {where} is {describe(value)}, expected {expected}{self.hint}")

    def require(self, where: str, value: Any, test: Callable[[Any], bool], expected: str) -> None:
        if not test(value):
            self.fail(where, value, expected)

    def obj(self, where: str, value: Any) -> dict[str, Any]:
        self.require(where, value, lambda v: isinstance(v, dict), "an object {...}")
        return value

    def items(self, where: str, value: Any) -> list[Any]:
        self.require(where, value, lambda v: isinstance(v, list), "a list [...]")
        return value

    def scores(self, where: str, summary: Any) -> None:
        """A method's summary or a sweep point: its accuracies are percentages 0 to 100 (or null), its τ a finite
        number (or null). A NaN, an infinity or 1e308 would otherwise be printed as a score (a column of 300
        digits in `compare`)."""
        summary = self.obj(where, summary)
        for key in ACCURACY_KEYS:
            if key in summary:
                self.require(f"{where}.{key}", summary[key], _is_percent_or_null, "a percentage 0 to 100, or null")
        if "tau" in summary:
            self.require(
                f"{where}.tau", summary["tau"], lambda v: v is None or _is_finite(v), "a finite number or null"
            )

    def strings(self, where: str, value: Any) -> dict[str, Any]:
        """An object whose entries are all strings (a record of hashes)."""
        for key, entry in self.obj(where, value).items():
            self.require(f"{where}.{_key(key)}", entry, lambda v: isinstance(v, str), "a string")
        return value


def _key(name: str) -> str:
    return shown(name, _SHOWN, quote=False)


def _is_interval(value: Any) -> bool:
    return value is None or (isinstance(value, list) and len(value) == 2 and all(map(_is_percent, value)))


def _check_intervals(check: _Checker, where: str, intervals: Any) -> None:
    """A method's ``ci``: each accuracy's 95 % interval ``[low, high]`` in percent, or null (an empty group)."""
    intervals = check.obj(where, intervals)
    for key in ACCURACY_KEYS:
        if key in intervals:
            check.require(
                f"{where}.{key}", intervals[key], _is_interval, "[low, high] (two percentages 0 to 100) or null"
            )


def _check_methods(check: _Checker, where: str, methods: Any) -> None:
    for method, summary in check.obj(where, methods).items():
        at = f"{where}.{_key(method)}"
        check.scores(at, summary)
        if "per_class" in summary:
            for i, value in enumerate(check.items(f"{at}.per_class", summary["per_class"])):
                check.require(f"{at}.per_class[{i}]", value, _is_percent_or_null, "a percentage 0 to 100, or null")
        if "ci" in summary:
            _check_intervals(check, f"{at}.ci", summary["ci"])
        if "chosen" in summary:  # auto: the label of the method it picked
            check.require(f"{at}.chosen", summary["chosen"], lambda v: isinstance(v, str), "a string")


def _check_timing(check: _Checker, timing: Any) -> None:
    timing = check.obj("timing", timing)
    for key in ("train_seconds", "features_seconds"):
        if key in timing:
            check.require(f"timing.{key}", timing[key], _is_seconds, "a number of seconds (0 or more)")
    if "decouple_seconds" in timing:
        for method, seconds in check.obj("timing.decouple_seconds", timing["decouple_seconds"]).items():
            check.require(
                f"timing.decouple_seconds.{_key(method)}", seconds, _is_seconds, "a number of seconds (0 or more)"
            )
    if "feature_cache_hits" in timing:
        check.obj("timing.feature_cache_hits", timing["feature_cache_hits"])


def _check_curve(check: _Checker, key: str, curve: Any) -> None:
    """A τ sweep: ``{"select", "chosen": τ, "val": [point...], "test": [point...]}``."""
    curve = check.obj(key, curve)
    if "chosen" in curve:
        check.require(f"{key}.chosen", curve["chosen"], lambda v: v is None or _is_finite(v), "a number (τ) or null")
    for split in ("val", "test"):
        for i, point in enumerate(check.items(f"{key}.{split}", curve.get(split, []))):
            check.scores(f"{key}.{split}[{i}]", point)
            check.require(f"{key}.{split}[{i}].tau", point.get("tau"), _is_finite, "a number (τ)")


def _check_auto(check: _Checker, auto: Any) -> None:
    chosen = check.obj("auto", auto).get("chosen", {})
    label = check.obj("auto.chosen", chosen).get("label", "")
    check.require("auto.chosen.label", label, lambda v: isinstance(v, str), "a string")


def _check_provenance(check: _Checker, provenance: Any) -> None:
    """``provenance``: the run's ``fingerprint`` and each split's data fingerprint, strings (pipeline.provenance)."""
    provenance = check.obj("provenance", provenance)
    if "fingerprint" in provenance:
        check.require("provenance.fingerprint", provenance["fingerprint"], lambda v: isinstance(v, str), "a string")
    if "data" in provenance:
        check.strings("provenance.data", provenance["data"])


def _check_scored(check: _Checker, scored: Any) -> None:
    """``scored``: split -> method -> what its scores were computed from, strings (pipeline.scores)."""
    for split, records in check.obj("scored", scored).items():
        for method, record in check.obj(f"scored.{_key(split)}", records).items():
            check.strings(f"scored.{_key(split)}.{_key(method)}", record)


def _check_thresholds(check: _Checker, thresholds: Any) -> None:
    """``shot_thresholds``: the class sizes ``many`` and ``few`` that define the shot groups, integers."""
    for key, value in check.obj("shot_thresholds", thresholds).items():
        if key in ("many", "few"):
            check.require(f"shot_thresholds.{key}", value, _is_integer, "an integer (training samples)")


def check_results(path: Path, results: Any, hint: str = "") -> dict[str, Any]:
    """``results`` (decoded ``results.json``) if the keys longtail reads have their types, else a RunDirError.

    Args:
        path: the file, named in the message.
        results: the decoded JSON.
        hint: appended to the message (what to do about it).
    """
    check = _Checker(path, hint)
    if not isinstance(results, dict):
        check.fail("the top level", results, "an object {...} (results.json as longtail writes it)")
    for key in ("methods", "val_methods"):
        if key in results:
            _check_methods(check, key, results[key])
    if "timing" in results:
        _check_timing(check, results["timing"])
    for key in [k for k in results if k.endswith("_curve")]:  # each method's validation sweep (MethodSpec.sweep)
        _check_curve(check, key, results[key])
    if "auto" in results:
        _check_auto(check, results["auto"])
    for key in ("environment", "shot_groups"):
        if key in results:
            check.obj(key, results[key])
    if "shot_thresholds" in results:
        _check_thresholds(check, results["shot_thresholds"])
    if "provenance" in results:
        _check_provenance(check, results["provenance"])
    if "scored" in results:
        _check_scored(check, results["scored"])
    if "stage2" in results:
        for method, how in check.obj("stage2", results["stage2"]).items():
            check.obj(f"stage2.{_key(method)}", how)
    if "train_counts" in results:
        for i, count in enumerate(check.items("train_counts", results["train_counts"])):
            check.require(f"train_counts[{i}]", count, lambda v: _is_integer(v) and v >= 0, "an integer, 0 or more")
    return results


def parse_metrics_line(path: Path, number: int, line: str) -> dict[str, Any]:
    """One line of ``metrics.jsonl`` as its epoch record, or a RunDirError naming ``path:number``."""
    where = f"{path}:{number}"
    hint = "; repair or delete that line (or the file: the report then draws no training curves)"
    record = parse_json(line, where, error=RunDirError, hint=f", expected one JSON object per line{hint}")
    if not isinstance(record, dict):
        raise RunDirError(f"{where}: the line is {describe(record)}, expected an object {{...}} per epoch{hint}")
    if "epoch" in record and not _is_integer(record["epoch"]):
        raise RunDirError(f"{where}: epoch is {describe(record['epoch'])}, expected an integer{hint}")
    return record
