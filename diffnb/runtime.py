"""Where and how a run happens: the device, the seed, the run profile, the output folders.

The profile is chosen by one environment variable, ``DIFFNB_PROFILE`` (``quick`` or ``full``),
read in :func:`profile` and nowhere else. ``quick`` shrinks loop sizes only (epochs, images per
epoch, sample counts); every architecture stays the report's.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

PROFILE_ENV = "DIFFNB_PROFILE"
DEVICE_ENV = "DIFFNB_DEVICE"


@dataclass(frozen=True)
class Profile:
    """Loop sizes of a run. ``full`` is the report's; ``quick`` fits 2 CPU cores."""

    name: str
    epochs_scale: float          # preset epochs are multiplied by this (at least 1 epoch)
    epoch_images: int | None     # images per epoch; None = the whole 50k training split
    valid_images: int | None     # validation images per epoch; None = the whole 10k split
    grid_samples: int            # samples in one sample grid
    per_class_samples: int       # samples per class in the per-class grids
    fid_report_per_class: int    # "report" protocol: generated and real images per class
    fid_standard_n: int          # "standard" protocol: generated images vs the test set
    fid_standard_per_class: int  # "standard" protocol, per class
    fid_test_n: int | None       # "standard" protocol's reference: test images (None = all 10k)
    sampler_steps: int           # Euler steps of the report's sampler
    floor_ns: tuple[int, ...] = ()           # n of the real-vs-real FID curve (notebook 05)
    nfe_steps: dict = field(default_factory=dict)  # solver -> step counts (notebook 06)


PROFILES = {
    "full": Profile(name="full", epochs_scale=1.0, epoch_images=None, valid_images=None,
                    grid_samples=64, per_class_samples=64, fid_report_per_class=64,
                    fid_standard_n=10_000, fid_standard_per_class=1_000, fid_test_n=None,
                    sampler_steps=50, floor_ns=(16, 32, 64, 128, 256, 512, 1024, 2048, 5000),
                    nfe_steps={"euler": (10, 18, 35, 50, 100), "heun": (6, 10, 18, 26, 50)}),
    "quick": Profile(name="quick", epochs_scale=0.16, epoch_images=256, valid_images=256,
                     grid_samples=16, per_class_samples=8, fid_report_per_class=8,
                     fid_standard_n=60, fid_standard_per_class=6, fid_test_n=500,
                     sampler_steps=25, floor_ns=(8, 16, 32, 64, 128),
                     nfe_steps={"euler": (5, 25), "heun": (3, 13)}),
}


def device() -> torch.device:
    """The one device of a run: ``DIFFNB_DEVICE`` if set, else cuda, then mps, then cpu."""
    name = os.environ.get(DEVICE_ENV, "").strip()
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def profile() -> Profile:
    """The run profile: ``DIFFNB_PROFILE``, else ``full`` with CUDA and ``quick`` without."""
    name = os.environ.get(PROFILE_ENV, "").strip().lower()
    if not name:
        name = "full" if device().type == "cuda" else "quick"
    if name not in PROFILES:
        raise ValueError(f"{PROFILE_ENV}={name!r} is not a profile; "
                         f"use one of {sorted(PROFILES)} (or unset it for the default).")
    return PROFILES[name]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@lru_cache(maxsize=1)
def project_root() -> Path:
    """The repository root when diffnb runs from a checkout, else the working directory."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def output_dir(kind: str) -> Path:
    """``figures/`` or ``results/`` for the full profile, ``<kind>/quick/`` for the quick one."""
    if kind not in ("figures", "results"):
        raise ValueError(f"unknown output kind {kind!r}; use 'figures' or 'results'")
    path = project_root() / kind
    if profile().name != "full":
        path = path / profile().name
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(name: str) -> Path:
    """A git-ignored folder of the project for downloads, converted weights, statistics."""
    path = Path(os.environ.get("DIFFNB_CACHE", project_root() / ".cache")) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_amp(dev: torch.device) -> bool:
    """bf16 autocast on CUDA and on CPUs (1.8-5x faster here, REFERENCE section 6)."""
    return dev.type in ("cuda", "cpu")


def device_name() -> str:
    dev = device()
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return dev.type


def banner() -> str:
    """The one line each notebook prints first."""
    line = (f"diffnb: profile={profile().name} device={device()} ({device_name()}) "
            f"torch={torch.__version__}")
    print(line)
    return line
