"""Readings after the conditioning notebooks' figures (notebooks 03 and 04): the per-class panels
of a class-conditional model, and how much the samples of one panel differ from each other."""
from __future__ import annotations

from collections.abc import Sequence

from diffnb.course.readings.samples import NO_CHANGE
from diffnb.course.readings.text import Reading, _join, _sentences

# Fashion-MNIST's classes worn on the upper body: their silhouettes are alike in the data too.
UPPER_BODY = ("T-shirt/top", "Pullover", "Coat", "Shirt")


def _spread(panel) -> float:
    """Mean absolute pixel difference over every pair of images of one panel."""
    pairs = [(i, j) for i in range(len(panel)) for j in range(i + 1, len(panel))]
    return sum(float(abs(panel[i] - panel[j]).mean()) for i, j in pairs) / len(pairs)


def class_panels(samples, class_names: Sequence[str], *, model: str) -> Reading:
    """After one panel of samples per class (``samples``: K x n images, class-major, a torch
    tensor or numpy array in [-1, 1]; ``class_names``: the K classes; ``model``: the model that
    drew them): how much two samples of one panel differ, the panels with the least and the most
    variety, and which panels are one picture repeated."""
    k = len(class_names)
    if not k or len(samples) % k:
        raise ValueError(f"{len(samples)} samples do not split into {k} class panels")
    n = len(samples) // k
    first = f"One panel per class, {n} sample{'' if n == 1 else 's'} each, drawn by {model}."
    upper = [c for c in UPPER_BODY if c in class_names]
    compare = (f"Compare the upper-body classes ({_join(upper)}): their silhouettes are alike "
               "in the data too." if len(upper) > 1 else "")
    last = "Notebook 05 scores each class with FID."
    if n < 2:
        return _sentences(first, compare, last)
    panels = samples.reshape(k, n, -1)
    spread = {name: _spread(panel) for name, panel in zip(class_names, panels)}
    low, high = min(spread, key=spread.get), max(spread, key=spread.get)
    mean = sum(spread.values()) / k
    variety = (f"Two samples of one panel differ by {mean:.3f} on average (mean absolute pixel "
               f"difference in [-1, 1]): least in {low} ({spread[low]:.3f}), most in {high} "
               f"({spread[high]:.3f}).")
    same = [name for name in class_names if spread[name] < NO_CHANGE]
    if same:
        verdict = (f"The samples of {_join(same)} differ by less than {NO_CHANGE}: "
                   f"{'that panel is' if len(same) == 1 else 'those panels are'} one picture "
                   "repeated, so the model covers little of the class.")
    else:
        verdict = ("No panel is one picture repeated; the panels with the least variety are the "
                   "first to check for a model that covers little of its class.")
    return _sentences(first, variety, verdict, compare, last)
