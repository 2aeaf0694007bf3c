"""pytorch-fid's InceptionV3 (2048-d pool3) and its preprocessing: features of tensors, folders.

Network: pytorch-fid 0.3.0's ``InceptionV3([3])`` (github.com/mseitzer/pytorch-fid), built with
the converted weights of :mod:`diffnb.fid.weights` instead of its download. Preprocessing is
pytorch-fid's own: images in [0, 1], grey repeated to 3 channels, bilinear resize to 299 (no
antialias), 2x-1. fp32 throughout (no autocast, no TF32 convolutions); batches of 25 images on
the CPU, 500 on CUDA. Folders are read as pytorch-fid's CLI reads them (PIL RGB, ToTensor, its
image extensions), and its CLI itself can be run offline on them.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from diffnb import data, runtime
from diffnb.fid.weights import DIMS, WEIGHTS_FILE, read_weights, weights_path

IMAGE_EXTENSIONS = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp")  # pytorch-fid
MODEL_SPACE_LIMIT = 1.5  # |x| beyond this is not a model-space image (nor a sane sample)

_LOCK = threading.Lock()


def _pytorch_fid_network(state_dict: dict) -> torch.nn.Module:
    """pytorch-fid's own ``InceptionV3([3])``, its download replaced by our state dict."""
    from pytorch_fid import inception as pf

    def offline(url, *args, **kwargs):
        if url != pf.FID_WEIGHTS_URL:
            raise RuntimeError(f"unexpected weights URL {url}: nothing may be downloaded")
        return state_dict

    with _LOCK, mock.patch.object(pf, "load_state_dict_from_url", offline):
        return pf.InceptionV3([pf.InceptionV3.BLOCK_INDEX_BY_DIM[DIMS]])


@lru_cache(maxsize=4)
def _inception(device: torch.device, channels_last: bool) -> torch.nn.Module:
    net = _pytorch_fid_network(read_weights(weights_path())).eval().to(device)
    return net.to(memory_format=torch.channels_last) if channels_last else net


def inception(device=None, *, channels_last: bool = True) -> torch.nn.Module:
    """pytorch-fid's InceptionV3 (2048-d pool3) in eval mode on ``device``, built once per device.

    ``channels_last=False`` gives the network exactly as pytorch-fid's CLI runs it.
    """
    return _inception(runtime.device(device), channels_last)


def default_batch_size(device=None) -> int:
    """25 on the CPU (fastest on 2 cores), 500 on CUDA, 50 elsewhere."""
    return {"cpu": 25, "cuda": 500}.get(runtime.device(device).type, 50)


def to_three_channels(x: torch.Tensor) -> torch.Tensor:
    """(N, 1|3, H, W) -> (N, 3, H, W), grey repeated; any other shape is an error."""
    if x.ndim != 4 or x.shape[1] not in (1, 3) or len(x) == 0:
        raise ValueError(f"images must be a batch (N, 1, H, W) or (N, 3, H, W) with N >= 1, got "
                         f"{tuple(x.shape)}; a single image x needs x[None], a (N, H, W) batch "
                         "x[:, None] (data.to_model_space does this for uint8 images)")
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def check_model_space(images) -> None:
    """Raise, saying what to do, unless ``images`` are finite model-space images (N, 1|3, H, W)."""
    if not torch.is_tensor(images) or not images.is_floating_point():
        raise TypeError("FID features take a float tensor in [-1, 1] (model space); convert "
                        "uint8 Fashion-MNIST images with data.to_model_space first")
    to_three_channels(images)
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or inf: the sampler diverged (check its steps and "
                         "weights); FID of such images is meaningless")
    lo, hi = images.min().item(), images.max().item()
    if lo < -MODEL_SPACE_LIMIT or hi > MODEL_SPACE_LIMIT:
        raise ValueError(f"images range over [{lo:.4g}, {hi:.4g}], not model space [-1, 1]: "
                         "convert 0..255 or uint8 images with data.to_model_space; samples "
                         "this far out mean a broken sampler (clamp(-1, 1) hides it)")


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


def _unit_features(batches, *, total: int, dev: torch.device, progress: bool) -> np.ndarray:
    """Features of batches of [0, 1] images (N, 1|3, H, W) on ``dev``; one copy back at the end."""
    net = inception(dev)
    out = torch.empty((total, DIMS), dtype=torch.float32, device=dev)
    done = 0
    bar = _progress(total) if progress else None
    with torch.inference_mode(), _fp32_convs(dev):
        for x in batches:
            x = to_three_channels(x.to(dev, torch.float32))
            f = net(x.contiguous(memory_format=torch.channels_last))[0]
            out[done:done + len(f)] = f.flatten(1)
            done += len(f)
            if bar is not None:
                bar.update(len(f))
    if bar is not None:
        bar.close()
    if done != total:
        raise RuntimeError(f"expected {total} images, got {done}")
    return out.cpu().numpy()


def _progress(total: int):
    """A bar on a terminal only (a notebook saves a bar frozen at its first state)."""
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc="Inception features", unit="img", disable=not sys.stderr.isatty())


def features(images: torch.Tensor, *, batch_size: int | None = None, device=None,
             progress: bool = False) -> np.ndarray:
    """(N, 2048) float32 pool3 features of model-space images (N, 1|3, H, W) in [-1, 1].

    Images are clamped to [-1, 1] and mapped to [0, 1] (as a saved PNG would be, less the
    8-bit rounding), then go through pytorch-fid's preprocessing. fp32 throughout.
    """
    check_model_space(images)
    dev = runtime.device(device)
    bs = batch_size or default_batch_size(dev)
    batches = (data.to_unit(b.to(dev, torch.float32)) for b in images.split(bs))
    return _unit_features(batches, total=len(images), dev=dev, progress=progress)


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files of a folder, sorted, with pytorch-fid's extensions."""
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder of images: give a folder that holds "
                                f"the images as files ({', '.join(IMAGE_EXTENSIONS)})")
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
    dev = runtime.device(device)
    bs = batch_size or default_batch_size(dev)
    return _unit_features(_file_batches(files, bs), total=len(files), dev=dev,
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
