"""Execute notebooks in order, in place (the main command). Usage: run_notebooks.py NB.ipynb ..."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from diffnb import runtime


def run(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=3600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    nbformat.write(nb, path)
    return seconds


def main(paths: list[str]) -> None:
    runtime.banner()
    walls = {}
    for name in paths:
        path = Path(name)
        print(f"running {path} ...", flush=True)
        walls[path.name] = round(run(path), 1)
        print(f"  {path.name}: {walls[path.name]} s", flush=True)
    out = runtime.output_dir("results") / "notebook_timings.json"
    out.write_text(json.dumps({"profile": runtime.profile().name, "device": runtime.device_name(),
                               "seconds": walls, "total_seconds": round(sum(walls.values()), 1)},
                              indent=2) + "\n")
    print(f"total {sum(walls.values()):.1f} s -> {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
