"""Assemble report sections (text, tables, plotly figures) into one offline HTML file.

Layout only: sections arrive with their numbers already computed, as an ordered list of blocks. plotly.js is inlined once, in the
first figure, so the file opens with no network; every table is also written as CSV next to it.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

__all__ = ["Heading", "Section", "Table", "render", "slug"]

#: A figure, or a row of figures drawn side by side.
FigureRow = go.Figure | list[go.Figure]


@dataclass
class Table:
    """A captioned table; ``name`` is its stable id (HTML ``data-table`` attribute and CSV file name)."""

    name: str
    caption: str
    frame: pd.DataFrame
    note: str = ""


@dataclass(frozen=True)
class Heading:
    """A sub-heading inside a section."""

    text: str


@dataclass
class Section:
    """One titled part of the report: text, sub-headings, tables and figures, in the order added.

    ``error`` is set when the analysis behind the section raised: the section then shows the message
    instead of its results, and the rest of the report is unaffected.
    """

    title: str
    key: str = ""
    blocks: list[str | Heading | Table | FigureRow] = field(default_factory=list)
    error: str | None = None
    seconds: float | None = None

    def add_text(self, text: str) -> None:
        """Append a paragraph."""
        self.blocks.append(str(text))

    def add_heading(self, text: str) -> None:
        """Append a sub-heading."""
        self.blocks.append(Heading(text))

    def add_table(self, name: str, caption: str, frame: pd.DataFrame, note: str = "") -> pd.DataFrame:
        """Append a table (returns ``frame`` so a builder can keep using it)."""
        self.blocks.append(Table(slug(f"{self.key}-{name}" if self.key else name), caption, frame, note))
        return frame

    def add_figure(self, *figures: go.Figure) -> None:
        """Append one figure, or several drawn side by side in one row."""
        if not figures or not all(isinstance(f, go.Figure) for f in figures):
            raise TypeError("figures: expected one or more plotly Figures")
        self.blocks.append(figures[0] if len(figures) == 1 else list(figures))

    # read-only views (tuples, so that appending to them fails loudly: use the add_* methods)
    @property
    def paragraphs(self) -> tuple[str, ...]:
        return tuple(b for b in self.blocks if isinstance(b, str))

    @property
    def tables(self) -> tuple[Table, ...]:
        return tuple(b for b in self.blocks if isinstance(b, Table))

    @property
    def figures(self) -> tuple[FigureRow, ...]:
        return tuple(b for b in self.blocks if isinstance(b, (go.Figure, list)))


def slug(text: str) -> str:
    """``text`` lower-cased with runs of other characters replaced by ``-`` (a file-name-safe id)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


_STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1180px; margin: 2em auto;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 2px solid #444; margin-bottom: 0.2em; } .subtitle { color: #555; margin-top: 0; }
h2 { margin-top: 2.2em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; font-size: 0.82em; margin: 0.4em 0 1.4em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; } th { background: #f2f2f2; }
.num { text-align: right; font-variant-numeric: tabular-nums; } .text { text-align: left; }
.summary { background: #f6f8fa; border-left: 4px solid #4a7; padding: 0.4em 1.2em; }
.summary li { margin: 0.25em 0; }
.caption { font-weight: 600; margin-top: 1em; } .note { color: #555; font-size: 0.85em; margin-top: -1em; }
.error { background: #fff0f0; border-left: 4px solid #c33; padding: 0.6em 1em; white-space: pre-wrap;
         font-family: monospace; font-size: 0.85em; }
.toc { columns: 2; font-size: 0.92em; } .timing { color: #777; font-size: 0.8em; font-weight: normal; }
.row { display: grid; gap: 0.5em; } .row > div { min-width: 0; }
.figure { margin: 0.6em 0 1.2em; }
"""


def _cell(value: object) -> tuple[str, bool]:
    """Display text of one table cell and whether it is numeric (right-aligned)."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)), False
    if isinstance(value, (int, np.integer)):
        return str(int(value)), True
    if isinstance(value, (float, np.floating)):
        return ("–" if not np.isfinite(value) else f"{float(value):.4g}"), True
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–", False
    return str(value), False


def _table_html(table: Table) -> str:
    """A plain HTML table: numbers to 4 significant digits, right-aligned; text left-aligned."""
    frame = table.frame
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
               for c in frame.columns]
    head = "".join(f"<th class='{'num' if n else 'text'}'>{html.escape(str(c))}</th>"
                   for c, n in zip(frame.columns, numeric, strict=True))
    rows = []
    for record in frame.itertuples(index=False, name=None):
        cells = []
        for value in record:
            text, is_number = _cell(value)
            cells.append(f"<td class='{'num' if is_number else 'text'}'>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    parts = [f"<div class='caption'>{html.escape(table.caption)}</div>",
             f"<table data-table='{html.escape(table.name)}'><thead><tr>{head}</tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>"]
    if table.note:
        parts.append(f"<p class='note'>{html.escape(table.note)}</p>")
    return "\n".join(parts)


def render(title: str, summary: list[str], sections: list[Section], *, subtitle: str = "") -> str:
    """The whole report as one HTML string; plotly.js is inlined once (no CDN, works offline)."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if subtitle:
        parts.append(f"<p class='subtitle'>{html.escape(subtitle)}</p>")
    parts += ["<div class='summary'><h3>Summary: the strongest effects</h3><ul>",
              *[f"<li>{html.escape(line)}</li>" for line in summary], "</ul></div>",
              "<h3>Contents</h3><ol class='toc'>"]
    parts += [f"<li><a href='#{slug(s.key or s.title)}'>{html.escape(s.title)}</a>"
              + (" (failed)" if s.error else "") + "</li>" for s in sections]
    parts.append("</ol>")
    include_js: bool | str = True
    config = {"displaylogo": False, "responsive": True}
    for section in sections:
        timing = "" if section.seconds is None else f" <span class='timing'>({section.seconds:.0f} s)</span>"
        parts.append(f"<h2 id='{slug(section.key or section.title)}'>{html.escape(section.title)}{timing}</h2>")
        if section.error is not None:
            parts.append("<p>This analysis failed; the rest of the report is unaffected.</p>")
            parts.append(f"<div class='error'>{html.escape(section.error)}</div>")
            continue
        for block in section.blocks:
            if isinstance(block, str):
                parts.append(f"<p>{html.escape(block)}</p>")
            elif isinstance(block, Heading):
                parts.append(f"<h3>{html.escape(block.text)}</h3>")
            elif isinstance(block, Table):
                parts.append(_table_html(block))
            else:
                figures = block if isinstance(block, list) else [block]
                cells = []
                for figure in figures:
                    cells.append(
                        "<div class='figure'>"
                        + pio.to_html(figure, full_html=False, include_plotlyjs=include_js, config=config)
                        + "</div>"
                    )
                    include_js = False
                # a grid with a fixed column template: each cell has its final width before its figure
                # is drawn (plotly sizes a figure once, when its script runs, before later cells exist)
                columns = f"grid-template-columns: repeat({len(cells)}, minmax(0, 1fr))"
                parts.append(cells[0] if len(cells) == 1 else f"<div class='row' style='{columns}'>" + "".join(
                    f"<div>{c}</div>" for c in cells) + "</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
