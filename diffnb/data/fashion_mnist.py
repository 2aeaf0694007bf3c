"""Fashion-MNIST (Xiao et al. 2017), offline first, with the course starter code's preprocessing (slide 3).

Sources, in order: the folder named by ``DIFFNB_DATA_DIR``, Debian's package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), then torchvision's download
into the project's cache. A folder named on purpose (``DIFFNB_DATA_DIR`` or ``folder=``) must
hold the split: if it does not, the error lists the missing files instead of silently using
another source. Corrupt, truncated or mismatched files raise :class:`DataFileError`, which names
the file and how to replace it; nothing is ever deleted. Images stay uint8 (N, 28, 28) until
:func:`to_model_space` pads them to 32x32 and maps them to [-1, 1], so the whole set fits on a
GPU as one 47 MB tensor.
"""
from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from diffnb import runtime

DATA_ENV = "DIFFNB_DATA_DIR"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
NUM_CLASSES = len(CLASS_NAMES)
COUNTS = {"train": 60_000, "test": 10_000}
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
SPLIT_SEED = 0
VALID_SIZE = 10_000


class DataNotFoundError(FileNotFoundError):
    """No source holds the requested split (the message lists what was tried and how to fix it)."""


class DataFileError(ValueError):
    """A Fashion-MNIST file exists but cannot be used: corrupt, truncated, or not matching its
    partner file. Nothing is deleted; the message names the file and how to replace it."""


@dataclass(frozen=True)
class Images:
    """uint8 images (N, 28, 28) and int64 labels (N,), on one device."""

    images: torch.Tensor
    labels: torch.Tensor
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, dev) -> "Images":
        return Images(self.images.to(dev), self.labels.to(dev), self.source)

    def subset(self, index) -> "Images":
        return Images(self.images[index], self.labels[index], self.source)

    def of_class(self, label: int) -> "Images":
        return self.subset(self.labels == check_label(label))


def check_label(label: int) -> int:
    if not (isinstance(label, (int, np.integer)) and 0 <= int(label) < NUM_CLASSES):
        raise ValueError(f"class label {label!r} is not in 0..{NUM_CLASSES - 1}; "
                         f"the classes are {dict(enumerate(CLASS_NAMES))}")
    return int(label)


def _replace_hint(path: Path) -> str:
    if DEBIAN_DIR in path.parents:
        how = "reinstall the package: sudo apt-get install --reinstall dataset-fashion-mnist"
    else:
        how = (f"copy it again from a good source (e.g. {DEBIAN_DIR}/{path.name}), or unset "
               f"{DATA_ENV} to use the Debian package or torchvision's download")
    return f"Nothing was changed or deleted. To fix it, replace the file: {how}."


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as a uint8 array, checking its header and its length."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
        raise DataFileError(f"Fashion-MNIST file {path} is corrupt or truncated: it cannot be "
                            f"decompressed ({type(err).__name__}: {err}). "
                            + _replace_hint(path)) from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataFileError(f"Fashion-MNIST file {path} is not a uint8 IDX file (bad magic "
                            f"number {raw[:4].hex() or 'none: the file is empty'}). "
                            + _replace_hint(path))
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataFileError(f"Fashion-MNIST file {path} is truncated: its header is cut off "
                            f"({len(raw)} bytes). " + _replace_hint(path))
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        what = "truncated" if data.size < int(np.prod(dims)) else "longer than its header says"
        raise DataFileError(f"Fashion-MNIST file {path} is {what}: its header says {dims} "
                            f"({int(np.prod(dims))} values), it holds {data.size}. "
                            + _replace_hint(path))
    return data.reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for sub in ("", "FashionMNIST/raw"):
        for name in (stem, stem + ".gz"):
            if (folder / sub / name).is_file():
                return folder / sub / name
    return None


def _looked_in(folder: Path) -> str:
    return f"{folder} and {folder / 'FashionMNIST' / 'raw'}"


def _missing_files(folder: Path, split: str) -> list[str]:
    return [f"{stem}[.gz]" for stem in FILES[split] if _find(folder, stem) is None]


def _from_folder(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    paths = [_find(folder, stem) for stem in FILES[split]]
    if None in paths:
        return None
    images, labels = _read_idx(paths[0]), _read_idx(paths[1])
    if len(images) != len(labels):
        raise DataFileError(
            f"Fashion-MNIST {split} files disagree: {paths[0]} holds {len(images)} images but "
            f"{paths[1]} holds {len(labels)} labels, so they do not belong together (one of them "
            f"is truncated or from another data set). Nothing was changed or deleted. To fix it, "
            f"replace both files with the official ones (e.g. from {DEBIAN_DIR}), or unset "
            f"{DATA_ENV} to use the Debian package or torchvision's download.")
    return images, labels


def _from_torchvision(split: str) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import FashionMNIST

    ds = FashionMNIST(runtime.cache_dir("data"), train=(split == "train"), download=True)
    return ds.data.numpy(), ds.targets.numpy().astype(np.uint8)


def _validate(images: np.ndarray, labels: np.ndarray, split: str, source: str) -> None:
    n = COUNTS[split]
    hint = (f"These are not the official Fashion-MNIST {split} files; nothing was changed or "
            f"deleted. Replace them (e.g. from {DEBIAN_DIR}) or unset {DATA_ENV}.")
    if images.shape != (n, 28, 28) or labels.shape != (n,):
        raise DataFileError(f"Fashion-MNIST {split} from {source} has images {images.shape} and "
                            f"labels {labels.shape}; expected ({n}, 28, 28) and ({n},). " + hint)
    if labels.max() >= NUM_CLASSES:
        raise DataFileError(f"Fashion-MNIST {split} from {source} has a label {labels.max()} > 9. "
                            + hint)


def load(split: str = "train", *, folder: str | os.PathLike | None = None,
         download: bool = True) -> Images:
    """The official Fashion-MNIST ``train`` (60k) or ``test`` (10k) split as uint8 images."""
    if split not in COUNTS:
        raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")
    tried = []
    named = folder or os.environ.get(DATA_ENV)
    where = "folder=" if folder else f"${DATA_ENV}"
    for label, path in ((where, named), ("Debian", DEBIAN_DIR)):
        if not path:
            tried.append(f"{label}: not set")
            continue
        path = Path(path)
        found = _from_folder(path, split)
        if found is not None:
            _validate(*found, split, str(path))
            return Images(torch.from_numpy(found[0].copy()),
                          torch.from_numpy(found[1].astype(np.int64)), str(path))
        missing = ", ".join(_missing_files(path, split))
        if label == where:
            # A folder named on purpose is used or is an error; never silently skipped for
            # another source (a folder holding only the test split would otherwise mix sources).
            raise DataNotFoundError(
                f"Fashion-MNIST {split} split not found in {label} {path}: missing {missing} "
                f"(looked in {_looked_in(path)}). Put the {split} files there, point "
                f"{DATA_ENV} at a folder holding both splits, or unset it to use Debian's "
                f"package (sudo apt-get install dataset-fashion-mnist) or torchvision's "
                f"download.")
        tried.append(f"{label}: missing {missing} (looked in {_looked_in(path)})")
    if download:
        try:
            found = _from_torchvision(split)
        except Exception as err:  # no network, or a failed download
            tried.append(f"torchvision download: {type(err).__name__}: {err}")
        else:
            _validate(*found, split, "torchvision")
            return Images(torch.from_numpy(found[0].copy()),
                          torch.from_numpy(found[1].astype(np.int64)), "torchvision")
    else:
        tried.append("torchvision download: disabled")
    raise DataNotFoundError(
        "Fashion-MNIST was not found. Tried:\n  - " + "\n  - ".join(tried) + "\n"
        "Get it one of three ways:\n"
        f"  1. set {DATA_ENV} to a folder holding {FILES[split][0]}[.gz] and "
        f"{FILES[split][1]}[.gz] (or torchvision's FashionMNIST/raw/ layout);\n"
        "  2. on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist;\n"
        "  3. with internet access, let torchvision download it (download=True).")


@lru_cache(maxsize=2)
def _cached(split: str) -> Images:
    return load(split)


def train_valid_split(seed: int = SPLIT_SEED) -> tuple[Images, Images]:
    """The report's 50k/10k split of the 60k training images, fixed by ``seed``."""
    full = _cached("train")
    perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed))
    return full.subset(perm[:-VALID_SIZE]), full.subset(perm[-VALID_SIZE:])


def per_class(d: Images, n: int = 1) -> Images:
    """The first ``n`` images of each class, ordered by class (rows of slides 3 and 7)."""
    index = torch.cat([(d.labels == k).nonzero().flatten()[:n] for k in range(NUM_CLASSES)])
    return d.subset(index)


def test_set() -> Images:
    return _cached("test")


def to_model_space(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 32, 32) in [-1, 1]: ToTensor, Pad(2),
    Normalize(0.5, 0.5). Images already (N, C, H, W) (CelebA's, diffnb.data.celeba) are only mapped
    to [-1, 1]."""
    if images.ndim == 4:
        return images.float() / 127.5 - 1.0
    x = images.unsqueeze(1).float() / 255.0
    x = F.pad(x, (2, 2, 2, 2), value=0.0)
    return x * 2.0 - 1.0


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Model space [-1, 1] back to [0, 1], clamped."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


@lru_cache(maxsize=1)
def sigma_data() -> float:
    """Standard deviation of the (padded, [-1, 1]) training-split images: EDM's sigma_data.

    From the histogram of the uint8 pixels (each of the 256 values mapped as
    :func:`to_model_space` maps it) plus the padding's -1s: exact, and 30x faster than a pass over
    the 50k float images (every process that trains or samples asks for it)."""
    train, _ = train_valid_split()
    counts = torch.bincount(train.images.flatten(), minlength=256).double()
    values = ((torch.arange(256).float() / 255.0) * 2.0 - 1.0).double()  # to_model_space's ops
    pad = len(train) * (32 * 32 - train.images.shape[-2] * train.images.shape[-1])  # Pad(2): -1
    count = counts.sum().item() + pad
    mean = ((counts * values).sum().item() - pad) / count
    mean_sq = ((counts * values * values).sum().item() + pad) / count
    return float(np.sqrt(mean_sq - mean * mean))


def sample_batch(data: Images, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Model-space images and labels for ``index``, on the data's device (no DataLoader); also
    for CelebA's ``Faces`` (labels: attribute rows)."""
    return to_model_space(data.images[index]), data.labels[index]


def main() -> None:
    """``python -m diffnb.data``: check that the data is found and print its summary."""
    for split in ("train", "test"):
        d = load(split)
        print(f"{split}: {tuple(d.images.shape)} uint8 from {d.source}")
    print(f"sigma_data = {sigma_data():.6f}")
