"""Assemble report sections (text, tables, plotly figures) into one offline HTML file."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio


@dataclass
class Section:
    """One titled part of the report: paragraphs, then tables, then figures."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[go.Figure] = field(default_factory=list)


_STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; } th { background: #f2f2f2; }
.summary { background: #f6f8fa; border-left: 4px solid #4a7; padding: 0.5em 1em; }
.caption { font-weight: 600; margin-top: 1em; }
"""


def render(title: str, summary: list[str], sections: list[Section]) -> str:
    """The whole report as one HTML string; plotly.js is inlined once (no CDN, works offline)."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<div class='summary'><h3>Summary</h3><ul>",
        *[f"<li>{html.escape(line)}</li>" for line in summary],
        "</ul></div>",
    ]
    include_js: bool | str = True
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
        for caption, table in section.tables:
            parts.append(f"<div class='caption'>{html.escape(caption)}</div>")
            parts.append(table.to_html(index=False, float_format=lambda x: f"{x:.4g}", border=0))
        for figure in section.figures:
            parts.append(pio.to_html(figure, full_html=False, include_plotlyjs=include_js))
            include_js = False
    parts.append("</body></html>")
    return "\n".join(parts)
