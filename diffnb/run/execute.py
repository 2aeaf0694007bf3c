"""Executing the notebooks: the run queue's last stage and ``make reproduce``.

Executed notebooks record their profile in ``metadata.diffnb``. The full profile writes them in
place (the committed notebooks are the full run's outputs). Any other profile writes in place
only over notebooks whose saved outputs are not a full run's; otherwise into the git-ignored
``build/notebooks/<profile>/``, so a quick run on a CPU never overwrites the course's face.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

from diffnb import runtime
from diffnb.results import atomic_write


def notebooks() -> list[Path]:
    return sorted((runtime.project_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))


# Read as plain JSON, not with nbformat: the run queue calls these on a machine that may lack
# the notebook packages (its notebooks stage then waits for them).

def saved_profile(path: Path) -> str | None:
    """The profile a saved notebook's outputs come from (None: not executed by diffnb)."""
    try:
        return json.loads(path.read_text())["metadata"].get("diffnb", {}).get("profile")
    except (ValueError, KeyError):
        return None


def cell_sources(path: Path) -> list[str]:
    """Each cell's source as one string (nbformat's form)."""
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in json.loads(path.read_text())["cells"]]


def destination(path: Path, profile: runtime.Profile) -> Path:
    """Where the executed copy of ``path`` goes in ``profile`` (see the module docstring)."""
    if profile.name == "full" or saved_profile(path) != "full":
        return path
    return runtime.outputs_root() / "build" / "notebooks" / profile.name / path.name


def execute(path: Path, *, profile: runtime.Profile, timeout: int = 3600) -> tuple[Path, float]:
    """Execute one notebook in ``profile``; returns where it was written and the seconds."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("widgets", None)   # the last run's widgets: only this run's are saved
    start = time.perf_counter()
    with runtime.using_profile(profile):  # the kernel inherits it
        # no per-cell timestamps: a notebook's seconds go to pipeline.json (stages.notebooks.info)
        client = _client(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                         resources={"metadata": {"path": str(path.parent)}})
        client.execute()
    seconds = time.perf_counter() - start
    tidy(nb)
    shown_widgets_only(nb, closed=client.closed)
    stable_widget_ids(nb, salt=path.name)
    nb.metadata["diffnb"] = {"profile": profile.name, "device": runtime.device_name()}
    out = destination(path, profile)
    atomic_write(out, nbformat.writes(nb) + "\n")
    return out, seconds


_WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _view_ids(nb) -> list[str]:
    """The widget model ids the cells' outputs show, in order."""
    return [out["data"][_WIDGET_VIEW]["model_id"] for cell in nb.cells
            for out in cell.get("outputs", []) if _WIDGET_VIEW in out.get("data", {})]


def tidy(nb) -> None:
    """Every cell as it is saved: no timestamps (an earlier nbclient run's too), one output per
    stream, a figure without its text stand-in."""
    for cell in nb.cells:
        cell.get("metadata", {}).pop("execution", None)
        coalesce_streams(cell)
        drop_figure_text(cell)


def coalesce_streams(cell) -> None:
    """Consecutive stdout (or stderr) outputs of a cell as one, as a terminal shows them: how the
    kernel happened to cut its stream into messages (timing) does not change the saved file."""
    merged = []
    for out in cell.get("outputs", []):
        if merged and out.get("output_type") == "stream" and \
                merged[-1].get("output_type") == "stream" and merged[-1]["name"] == out["name"]:
            merged[-1]["text"] += out["text"]
        else:
            merged.append(out)
    if "outputs" in cell:
        cell["outputs"] = merged


FIGURE_TEXT = re.compile(r"<Figure size [\d.]+x[\d.]+ with \d+ Axes>")


def drop_figure_text(cell) -> None:
    """A figure's output is its image: matplotlib's text stand-in beside it (``<Figure size
    600x320 with 1 Axes>``, an object's repr) is not saved."""
    for out in cell.get("outputs", []):
        data = out.get("data", {})
        if "image/png" in data and FIGURE_TEXT.fullmatch(str(data.get("text/plain", ""))):
            del data["text/plain"]


def _client(nb, **kwargs):
    """An nbclient that remembers which widgets the kernel closed (nbclient keeps their state)."""
    from nbclient import NotebookClient

    class Client(NotebookClient):
        def handle_comm_msg(self, outs, msg, cell_index):
            super().handle_comm_msg(outs, msg, cell_index)
            if msg["msg_type"] == "comm_close":
                self.closed.add(msg["content"]["comm_id"])

    client = Client(nb, **kwargs)
    client.closed = set()
    return client


def shown_widgets_only(nb, *, closed=()) -> int:
    """Drop saved widget models that no cell shows (directly or through ``IPY_MODEL_`` references),
    and the views of widgets the kernel ``closed`` (a progress bar with ``leave=False``: a live
    notebook shows nothing there either). Returns how many models were dropped."""
    import re

    for cell in nb.cells:
        if closed and "outputs" in cell:
            cell.outputs = [o for o in cell.outputs if o.get("data", {}).get(
                _WIDGET_VIEW, {}).get("model_id") not in closed]
    state = nb.metadata.get("widgets", {}).get(_WIDGET_STATE, {}).get("state")
    if not state:
        nb.metadata.pop("widgets", None)
        return 0
    todo = _view_ids(nb)
    keep = set()
    while todo:
        mid = todo.pop()
        if mid in keep or mid not in state:
            continue
        keep.add(mid)
        todo += re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(state[mid]))
    dropped = len(state) - len(keep)
    if keep:
        nb.metadata["widgets"][_WIDGET_STATE]["state"] = {k: v for k, v in state.items()
                                                          if k in keep}
    else:
        nb.metadata.pop("widgets", None)
    return dropped


def stable_widget_ids(nb, *, salt: str) -> int:
    """Replace the kernel's random widget model ids (uuid4 hex) by ids derived from ``salt`` and
    their order of creation, everywhere they occur (the saved widget state, the references
    ``IPY_MODEL_<id>`` inside it, the cells' widget views), so that executing a notebook twice
    saves the same outputs. Returns how many ids were replaced."""
    import hashlib

    state = nb.metadata.get("widgets", {}).get(_WIDGET_STATE, {}).get("state", {})
    views = _view_ids(nb)
    ids = list(dict.fromkeys([*state, *views]))
    if not ids:
        return 0
    new = {old: hashlib.sha256(f"{salt}:{k}".encode()).hexdigest()[:32] for k, old in enumerate(ids)}
    if state:
        text = json.dumps(state)
        for old, fresh in new.items():
            text = text.replace(old, fresh)
        nb.metadata["widgets"][_WIDGET_STATE]["state"] = json.loads(text)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(_WIDGET_VIEW)
            if view is not None:
                view["model_id"] = new[view["model_id"]]
    return len(new)


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
