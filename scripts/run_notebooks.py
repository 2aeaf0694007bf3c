"""Execute notebooks in order, in place (the main command), then write the stage timings.

Usage: run_notebooks.py NB.ipynb ...   ->   results[/quick]/timings.json
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from diffnb import config, runtime, training


def run(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=3600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    nbformat.write(nb, path)
    return seconds


def training_seconds() -> dict[str, float]:
    """Per preset: the seconds its training epochs took (from the checkpoint's history)."""
    out = {}
    for name, preset in config.PRESETS.items():
        scaled = config.scaled(preset)
        final = training.checkpoint_dir(scaled) / f"e{scaled.train.epochs:04d}.pt"
        if final.exists():
            out[name] = round(sum(training.load_checkpoint(final)["history"]["epoch_seconds"]), 1)
    return out


def fid_seconds() -> dict[str, float]:
    folder = runtime.output_dir("results") / "fid"
    return {p.stem: round(json.loads(p.read_text()).get("eval_seconds", 0.0), 1)
            for p in sorted(folder.glob("*.json"))} if folder.exists() else {}


def main(paths: list[str]) -> None:
    runtime.banner()
    walls = {}
    for name in paths:
        path = Path(name)
        print(f"running {path} ...", flush=True)
        walls[path.name] = round(run(path), 1)
        print(f"  {path.name}: {walls[path.name]} s", flush=True)
    out = runtime.output_dir("results") / "timings.json"
    out.write_text(json.dumps({
        "profile": runtime.profile().name, "device": runtime.device_name(),
        "notebooks_seconds": walls, "notebooks_total_seconds": round(sum(walls.values()), 1),
        "training_seconds": training_seconds(),
        "sampling_and_fid_seconds": fid_seconds(),
        "note": "training/FID seconds are those of the run that produced each checkpoint/result; "
                "a notebook that reuses them is fast"}, indent=2) + "\n")
    print(f"total {sum(walls.values()):.1f} s -> {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
