"""Readings of notebooks 01 and 02: the noising grid (slide 3), the training noise levels (slide 4),
the sampling schedule (slide 5) and the base models' sample panels (slide 6).

Every function takes plain numbers: anything ``float()`` reads, a tensor's elements included.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from diffnb.course.readings.text import Reading, _join, _sentences
from diffnb.course.readings.training import _epochs

# "Rarely": under this share of the training draws lies above the high level.
RARE = 0.05

_SIGMA_DATA = "$\\sigma_\\text{data}$"


def _floats(values: Iterable) -> list[float]:
    return [float(v) for v in values]


def _below(x: float, bound: float) -> str:
    """``x`` with the fewest decimals (1 to 4) that still print it below ``bound``."""
    for digits in range(1, 5):
        text = f"{x:.{digits}f}"
        if float(text) < bound:
            return text
    return f"{x:.4f}"


def noise_columns(sigmas: Sequence, *, sigma_data: float, sigma_max: float) -> Reading:
    """After the slide-3 grid (columns: increasing ``sigmas``, one noise per row): the first
    column whose noise outweighs the data's standard deviation, and the last column against the
    sampler's start ``sigma_max``."""
    s, sd, top = _floats(sigmas), float(sigma_data), float(sigma_max)
    if not s or any(b <= a for a, b in zip(s, s[1:])):
        raise ValueError("need the grid's noise levels in increasing order")
    data = f"$\\sigma_\\text{{data}} = {sd:.3f}$"
    above = [x for x in s if x > sd]
    if not above:
        second = (f"In no column does the noise's standard deviation exceed the images' own "
                  f"({data}).")
    elif len(above) == len(s):
        second = f"In every column the noise's standard deviation exceeds the images' own ({data})."
    else:
        second = (f"From the column $\\sigma = {above[0]:g}$ on, the noise's standard deviation "
                  f"exceeds the images' own ({data}): compare that column with the one before it.")
    last = f"The last column, $\\sigma = {s[-1]:g}$,"
    if s[-1] == top:
        third = f"{last} is where sampling starts (notebook 02)."
    elif s[-1] < top:
        third = f"{last} is still below $\\sigma_\\max = {top:g}$, where sampling starts (notebook 02)."
    else:
        third = f"{last} lies above $\\sigma_\\max = {top:g}$, where sampling starts (notebook 02)."
    return _sentences("Read each row from left to right: only $\\sigma$ changes.", second, third)


def training_sigmas(draws: Iterable, *, sigma_data: float, sigma_max: float,
                    high: float = 5.0) -> Reading:
    """After the histogram of training noise levels: the shares below ``sigma_data`` and above
    ``high``, and the largest draw against the sampler's start ``sigma_max``."""
    s = _floats(draws)
    if not s:
        raise ValueError("no noise levels to read")
    n, top = len(s), max(s)
    below = sum(x < float(sigma_data) for x in s) / n
    above = sum(x > high for x in s) / n
    first = (f"{below:.0%} of the draws lie below {_SIGMA_DATA} (dashed line), and {above:.1%} "
             f"above $\\sigma = {high:g}$.")
    if top < sigma_max:
        second = (f"The largest of the {n:,} draws is $\\sigma = {_below(top, sigma_max)}$, below "
                  f"$\\sigma_\\max = {sigma_max:g}$, where sampling starts.")
    else:
        second = (f"The largest of the {n:,} draws reaches $\\sigma_\\max = {sigma_max:g}$, where "
                  "sampling starts.")
    if above < RARE:
        third = ("Training rarely sees the highest levels, and needs little: at such noise the best "
                 "denoiser predicts close to the mean image.")
    else:
        third = (f"At noise above $\\sigma = {high:g}$ the best denoiser predicts close to the mean "
                 "image, so these draws teach the network little.")
    return _sentences(first, second, third)


def schedule_steps(schedules: Mapping, *, below: float = 1.0) -> Reading:
    """After the Karras-schedule figure: how many of each schedule's steps lie below ``below``.

    ``schedules``: rho -> the schedule's noise levels, with or without the final 0.
    """
    if not schedules:
        raise ValueError("no schedules to read")
    levels = {}
    for rho, sched in schedules.items():
        s = _floats(sched)
        levels[rho] = s[:-1] if s and s[-1] == 0 else s
    counts = {rho: sum(x < below for x in s) for rho, s in levels.items()}
    lengths = {len(s) for s in levels.values()}
    if len(lengths) == 1:
        listing = ", ".join(f"{k} with $\\rho = {rho:g}$" for rho, k in counts.items())
        first = f"Steps spent below $\\sigma = {below:g}$, of {lengths.pop()}: {listing}."
    else:
        listing = ", ".join(f"{k} of {len(levels[rho])} with $\\rho = {rho:g}$"
                            for rho, k in counts.items())
        first = f"Steps spent below $\\sigma = {below:g}$: {listing}."
    ends = {(f"{s[0]:g}", f"{s[-1]:g}") for s in levels.values()}
    if len(ends) == 1:
        start, stop = ends.pop()
        span = (f"Every schedule runs from {start} to {stop} (then 0); $\\rho$ only decides "
                "where the steps in between go.")
    else:
        span = "The schedules do not share their ends: " + ", ".join(
            f"$\\rho = {rho:g}$ runs from {s[0]:g} to {s[-1]:g}" for rho, s in levels.items()) + "."
    order = [counts[rho] for rho in sorted(counts)]
    trend = ""
    if len(order) > 1 and all(a < b for a, b in zip(order, order[1:])):
        trend = f"The larger $\\rho$, the more steps below $\\sigma = {below:g}$."
    elif len(order) > 1 and all(a > b for a, b in zip(order, order[1:])):
        trend = f"The larger $\\rho$, the fewer steps below $\\sigma = {below:g}$."
    return _sentences("The $\\sigma$ axis is logarithmic.", first, trend, span)


def base_samples(names: Sequence[str], *, samples: int, profile: str,
                 epochs: int | Mapping[str, int]) -> Reading:
    """After notebook 02's sample panels (one per model in ``names``, the same ``samples`` seeds
    in each): what the shared seeds mean, and how long the models trained."""
    names = list(names)
    if not names:
        raise ValueError("no panels to read")
    per = {name: int(epochs[name] if isinstance(epochs, Mapping) else epochs) for name in names}
    if len(names) == 1:
        first = f"The panel shows {samples} samples, each drawn from its own seed."
    else:
        panels = "Both panels" if len(names) == 2 else f"All {len(names)} panels"
        first = (f"{panels} use the same {samples} seeds, so the same position starts from the "
                 "same noise in each: differences between the panels come from the models alone.")
    if len(set(per.values())) == 1:
        k = next(iter(per.values()))
        who = f"{_join(names)} are {profile}-profile models" if len(names) > 1 else \
            f"{names[0]} is a {profile}-profile model"
        trained = f"{who} trained for {_epochs(k)}"
    else:
        trained = (f"{_join(names)} are {profile}-profile models, trained for "
                   + _join([f"{_epochs(k)} ({name})" for name, k in per.items()]))
    them = "them" if len(names) > 1 else "it"
    return _sentences(first, "Look for garment shapes, uniform backgrounds and the variety across "
                      "a panel.", f"{trained}; notebook 05 scores {them} with FID.")
