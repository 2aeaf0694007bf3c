"""Readings after the classifier's tables (notebook 05): which classes a model draws as asked,
against the classifier's own accuracy on real images, and an unconditional model's mix."""
from __future__ import annotations

from diffnb.course.readings.text import Reading, _join, _sentences


def _pct(x: float) -> str:
    return f"{100 * float(x):.0f}%"


def own_class(table, *, ceiling_row: str) -> Reading:
    """After an own-class table (one row per class-conditional model, one column per class, the
    share of its samples read as the class asked for; ``ceiling_row``: the classifier's accuracy
    on real test images): the best row, and the classes each row draws worst against the
    ceiling."""
    ceiling = table.loc[ceiling_row].astype(float)
    models = table.drop(index=ceiling_row).astype(float)
    mean = models.mean(axis=1)
    best = mean.idxmax()
    tied = [m for m in mean.index if _pct(mean[m]) == _pct(mean[best])]
    who = f"{best} draws" if len(tied) == 1 else f"{_join(tied)} draw"
    first = (f"{who} the most samples of the class asked for: {_pct(mean[best])} on "
             f"average over the ten classes; the classifier itself reads {_pct(ceiling.mean())} "
             "of real test images right.")
    ratio = models[list(ceiling.index)] / ceiling.clip(lower=1e-9)
    worst = ratio.idxmin(axis=1)
    rest = [f"{m} is furthest below the ceiling in {worst[m]}: {_pct(models.loc[m, worst[m]])} "
            f"against {_pct(ceiling[worst[m]])} on real images." for m in models.index]
    return _sentences(first, *rest)


def class_histogram(table, *, data_row: str) -> Reading:
    """After a class-histogram table (one row per unconditional model, one column per class, the
    share of its samples read as that class; ``data_row``: the same for real images): the most
    over- and under-drawn class of each model."""
    data = table.loc[data_row].astype(float)
    models = table.drop(index=data_row).astype(float)
    parts = []
    for m in models.index:
        excess = models.loc[m] - data
        hi, lo = excess.idxmax(), excess.idxmin()
        parts.append(f"{m} draws {hi} most often ({_pct(models.loc[m, hi])} against "
                     f"{_pct(data[hi])} in the data) and {lo} least ({_pct(models.loc[m, lo])}).")
    return _sentences(*parts, "FID sees this only as a shift in feature statistics; the "
                      "histogram names the classes.")



