"""Every benchmark script still starts: its imports resolve and ``--help`` exits 0.

The scripts run rarely (minutes to hours each) and import library internals;
a refactor that renames one breaks them silently (``beyond.py`` imported a
function of ``grid.run`` that no longer existed). This runs each script's
``--help`` in this process, after its imports, without measuring anything.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(path for path in BENCHMARKS.glob("*.py") if not path.name.startswith("_"))


def test_there_are_scripts_to_check():
    assert len(SCRIPTS) >= 10 and BENCHMARKS / "beyond.py" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=[path.name for path in SCRIPTS])
def test_the_script_imports_and_answers_help(
    script: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    monkeypatch.setattr(sys, "path", [str(BENCHMARKS), *sys.path])  # as `python benchmarks/X.py` has it
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(script), run_name="__main__")
    assert done.value.code in (0, None)
    assert "usage:" in capsys.readouterr().out
