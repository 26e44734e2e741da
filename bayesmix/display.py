"""Notebook display: the small HTML card that RunTable, Posterior, DecisionReport and
Experiment show as ``_repr_html_`` (Jupyter calls it), with facts first and a table after."""

from __future__ import annotations

import html

import pandas as pd

#: Rows of a table shown in a card (the rest is counted).
MAX_ROWS = 10


def card(title: str, facts: list[tuple[str, str]], table: pd.DataFrame | None = None) -> str:
    """``title`` in bold, one line per (name, value) fact, then the first :data:`MAX_ROWS`
    rows of ``table``; every string is escaped."""
    lines = [f"<div><b>{html.escape(title)}</b>", "<table>"]
    lines += [
        f"<tr><td style='text-align:left'>{html.escape(k)}</td>"
        f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
        for k, v in facts
    ]
    lines.append("</table>")
    if table is not None and len(table):
        lines.append(table.head(MAX_ROWS).to_html(index=False, float_format=lambda v: f"{v:.4g}"))
        if len(table) > MAX_ROWS:
            lines.append(f"<p>... {len(table) - MAX_ROWS} more rows</p>")
    lines.append("</div>")
    return "\n".join(lines)
