"""What the classifier reads in a model's samples, beside FID (slide 9; notebook 05).

:func:`read_classes` reads the very samples a protocol scored (the ``SampleSource`` draws them
once, for Inception and the classifier together): for a class-conditional model, per class, the
share of samples read as the class asked for; for an unconditional one, the share read as each
class. :func:`own_class_table` sets those shares beside the classifier's own accuracy on real
test images, the ceiling they are read against.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from diffnb import config, data, fid
from diffnb.evaluation import classifier
from diffnb.evaluation.sources import SampleSource


def kept_reader() -> classifier.Classifier | None:
    """The kept classifier, or None where ``weights/classifier/`` is absent (diffnb installed
    outside a checkout): scores then hold FID alone. A corrupt file is an error."""
    try:
        return classifier.load()
    except FileNotFoundError:
        return None


def read_classes(gen: SampleSource, protocol: str, *, seed: int, class_conditional: bool,
                 sizes: dict) -> dict:
    """What the classifier reads in a protocol's samples: per class, the share classified as
    the class asked for (class-conditional), or the share read as each class (unconditional)."""
    drawn = fid.draws(protocol, seed=seed, class_conditional=class_conditional, **sizes)
    if class_conditional:
        share = [float((gen.classes(c, n, s) == c).mean()) for c, n, s in drawn]
        return {"own_class_share": share, "own_class_share_mean": sum(share) / len(share),
                "classified_per_class": [n for _, n, _ in drawn]}
    read = np.concatenate([gen.classes(None, n, s) for _, n, s in drawn])
    counts = np.bincount(read, minlength=data.NUM_CLASSES)
    return {"class_histogram": (counts / counts.sum()).tolist(), "classified": int(len(read))}


def _check_read(scores: dict[str, dict], protocol: str, field: str) -> None:
    missing = [n for n, s in scores.items() if field not in s[protocol]]
    if missing:
        raise ValueError(f"no classifier reading in the {protocol} scores of {missing}: score "
                         "them again with weights/classifier/ present (DIFFNB_RESCORE=1)")


def own_class_table(scores: dict[str, dict], *, protocol: str = "report") -> pd.DataFrame:
    """Beside slide 9: per class, the share of each class-conditional preset's samples that the
    classifier reads as the class asked for, and last the classifier's own accuracy on real
    test images of that class (the ceiling)."""
    _check_read(scores, protocol, "own_class_share")
    rows = {config.get_preset(n).title: s[protocol]["own_class_share"]
            for n, s in scores.items()}
    table = pd.DataFrame(rows, index=list(data.CLASS_NAMES)).T
    table.loc["classifier on real test images"] = [
        classifier.manifest()["test_accuracy_per_class"][c] for c in data.CLASS_NAMES]
    return table


def class_histogram_table(scores: dict[str, dict], *, protocol: str = "report") -> pd.DataFrame:
    """Per unconditional preset, the share of its samples the classifier reads as each class;
    last, the same reading of the real test images (10% of each class, as read)."""
    _check_read(scores, protocol, "class_histogram")
    table = pd.DataFrame({f"{config.get_preset(n).title} ({n})": s[protocol]["class_histogram"]
                          for n, s in scores.items()}, index=list(data.CLASS_NAMES)).T
    test = data.test_set()
    table.loc["real test images, as read"] = classifier.class_histogram(
        classifier.load(), data.to_model_space(test.images))
    return table
