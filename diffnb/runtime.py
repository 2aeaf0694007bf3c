"""Where and how a run happens: the device, the seed, the run profile, the output folders.

The profile (``diffnb.profiles``) is chosen by one environment variable, ``DIFFNB_PROFILE``, read
in :func:`profile` and nowhere else; unset, it is ``cpu`` once the repository keeps that
profile's weights, else ``quick``.
"""
from __future__ import annotations

import os
import random
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from diffnb.hardware import cpu_bf16_fast, cpu_flags, cpu_model  # noqa: F401  (runtime.*)
from diffnb.profiles import PROFILES, Profile  # noqa: F401  (runtime.PROFILES, runtime.Profile)

PROFILE_ENV = "DIFFNB_PROFILE"
DEVICE_ENV = "DIFFNB_DEVICE"


def device(override: str | torch.device | None = None) -> torch.device:
    """The one device of a run: ``override`` when given (a caller's ``device=`` argument, checked
    as ``DIFFNB_DEVICE`` is; None or "" for none), else ``DIFFNB_DEVICE`` if set, else cuda,
    then mps, then cpu. Under torchrun (``LOCAL_RANK`` set) CUDA chosen by the environment or
    by default means this process's GPU, ``cuda:LOCAL_RANK``."""
    if override is not None and str(override).strip():
        return _checked(override, what=f"device={str(override)!r}",
                        unset="or pass device=None to use the best device available")
    name = os.environ.get(DEVICE_ENV, "").strip()
    if name:
        return _local_gpu(_checked(name, what=f"{DEVICE_ENV}={name!r}",
                                   unset="or unset it to use the best device available"))
    if torch.cuda.is_available():
        return _local_gpu(torch.device("cuda"))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


DEVICE_CHOICES = "cpu, cuda, cuda:N (N = a GPU index) or mps"


def _local_gpu(dev: torch.device) -> torch.device:
    """``cuda`` without an index under torchrun: the GPU of this process's ``LOCAL_RANK``."""
    local = os.environ.get("LOCAL_RANK", "").strip()
    if dev.type != "cuda" or dev.index is not None or not local:
        return dev
    if not local.isdigit() or int(local) >= torch.cuda.device_count():
        raise ValueError(f"LOCAL_RANK={local!r} but this machine has {torch.cuda.device_count()} "
                         "CUDA device(s): start at most that many processes per machine "
                         "(torchrun --nproc_per_node).")
    return torch.device("cuda", int(local))


def _checked(name: str | torch.device, *, what: str, unset: str) -> torch.device:
    """A device name (or device) parsed and checked: a misspelling or an absent GPU is an error
    that says what to set (``what``: where the name came from), not a failure deep inside the
    first tensor operation."""
    try:
        dev = name if isinstance(name, torch.device) else torch.device(name.strip().lower())
    except (RuntimeError, ValueError, AttributeError) as err:
        raise ValueError(f"{what} is not a device; use one of {DEVICE_CHOICES} ({unset}).") from err
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{what} is not supported by diffnb; use one of {DEVICE_CHOICES} "
                         f"({unset}).")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{what} but CUDA is not available here (torch "
                             f"{torch.__version__}); use cpu, {unset}.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{what} but this machine has {torch.cuda.device_count()} CUDA "
                             f"device(s) (0-based indices); use a smaller index, {unset}.")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                  and torch.backends.mps.is_available()):
        raise ValueError(f"{what} but MPS is not available here; use cpu, {unset}.")
    return dev


def profile() -> Profile:
    """The run profile: ``DIFFNB_PROFILE``, else ``cpu`` once the repository keeps every model
    of it (``weights/cpu/MANIFEST.json`` says ``complete``), GPU or not, else ``quick``."""
    name = os.environ.get(PROFILE_ENV, "").strip().lower()
    if not name:
        name = "cpu" if kept_complete("cpu") else "quick"
    if name not in PROFILES:
        raise ValueError(f"{PROFILE_ENV}={name!r} is not a profile; "
                         f"use one of {sorted(PROFILES)} (or unset it for the default: cpu "
                         f"once its weights are kept, else quick).")
    return PROFILES[name]


def kept_complete(name: str) -> bool:
    """Whether ``weights/<name>/`` keeps every model the profile trains (``diffnb.run.weights``)."""
    import json

    path = project_root() / "weights" / name / "MANIFEST.json"
    try:
        return bool(json.loads(path.read_text()).get("complete"))
    except (OSError, ValueError):
        return False


_read_profile = profile  # for functions whose ``profile`` argument hides the function


@contextmanager
def using_profile(p: Profile):
    """``DIFFNB_PROFILE`` set to ``p`` inside (a run's start: kernels and subprocesses inherit
    it), and restored after, so a run never changes the profile of the process that called it."""
    previous = os.environ.get(PROFILE_ENV)
    os.environ[PROFILE_ENV] = p.name
    try:
        yield p
    finally:
        if previous is None:
            os.environ.pop(PROFILE_ENV, None)
        else:
            os.environ[PROFILE_ENV] = previous


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


def outputs_root() -> Path:
    """Where ``figures/``, ``results/`` and ``build/`` go: ``DIFFNB_OUTPUTS`` or the checkout."""
    return Path(os.environ.get("DIFFNB_OUTPUTS") or project_root())


def output_dir(kind: str, profile: Profile | None = None) -> Path:
    """``figures/`` or ``results/`` for the full profile, ``<kind>/<profile>/`` for the others."""
    if kind not in ("figures", "results"):
        raise ValueError(f"unknown output kind {kind!r}; use 'figures' or 'results'")
    profile = profile or _read_profile()
    path = outputs_root() / kind
    if profile.name != "full":
        path = path / profile.name
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(name: str) -> Path:
    """A git-ignored folder of the project for downloads, converted weights, statistics."""
    path = Path(os.environ.get("DIFFNB_CACHE", project_root() / ".cache")) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


KEPT_PROFILES = ("cpu", "full")   # profiles whose models and scores the repository keeps
RESCORE_ENV = "DIFFNB_RESCORE"


def reuse_committed(p: Profile) -> bool:
    """Whether a stored score or study result whose key matches is reused without a stamp of
    this checkout: yes in a profile whose weights are kept (its results are those weights'
    results, the weights fingerprint is in the key), unless ``DIFFNB_RESCORE=1`` asks to compute
    every number again."""
    return p.name in KEPT_PROFILES and not rescore()


def rescore() -> bool:
    value = os.environ.get(RESCORE_ENV, "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"{RESCORE_ENV}={value!r}: use 1 (compute every score and study again) "
                         "or 0 (the default: reuse those that match)")
    return value == "1"


def stamps_dir() -> Path:
    """Stamps of results computed by this checkout (``outputs_root()/.cache/scores``, ignored).
    In a profile whose weights are not kept (quick, tiny) a committed result is reused only where
    a stamp says it was computed here: a fresh clone retrains, so it recomputes every number. In
    a kept profile the committed results are reused (:func:`reuse_committed`)."""
    path = outputs_root() / ".cache" / "scores"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_amp(dev: torch.device) -> bool:
    """bf16 autocast on CUDA, and on CPUs where it is faster than fp32 (:func:`cpu_bf16_fast`)."""
    dev = torch.device(dev)
    return dev.type == "cuda" or (dev.type == "cpu" and cpu_bf16_fast())


def autotune(dev, on: bool = True) -> None:
    """cuDNN's autotuner on CUDA (PyTorch's performance tuning guide, for convolutions of fixed
    shapes): each new input shape is timed once, then its fastest algorithm is used. Set where a
    training starts; ``benchmarks/train_speed.py`` measures the diffnb loop without and with it."""
    if torch.device(dev).type == "cuda":
        torch.backends.cudnn.benchmark = on


def autocast(device, amp: bool):
    """bf16 autocast when ``amp``: the one autocast helper of training and sampling."""
    from contextlib import nullcontext

    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if amp \
        else nullcontext()


COMMIT_ENV = "DIFFNB_COMMIT"


CODE_PATHS = ("diffnb", "scripts", "benchmarks", "pyproject.toml", "requirements.txt")


@lru_cache(maxsize=1)
def code_commit() -> str:
    """The git commit this code is (``DIFFNB_COMMIT`` where the code runs outside its git
    history, e.g. a copy of the tree), with ``+dirty`` for uncommitted changes to the code
    (``CODE_PATHS``; the figures, results and notebooks a run rewrites do not count); "unknown"
    outside a checkout."""
    import subprocess

    if os.environ.get(COMMIT_ENV, "").strip():
        return os.environ[COMMIT_ENV].strip()
    try:
        run = dict(cwd=project_root(), capture_output=True, text=True, timeout=10, check=True)
        head = subprocess.run(["git", "rev-parse", "HEAD"], **run).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                *CODE_PATHS], **run).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def device_name() -> str:
    dev = device()
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return cpu_model() if dev.type == "cpu" else dev.type


def banner() -> str:
    """The one line each notebook prints first."""
    dev, name = str(device()), device_name()
    where = dev if name == dev else f"{dev} ({name})"      # "cpu", or "cuda (NVIDIA H200)"
    line = f"diffnb: profile={profile().name} device={where} torch={torch.__version__}"
    print(line)
    return line
