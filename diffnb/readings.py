"""Readings: the sentences after a figure or a table, computed from the numbers they describe.

Each function takes the table (a pandas DataFrame) or dict that a notebook has just computed and
returns a :class:`Reading`, a Markdown string. As the last expression of a notebook cell it is
shown as formatted text; its plain-text form is the text itself (no object repr). A reading states
no number, ranking or winner that it did not read from its argument, so it stays true in every
profile: the quick CPU profile and the full GPU profile give very different numbers.

This module imports nothing heavier than pandas, and pandas only where a function needs it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

# Points of two solvers count as "the same number of network evaluations" when their NFEs differ
# by at most this fraction (Heun's NFE is odd, 2 * steps - 1; Euler's is its step count).
NFE_TOLERANCE = 0.15


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


# ---- training ------------------------------------------------------------------------------

def loss_curves(histories: Mapping[str, Mapping[str, Sequence[float]]]) -> Reading:
    """After a loss-curve figure: final validation losses, lowest first, and their last trend.

    ``histories``: label -> a trainer history with ``train_loss`` and ``valid_loss`` per epoch.
    """
    if not histories:
        raise ValueError("no training histories to read")
    final = {label: float(h["valid_loss"][-1]) for label, h in histories.items()}
    order = sorted(final, key=final.get)
    listing = ", ".join(f"{label} {final[label]:.3f}" for label in order)
    if len(order) == 1:
        first = f"Final validation loss: {listing}."
    else:
        first = f"Final validation loss, lowest first: {listing}."
    fell = [k for k, h in histories.items()
            if len(h["valid_loss"]) > 1 and h["valid_loss"][-1] < h["valid_loss"][-2]]
    rose = [k for k, h in histories.items()
            if len(h["valid_loss"]) > 1 and h["valid_loss"][-1] >= h["valid_loss"][-2]]
    trend = ""
    every = "every model" if len(histories) > 1 else _join(list(histories))
    if fell and rose:
        trend = (f"In the last epoch the validation loss fell for {_join(fell)} and did not fall "
                 f"for {_join(rose)}.")
    elif fell:
        trend = f"In the last epoch the validation loss fell for {every}."
    elif rose:
        who = "any model" if len(histories) > 1 else _join(list(histories))
        trend = f"In the last epoch the validation loss did not fall for {who}."
    return _sentences(first, trend,
                      "A dashed line far above its solid one means the model fits its training "
                      "images better than new ones; a line still falling at the right edge means "
                      "more epochs would help.")


def zero_init(losses: Mapping[bool, Sequence[float]]) -> Reading:
    """After the zero-initialisation figure: first-step and first-epoch losses, with and without.

    ``losses``: ``{True: per-step losses with zero init, False: without}``.
    """
    on, off = list(losses[True]), list(losses[False])
    if not on or not off:
        raise ValueError("need the losses of both runs")
    mean_on, mean_off = sum(on) / len(on), sum(off) / len(off)
    first = (f"First training step: loss {on[0]:.3f} with zero initialisation, {off[0]:.3f} "
             f"without. Mean over the first {len(on)} steps: {mean_on:.3f} with, {mean_off:.3f} "
             "without.")
    if mean_on < mean_off:
        verdict = (f"Over these steps the zero-initialised network's loss is "
                   f"{mean_off / mean_on:.1f} times lower on average.")
    elif mean_on > mean_off:
        verdict = (f"Over these steps the zero-initialised network's loss is higher on average "
                   f"(by a factor {mean_on / mean_off:.1f}).")
    else:
        verdict = "Over these steps both average the same loss."
    return _sentences(first, verdict)


# ---- FID tables (slides 8 and 9) -----------------------------------------------------------

def slide8(table) -> Reading:
    """After the slide-8 table (``evaluation.slide8_table``): the best model under each protocol,
    how far each protocol's numbers sit above their floor, and the report's best for comparison."""
    t = table.reset_index(drop=True)
    rep, std = "ours, report protocol", "ours, standard (pooled)"
    r = t.loc[t[rep].idxmin()]
    s = t.loc[t[std].idxmin()]
    if r["preset"] == s["preset"]:
        first = (f"Lowest FID here under both protocols: **{r['preset']}** (report protocol "
                 f"{_f(r[rep])}, floor {_f(r['floor (report)'])}, n = {int(r['n report'])} per "
                 f"class; standard {_f(s[std])}, floor {_f(s['floor (standard)'])}, "
                 f"n = {int(s['n standard'])}).")
    else:
        first = (f"Lowest FID here: **{r['preset']}** under the report protocol ({_f(r[rep])}, "
                 f"floor {_f(r['floor (report)'])}, n = {int(r['n report'])} per class) and "
                 f"**{s['preset']}** under the standard protocol ({_f(s[std])}, floor "
                 f"{_f(s['floor (standard)'])}, n = {int(s['n standard'])}).")
    gap = t[std] - t["floor (standard)"]
    lo, hi = t.loc[gap.idxmin()], t.loc[gap.idxmax()]
    second = (f"Above its floor, the standard protocol's FID ranges from {_f(gap.min())} "
              f"({lo['preset']}) to {_f(gap.max())} ({hi['preset']}).")
    third = ""
    if "report FID (slide 8)" in t and t["report FID (slide 8)"].notna().any():
        b = t.loc[t["report FID (slide 8)"].idxmin()]
        rank = int(t[rep].rank(method="min")[t.index[t["preset"] == b["preset"]][0]])
        third = (f"The report's lowest Average FID was {b['preset']}'s ({b['report FID (slide 8)']:.2f}, "
                 f"slide 8); here it ranks {rank} of {len(t)} under the report protocol.")
    return _sentences(first, second, third)


def _extreme_counts(table, *, worst: bool) -> list[tuple[str, int, float, float]]:
    """(class, rows where it is the extreme, lowest and highest of those values), most rows first."""
    picks = table.idxmax(axis=1) if worst else table.idxmin(axis=1)
    out = []
    for cls in dict.fromkeys(picks):                      # first-seen order, then by count
        rows = picks.index[picks == cls]
        values = [float(table.loc[row, cls]) for row in rows]
        out.append((str(cls), len(rows), min(values), max(values)))
    return sorted(out, key=lambda c: -c[1])


def per_class(table, *, floor_row: str | None = None) -> Reading:
    """After a per-class FID table (slide 9's layout: one row per model, one column per class):
    the worst and the best class of each row, grouped by class.

    ``floor_row``: the label of a real-vs-real row, read separately (the floor, not a model).
    """
    models = table.drop(index=floor_row) if floor_row is not None else table
    m = len(models)

    def describe(worst: bool) -> str:
        counts = _extreme_counts(models, worst=worst)
        parts = []
        for cls, k, lo, hi in counts:
            values = _f(lo) if k == 1 else f"{_f(lo)} to {_f(hi)}"
            parts.append(f"{cls} in {k} of {m} row{'s' if m > 1 else ''} ({values})")
        return _join(parts)

    first = f"Worst class (red): {describe(True)}."
    second = f"Best class (green): {describe(False)}."
    third = ""
    if floor_row is not None:
        floor = table.loc[floor_row]
        third = (f"The floor row is highest for {floor.idxmax()} ({_f(floor.max())}) and lowest "
                 f"for {floor.idxmin()} ({_f(floor.min())}).")
    return _sentences(first, second, third)


def floor_curve(curve, *, n_report: int = 64) -> Reading:
    """After the floor-vs-n curve (columns ``n``, ``real_vs_real_fid``): how the floor falls with n,
    and its value at the report's n when that n was measured."""
    c = curve.sort_values("n").reset_index(drop=True)
    values = c["real_vs_real_fid"].astype(float).tolist()
    ns = [int(n) for n in c["n"]]
    falls = all(b < a for a, b in zip(values, values[1:]))
    first = (f"Two sets of real images score {_f(values[0])} at n = {ns[0]} and {_f(values[-1])} "
             f"at n = {ns[-1]}; the floor {'falls at every step' if falls else 'does not fall at every step'} "
             "of n measured here.")
    if n_report in ns:
        v = values[ns.index(n_report)]
        second = (f"At the report's n = {n_report} it is {_f(v)}: any FID measured with "
                  f"{n_report} vs {n_report} images contains this much sample-size bias.")
    else:
        second = f"n = {n_report} (the report's) was not measured in this profile."
    return _sentences(first, second)


def excess_ranking(per_class_table, *, n: int, top: int = 3, report=None) -> Reading:
    """After the low-performing-classes printout. ``per_class_table``: slide 9's table, models
    first, the real-vs-real floor as its **last** row (``evaluation.slide9_table``).

    Which classes have the highest and lowest floors at this n, which lie furthest above their
    floor on average over the models, and where T-shirt/top stands. ``report``: the report's own
    per-class table (``evaluation.report_slide9_table``): then also how often T-shirt/top is the
    report's worst class, and whether its floor here could explain that."""
    floor = per_class_table.iloc[-1].astype(float)
    excess = (per_class_table.iloc[:-1].astype(float) - floor).mean()
    by_floor = floor.sort_values(ascending=False)
    high = [f"{c} ({_f(v)})" for c, v in by_floor.head(top).items()]
    low = [f"{c} ({_f(v)})" for c, v in by_floor.tail(2).iloc[::-1].items()]
    first = (f"At n = {n}, the real-vs-real floor is highest for {_join(high)} and lowest for "
             f"{_join(low)}: for the high-floor classes more of any FID is sample-size bias, not "
             "model failure.")
    by_excess = excess.sort_values(ascending=False)
    m = len(per_class_table) - 1
    second = (f"Above the floor (mean over the {m} model{'s' if m != 1 else ''}), "
              f"{by_excess.index[0]} is furthest ({_f(by_excess.iloc[0])}) and "
              f"{by_excess.index[-1]} closest ({_f(by_excess.iloc[-1])}).")
    third = ""
    if "T-shirt/top" in floor.index:
        fr = list(by_floor.index).index("T-shirt/top") + 1
        er = list(by_excess.index).index("T-shirt/top") + 1
        third = (f"T-shirt/top's floor ranks {fr} of {len(floor)} (1 = highest) and its excess "
                 f"over the floor {er} of {len(floor)} (1 = furthest above).")
        if report is not None and "T-shirt/top" in report.columns:
            worst = int((report.idxmax(axis=1) == "T-shirt/top").sum())
            if worst == 0:
                third += " In the report, T-shirt/top is not the worst class of any model."
            else:
                third += (f" In the report, T-shirt/top is the worst class in {worst} of "
                          f"{len(report)} models; ")
                if fr > top:
                    third += (f"its floor here is not among the {top} highest, so the class's own "
                              "variety does not explain that, and the `if target:` sampling bug "
                              "(notebook 04) is the likely cause.")
                else:
                    third += (f"its floor here is among the {top} highest, so part of that is the "
                              "class's own variety.")
    return _sentences(first, second, third)


# ---- notebook 06: ablation, solvers, the last row per class -------------------------------

def ablation(table) -> Reading:
    """After the ablation table (``evaluation.ablation``: columns change, FID, floor, n): the
    lowest-FID row, the last row, and which changes lowered or raised FID against the row above."""
    t = table.reset_index(drop=True)
    best = int(t["FID"].idxmin())
    last = len(t) - 1
    first = f"Lowest FID: **{t.loc[best, 'change']}** ({_f(t.loc[best, 'FID'])}, row {best + 1} of {len(t)})."
    if best == last:
        first += " It is also the last row: the changes together score best here."
    else:
        first += (f" The last row ({t.loc[last, 'change']}) scores {_f(t.loc[last, 'FID'])}: "
                  "here the changes together are not the best row.")
    delta = t["FID"].diff()
    down = [f"{t.loc[i, 'change']} ({_f(delta[i])})" for i in range(1, len(t)) if delta[i] < 0]
    up = [f"{t.loc[i, 'change']} (+{_f(delta[i])})" for i in range(1, len(t)) if delta[i] > 0]
    second = (f"Against the row above, FID went down with {_join(down)}, and up with "
              f"{_join(up)}.")
    floors = sorted(set(float(f) for f in t["floor"]))
    ns = sorted(set(int(n) for n in t["n"]))
    floor_text = _f(floors[0]) if len(floors) == 1 else f"{_f(floors[0])} to {_f(floors[-1])}"
    n_text = str(ns[0]) if len(ns) == 1 else f"{ns[0]} to {ns[-1]}"
    third = (f"Each row is one draw of n = {n_text} generated images; two sets of real images of "
             f"that size already score {floor_text} (the floor).")
    return _sentences(first, second, third)


def _nfe_groups(points: list[tuple[str, int, int, float]]) -> list[list[tuple[str, int, int, float]]]:
    """Points (solver, steps, NFE, FID) grouped by NFE within :data:`NFE_TOLERANCE`."""
    groups: list[list] = []
    for p in sorted(points, key=lambda p: p[2]):
        if groups and p[2] <= groups[-1][0][2] * (1 + NFE_TOLERANCE) \
                and p[0] not in {q[0] for q in groups[-1]}:
            groups[-1].append(p)
        else:
            groups.append([p])
    return groups


def nfe(table) -> Reading:
    """After the FID-vs-NFE table (columns solver, steps, NFE, FID): which solver is lower at
    (about) the same number of network evaluations, and the lowest FID overall."""
    points = [(str(r.solver), int(r.steps), int(r.NFE), float(r.FID)) for r in table.itertuples()]
    if not points:
        raise ValueError("no NFE points to read")
    compared = []
    for g in _nfe_groups(points):
        if len(g) < 2:
            continue
        best_fid = min(p[3] for p in g)
        winners = [p[0] for p in g if p[3] == best_fid]
        same = len({p[2] for p in g}) == 1
        at = f"NFE {g[0][2]}" if same else "NFE " + " vs ".join(str(p[2]) for p in g)
        scores = ", ".join(f"{p[0]} {_f(p[3])}" for p in g)
        who = winners[0] if len(winners) == 1 else "a tie"
        compared.append(f"at {at}, {who} ({scores})")
    if compared:
        first = "Lower FID at (about) the same number of network evaluations: " + "; ".join(compared) + "."
    else:
        first = "No two solvers were run at about the same number of network evaluations."
    best = min(points, key=lambda p: p[3])
    second = f"Lowest FID overall: {best[0]}, {best[1]} steps (NFE {best[2]}), {_f(best[3])}."
    return _sentences(first, second)


def versus_report(table, *, ours: str, report: str, floor_row: str, n_ours: int,
                  n_report: int = 64) -> Reading:
    """After a per-class table holding one of our rows, the report's row and the floor row (at
    ``n_ours``): in how many classes ours is lower than the report's, and where it is furthest
    above its floor. ``n_report``: the report's images per class (slide 9: 64)."""
    o, r, f = (table.loc[k].astype(float) for k in (ours, report, floor_row))
    lower = [c for c in o.index if o[c] < r[c]]
    first = (f"Ours is below the report's value in {len(lower)} of {len(o)} classes"
             + (f" ({_join(lower)})." if 0 < len(lower) < len(o) else "."))
    excess = (o - f).sort_values(ascending=False)
    second = (f"Above the floor, ours is furthest for {excess.index[0]} ({_f(excess.iloc[0])}) and "
              f"closest for {excess.index[-1]} ({_f(excess.iloc[-1])}).")
    third = ""
    if n_ours != n_report:
        third = (f"The report's values are at n = {n_report} per class, ours and the floor at "
                 f"n = {n_ours}: FID falls as n grows (notebook 05), so only the distance to the "
                 "floor at the same n compares.")
    return _sentences(first, second, third)


# ---- notebook 07: CelebA faces -------------------------------------------------------------

def _mean_abs(a, b) -> float:
    return float((a - b).abs().float().mean())


def _rows(rows) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in r) for r in (rows.tolist() if hasattr(rows, "tolist") else rows)]


def _describe(row: tuple[int, ...], names: Sequence[str]) -> str:
    return ", ".join(n for n, v in zip(names, row) if v == 1) or "none"


def celeba_data(attributes, names: Sequence[str], *, sigma_data: float) -> Reading:
    """After the grid of real faces: the share of the training split with each attribute
    (``attributes``: 0/1 rows, one per image), the rarest one, and the split's sigma_data."""
    n = len(attributes)
    shares = {name: float(attributes[:, j].float().mean()) for j, name in enumerate(names)}
    rarest = min(shares, key=shares.get)
    return _sentences(
        f"Of the {n:,} training faces, "
        + _join([f"{100 * v:.0f}% are {name}" for name, v in shares.items()]) + ".",
        f"The rarest, {rarest}, gives the model the fewest examples: its samples are the ones "
        "to check first.",
        f"The pixels' standard deviation in [-1, 1] is sigma_data = {sigma_data:.3f}, what EDM's "
        "preconditioning (c_skip, c_out, c_in) uses for these faces.")


# A change below this (mean absolute pixel difference, 1/400 of the [-1, 1] range) is no change:
# invisible in a figure, e.g. the attributes of a model trained for a few steps.
NO_CHANGE = 0.005


def attribute_effects(samples, rows, names: Sequence[str]) -> Reading:
    """After a grid with one row per attribute vector (``rows``: R 0/1 rows) and the same seeds
    in every row (``samples``: R x C images, row-major): how far turning one attribute on moves
    a sample at a fixed seed, against how far changing the seed moves it (mean absolute pixel
    difference in [-1, 1], over every pair of rows that differ in that attribute only)."""
    keys = _rows(rows)
    x = samples.reshape(len(keys), len(samples) // len(keys), -1)
    at = {k: i for i, k in enumerate(keys)}
    effects = {}
    for j, name in enumerate(names):
        pairs = [(i, at[k[:j] + (1,) + k[j + 1:]]) for k, i in at.items()
                 if k[j] == 0 and k[:j] + (1,) + k[j + 1:] in at]
        if pairs:
            effects[name] = sum(_mean_abs(x[a], x[b]) for a, b in pairs) / len(pairs)
    if not effects:
        return _sentences("No two rows differ in one attribute only: nothing to compare.")
    order = sorted(effects, key=effects.get, reverse=True)
    first = ("At a fixed seed, turning one attribute on moves a sample by "
             + _join([f"{effects[k]:.3f} ({k})" for k in order])
             + " on average (mean absolute pixel difference in [-1, 1]).")
    none = [k for k in order if effects[k] < NO_CHANGE]
    unused = (f"{_join(none)} {'changes' if len(none) == 1 else 'change'} the samples by less "
              f"than {NO_CHANGE}, nothing a figure shows: the model does not use "
              f"{'it' if len(none) == 1 else 'them'} yet." if none else "")
    if x.shape[1] < 2:
        return _sentences(first, unused)
    seed = _mean_abs(x[:, 1:], x[:, :-1])
    used = [k for k in order if k not in none]
    weaker = [k for k in used if effects[k] < seed]
    stronger = [k for k in used if k not in weaker]
    second = f"Changing the seed at fixed attributes moves it by {seed:.3f}."
    third = ""
    if weaker:
        third += (f"{_join(weaker)} {'moves' if len(weaker) == 1 else 'move'} a sample less than "
                  "a new seed does: down a column it stays one face, changed by the attribute.")
    if stronger:
        third += (f" {_join(stronger)} {'moves' if len(stronger) == 1 else 'move'} it more than a "
                  "new seed does: the attribute, more than the seed, decides what the face is.")
    return _sentences(first, second, third, unused)


def guidance_sweep(columns: Sequence, scales: Sequence[float]) -> Reading:
    """After a guidance sweep: ``columns[k]`` holds the (unclipped) samples at ``scales[k]``,
    the same seeds and conditions in every column. How far each scale moves the samples from the
    first scale's, and the share of pixels outside [-1, 1] (clipped in the figure)."""
    base = columns[0]
    moved = [_mean_abs(c, base) for c in columns[1:]]
    outside = [float((c.abs() > 1).float().mean()) for c in columns]
    first = (f"Against w = {scales[0]:g}, the samples move by "
             + _join([f"{m:.3f} at w = {w:g}" for w, m in zip(scales[1:], moved)])
             + " (mean absolute pixel difference).")
    if max(moved, default=0.0) < NO_CHANGE:
        first += (f" Below {NO_CHANGE} everywhere: the conditional and the unconditional "
                  "predictions agree, so guidance has nothing to amplify; the model does not use "
                  "the attributes yet.")
    if max(outside) == 0:
        return _sentences(first, "No pixel leaves [-1, 1] at any w.")
    second = ("Pixels outside [-1, 1], clipped in the figure: "
              + _join([f"{100 * o:.1f}% at w = {w:g}" for w, o in zip(scales, outside)]) + ".")
    rises = all(b > a for a, b in zip(outside, outside[1:]))
    third = ("The share rises with every step of w: guidance pushes colours past the data's range, "
             "the price of following the condition more closely." if rises else
             "The share does not rise with every step of w here.")
    return _sentences(first, second, third)


def null_condition(null, conditioned, rows, names: Sequence[str], *, train_attributes=None
                   ) -> Reading:
    """After the null-condition figure: ``null`` (C images) and ``conditioned`` (R x C images,
    one row per attribute vector of ``rows``) at the same C seeds. Which condition's samples the
    unconditional ones are nearest to and furthest from; with ``train_attributes``, the most
    common attribute combination among the training faces."""
    keys = _rows(rows)
    x = conditioned.reshape(len(keys), len(null), -1)
    n = null.reshape(len(null), -1)
    dist = [_mean_abs(x[i], n) for i in range(len(keys))]
    near = min(range(len(keys)), key=dist.__getitem__)
    far = max(range(len(keys)), key=dist.__getitem__)
    common = None
    if train_attributes is not None:
        from collections import Counter

        counts = Counter(_rows(train_attributes))
        common, k = counts.most_common(1)[0]
        second = (f"The most common combination among the training faces is "
                  f"'{_describe(common, names)}' ({100 * k / sum(counts.values()):.0f}%)")
    if dist[far] - dist[near] < NO_CHANGE:
        first = (f"At the same seeds, the null-condition samples are as far from every row "
                 f"({dist[near]:.3f} to {dist[far]:.3f} in mean absolute pixel difference): the "
                 "null condition and the attributes give the same faces, the model does not use "
                 "the attributes yet.")
        return _sentences(first, second + "." if common is not None else "")
    first = (f"At the same seeds, the null-condition samples are nearest to the row "
             f"'{_describe(keys[near], names)}' ({dist[near]:.3f}) and furthest from "
             f"'{_describe(keys[far], names)}' ({dist[far]:.3f}), in mean absolute pixel difference.")
    if common is None:
        return _sentences(first)
    second += ("; the null samples sit nearest to it, as they should if, without a condition, "
               "the model follows the training distribution." if common == keys[near]
               else "; the null samples do not sit nearest to it.")
    return _sentences(first, second)

__all__ = ["Reading", "md", "loss_curves", "zero_init", "slide8", "per_class", "floor_curve",
           "excess_ranking", "ablation", "nfe", "versus_report", "celeba_data",
           "attribute_effects", "guidance_sweep", "null_condition", "NFE_TOLERANCE", "NO_CHANGE"]
