"""Executing the notebooks: the run queue's last stage and ``make reproduce``.

Executed notebooks carry their profile in ``metadata.diffnb``. The full profile writes them in
place (the committed notebooks are the full run's outputs). Any other profile writes in place
only over notebooks whose saved outputs are not a full run's; otherwise into the git-ignored
``build/notebooks/<profile>/``, so a quick run on a CPU never overwrites the course's face.
"""
from __future__ import annotations

import time
from pathlib import Path

from diffnb import runtime
from diffnb.results import atomic_write


def notebooks() -> list[Path]:
    return sorted((runtime.project_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def saved_profile(path: Path) -> str | None:
    import nbformat

    return nbformat.read(path, as_version=4).metadata.get("diffnb", {}).get("profile")


def destination(path: Path, profile: runtime.Profile) -> Path:
    """Where the executed copy of ``path`` goes in ``profile`` (see the module docstring)."""
    if profile.name == "full" or saved_profile(path) != "full":
        return path
    return runtime.outputs_root() / "build" / "notebooks" / profile.name / path.name


def execute(path: Path, *, profile: runtime.Profile, timeout: int = 3600) -> tuple[Path, float]:
    """Execute one notebook in ``profile``; returns where it was written and the seconds."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    with runtime.using_profile(profile):  # the kernel inherits it
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    nb.metadata["diffnb"] = {"profile": profile.name, "device": runtime.device_name()}
    out = destination(path, profile)
    atomic_write(out, nbformat.writes(nb) + "\n")
    return out, seconds


def run_all(*, profile: runtime.Profile, paths: list[Path] | None = None) -> dict:
    """Execute notebooks in order; per notebook: seconds and where the executed copy went."""
    out = {}
    for path in paths or notebooks():
        print(f"executing {path.name} ...", flush=True)
        dest, seconds = execute(path, profile=profile)
        where = dest.name if dest.parent.name == "notebooks" else \
            f"build/notebooks/{profile.name}/{dest.name}"
        print(f"  {path.name}: {seconds:.1f} s -> {where}", flush=True)
        out[path.name] = {"seconds": round(seconds, 1), "written_to": where}
    return out
