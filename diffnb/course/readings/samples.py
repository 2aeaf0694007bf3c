"""Readings after sample figures: one row per class (notebook 04), a guidance sweep (notebooks 06
and 07), and notebook 07's faces: the data's attributes, what each attribute changes, the null
condition."""
from __future__ import annotations

from collections.abc import Sequence

from diffnb.course.readings.text import Reading, _join, _sentences


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


def class_rows(samples, class_names: Sequence[str]) -> Reading:
    """After a grid of one row per class (slide 7): ``samples`` holds ``len(class_names)`` rows of
    n samples each, row after row, the same seeds in every row. How much changing only the label
    moves a sample, against changing only the seed, and which two classes' rows are closest."""
    k = len(class_names)
    rows = samples.reshape(k, len(samples) // k, -1).float()
    pairs = {(i, j): _mean_abs(rows[i], rows[j]) for i in range(k) for j in range(i + 1, k)}
    label = sum(pairs.values()) / len(pairs)
    first = (f"Changing only the label moves a sample by {label:.3f} on average (mean absolute "
             "pixel difference between two rows, column by column)")
    n = rows.shape[1]
    if n > 1:
        seeds = [_mean_abs(rows[:, a], rows[:, b]) for a in range(n) for b in range(a + 1, n)]
        first += f"; changing only the seed, within a row, by {sum(seeds) / len(seeds):.3f}"
    if max(pairs.values()) < NO_CHANGE:
        return _sentences(first + ".", f"Below {NO_CHANGE}: the rows are the same picture; the "
                          "model does not use its label yet.")
    (a, b), (c, d) = min(pairs, key=pairs.get), max(pairs, key=pairs.get)
    second = (f"Closest rows: {class_names[a]} and {class_names[b]} ({pairs[a, b]:.3f}); "
              f"furthest: {class_names[c]} and {class_names[d]} ({pairs[c, d]:.3f}).")
    return _sentences(first + ".", second)


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
                  "its condition (class or attributes) yet.")
    if max(outside) == 0:
        return _sentences(first, "No pixel leaves [-1, 1] at any w.")
    second = ("Pixels outside [-1, 1], clipped in the figure: "
              + _join([f"{100 * o:.1f}% at w = {w:g}" for w, o in zip(scales, outside)]) + ".")
    rises = all(b > a for a, b in zip(outside, outside[1:]))
    if rises:
        third = ("The share rises with every step of w: guidance pushes pixel values past the "
                 "data's range, the price of following the condition more closely.")
    elif len({f"{100 * o:.1f}" for o in outside}) == 1:
        third = "The share is the same at every w: guidance does not change it here."
    else:
        third = "The share does not rise with every step of w here."
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
