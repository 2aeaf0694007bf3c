"""A reading is a Markdown string: shown as formatted text in a notebook, its own text elsewhere."""
from __future__ import annotations

from collections.abc import Sequence


class Reading(str):
    """A Markdown string: rendered as Markdown in a notebook, its own text everywhere else."""

    def _repr_markdown_(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return str(self)


def md(text: str) -> Reading:
    """A reading written in the notebook (e.g. a short f-string): shown as Markdown."""
    return Reading(text)


def _join(parts: Sequence[str], *, empty: str = "none") -> str:
    parts = [str(p) for p in parts]
    if not parts:
        return empty
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _f(x: float, digits: int = 1) -> str:
    return f"{float(x):.{digits}f}"


def _sentences(*parts: str) -> Reading:
    return Reading(" ".join(p.strip() for p in parts if p and p.strip()))
