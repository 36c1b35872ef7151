"""Regenerate the reference part of docs/configuration.md from the config and the registries.

    python scripts/update_config_docs.py      # `make docs` runs it; `make test` and `make demo` too

The generated part runs from the GENERATED_BEGIN marker to the GENERATED_END
marker (or, in a file without them, from the key table's header to the first
line that is not a table row); the prose around it is left as written. A test
fails when it is stale.
"""

from __future__ import annotations

from pathlib import Path

from longtail.config.reference import GENERATED_BEGIN, GENERATED_END, reference_markdown
from longtail.io import write_text_atomic

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def main() -> None:
    lines = DOC.read_text().splitlines()
    if GENERATED_BEGIN in lines:
        start, end = lines.index(GENERATED_BEGIN), lines.index(GENERATED_END) + 1
    else:
        start = next(i for i, line in enumerate(lines) if line.startswith("| key |"))
        end = start
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
    write_text_atomic(DOC, "\n".join(lines[:start] + reference_markdown().splitlines() + lines[end:]) + "\n")
    print(f"updated {DOC}")


if __name__ == "__main__":
    main()
