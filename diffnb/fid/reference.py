"""Real Fashion-MNIST images as FID references: seeded subsets, cached features and statistics,
and the real-vs-real floor.

Features of a seeded subset of the official ``train`` (60k) or ``test`` (10k) split are cached
in ``.cache/fid/stats/`` as ``.npy``, the test reference's mean and covariance as ``.npz`` (used
when both sets have more images than dimensions). A file that does not read back whole (a write
cut short) is recomputed. The floor, :func:`real_vs_real`, is the FID of real images against the
same reference at the same n: FID is biased upward at small n (Heusel et al. 2017), so a number
means something only next to its floor (the report's slides 8-9 compare models at n=64).
"""
from __future__ import annotations

import io
import re
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from diffnb import data, runtime
from diffnb.fid import network
from diffnb.fid.distance import fid_from_features, fid_from_statistics, statistics, uses_low_rank
from diffnb.results import atomic_write

FEATURES_TAG = "pool3v1"  # bump when the features of a given image change
_UNREADABLE = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)  # missing or cut short


def features_tag() -> str:
    """The cache tag of the features (``FEATURES_TAG``): cached features with another are
    never read."""
    return FEATURES_TAG


def stats_dir() -> Path:
    path = runtime.cache_dir("fid") / "stats"
    path.mkdir(parents=True, exist_ok=True)
    return path


@lru_cache(maxsize=2)
def _split(split: str) -> data.Images:
    return data.test_set() if split == "test" else data.load(split)


def _pool(split: str, label: int | None) -> data.Images:
    pool = _split(split)
    return pool if label is None else pool.of_class(label)


def subset_index(count: int, *, n: int | None, seed: int, part: int = 0) -> torch.Tensor:
    """Part ``part`` (0, 1, ...) of size n of a seeded permutation of ``range(count)``."""
    if n is None:
        if part:
            raise ValueError("part needs n: with n=None every image is used")
        return torch.arange(count)
    if n < 1 or (part + 1) * n > count:
        raise ValueError(f"cannot draw part {part} of {n} images from {count}; use "
                         f"n <= {count // (part + 1)}")
    perm = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return perm[part * n:(part + 1) * n]


def _stem(split: str, label: int | None) -> str:
    return f"{features_tag()}_{split}_{'all' if label is None else f'class{label}'}"


def _cache_name(split: str, label: int | None, *, n: int | None, seed: int, part: int) -> str:
    if n is None:
        return f"{_stem(split, label)}_all.npy"
    return f"{_stem(split, label)}_n{n}_seed{seed}_part{part}.npy"


def _load_cached(path: Path, count: int) -> np.ndarray | None:
    try:
        feats = np.load(path)
    except _UNREADABLE:
        return None  # missing or cut short: recompute
    return feats if feats.ndim == 2 and len(feats) == count else None


def _save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write(path, buffer.getvalue())


def _from_larger(split: str, label: int | None, *, n: int | None, seed: int,
                 part: int) -> np.ndarray | None:
    """The same images out of a cached draw: a class out of the whole split, the whole split put
    together from its ten classes, or part p of n out of a draw of m >= (p + 1) n with the same
    seed (a prefix of one permutation)."""
    if n is None:
        labels = _split(split).labels.numpy()
        if label is not None:
            whole = _load_cached(stats_dir() / _cache_name(split, None, n=None, seed=0, part=0),
                                 len(labels))
            return None if whole is None else whole[labels == label]
        return _from_classes(split, labels)
    for path in stats_dir().glob(f"{_stem(split, label)}_n*_seed{seed}_part0.npy"):
        m = int(re.search(r"_n(\d+)_seed", path.name).group(1))
        feats = _load_cached(path, m) if m >= (part + 1) * n else None
        if feats is not None:
            return feats[part * n:(part + 1) * n]
    return None


def _from_classes(split: str, labels: np.ndarray) -> np.ndarray | None:
    """The whole split's features from the cached features of each of its classes (each image
    in its place in the split), or None unless all ten are cached."""
    parts = [_load_cached(stats_dir() / _cache_name(split, c, n=None, seed=0, part=0),
                          int((labels == c).sum())) for c in range(data.NUM_CLASSES)]
    if any(part is None for part in parts):
        return None
    whole = np.empty((len(labels), parts[0].shape[1]), dtype=parts[0].dtype)
    for c, part in enumerate(parts):
        whole[labels == c] = part
    return whole


def real_features(split: str, *, n: int | None, label: int | None = None, seed: int = 0,
                  part: int = 0, batch_size: int | None = None, device=None) -> np.ndarray:
    """Features of n real images of the official ``train`` (60k) or ``test`` (10k) split.

    ``label`` restricts to one class; the images are part ``part`` of a permutation seeded by
    ``seed`` (parts are disjoint: part 1 is the real-vs-real floor's second set); ``n=None``
    takes every image. Cached in ``.cache/fid/stats/``: a second call computes nothing.
    """
    if split not in data.COUNTS:
        raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")
    if label is not None:
        data.check_label(label)
    pool = _pool(split, label)
    index = subset_index(len(pool), n=n, seed=seed, part=part)
    path = stats_dir() / _cache_name(split, label, n=n, seed=seed, part=part)
    feats = _load_cached(path, len(index))
    if feats is None:
        feats = _from_larger(split, label, n=n, seed=seed, part=part)
    if feats is None:
        images = data.to_model_space(pool.images[index])
        feats = network.features(images, batch_size=batch_size, device=device,
                                 progress=len(index) > 500)
        _save_npy(path, feats)
    return feats


def _heldout_n(label: int | None, test_n: int | None) -> int | None:
    return test_n // data.NUM_CLASSES if test_n is not None and label is not None else test_n


def heldout_features(*, label: int | None = None, test_n: int | None = None,
                     **kw) -> np.ndarray:
    """The standard protocol's reference: the whole 10k test set (of one class), or a seeded
    subset of ``test_n`` test images (``test_n // 10`` per class)."""
    return real_features("test", n=_heldout_n(label, test_n), label=label, **kw)


def reference_statistics(*, label: int | None = None, test_n: int | None = None,
                         **kw) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64) of :func:`heldout_features`, computed once, cached (.npz)."""
    name = _cache_name("test", label, n=_heldout_n(label, test_n), seed=0, part=0)
    path = stats_dir() / name.replace(".npy", "_stats.npz")
    try:
        with np.load(path) as saved:
            mu, sigma = saved["mu"], saved["sigma"]
        if mu.ndim == 1 and sigma.shape == (len(mu), len(mu)):
            return mu, sigma
    except _UNREADABLE:
        pass  # missing or cut short: recompute
    mu, sigma = statistics(heldout_features(label=label, test_n=test_n, **kw))
    buffer = io.BytesIO()
    np.savez(buffer, mu=mu, sigma=sigma)
    atomic_write(path, buffer.getvalue())
    return mu, sigma


def heldout_fid(feats: np.ndarray, *, label: int | None = None, test_n: int | None = None,
                batch_size: int | None = None, device=None) -> float:
    """FID against :func:`heldout_features` (no warning): with more images than dimensions in
    both sets from the cached reference statistics, else exactly (low-rank) from its features."""
    kw = {"batch_size": batch_size, "device": device}
    n_ref = _heldout_n(label, test_n) or len(_pool("test", label))
    if uses_low_rank(len(feats), n_ref, dims=np.shape(feats)[-1]):
        return fid_from_features(feats, heldout_features(label=label, test_n=test_n, **kw),
                                 warn=False)
    return fid_from_statistics(statistics(feats), reference_statistics(label=label, test_n=test_n,
                                                                       **kw), device=device)


def real_vs_real(n: int, *, label: int | None = None, seed: int = 0, reference: str = "train",
                 test_n: int | None = None, batch_size: int | None = None,
                 device=None) -> float:
    """The floor: FID of n real training images vs a protocol's reference at that n (no warning).

    ``reference="train"`` (report protocol): vs n *other* training images (same seed and class,
    disjoint); ``reference="test"`` (standard protocol): vs :func:`heldout_features`.
    """
    kw = {"batch_size": batch_size, "device": device}
    if reference == "train":
        ours = real_features("train", n=n, label=label, seed=seed, part=1, **kw)
        return fid_from_features(ours, real_features("train", n=n, label=label, seed=seed, **kw),
                                 warn=False)
    if reference == "test":
        ours = real_features("train", n=n, label=label, seed=seed, **kw)
        return heldout_fid(ours, label=label, test_n=test_n, **kw)
    raise ValueError(f"unknown reference {reference!r}; use 'train' or 'test'")
