"""The two FID protocols of slides 8-9; every FID comes with its real-vs-real floor at the same n.

``report``    the report's: per class, n generated vs n real *training* images (64 in the
              report); "Average FID" = mean of the ten per-class FIDs.
``standard``  N generated (10k) vs the test set, plus KID (Binkowski et al. 2018); per class
              ``n_per_class`` generated (1,000) vs that class's test images. The reference is the
              whole 10k test set, or a seeded subset of ``test_n`` images.
Heusel et al. 2017 recommend at least 10k images; below 2048 per set the upward small-sample bias
dominates, hence the floors. The sizes are the caller's (``evaluation.score`` passes the run
profile's).
"""
from __future__ import annotations

import numpy as np
import torch

from diffnb import data
from diffnb.fid import network
from diffnb.fid.distance import fid_from_features, kid_from_features, warn_small_sample
from diffnb.fid.reference import heldout_features, heldout_fid, real_features, real_vs_real

PROTOCOLS = ("report", "standard")
REPORT_REPEATS = 10  # unconditional models, report protocol: repeats averaged


def draws(protocol: str, *, n: int, n_per_class: int | None = None, test_n: int | None = None,
          seed: int = 0, class_conditional: bool = True) -> list[tuple[int | None, int, int]]:
    """The (label, n, seed) draws a protocol asks its generator for, in order (``test_n``
    changes none: it is accepted so that a protocol's sizes pass as they are)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; use one of {PROTOCOLS}")
    if protocol == "report":
        if class_conditional:
            return [(c, n, seed + c) for c in range(data.NUM_CLASSES)]
        return [(None, n, seed + r) for r in range(REPORT_REPEATS)]
    if class_conditional:
        return [(c, max(count, n_per_class), seed + c) for c, count in enumerate(class_counts(n))]
    return [(None, n, seed)]


def _generated_features(generate, *, label: int | None, n: int, seed: int,
                        **kw) -> np.ndarray:
    features = getattr(generate, "features", None)
    if features is not None:  # a source that gives features itself (sources.SampleSource)
        feats = features(label, n, seed, **kw)
        if np.ndim(feats) != 2 or len(feats) != n:
            raise ValueError(f"generate.features(label, {n}, seed) must return (n, D) features; "
                             f"got shape {np.shape(feats)}")
        return feats
    labels = None if label is None else torch.full((n,), label, dtype=torch.long)
    images = generate(labels, n, seed)
    if not torch.is_tensor(images) or images.ndim != 4 or len(images) != n:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"generate(labels, {n}, seed) must return a tensor (n, 1, 32, 32); "
                         f"got {shape}")
    return network.features(images.detach().float().cpu(), **kw)


def _mean(values: dict | list) -> float:
    vals = list(values.values()) if isinstance(values, dict) else list(values)
    return float(np.mean(vals))


def _report_conditional(generate, *, n: int, seed: int, **kw) -> dict:
    per_class, floor = {}, {}
    for c, name in enumerate(data.CLASS_NAMES):
        ref = real_features("train", n=n, label=c, seed=seed, **kw)
        fake = _generated_features(generate, label=c, n=n, seed=seed + c, **kw)
        per_class[name] = fid_from_features(fake, ref, warn=False)
        floor[name] = real_vs_real(n, label=c, seed=seed, **kw)
    return {"per_class": per_class, "average": _mean(per_class),
            "floor_per_class": floor, "floor_average": _mean(floor),
            "reference": f"{n} real training images per class (seed {seed})"}


def _report_unconditional(generate, *, n: int, seed: int, **kw) -> dict:
    fids, floors = [], []
    for r in range(REPORT_REPEATS):
        ref = real_features("train", n=n, seed=seed + r, **kw)
        fake = _generated_features(generate, label=None, n=n, seed=seed + r, **kw)
        fids.append(fid_from_features(fake, ref, warn=False))
        floors.append(real_vs_real(n, seed=seed + r, **kw))
    return {"per_class": {}, "repeats": fids, "average": _mean(fids),
            "floor_repeats": floors, "floor_average": _mean(floors),
            "reference": f"{REPORT_REPEATS} x {n} random real training images (seeds {seed}..)"}


def class_counts(n: int) -> list[int]:
    """n split over the ten classes as evenly as possible (the test set is balanced)."""
    return [n // data.NUM_CLASSES + (c < n % data.NUM_CLASSES) for c in range(data.NUM_CLASSES)]


def _pooled(fake: np.ndarray, *, seed: int, test_n: int | None, **kw) -> dict:
    test = heldout_features(test_n=test_n, **kw)
    train = real_features("train", n=len(fake), seed=seed, **kw)
    kid, kid_std = kid_from_features(fake, test)
    floor_kid, floor_kid_std = kid_from_features(train, test)
    return {"pooled": heldout_fid(fake, test_n=test_n, **kw), "kid_mean": kid, "kid_std": kid_std,
            "floor_pooled": real_vs_real(len(fake), seed=seed, reference="test", test_n=test_n,
                                         **kw),
            "floor_kid_mean": floor_kid, "floor_kid_std": floor_kid_std}


def _standard_conditional(generate, *, n: int, n_per_class: int, test_n: int | None, seed: int,
                          **kw) -> dict:
    pooled, per_class, floor = [], {}, {}
    for c, (name, count) in enumerate(zip(data.CLASS_NAMES, class_counts(n))):
        fake = _generated_features(generate, label=c, n=max(count, n_per_class), seed=seed + c,
                                   **kw)
        pooled.append(fake[:count])
        per_class[name] = heldout_fid(fake[:n_per_class], label=c, test_n=test_n, **kw)
        floor[name] = real_vs_real(n_per_class, label=c, seed=seed, reference="test",
                                   test_n=test_n, **kw)
    return {**_pooled(np.concatenate(pooled), seed=seed, test_n=test_n, **kw),
            "per_class": per_class, "average": _mean(per_class), "floor_per_class": floor,
            "floor_average": _mean(floor), "reference": _test_reference_text(test_n, True)}


def _standard_unconditional(generate, *, n: int, test_n: int | None, seed: int, **kw) -> dict:
    fake = _generated_features(generate, label=None, n=n, seed=seed, **kw)
    return {**_pooled(fake, seed=seed, test_n=test_n, **kw), "per_class": {},
            "reference": _test_reference_text(test_n, False)}


def _test_reference_text(test_n: int | None, per_class: bool) -> str:
    if test_n is None:
        return "the 10k test set" + (" (per class: its 1,000 test images)" if per_class else "")
    return (f"a seeded subset of {test_n} test images" +
            (f" (per class: {test_n // data.NUM_CLASSES})" if per_class else ""))


def smallest_set(protocol: str, *, n: int, n_per_class: int | None = None,
                 test_n: int | None = None, class_conditional: bool = True) -> int:
    """The fewest images in any set a protocol compares: what its small-sample bias depends on."""
    if protocol == "report":
        return n
    test = data.COUNTS["test"] if test_n is None else test_n
    if not class_conditional:
        return min(n, test)
    return min(n, test, n_per_class, test // data.NUM_CLASSES)


def _check_sizes(protocol: str, *, n: int, n_per_class: int | None, test_n: int | None,
                 class_conditional: bool) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; use one of {PROTOCOLS}")
    if protocol == "standard" and class_conditional and n_per_class is None:
        raise ValueError("the standard protocol needs n_per_class for a class-conditional model")
    if smallest_set(protocol, n=n, n_per_class=n_per_class, test_n=test_n,
                    class_conditional=class_conditional) < 2:
        raise ValueError(f"FID needs at least 2 images per set; got n={n}, n_per_class="
                         f"{n_per_class}, test_n={test_n} (test_n // 10 per class)")


def evaluate(generate, *, protocol: str, n: int, n_per_class: int | None = None,
             test_n: int | None = None, seed: int = 0, class_conditional: bool = True,
             batch_size: int | None = None, device=None, warn: bool = True) -> dict:
    """Score a sampler with a named protocol; every FID comes with its real-vs-real floor.

    ``generate(labels, n, seed) -> (n, 1, 32, 32)`` model-space tensor; ``labels`` is a
    LongTensor of n class indices, or None for a model that is not class-conditional.
    Class c is generated with seed ``seed + c``. A generator with a ``features(label, n, seed,
    batch_size=, device=)`` method gives the features itself (and gets every :func:`draws` at
    once from its ``prefetch(draws, batch_size=, device=)`` if it has one), as
    ``diffnb.evaluation.sources.SampleSource`` does: cached, and drawn for all classes at once.

    ``report``: per class, n generated vs n real training images (64 in the report);
    ``average`` = mean of the ten per-class FIDs, the report's "Average FID". Not
    class-conditional: n unconditional samples vs n random training images, repeated 10 times
    with seeds ``seed + r``; ``average`` = mean of the 10 (``repeats``), ``per_class`` is empty.
    Floor: n training images vs n *other* training images of the same reference.

    ``standard``: ``pooled`` = n generated (class-balanced if conditional) vs the test reference
    (``test_n`` images, None: all 10k), with KID; conditional models also get ``per_class`` =
    ``n_per_class`` generated vs that class's test images and their ``average``.
    Floor: n (resp. ``n_per_class``) training images vs the same test images.

    One :class:`SmallSampleWarning` at the caller's line when a set is under 2048 images
    (``warn=False``: none). Returns a JSON-ready dict: protocol, n, n_per_class, seed,
    class_conditional, per_class {class name: FID}, average, floor_* values, pooled/KID
    (standard), reference.
    """
    if protocol == "report" or not class_conditional:
        n_per_class = None
    _check_sizes(protocol, n=n, n_per_class=n_per_class, test_n=test_n,
                 class_conditional=class_conditional)
    if warn:
        smallest = smallest_set(protocol, n=n, n_per_class=n_per_class, test_n=test_n,
                                class_conditional=class_conditional)
        warn_small_sample(smallest, what=f"protocol {protocol!r} with n={n}, smallest set "
                          f"{smallest}; read each FID next to its floor (floor_*)", stacklevel=2)
    kw = {"batch_size": batch_size, "device": device}
    prefetch = getattr(generate, "prefetch", None)
    if prefetch is not None:  # every class at once: large batches for the sampler and Inception
        prefetch(draws(protocol, n=n, n_per_class=n_per_class, seed=seed,
                       class_conditional=class_conditional), **kw)
    if protocol == "report":
        run = _report_conditional if class_conditional else _report_unconditional
        out = run(generate, n=n, seed=seed, **kw)
    elif class_conditional:
        out = _standard_conditional(generate, n=n, n_per_class=n_per_class, test_n=test_n,
                                    seed=seed, **kw)
    else:
        out = _standard_unconditional(generate, n=n, test_n=test_n, seed=seed, **kw)
    return {"protocol": protocol, "n": n, "n_per_class": n_per_class, "seed": seed,
            "class_conditional": class_conditional, **out}
