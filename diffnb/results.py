"""Tables and numbers written to ``results[/quick]/`` with their provenance, and read back.

Every table is saved as ``<name>.csv`` (the data), ``<name>.md`` (for reading on GitHub) and
``<name>.json`` (provenance: profile, device, torch, the code's commit, and whatever the caller
records: seed, n, sampler).
Notebooks read their tables from here, so no number is typed by hand.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path

from diffnb import runtime


def provenance(**extra) -> dict:
    import torch

    return {"profile": runtime.profile().name, "device": runtime.device_name(),
            "torch": torch.__version__, "commit": runtime.code_commit(), **extra}


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    The one atomic writer of the package (checkpoints, figures, tables, caches): a reader
    sees the old file or the whole new one, never a truncated one, and two processes writing the
    same file at once (two kernels on one checkpoint folder) each rename a whole file, the last
    one wins. The temporary name carries the process and thread, so concurrent writers never
    share it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class Busy(Exception):
    """Another process holds the lock asked for with ``exclusive(..., wait=False)``."""


@contextmanager
def exclusive(name: str, *, wait: bool = True):
    """One process of this checkout at a time inside the block: a lock file under
    ``.cache/locks/``, released however its process ends. ``wait=False``: raise :class:`Busy`
    at once where another process holds it. Where ``fcntl`` is missing (Windows), no lock."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(runtime.cache_dir("locks") / f"{name}.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise Busy(f"{name} is being computed by another process") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write text or bytes to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
    return Path(path)


def file_digest(path: str | os.PathLike, *, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (``hashlib`` algorithm), read 1 MiB at a time."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def relative(path: Path) -> str:
    """``path`` relative to the repository, as a sidecar records it (its name outside it)."""
    try:
        return Path(path).resolve().relative_to(runtime.project_root().resolve()).as_posix()
    except ValueError:
        return Path(path).name


def save_table(df, name: str, *, meta: dict | None = None,
               floatfmt: str = ".2f") -> Path:
    """Write ``df`` as CSV + Markdown + JSON provenance under ``results[/quick]/``."""
    base = runtime.output_dir("results") / name
    atomic_write(base.with_suffix(".csv"), df.to_csv(index=False))
    atomic_write(base.with_suffix(".md"), df.to_markdown(index=False, floatfmt=floatfmt) + "\n")
    atomic_write(base.with_suffix(".json"),
                  json.dumps(provenance(table=name, rows=len(df), **(meta or {})),
                             indent=2, sort_keys=True, default=str) + "\n")
    return base.with_suffix(".csv")
