"""Tables and numbers written to ``results[/quick]/`` with their provenance, and read back.

Every table is saved as ``<name>.csv`` (the data), ``<name>.md`` (for reading on GitHub) and
``<name>.json`` (provenance: profile, device, and whatever the caller records: seed, n, sampler).
Notebooks read their tables from here, so no number is typed by hand.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from diffnb import runtime


def provenance(**extra) -> dict:
    import torch

    return {"profile": runtime.profile().name, "device": runtime.device_name(),
            "torch": torch.__version__, **extra}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def save_table(df: pd.DataFrame, name: str, *, meta: dict | None = None,
               floatfmt: str = ".2f") -> Path:
    """Write ``df`` as CSV + Markdown + JSON provenance under ``results[/quick]/``."""
    base = runtime.output_dir("results") / name
    _atomic_write(base.with_suffix(".csv"), df.to_csv(index=False))
    _atomic_write(base.with_suffix(".md"), df.to_markdown(index=False, floatfmt=floatfmt) + "\n")
    _atomic_write(base.with_suffix(".json"),
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
    _atomic_write(path, json.dumps({**provenance(), **obj}, indent=2, sort_keys=True,
                                   default=str) + "\n")
    return path


def load_json(name: str) -> dict:
    path = runtime.output_dir("results") / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist yet: run what writes it first")
    return json.loads(path.read_text())
