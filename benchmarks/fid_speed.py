"""FID speed: diffnb.fid against pytorch-fid, Inception features and the Frechet distance, same run.

Features: pytorch-fid is timed in-process, as its CLI runs it: ``get_activations`` (PIL loading,
DataLoader with num_workers=0, batch 50, the network in the default memory format) with our
converted weights. diffnb: ``fid.folder_features`` on the same files (channels_last, batch 25 on
the CPU, 500 on CUDA). Each is first warmed up on one batch of the timed size (the network
sees 299x299 either way); both read the PNGs from disk.

Frechet distance: pytorch-fid's ``calculate_frechet_distance`` (scipy ``sqrtm``) against
diffnb's ``eigh`` method (``fid.fid_from_statistics``, torch float64 on --device or the CPU) on
the same statistics of two sets of random correlated 2048-d features (more images than dims).

    python benchmarks/fid_speed.py [--n 100] [--size 28|32] [--device cpu] [--smoke]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from diffnb import data, fid, runtime  # noqa: E402


def write_pngs(folder: Path, *, n: int, size: int) -> list[Path]:
    """The first n Fashion-MNIST test images as greyscale PNGs (28x28, or padded to 32x32)."""
    images = data.test_set().images[:n].numpy()
    pad = (size - 28) // 2
    files = []
    for i, img in enumerate(images):
        path = folder / f"{i:05d}.png"
        Image.fromarray(np.pad(img, pad)).save(path)
        files.append(path)
    return files


def time_pytorch_fid(files: list[Path], *, device, batch_size: int) -> tuple[float, np.ndarray]:
    from pytorch_fid.fid_score import get_activations

    net = fid.inception(device, channels_last=False)  # pytorch-fid's InceptionV3, as its CLI
    batch_size = min(batch_size, len(files))
    get_activations(files[:batch_size], net, batch_size=batch_size, device=device,
                    num_workers=0)  # warm-up: one batch of the timed shape
    start = time.perf_counter()
    feats = get_activations(files, net, batch_size=batch_size, device=device, num_workers=0)
    return time.perf_counter() - start, feats


def time_diffnb(folder: Path, *, device, batch_size: int | None) -> tuple[float, np.ndarray]:
    n = len(fid.image_files(folder))
    warm = min(batch_size or fid.default_batch_size(device), n)
    fid.features(torch.zeros(warm, 1, 32, 32), device=device)  # warm-up: one batch
    start = time.perf_counter()
    feats = fid.folder_features(folder, batch_size=batch_size, device=device)
    return time.perf_counter() - start, feats


def correlated_statistics(*, dims: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Statistics of dims + 500 random features, decaying spectrum, mixed by a fixed matrix."""
    mix = np.random.default_rng(0).normal(size=(dims, dims)) / np.sqrt(dims)
    scale = 3.0 / np.sqrt(1.0 + np.arange(dims) / 8)
    return fid.statistics((np.random.default_rng(seed).normal(size=(dims + 500, dims)) * scale)
                          @ mix)


def time_frechet(*, dims: int, device) -> tuple[float, float, float]:
    """Seconds of pytorch-fid's and diffnb's Frechet distance (same statistics); |difference|."""
    a, b = correlated_statistics(dims=dims, seed=1), correlated_statistics(dims=dims, seed=2)
    small = [correlated_statistics(dims=8, seed=s) for s in (1, 2)]
    for method in ("pytorch-fid", "eigh"):  # warm-up: imports, linear algebra libraries
        fid.fid_from_statistics(*small, method=method, device=device)
    start = time.perf_counter()
    theirs = fid.fid_from_statistics(a, b, method="pytorch-fid")
    t_pf = time.perf_counter() - start
    start = time.perf_counter()
    ours = fid.fid_from_statistics(a, b, device=device)
    return t_pf, time.perf_counter() - start, abs(ours - theirs)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100, help="images in the folder (default 100)")
    p.add_argument("--size", type=int, choices=(28, 32), default=28)
    p.add_argument("--device", default=None)
    p.add_argument("--batch-size", type=int, default=None, help="diffnb's (default: its own)")
    p.add_argument("--pytorch-fid-batch-size", type=int, default=50)
    p.add_argument("--frechet-dims", type=int, default=fid.DIMS,
                   help="feature dimensions of the Frechet timing (default 2048)")
    p.add_argument("--smoke", action="store_true",
                   help="10 images, 256-d Frechet timing: checks that it runs")
    args = p.parse_args(argv)
    n = 10 if args.smoke else args.n
    dims = 256 if args.smoke else args.frechet_dims
    dev = runtime.device(args.device)
    fid.weights_path()
    with tempfile.TemporaryDirectory(prefix="diffnb-fid-speed-") as tmp:
        files = write_pngs(Path(tmp), n=n, size=args.size)
        t_pf, f_pf = time_pytorch_fid(files, device=dev, batch_size=args.pytorch_fid_batch_size)
        t_us, f_us = time_diffnb(Path(tmp), device=dev, batch_size=args.batch_size)
    t_fd_pf, t_fd_us, fd_diff = time_frechet(dims=dims, device=dev)
    bs = args.batch_size or fid.default_batch_size(dev)
    print(f"device {dev} ({runtime.device_name()}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {n} PNGs {args.size}x{args.size}")
    print(f"pytorch-fid get_activations (batch {min(args.pytorch_fid_batch_size, n)}): "
          f"{n / t_pf:7.2f} images/s ({t_pf:.1f} s)")
    print(f"diffnb fid.folder_features  (batch {bs}, channels_last): "
          f"{n / t_us:7.2f} images/s ({t_us:.1f} s)")
    print(f"speed ratio diffnb / pytorch-fid: {t_pf / t_us:.2f}x")
    print(f"max abs feature difference: {np.abs(f_pf - f_us).max():.2e}")
    print(f"Frechet distance, {dims}-d statistics: pytorch-fid (scipy sqrtm) {t_fd_pf:.2f} s, "
          f"diffnb eigh {t_fd_us:.2f} s")
    print(f"Frechet speed ratio diffnb / pytorch-fid: {t_fd_pf / t_fd_us:.1f}x "
          f"(|difference| {fd_diff:.1e})")


if __name__ == "__main__":
    main()
