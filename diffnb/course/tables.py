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


# Table figures, in inches and points: cell padding around the text, one text line's height.
_FONT = 8
_PAD_W, _PAD_H, _LINE = 0.16, 0.1, _FONT * 1.3 / 72


def _text_width(fig, text: str, *, size: float) -> float:
    """The width in inches of ``text`` (its longest line) at font ``size``."""
    from matplotlib.backends.backend_agg import RendererAgg  # any backend: measure with Agg
    from matplotlib.font_manager import FontProperties

    renderer, prop = RendererAgg(1, 1, fig.dpi), FontProperties(size=size)
    return max(renderer.get_text_width_height_descent(line, prop, ismath=False)[0]
               for line in text.split("\n")) / fig.dpi


def table_figure(df, *, title: str | None = None, highlight_rows=None, fmt: str = "{:.1f}",
                 header_width: int = 14):
    """A table as a figure (for figures/); rows in ``highlight_rows`` get slide 9's colours.

    Headers longer than ``header_width`` characters are wrapped onto several lines; every column
    is as wide as its longest text and the figure as large as the table and its title, so that
    no header or cell is cut off."""
    import textwrap

    def cell(v) -> str:
        if isinstance(v, (float, np.floating)):
            return "-" if np.isnan(v) else fmt.format(v)   # "-": not scored
        return str(v)
    cells = [[cell(v) for v in row] for row in df.itertuples(index=False)]
    headers = [textwrap.fill(str(c), header_width, break_on_hyphens=False) for c in df.columns]
    labels = [str(i) for i in df.index]
    fig = plt.figure()
    columns = [labels] + [[h] + [row[j] for row in cells] for j, h in enumerate(headers)]
    widths = [max(_text_width(fig, t, size=_FONT) for t in col) + _PAD_W for col in columns]
    head = max(h.count("\n") + 1 for h in headers) * _LINE + _PAD_H
    row = _LINE + _PAD_H
    table_w, table_h = sum(widths), head + row * len(df)
    title_w = _text_width(fig, title, size=10) if title else 0.0
    top = 0.45 if title else 0.1
    fig_w, fig_h = max(table_w, title_w) + 0.3, table_h + top + 0.15
    fig.set_size_inches(fig_w, fig_h)
    left = (fig_w - table_w) / 2
    ax = fig.add_axes((left / fig_w, 0.15 / fig_h, table_w / fig_w, table_h / fig_h))
    ax.set_axis_off()
    table = ax.table(cellText=cells, rowLabels=labels, colLabels=headers, cellLoc="center",
                     bbox=(widths[0] / table_w, 0.0, 1 - widths[0] / table_w, 1.0))
    table.auto_set_font_size(False)
    table.set_fontsize(_FONT)
    for (r, c), cell in table.get_celld().items():   # c = -1: the row labels
        cell.set_width(widths[c + 1] / table_w)
        cell.set_height((head if r == 0 else row) / table_h)
    for r, (label, values) in enumerate(df.iterrows(), start=1):
        if highlight_rows is None or label in highlight_rows:
            worst, best = _extremes(values.values)
            table[r, worst].get_text().set_color("red")
            table[r, best].get_text().set_color("green")
    if title:
        fig.text(0.5, 1 - 0.12 / fig_h, title, fontsize=10, ha="center", va="top")
    return fig
