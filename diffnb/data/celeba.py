"""CelebA faces at 64x64 for diffusion, from torchvision's folder layout, cached as uint8.

The folder is ``folder`` or ``$DIFFNB_DATA_DIR``, holding torchvision.datasets.CelebA's layout:
    celeba/img_align_celeba/000001.jpg ...  the 202,599 aligned 178x218 JPEGs
    celeba/list_eval_partition.txt          "000001.jpg 0" per image: 0 train, 1 valid, 2 test
    celeba/list_attr_celeba.txt             a count, the 40 attribute names, then
                                            "000001.jpg -1 1 ..." per image
It needs internet access to download: fetch it on a machine that has it, then copy it in.

Preprocessing (the usual one for 64x64 CelebA): a centre crop of CROP x CROP pixels (140 of the
178x218 images), resized to 64x64 with antialiasing (PIL bicubic), kept as uint8 (N, 3, 64, 64);
:func:`to_model_space` maps it to [-1, 1]. The first read of a split decodes every JPEG (a
progress bar on a terminal, progress lines in a notebook; minutes for the 162,770 training images)
and writes one uint8 tensor file per split under the cache (atomically); later reads load that
file. Its own :func:`sigma_data`. Absent data: :func:`available`, :func:`status` and the error
of :func:`find_root` say where to put it and in which layout.

Attributes (default ``("Smiling", "Male", "Eyeglasses")``) come back as a 0/1 int64 tensor
(N, A) in ``labels``, the input of a model with ``ModelConfig(num_attributes=A)``.

Bad input: a JPEG that does not decode is skipped and counted, with one warning giving the count;
images listed for the split but absent from the folder are skipped with one warning when they are
at most ``max_missing`` (1%) of the split, else it is an error saying how many are missing; a
missing list file, or an image without an attribute row, is an error naming the file. The list
files are read by ``diffnb.data.celeba_files``.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from diffnb import runtime
from diffnb.data.celeba_files import AGAIN, ATTRIBUTES, PARTITION, read_attributes, read_partition
from diffnb.data.fashion_mnist import DATA_ENV, DataNotFoundError
from diffnb.data.fashion_mnist import to_model_space as to_model_space  # its CelebA branch: (N, 3, H, W) -> [-1, 1]
from diffnb.results import atomic_path

SPLITS = {"train": 0, "valid": 1, "test": 2}
DEFAULT_ATTRIBUTES = ("Smiling", "Male", "Eyeglasses")
IMAGE_SIZE = 64
CROP = 140
MAX_MISSING = 0.01          # share of a split's listed images that may be absent
IMAGES = "img_align_celeba"
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Faces:
    """uint8 images (N, 3, 64, 64) and 0/1 attributes (N, A) as ``labels``, on one device
    (the interface of ``data.Images``)."""

    images: torch.Tensor
    labels: torch.Tensor
    source: str
    attribute_names: tuple[str, ...]

    @property
    def attributes(self) -> torch.Tensor:
        return self.labels

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, dev) -> "Faces":
        return Faces(self.images.to(dev), self.labels.to(dev), self.source, self.attribute_names)

    def subset(self, index) -> "Faces":
        return Faces(self.images[index], self.labels[index], self.source, self.attribute_names)


EXPECTED = (f"$DIFFNB_DATA_DIR/celeba/ holding {IMAGES}/*.jpg, {PARTITION} and {ATTRIBUTES}, "
            "torchvision's CelebA layout")


def find_root(folder: str | os.PathLike | None = None) -> Path:
    """The ``celeba/`` folder under ``folder`` (or ``$DIFFNB_DATA_DIR``), or that folder itself."""
    path = folder or os.environ.get(DATA_ENV)
    if path:
        for root in (Path(path) / "celeba", Path(path)):
            if (root / IMAGES).is_dir():
                return root
    raise DataNotFoundError(not_found_message(folder))


def not_found_message(folder: str | os.PathLike | None = None) -> str:
    """Where CelebA was looked for, where to put it and in which layout (no download here)."""
    path = folder or os.environ.get(DATA_ENV)
    where = (f" in {path}: no celeba/{IMAGES}/ folder there" if path else
             f": ${DATA_ENV} is not set and no folder was given")
    return (
        f"CelebA was not found{where}. Expected torchvision's layout:\n"
        f"  <folder>/celeba/{IMAGES}/000001.jpg ... (202,599 aligned 178x218 JPEGs)\n"
        f"  <folder>/celeba/{PARTITION}\n"
        f"  <folder>/celeba/{ATTRIBUTES}\n"
        "CelebA needs internet access to download: fetch it on a machine that has it (e.g. "
        "torchvision.datasets.CelebA(root, download=True)), copy <folder> in, then set "
        f"{DATA_ENV}=<folder> or pass folder=<folder>.")


def available(folder: str | os.PathLike | None = None) -> bool:
    """Whether CelebA's image folder is found (the list files are checked when it is read)."""
    try:
        find_root(folder)
    except DataNotFoundError:
        return False
    return True


def status(folder: str | os.PathLike | None = None) -> str:
    """One paragraph for a notebook: what was found, or :func:`not_found_message`. Names no
    absolute path when the data is there (the folder is ``$DIFFNB_DATA_DIR``'s or the caller's)."""
    if not available(folder):
        return not_found_message(folder)
    root = find_root(folder)
    jpegs = sum(1 for name in os.listdir(root / IMAGES) if name.endswith(".jpg"))
    lists = [f for f in (PARTITION, ATTRIBUTES) if (root / f).is_file()]
    return (f"CelebA found: {jpegs:,} JPEGs in celeba/{IMAGES}/, list files: "
            f"{', '.join(lists) or 'none'}.")


def describe(row, names: tuple[str, ...] = DEFAULT_ATTRIBUTES) -> str:
    """An attribute row as text: the names of its 1s ('Smiling, Male'), 'none', or 'null'."""
    values = [int(v) for v in row]
    if all(v < 0 for v in values):
        return "null (no condition)"
    return ", ".join(n for n, v in zip(names, values) if v == 1) or "none"


def attribute_rows(names: tuple[str, ...] = DEFAULT_ATTRIBUTES) -> torch.Tensor:
    """Every 0/1 combination of ``names`` (2^A rows of A), from none to all, in binary order."""
    a = len(names)
    return torch.tensor([[(k >> (a - 1 - j)) & 1 for j in range(a)] for k in range(2 ** a)])


def _decode(path: Path, *, size: int, crop: int) -> np.ndarray | None:
    """One JPEG: centre crop, antialiased resize, (3, size, size) uint8; None if it is corrupt."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
    except (OSError, SyntaxError, ValueError):  # truncated or not a JPEG
        return None
    w, h = img.size
    side = min(crop, w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.resize((size, size), Image.Resampling.BICUBIC,
                     box=(left, top, left + side, top + side))
    return np.array(img).transpose(2, 0, 1)  # a writable copy


def _listed(root: Path, split: str, *, max_missing: float) -> list[str]:
    """The split's image names present in the folder; absent ones warned about or refused."""
    names = [n for n, s in read_partition(root).items() if s == SPLITS[split]]
    if not names:
        raise ValueError(f"{root / PARTITION} lists no {split} images (split {SPLITS[split]}); "
                         f"{AGAIN}")
    present = set(os.listdir(root / IMAGES))
    missing = [n for n in names if n not in present]
    if len(missing) > max_missing * len(names):
        raise ValueError(f"{len(missing)} of the {len(names)} {split} images listed in "
                         f"{PARTITION} are missing from {root / IMAGES} (e.g. {missing[0]}); "
                         f"at most {max_missing:.0%} may be. Copy the whole folder again.")
    if missing:
        warnings.warn(f"CelebA {split}: {len(missing)} of {len(names)} listed images are missing "
                      f"from {root / IMAGES}; skipped", stacklevel=3)
    return [n for n in names if n in present]


def _progress(items, total: int, split: str, progress: bool, *, every: float = 10.0):
    """The first read's progress: a bar on a terminal; elsewhere (a notebook, a log) a line at
    the start, one every ``every`` seconds and one at the end, so that a saved notebook shows
    finished lines, never a bar frozen at 0%."""
    what = f"CelebA {split}: decoding {total:,} JPEGs once (then read from the cache)"
    if not progress:
        yield from items
        return
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, total=total, desc=what, mininterval=1.0)
        return
    print(what, flush=True)
    start = last = time.monotonic()
    for k, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= every and k < total:
            print(f"  {k:,} of {total:,} ({100 * k // total}%), {now - start:.0f} s", flush=True)
            last = now
    print(f"  {total:,} of {total:,} done in {time.monotonic() - start:.0f} s", flush=True)


def _build(root: Path, split: str, *, size: int, crop: int, max_missing: float,
           progress: bool) -> dict:
    """Decode the split's JPEGs into one uint8 tensor, with all 40 attributes as 0/1."""
    names = _listed(root, split, max_missing=max_missing)
    attribute_names, rows = read_attributes(root)
    no_row = [n for n in names if n not in rows]
    if no_row:
        raise ValueError(f"{root / ATTRIBUTES} has no row for {len(no_row)} {split} images "
                         f"(e.g. {no_row[0]}): the list files do not match; {AGAIN}")
    images = torch.empty((len(names), 3, size, size), dtype=torch.uint8)
    keep = torch.zeros(len(names), dtype=torch.bool)
    decode = lambda name: _decode(root / IMAGES / name, size=size, crop=crop)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL frees the GIL
        for i, array in enumerate(_progress(pool.map(decode, names), len(names), split, progress)):
            if array is not None:
                images[i] = torch.from_numpy(array)
                keep[i] = True
    corrupt = len(names) - int(keep.sum())
    if corrupt:
        warnings.warn(f"CelebA {split}: {corrupt} corrupt JPEG(s) skipped "
                      f"(e.g. {names[int((~keep).nonzero()[0])]})", stacklevel=3)
    attributes = torch.tensor([rows[n] for n in names], dtype=torch.int8)[keep] > 0  # -1/1 -> 0/1
    return {"format": CACHE_FORMAT, "images": images[keep], "attributes": attributes.to(torch.int8),
            "attribute_names": attribute_names, "corrupt": corrupt,
            "names": [n for n, k in zip(names, keep.tolist()) if k]}


def cache_path(root: Path, split: str, *, size: int, crop: int) -> Path:
    """One file per (folder, list files, split, size, crop)."""
    stats = [str(root.resolve())] + [f"{(root / f).stat().st_size}:{(root / f).stat().st_mtime_ns}"
                                     for f in (PARTITION, ATTRIBUTES) if (root / f).is_file()]
    key = hashlib.sha256("|".join(stats).encode()).hexdigest()[:12]
    return runtime.cache_dir("celeba") / f"{split}-{size}px-crop{crop}-{key}.pt"


def load(split: str = "train", *, folder: str | os.PathLike | None = None,
         attributes: tuple[str, ...] = DEFAULT_ATTRIBUTES, size: int = IMAGE_SIZE,
         crop: int = CROP, max_missing: float = MAX_MISSING, progress: bool = True) -> Faces:
    """The ``train`` (162,770), ``valid`` (19,867) or ``test`` (19,962) split, 64x64 uint8, with
    the named attributes as 0/1; read from the cache when this folder's split was read before."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {tuple(SPLITS)}")
    root = find_root(folder)
    path = cache_path(root, split, size=size, crop=crop)
    blob = torch.load(path, weights_only=True) if path.is_file() else None
    if blob is None or blob.get("format") != CACHE_FORMAT:
        blob = _build(root, split, size=size, crop=crop, max_missing=max_missing,
                      progress=progress)
        with atomic_path(path) as tmp:  # an interrupted write leaves no half cache behind
            torch.save(blob, tmp)
    unknown = [a for a in attributes if a not in blob["attribute_names"]]
    if unknown:
        raise ValueError(f"unknown CelebA attribute(s) {unknown}: pass attributes= from "
                         f"{blob['attribute_names']}")
    columns = [blob["attribute_names"].index(a) for a in attributes]
    return Faces(blob["images"], blob["attributes"][:, columns].long(), str(root),
                 tuple(attributes))


def sample_batch(faces: Faces, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Model-space images and attributes for ``index``, on the data's device."""
    return to_model_space(faces.images[index]), faces.labels[index]


@lru_cache(maxsize=4)
def _sigma_data(root: Path, size: int, crop: int) -> float:
    images = load("train", folder=root, size=size, crop=crop).images
    counts = torch.zeros(256, dtype=torch.float64)
    for chunk in images.flatten().split(1 << 26):
        counts += torch.bincount(chunk.int(), minlength=256).double()
    x = torch.arange(256, dtype=torch.float64) / 127.5 - 1.0  # the model-space value of each
    mean = (counts * x).sum() / counts.sum()
    return float(((counts * (x - mean) ** 2).sum() / counts.sum()).sqrt())


def sigma_data(folder: str | os.PathLike | None = None, *, size: int = IMAGE_SIZE,
               crop: int = CROP) -> float:
    """Standard deviation of the training split's pixels in model space: EDM's sigma_data."""
    return _sigma_data(find_root(folder), size, crop)
