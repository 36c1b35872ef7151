"""The report's content as plain blocks, and its two renderings: one self-contained HTML file and Markdown.

The content is built once (:mod:`longtail.report.build`) as sections of
:class:`Paragraph`, :class:`Table`, :class:`Code` and :class:`FigureBlock`;
:func:`render_html` inlines every figure as a base64 ``data:`` URI and the
style sheet in a ``<style>`` element, so the file opens offline with nothing
beside it; :func:`render_markdown` links PNG files written next to it.
Paragraphs and cells are plain text: they are escaped in both renderings,
and text between backticks is shown as code.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field

_CODE_SPAN = re.compile(r"`([^`]+)`")


@dataclass
class Paragraph:
    """Plain text; `backticked` parts are code."""

    text: str


@dataclass
class Table:
    """A table of plain-text cells; ``align`` per column: "l" or "r"."""

    header: list[str]
    rows: list[list[str]]
    align: str = ""


@dataclass
class Code:
    """A preformatted block (the config)."""

    text: str


@dataclass
class FigureBlock:
    """One numbered figure: PNG bytes and the file name it gets beside report.md, or why it is missing."""

    number: int
    title: str
    caption: str
    file_name: str
    png: bytes | None = None
    missing: str | None = None


Block = Paragraph | Table | Code | FigureBlock


@dataclass
class Section:
    """A titled part of the report; ``anchor`` is its id in the HTML."""

    title: str
    anchor: str
    blocks: list[Block] = field(default_factory=list)


# --- HTML -----------------------------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #222;
       max-width: 1180px; margin: 0 auto; padding: 1.5em 2em 4em; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; }
h2 { font-size: 1.3em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
h3 { font-size: 1.1em; margin-bottom: 0.3em; }
nav { background: #f6f7f9; border: 1px solid #e3e5e8; padding: 0.6em 1em; font-size: 0.92em; }
nav a { margin-right: 1.1em; white-space: nowrap; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #d9dce0; padding: 0.25em 0.6em; vertical-align: top; }
th { background: #f1f3f5; text-align: left; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f7f9; border: 1px solid #e3e5e8; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
code { background: #f1f3f5; padding: 0 0.25em; border-radius: 3px; font-size: 0.92em; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.92em; color: #444; margin-top: 0.4em; }
p.missing { color: #8a5a00; background: #fff8e6; border: 1px solid #f0dca8; padding: 0.5em 0.8em; }
"""


def _inline_html(text: str) -> str:
    """Escape ``text``; `code` spans become <code> elements."""
    parts = _CODE_SPAN.split(text)
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def _table_html(table: Table) -> str:
    def cell(tag: str, text: str, column: int) -> str:
        right = column < len(table.align) and table.align[column] == "r"
        attributes = ' class="r"' if right else ""
        return f"<{tag}{attributes}>{_inline_html(text)}</{tag}>"

    head = "".join(cell("th", text, i) for i, text in enumerate(table.header))
    body = "\n".join(
        "<tr>" + "".join(cell("td", text, i) for i, text in enumerate(row)) + "</tr>" for row in table.rows
    )
    head = f"<thead><tr>{head}</tr></thead>\n" if any(table.header) else ""  # a key/value table needs no header
    return f"<table>\n{head}<tbody>\n{body}\n</tbody>\n</table>"


def _figure_html(figure: FigureBlock) -> str:
    title = f'<h3 id="figure-{figure.number}">Figure {figure.number}. {_inline_html(figure.title)}</h3>'
    if figure.png is None:
        return f'{title}\n<p class="missing">Not available: {_inline_html(figure.missing or "not drawn")}</p>'
    data = base64.b64encode(figure.png).decode("ascii")
    alt = html.escape(f"Figure {figure.number}: {figure.title}", quote=True)
    return (
        f'{title}\n<figure>\n<img src="data:image/png;base64,{data}" alt="{alt}">\n'
        f"<figcaption>{_inline_html(figure.caption)}</figcaption>\n</figure>"
    )


def _block_html(block: Block) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{_inline_html(block.text)}</p>"
    if isinstance(block, Table):
        return _table_html(block)
    if isinstance(block, Code):
        return f"<pre>{html.escape(block.text)}</pre>"
    return _figure_html(block)


def render_html(title: str, sections: list[Section]) -> str:
    """One self-contained HTML document: inline CSS, figures as ``data:`` URIs, no script, no external URL."""
    nav = " ".join(f'<a href="#{html.escape(s.anchor, quote=True)}">{html.escape(s.title)}</a>' for s in sections)
    body = []
    for section in sections:
        body.append(f'<h2 id="{html.escape(section.anchor, quote=True)}">{html.escape(section.title)}</h2>')
        body.extend(_block_html(block) for block in section.blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n<nav>{nav}</nav>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


# --- Markdown -------------------------------------------------------------------------------------------------------

# A backslash, a lone backtick or a $ in a name would otherwise escape the next character, open a code span or math.
_MARKDOWN_SPECIAL = str.maketrans(
    {
        "<": "&lt;",
        ">": "&gt;",
        "&": "&amp;",
        "*": r"\*",
        "_": r"\_",
        "[": r"\[",
        "]": r"\]",
        "\\": "\\\\",
        "`": r"\`",
        "$": r"\$",  # GitHub reads $...$ as math
    }
)
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")


def _inline_markdown(text: str) -> str:
    """Escape characters Markdown (or HTML inside it) would interpret; `code` spans stay as they are."""
    parts = _CODE_SPAN.split(text)
    return "".join(f"`{p}`" if i % 2 else p.translate(_MARKDOWN_SPECIAL) for i, p in enumerate(parts))


def _cell_markdown(text: str) -> str:
    """One table cell on one line: a line break in the text (a class name may hold one) would end the row.

    Breaks become ``<br>`` in plain text and spaces in code spans (where Markdown shows ``<br>`` literally);
    every ``|`` is escaped, inside code spans too, as GitHub's tables require.
    """
    parts = _CODE_SPAN.split(text)
    rendered = (
        f"`{_LINE_BREAKS.sub(' ', p)}`" if i % 2 else _LINE_BREAKS.sub("<br>", p.translate(_MARKDOWN_SPECIAL))
        for i, p in enumerate(parts)
    )
    return "".join(rendered).replace("|", r"\|")


def _one_line(text: str) -> str:
    """``text`` with its line breaks as spaces, for a heading (a break would end it)."""
    return _LINE_BREAKS.sub(" ", text)


def _code_fence(text: str) -> str:
    """A backtick fence longer than any run of backticks in ``text``, so the text cannot close it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _table_markdown(table: Table) -> str:
    def cells(row: list[str]) -> str:
        return "| " + " | ".join(_cell_markdown(text) for text in row) + " |"

    rule = (
        "|"
        + "|".join(
            "---:" if i < len(table.align) and table.align[i] == "r" else "---" for i in range(len(table.header))
        )
        + "|"
    )
    return "\n".join([cells(table.header), rule, *(cells(row) for row in table.rows)])


def _block_markdown(block: Block, files_dir: str) -> str:
    if isinstance(block, Paragraph):
        return _inline_markdown(block.text)
    if isinstance(block, Table):
        return _table_markdown(block)
    if isinstance(block, Code):
        fence = _code_fence(block.text)
        return f"{fence}yaml\n" + block.text.rstrip("\n") + f"\n{fence}"
    title = f"### Figure {block.number}. {_inline_markdown(_one_line(block.title))}"
    if block.png is None:
        return f"{title}\n\n*Not available: {_inline_markdown(block.missing or 'not drawn')}*"
    return f"{title}\n\n![Figure {block.number}]({files_dir}/{block.file_name})\n\n{_inline_markdown(block.caption)}"


def render_markdown(title: str, sections: list[Section], files_dir: str) -> str:
    """Markdown whose figures are links to ``files_dir/<file_name>`` (relative to the Markdown file)."""
    parts = [f"# {_inline_markdown(_one_line(title))}"]  # the title holds the run directory's name
    for section in sections:
        parts.append(f"## {_inline_markdown(_one_line(section.title))}")
        parts.extend(_block_markdown(block, files_dir) for block in section.blocks)
    return "\n\n".join(parts) + "\n"
