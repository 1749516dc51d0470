"""A tiny document model rendered twice: to Markdown and to one self-contained HTML page.

Blocks: Text (a paragraph), Table (headers, rows, best cells per row), Image (PNG bytes: a file
link in Markdown, inline base64 in HTML), Code (preformatted).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field


@dataclass
class Text:
    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    best: list[set[int]] = field(default_factory=list)
    """Per row, the column indices to emphasise (best of their column)."""


@dataclass
class Image:
    filename: str
    png: bytes
    alt: str


@dataclass
class Code:
    text: str
    language: str = ""


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Markdown


def md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> str:
    lines = ["| " + " | ".join(md_cell(h) for h in table.headers) + " |", "|" + "---|" * len(table.headers)]
    for index, row in enumerate(table.rows):
        best = table.best[index] if index < len(table.best) else set()
        cells = [f"**{md_cell(c)}**" if i in best and c not in ("", "–") else md_cell(c) for i, c in enumerate(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_markdown(title: str, sections: list[Section], image_dir: str = "plots") -> str:
    parts = [f"# {title}"]
    for section in sections:
        parts.append(f"## {section.title}")
        for block in section.blocks:
            if isinstance(block, Text):
                parts.append(block.text)
            elif isinstance(block, Table):
                parts.append(markdown_table(block))
            elif isinstance(block, Image):
                parts.append(f"![{block.alt}]({image_dir}/{block.filename})")
            elif isinstance(block, Code):
                parts.append(f"```{block.language}\n{block.text.rstrip()}\n```")
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------
# HTML (one file: styles inline, images as data URIs, works offline in any browser)

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2rem auto; max-width: 72rem; padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.best { font-weight: bold; background: #e6f4ea; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5rem 0; }
pre { background: #f6f8fa; padding: 0.8rem; overflow-x: auto; font-size: 0.85rem; }
"""


def html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = []
    for index, row in enumerate(table.rows):
        best = table.best[index] if index < len(table.best) else set()
        cells = "".join(
            f'<td class="best">{html.escape(str(c))}</td>' if i in best and c not in ("", "–") else f"<td>{html.escape(str(c))}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f'<table class="leaderboard"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def to_html(title: str, sections: list[Section]) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Text):
                parts.append(f"<p>{html.escape(block.text)}</p>")
            elif isinstance(block, Table):
                parts.append(html_table(block))
            elif isinstance(block, Image):
                data = base64.b64encode(block.png).decode("ascii")
                parts.append(f'<img src="data:image/png;base64,{data}" alt="{html.escape(block.alt)}">')
            elif isinstance(block, Code):
                parts.append(f"<pre>{html.escape(block.text)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)
