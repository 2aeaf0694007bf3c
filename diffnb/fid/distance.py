"""FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) of two feature sets (slides 8-9).

FID is the Frechet distance of Gaussians fitted to two feature sets,
|mu_a - mu_b|^2 + tr C_a + tr C_b - 2 tr sqrt(C_a C_b); the methods differ in the trace term:

``low-rank``     exact when a set has at most D images (every per-class FID here: singular
                 covariances): tr sqrt(C_a C_b) is the nuclear norm of X_a X_b^T (centred
                 features / sqrt(n - 1)). Milliseconds.
``eigh``         for more images than dimensions: C_a C_b has the eigenvalues of the symmetric
                 PSD matrix L^T C_b L (C_a = L L^T, Cholesky), so one symmetric eigenvalue
                 problem gives the trace (torch float64, on CUDA when there is one): 5-8x
                 less time than scipy ``sqrtm`` at D = 2048 on 2 CPU cores.
``pytorch-fid``  pytorch-fid's ``calculate_frechet_distance`` (scipy ``sqrtm``), the reference
                 the other two are tested against (github.com/mseitzer/pytorch-fid).
``auto`` is low-rank with at most D images in a set, else eigh. :func:`fid_from_statistics`
takes (mean, covariance) pairs, so a reference's statistics are computed once.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from diffnb import runtime

SMALL_SAMPLE = 2048  # below this many images per set FID's upward bias dominates
METHODS = ("auto", "low-rank", "eigh", "pytorch-fid")


class SmallSampleWarning(UserWarning):
    """FID from fewer than 2048 images per set: biased upward, compare only at equal n."""


_formatwarning = warnings.formatwarning


def _format_small_sample(message, category, filename, lineno, line=None):
    """SmallSampleWarning with no absolute path: ``SmallSampleWarning: ...`` under a notebook
    cell (a temporary file of the kernel; the cell is where it shows), ``<file>:<line>: ...``
    from a module, so a saved notebook shows no machine's paths and the same text on every run."""
    if not issubclass(category, SmallSampleWarning):
        return _formatwarning(message, category, filename, lineno, line)
    if "ipykernel_" in str(filename):      # a notebook cell: the warning shows under it
        return f"{category.__name__}: {message}\n"
    return f"{str(filename).rsplit('/', 1)[-1]}:{lineno}: {category.__name__}: {message}\n"


warnings.formatwarning = _format_small_sample


def warn_small_sample(n: int, *, what: str, stacklevel: int) -> None:
    """A :class:`SmallSampleWarning` when n < 2048; ``stacklevel`` as ``warnings.warn``'s, seen
    from the function that calls this one (1: its own line, 2: its caller's)."""
    if n < SMALL_SAMPLE:
        warnings.warn(f"{what}: below {SMALL_SAMPLE} images per set the small-sample bias "
                      "dominates (FID is biased upward as n falls); compare only at equal n and "
                      "next to the real-vs-real floor", SmallSampleWarning,
                      stacklevel=stacklevel + 1)


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with the same D, got {a.shape}, {b.shape}: "
                         "pass fid.features (or fid.folder_features) of each set")
    if min(len(a), len(b)) < 2:
        raise ValueError(f"FID needs at least 2 images per set (a covariance), got {len(a)} and "
                         f"{len(b)}; use a few thousand for a meaningful number")
    return a, b


def statistics(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64), as pytorch-fid's ``calculate_activation_statistics``."""
    feats = np.asarray(feats, np.float64)
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def uses_low_rank(n_a: int, n_b: int, *, dims: int) -> bool:
    """``auto``'s choice: the exact low-rank path when a set has at most ``dims`` images."""
    return min(n_a, n_b) <= dims


def _frechet_low_rank(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Frechet distance; tr sqrt(C1 C2) = nuclear norm of X1 X2^T (centred, /sqrt(n-1))."""
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    x = (a - mu_a) / np.sqrt(len(a) - 1)
    y = (b - mu_b) / np.sqrt(len(b) - 1)
    tr_covmean = np.linalg.svd(x @ y.T, compute_uv=False).sum()
    diff = mu_a - mu_b
    return float(diff @ diff + (x * x).sum() + (y * y).sum() - 2.0 * tr_covmean)


def _float64_device(device) -> torch.device:
    """CUDA when asked for or present (by default), else the CPU (MPS has no float64)."""
    dev = runtime.device(device)
    return dev if dev.type == "cuda" else torch.device("cpu")


def _factor(c: torch.Tensor) -> torch.Tensor:
    """Some L with L L^T = C for a symmetric PSD C: Cholesky, or V sqrt(w) when C is singular."""
    low, info = torch.linalg.cholesky_ex(c)
    if info.item() == 0:
        return low
    w, v = torch.linalg.eigh(c)
    return v * w.clamp(min=0).sqrt()  # rounding's negative eigenvalues -> 0


def frechet_distance(stats_a, stats_b, *, device=None) -> float:
    """Frechet distance of two (mean, covariance) pairs, in float64, via symmetric eigenvalues.

    With C_a = L L^T, C_a C_b = L (L^T C_b) has the eigenvalues of the symmetric PSD matrix
    L^T C_b L (AB and BA share their eigenvalues), so tr sqrt(C_a C_b) is the sum of the square
    roots of the eigenvalues of L^T C_b L: a Cholesky factorisation and ``eigvalsh``.
    """
    dev = _float64_device(device)
    (mu_a, c_a), (mu_b, c_b) = ((torch.as_tensor(np.asarray(x), dtype=torch.float64).to(dev)
                                 for x in stats) for stats in (stats_a, stats_b))
    low = _factor(c_a)
    m = low.T @ c_b @ low
    tr_covmean = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    diff = mu_a - mu_b
    # Heusel et al. 2017 (FID): d^2 = |mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2))
    return float(diff @ diff + c_a.trace() + c_b.trace() - 2.0 * tr_covmean)


def _frechet_pytorch_fid(stats_a, stats_b) -> float:
    from pytorch_fid.fid_score import calculate_frechet_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # sqrtm(disp=...): scipy < 1.18
        return float(calculate_frechet_distance(*stats_a, *stats_b))


def fid_from_statistics(stats_a, stats_b, *, method: str = "eigh", device=None) -> float:
    """FID from two (mean (D,), covariance (D, D)) pairs: ``eigh`` or ``pytorch-fid``."""
    shapes = [(np.shape(mu), np.shape(sigma)) for mu, sigma in (stats_a, stats_b)]
    d = shapes[0][0][0] if len(shapes[0][0]) == 1 else -1
    if any(shape != ((d,), (d, d)) for shape in shapes):
        raise ValueError(f"statistics must be (mean (D,), covariance (D, D)) pairs of one D, got "
                         f"shapes {shapes}: pass fid.statistics(features) of each set")
    if method == "eigh":
        return frechet_distance(stats_a, stats_b, device=device)
    if method == "pytorch-fid":
        return _frechet_pytorch_fid(stats_a, stats_b)
    raise ValueError(f"unknown method {method!r} for statistics; use 'eigh' or 'pytorch-fid'")


def fid_from_features(a: np.ndarray, b: np.ndarray, *, method: str = "auto", warn: bool = True,
                      device=None) -> float:
    """FID between two feature sets (N, D); ``method`` one of :data:`METHODS` (module doc).

    Warns (:class:`SmallSampleWarning`, at the caller's line) under 2048 images unless ``warn``
    is False; ``device`` is where ``eigh`` runs (default: CUDA if present, else the CPU).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    a, b = _check_pair(a, b)
    if warn:
        warn_small_sample(min(len(a), len(b)), what=f"FID from {len(a)} vs {len(b)} images",
                          stacklevel=2)
    if method == "auto":
        method = "low-rank" if uses_low_rank(len(a), len(b), dims=a.shape[1]) else "eigh"
    if method == "low-rank":
        return _frechet_low_rank(a, b)
    return fid_from_statistics(statistics(a), statistics(b), method=method, device=device)


def _mmd2_poly(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel (x.y/d + 1)^3 (KID, Binkowski 2018)."""
    d, m = x.shape[1], len(x)
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    same = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(same - 2.0 * k_xy.mean())


def kid_from_features(a: np.ndarray, b: np.ndarray, *, num_subsets: int = 100,
                      subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over ``num_subsets`` random subsets, size capped at the smaller set)."""
    a, b = _check_pair(a, b)
    m = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    vals = [_mmd2_poly(a[rng.choice(len(a), m, replace=False)],
                       b[rng.choice(len(b), m, replace=False)]) for _ in range(num_subsets)]
    return float(np.mean(vals)), float(np.std(vals))
