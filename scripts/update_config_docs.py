"""Regenerate the reference part of docs/configuration.md from the config and the registries (`make docs`).

    python scripts/update_config_docs.py            # rewrite it if it changed
    python scripts/update_config_docs.py --check    # exit 1 if it is stale, writing nothing

The generated part runs from the GENERATED_BEGIN marker to the GENERATED_END
marker (in a file without them, from the key table's header to the first line
that is not a table row); the prose around it is left as written. `make test`
and `make demo` run `make docs` first, so a changed option or a new component
never leaves the page stale; run alone, pytest fails on a stale page and names
this command (tests/test_config.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

from longtail.config.reference import GENERATED_BEGIN, GENERATED_END, reference_markdown
from longtail.fs.atomic import write_text_atomic

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def regenerated(text: str) -> str:
    """``text`` (docs/configuration.md) with its reference replaced by the one the code generates."""
    lines = text.splitlines()
    if GENERATED_BEGIN in lines:
        start, end = lines.index(GENERATED_BEGIN), lines.index(GENERATED_END) + 1
    else:
        start = next(i for i, line in enumerate(lines) if line.startswith("| key |"))
        end = start
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
    return "\n".join(lines[:start] + reference_markdown().splitlines() + lines[end:]) + "\n"


def main(argv: list[str]) -> int:
    text = DOC.read_text(encoding="utf-8")
    fresh = regenerated(text)
    if fresh == text:
        print(f"{DOC}: up to date")
        return 0
    if "--check" in argv:
        print(f"{DOC}: stale; run `make docs` (or python scripts/update_config_docs.py)", file=sys.stderr)
        return 1
    write_text_atomic(DOC, fresh)
    print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
