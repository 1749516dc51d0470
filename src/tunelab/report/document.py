"""A tiny document model rendered twice: to Markdown and to one self-contained HTML page.

Blocks: Text (a paragraph), Table (headers, rows, best cells per row), Image (PNG bytes: a file
link in Markdown, inline base64 in HTML), Code (preformatted), Anchor (a link target). A table cell
is text or a Link (relative path or #anchor).

The HTML page works at phone width: a viewport meta, tables scroll sideways inside their own box,
and a click on a column header sorts that table (a few lines of inline script, no library).
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from urllib.parse import quote


@dataclass
class Text:
    text: str
    kind: str = ""
    """"warning" or "pick": the HTML page highlights the paragraph (Markdown shows plain text)."""


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
class Link:
    text: str
    href: str
    """Relative to the report's folder (the sweep directory), or '#anchor'."""

    def __str__(self) -> str:
        return self.text


@dataclass
class Anchor:
    name: str


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Markdown


def md_cell(text) -> str:
    if isinstance(text, Link):
        return f"[{md_cell(text.text)}]({href(text.href)})"
    return str(text).replace("|", "\\|").replace("\n", " ")


def href(target: str) -> str:
    return target if target.startswith("#") else quote(target, safe="/#")


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


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
            elif isinstance(block, Anchor):
                parts.append(f'<a id="{html.escape(block.name)}"></a>')
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------
# HTML (one file: styles inline, images as data URIs, works offline in any browser)

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2rem auto; max-width: 72rem; padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; cursor: pointer; } td.best { font-weight: bold; background: #e6f4ea; }
th[aria-sort=ascending]::after { content: " ▲"; } th[aria-sort=descending]::after { content: " ▼"; }
.scroll { overflow-x: auto; max-width: 100%; } p.pick { font-size: 1.1rem; font-weight: bold; }
p.warning { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.4rem 0.6rem; }
@media (max-width: 600px) { body { margin: 1rem auto; padding: 0 0.5rem; } table { font-size: 0.8rem; } }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5rem 0; }
pre { background: #f6f8fa; padding: 0.8rem; overflow-x: auto; font-size: 0.85rem; }
"""


def html_cell(cell) -> str:
    if isinstance(cell, Link):
        return f'<a href="{html.escape(href(cell.href))}">{html.escape(cell.text)}</a>'
    return html.escape(str(cell))


def html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = []
    for index, row in enumerate(table.rows):
        best = table.best[index] if index < len(table.best) else set()
        cells = "".join(
            f'<td class="best">{html_cell(c)}</td>' if i in best and c not in ("", "–") else f"<td>{html_cell(c)}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return (f'<div class="scroll"><table class="leaderboard sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


# Click a header: sort the table's rows by that column (numbers by value: "84.4 ± 1.5" by 84.4, "22.57M" by
# 22.57e6; "–" last);
# click again: the other way round.
SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
    var up = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", up ? "ascending" : "descending");
    function key(row) { var t = row.cells[col].textContent.trim();
      var m = t.replace(/[,\\[]/g, "").match(/^-?[0-9.]+(e-?[0-9]+)?(M)?/);  // "22.57M (100%)" is 22.57e6
      return m ? parseFloat(m[0]) * (m[2] ? 1e6 : 1) : t; }
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === "–" || y === "–") return (x === "–") - (y === "–");
      var c = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
      return up ? c : -c;
    }).forEach(function (row) { body.appendChild(row); });
  });
});
"""


def to_html(title: str, sections: list[Section]) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    for section in sections:
        parts.append(f'<h2 id="{slug(section.title)}">{html.escape(section.title)}</h2>')
        for block in section.blocks:
            if isinstance(block, Text):
                kind = f' class="{html.escape(block.kind)}"' if block.kind else ""
                parts.append(f"<p{kind}>{html.escape(block.text)}</p>")
            elif isinstance(block, Table):
                parts.append(html_table(block))
            elif isinstance(block, Image):
                data = base64.b64encode(block.png).decode("ascii")
                parts.append(f'<img src="data:image/png;base64,{data}" alt="{html.escape(block.alt)}">')
            elif isinstance(block, Code):
                parts.append(f"<pre>{html.escape(block.text)}</pre>")
            elif isinstance(block, Anchor):
                parts.append(f'<a id="{html.escape(block.name)}"></a>')
    parts.append(f"<script>{SORT_SCRIPT}</script></body></html>")
    return "\n".join(parts)
