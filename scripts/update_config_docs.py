"""Regenerate the key table of docs/configuration.md from the config dataclasses.

    python scripts/update_config_docs.py

The table runs from its header line to the first line that is not a table row;
the prose around it is left as written. A test fails when the table is stale.
"""

from __future__ import annotations

from pathlib import Path

from longtail.config import config_markdown_table
from longtail.fs.atomic import write_text_atomic

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def main() -> None:
    lines = DOC.read_text().splitlines()
    table = config_markdown_table().splitlines()
    start = lines.index(table[0])
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    write_text_atomic(DOC, "\n".join(lines[:start] + table + lines[end:]) + "\n")
    print(f"updated {DOC}")


if __name__ == "__main__":
    main()
