"""Readings after FID tables: slides 8 and 9, the floor against n, the classes above their floor,
and notebook 06's ablation, solvers at equal NFE and the last row against the report."""
from __future__ import annotations

from diffnb.course.readings.text import Reading, _f, _join, _sentences

# FID's small-sample threshold (diffnb.fid.distance.SMALL_SAMPLE), repeated so that readings stay
# importable without torch; tests/test_readings.py checks that the two agree.
SMALL_SAMPLE = 2048

# Points of two solvers count as "the same number of network evaluations" when their NFEs differ
# by at most this fraction (Heun's NFE is odd, 2 * steps - 1; Euler's is its step count).
NFE_TOLERANCE = 0.15


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
    gap = (t[std] - t["floor (standard)"]).dropna()
    lo, hi = t.loc[gap.idxmin()], t.loc[gap.idxmax()]
    second = (f"Above its floor, the standard protocol's FID ranges from {_f(gap.min())} "
              f"({lo['preset']}) to {_f(gap.max())} ({hi['preset']})." if len(gap) > 1 else
              f"Above its floor, {lo['preset']}'s standard-protocol FID is {_f(gap.min())}, "
              "the only model that protocol scored here.")
    third = ""
    if "report FID (slide 8)" in t and t["report FID (slide 8)"].notna().any():
        b = t.loc[t["report FID (slide 8)"].idxmin()]
        rank = int(t[rep].rank(method="min")[t.index[t["preset"] == b["preset"]][0]])
        third = (f"The report's lowest Average FID was {b['preset']}'s ({b['report FID (slide 8)']:.2f}, "
                 f"slide 8); here it ranks {rank} of {len(t)} under the report protocol.")
    fourth = ""
    if int(t["n standard"].min()) < SMALL_SAMPLE:
        fourth = (f"With n = {int(t['n standard'].min())} images per set (below {SMALL_SAMPLE:,}), "
                  "sample-size bias dominates these numbers: they do not rank the models, and the "
                  "sample grids of notebooks 02-04 are the better guide.")
    return _sentences(first, second, third, fourth)


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


def floor_curve(curve, *, n_report: int = 64, report=None) -> Reading:
    """After the floor-vs-n curve (columns ``n``, ``real_vs_real_fid``): how the floor falls with n,
    and its value at the report's n when that n was measured. ``report``: the report's slide-9
    table (per-class FIDs at the report's n), whose range is set beside the floor."""
    c = curve.sort_values("n").reset_index(drop=True)
    values = c["real_vs_real_fid"].astype(float).tolist()
    ns = [int(n) for n in c["n"]]
    falls = all(b < a for a, b in zip(values, values[1:]))
    first = (f"Two sets of real images score {_f(values[0])} at n = {ns[0]} and {_f(values[-1])} "
             f"at n = {ns[-1]}; the floor {'falls at every step' if falls else 'does not fall at every step'} "
             "of n measured.")
    if n_report in ns:
        v = values[ns.index(n_report)]
        second = (f"At the report's n = {n_report} it is {_f(v)}: a FID of {n_report} generated "
                  f"against {n_report} real images, all classes mixed, contains this much "
                  "sample-size bias. A per-class FID compares images of one class, whose own "
                  "floor differs (the per-class table's floor row).")
    else:
        second = f"n = {n_report} (the report's) was not measured in this profile."
    third = ""
    if report is not None:
        values9 = report.astype(float).to_numpy()
        third = (f"The report's per-class FIDs on slide 9, also at n = {n_report}, range from "
                 f"{_f(values9.min())} to {_f(values9.max())}. Each compares one class with itself, "
                 "against its own floor.")
    return _sentences(first, second, third)


def class0_bug(bug: dict) -> Reading:
    """After ``studies.class0_bug``: class 0 sampled as a class against the report's way (no
    class), both scored against the same real T-shirts."""
    fid = bug["fid"]
    as_class, as_report = fid["as class 0"], fid["report's if target: (no class)"]
    verdict = ("higher: part of the report's worst class was the bug." if as_report > as_class
               else "not higher: at this size the bug does not show.")
    return _sentences(f"With n = {bug['n']} T-shirts per set, sampling class 0 as a class gives "
                      f"FID {_f(as_class)}.", f"The report's way (no class) gives {_f(as_report)}, "
                      + verdict)


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
                              "variety is an unlikely explanation; the report's `if target:` "
                              "sampling bug is a candidate, measured in the last section.")
                else:
                    third += (f"its floor here is among the {top} highest, so part of that is the "
                              "class's own variety.")
    return _sentences(first, second, third)


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
    delta = t["FID"].diff().round(1)    # as shown: a change of 0.0 is no change
    down = [f"{t.loc[i, 'change']} ({_f(delta[i])})" for i in range(1, len(t)) if delta[i] < 0]
    up = [f"{t.loc[i, 'change']} (+{_f(delta[i])})" for i in range(1, len(t)) if delta[i] > 0]
    same = [str(t.loc[i, "change"]) for i in range(1, len(t)) if delta[i] == 0]
    second = (f"Against the row above, FID went down with {_join(down)}, and up with "
              f"{_join(up)}" + (f"; unchanged with {_join(same)}." if same else "."))
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


def standard_score(row, *, ablation_row=None) -> Reading:
    """After one model's standard-protocol row (``scoring.standard_row``: FID, floor, n and
    optionally ``own class``). ``ablation_row``: the same sampler's row in the ablation, which
    may be scored at a smaller n."""
    first = (f"With the standard protocol, {int(row['n']):,} samples against the test images, "
             f"it scores FID {_f(row['FID'])}; two sets of real images score "
             f"{_f(row['floor'])} at that n.")
    second = ""
    if row.get("own class") is not None:
        second = (f"The classifier reads {100 * float(row['own class']):.0f}% of its samples as "
                  "the class asked for.")
    third = ""
    if ablation_row is not None and int(ablation_row["n"]) != int(row["n"]):
        third = (f"The ablation scored it at n = {int(ablation_row['n']):,}: FID "
                 f"{_f(ablation_row['FID'])}, floor {_f(ablation_row['floor'])}. FID falls as n "
                 "grows, so compare each with its own floor.")
    return _sentences(first, second, third)


def headline(table) -> Reading:
    """The README's line on slide 8 (``evaluation.slide8_table``): the range of our FIDs under
    each protocol against the report's, rounded to whole numbers."""
    def span(column: str) -> str:
        scored = table[column].dropna()
        if len(scored) == 1:   # the cpu profile scores the standard protocol for the best alone
            return f"{scored.iloc[0]:.0f}"
        return f"{scored.min():.0f}-{scored.max():.0f}"
    std = table.dropna(subset=["ours, standard (pooled)"])
    alone = f", {std['preset'].iloc[0]} alone" if len(std) == 1 < len(table) else ""
    return _sentences(f"{span('ours, report protocol')} (report protocol; "
                      f"{span('ours, standard (pooled)')} standard{alone}) against the report's "
                      f"{span('report FID (slide 8)')}")
