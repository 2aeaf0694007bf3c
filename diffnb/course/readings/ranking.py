"""Reading after slide 8: where our order of the report's eight models agrees with the report's,
and what the table itself says about why."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from diffnb.course.readings.text import Reading, _join, _sentences

OURS, THEIRS, FLOOR = "ours, report protocol", "report FID (slide 8)", "floor (report)"


def _order(values) -> str:
    return " < ".join(values.sort_values().index)


def ranking(table, *, conditional: Iterable[str], epochs: Mapping[str, int] | None = None) -> Reading:
    """After the slide-8 table (``evaluation.slide8_table``): Spearman's rank correlation of our
    report-protocol FIDs with the report's; whether both put the class-conditional models
    (``conditional``) ahead of the others, and how much of that gap is the protocol's floor; where
    the orders within each group differ, with the epochs each model trained (``epochs``) where
    they line up with our order."""
    t = table.set_index("preset")
    ours, theirs = t[OURS].astype(float), t[THEIRS].astype(float)
    rho = ours.rank().corr(theirs.rank())                       # Spearman: Pearson of the ranks
    cond = [n for n in t.index if n in set(conditional)]
    rest = [n for n in t.index if n not in cond]
    first = (f"Spearman's rank correlation of our order with the report's, over the {len(t)} "
             f"models: {rho:.2f} (1 = the same order).")
    second = third = ""
    if cond and rest:
        split_ours = ours[cond].max() < ours[rest].min()
        split_theirs = theirs[cond].max() < theirs[rest].min()
        if split_ours and split_theirs:
            excess = ours - t[FLOOR].astype(float)
            gap = t.loc[rest, FLOOR].mean() - t.loc[cond, FLOOR].mean()
            second = ("Where they agree: both put the class-conditional models "
                      f"({_join(cond)}) ahead of the other {len(rest)}.")
            if gap > 0:
                second += (f" Part of that is the protocol's: comparing one class at a time, "
                           f"their real-vs-real floor is {gap:.0f} lower.")
            if excess[cond].max() < excess[rest].min():
                second += (f" The rest is the label's: above its floor, the worst of them "
                           f"({excess[cond].max():.0f}) is still ahead of the best of the others "
                           f"({excess[rest].min():.0f}).")
        else:
            who = "neither" if not (split_ours or split_theirs) else ("only ours" if split_ours
                                                                      else "only the report's")
            second = (f"Putting every class-conditional model ahead of the others: {who}.")
    differ = []
    for group in (cond, rest):
        if len(group) > 1 and _order(ours[group]) != _order(theirs[group]):
            differ.append(group)
    if differ:
        parts = [f"ours {_order(ours[g])}, the report's {_order(theirs[g])} (within "
                 f"{theirs[g].max() - theirs[g].min():.1f} of one another)" for g in differ]
        third = "Where they differ, within a group: " + "; ".join(parts) + "."
        for g in differ:
            if epochs and len({epochs[n] for n in g}) > 1:
                longest = max(epochs[n] for n in g)
                long = [n for n in g if epochs[n] == longest]
                short = [n for n in g if n not in long]
                if ours[long].max() < ours[short].min():
                    third += (f" Here {_join(long)}, trained for {longest} epochs against the "
                              f"others' fewer, lead {_join(short)}: our runs are short, and "
                              "training longer still pays.")
    return _sentences(first, second, third)
