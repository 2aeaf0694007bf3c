"""Tables and numbers written to ``results[/quick]/`` with their provenance, and read back.

Every table is saved as ``<name>.csv`` (the data), ``<name>.md`` (for reading on GitHub) and
``<name>.json`` (provenance: profile, device, and whatever the caller records: seed, n, sampler).
Notebooks read their tables from here, so no number is typed by hand.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pandas as pd

from diffnb import runtime


def provenance(**extra) -> dict:
    import torch

    return {"profile": runtime.profile().name, "device": runtime.device_name(),
            "torch": torch.__version__, **extra}


def atomic_write(path: str | os.PathLike, content: bytes | str) -> Path:
    """Write bytes (or text, as UTF-8) so that readers see the old file or the whole new one.

    The temporary file is unique to the process and thread: concurrent writers of one path
    (a shared cache) never write into each other's file; the last one to finish wins.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_table(df: pd.DataFrame, name: str, *, meta: dict | None = None,
               floatfmt: str = ".2f") -> Path:
    """Write ``df`` as CSV + Markdown + JSON provenance under ``results[/quick]/``."""
    base = runtime.output_dir("results") / name
    atomic_write(base.with_suffix(".csv"), df.to_csv(index=False))
    atomic_write(base.with_suffix(".md"), df.to_markdown(index=False, floatfmt=floatfmt) + "\n")
    atomic_write(base.with_suffix(".json"),
                  json.dumps(provenance(table=name, rows=len(df), **(meta or {})),
                             indent=2, sort_keys=True, default=str) + "\n")
    return base.with_suffix(".csv")


def load_table(name: str) -> pd.DataFrame:
    path = runtime.output_dir("results") / f"{name}.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist yet: run the notebook or command that "
                                "writes it first")
    return pd.read_csv(path)


def save_json(obj: dict, name: str) -> Path:
    path = runtime.output_dir("results") / f"{name}.json"
    atomic_write(path, json.dumps({**provenance(), **obj}, indent=2, sort_keys=True,
                                   default=str) + "\n")
    return path


def load_json(name: str) -> dict:
    path = runtime.output_dir("results") / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist yet: run what writes it first")
    return json.loads(path.read_text())
