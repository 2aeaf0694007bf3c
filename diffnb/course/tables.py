"""Tables in a notebook and in figures/: slide 9's style (per row, the worst FID red, the best
green), as HTML with a plain-text table beside it (:class:`StyledTable`, never a ``<Styler at
0x...>`` repr) or as a matplotlib figure for :func:`diffnb.course.plots.save_figure`. The tables' files
(``.csv`` and ``.md``) are written by :func:`diffnb.results.save_table`."""
from __future__ import annotations

import hashlib

import matplotlib.pyplot as plt
import numpy as np


def _extremes(row) -> tuple[int, int]:
    values = np.asarray(row, dtype=float)
    return int(np.nanargmax(values)), int(np.nanargmin(values))


class StyledTable:
    """A styled table for a notebook: HTML (the pandas Styler's) where HTML is shown, the table as
    plain text elsewhere, never a ``<Styler at 0x...>`` repr. ``styler`` and ``data`` stay
    available; the HTML's element ids derive from the data, so re-running changes nothing."""

    def __init__(self, styler, data, *, fmt: str = "{:.1f}"):
        self.styler, self.data, self.fmt = styler, data, fmt

    def _repr_html_(self) -> str:
        return self.styler.to_html()

    def to_html(self) -> str:
        return self.styler.to_html()

    def __repr__(self) -> str:
        return self.data.to_string(float_format=self.fmt.format)


def styled_extremes(df, *, fmt: str = "{:.1f}", higher_is_better: bool = False) -> StyledTable:
    """Slide 9's style: per row, the worst (highest FID) red and the best green;
    ``higher_is_better`` for a table of shares (the classifier's), the lowest red."""
    def colour(row):
        worst, best = _extremes(row)
        if higher_is_better:
            worst, best = best, worst
        return ["color: red; font-weight: bold" if i == worst else
                "color: green; font-weight: bold" if i == best else "" for i in range(len(row))]
    uuid = hashlib.sha1((df.to_csv() + fmt).encode()).hexdigest()[:10]
    styler = df.style.set_uuid(uuid).apply(colour, axis=1).format(fmt)
    return StyledTable(styler, df, fmt=fmt)


def table_figure(df, *, title: str | None = None, highlight_rows=None, fmt: str = "{:.1f}"):
    """A table as a figure (for figures/); rows in ``highlight_rows`` get slide 9's colours."""
    cells = [[fmt.format(v) if isinstance(v, (float, np.floating)) else str(v) for v in row]
             for row in df.itertuples(index=False)]
    fig, ax = plt.subplots(figsize=(1.0 + 0.95 * len(df.columns), 0.45 + 0.32 * (len(df) + 1)))
    ax.set_axis_off()
    table = ax.table(cellText=cells, rowLabels=[str(i) for i in df.index],
                     colLabels=list(df.columns), loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for r, (label, row) in enumerate(df.iterrows(), start=1):
        if highlight_rows is None or label in highlight_rows:
            worst, best = _extremes(row.values)
            table[r, worst].get_text().set_color("red")
            table[r, best].get_text().set_color("green")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
