"""The report's HTML pieces: escaped text, tables, and matplotlib figures embedded as base64
PNGs (drawn with the object API: no pyplot state, no display), sized by the number of panels
and labels so large domain counts stay readable."""

from __future__ import annotations

import base64
import html
import io
import math

import numpy as np
import pandas as pd

#: Resolution of the embedded PNGs (dots per inch).
DPI = 90


def esc(text) -> str:
    """``text`` (any value, as ``str``) escaped for HTML."""
    return html.escape(str(text))


def html_table(frame: pd.DataFrame, digits: int = 4) -> str:
    """``frame`` as an HTML table: floats with ``digits`` decimals, NaN and inf as a dash."""
    head = "".join(f"<th>{esc(c)}</th>" for c in frame.columns)
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for v in row:
            if isinstance(v, (float, np.floating)):
                cells.append("<td>–</td>" if not np.isfinite(v) else f"<td>{v:.{digits}f}</td>")
            else:
                cells.append(f"<td>{esc(v)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def embed_figure(fig, name: str, caption: str) -> str:
    """The matplotlib figure as an embedded PNG with a caption (``data-figure`` names it)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (
        f'<figure data-figure="{esc(name)}"><img alt="{esc(caption)}" '
        f'src="data:image/png;base64,{data}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def new_figure(width: float, height: float):
    """A matplotlib Figure of ``width`` x ``height`` inches with the constrained layout."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def panel_grid(n: int, max_cols: int) -> tuple[int, int]:
    """(rows, columns) of a near-square grid of ``n`` panels, at most ``max_cols`` wide."""
    cols = min(n, max_cols, max(1, math.ceil(math.sqrt(n))))
    return math.ceil(n / cols), cols


def tick_fontsize(n: int) -> float:
    """Tick-label size for n labels along one axis."""
    return 9.0 if n <= 20 else (7.0 if n <= 40 else 5.5)


__all__ = ["DPI", "embed_figure", "esc", "html_table", "new_figure", "panel_grid", "tick_fontsize"]
