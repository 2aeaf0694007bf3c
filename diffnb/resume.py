"""Resume points kept across borrowed-GPU sessions, in git history like the kept weights.

A training that a session could not finish (one that needs more than a whole session's queue,
or one that a slower GPU than estimated cut at the session's end) goes on in the next session
from its full checkpoint: fp32 weights, EMA, Adam's moments, scheduler and RNG, so that it
continues bit for bit. ``python -m diffnb.weights keep`` copies the resume point of every
planned run not finished into ``weights/<profile>/<run folder>-eNNNN.resume.pt`` (git-ignored)
and lists it under ``"resume"`` in the kept weights' manifest; ``weights commit`` puts its bytes
into git history (commit A) and out of the tree (commit B); ``weights restore`` (which
``scripts/gpu/prepare.py`` runs first) writes it back into ``checkpoints/``, where the session
planner finds it and carries it. One entry per run: a later one replaces it, and a finished run
drops it (its bytes stay in history: 7-98 MB each, so the queue starts a training that would
be cut only where no fresh session could finish it; ``stages.session_start``).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from diffnb import checkpoints, gitstore, runtime, stages, transport
from diffnb.results import atomic_write, file_digest

SUFFIX = ".resume.pt"


def kept_name(run: str, epoch: int) -> str:
    return f"{run}-e{epoch:04d}{SUFFIX}"


def _finished(folder: Path, epochs: int, files: dict) -> bool:
    half = checkpoints.final_name(epochs, half=True)
    return (folder / half).exists() or f"{folder.name}-{half}" in files


def keep(profile: runtime.Profile, manifest: dict, *, dest: Path) -> list[str]:
    """Keep the resume point of every unfinished run in ``dest`` and ``manifest["resume"]``;
    drop the entries of runs now finished. Returns the names newly kept."""
    kept, out = manifest.setdefault("resume", {}), []
    targets = {f.name: (f, e) for f, e in stages.run_targets(profile).items()}
    for name, e in list(kept.items()):
        folder, epochs = targets.get(e["run"], (None, None))
        if folder is None or _finished(folder, epochs, manifest["files"]):
            del kept[name]
            (dest / name).unlink(missing_ok=True)
    for path in transport.resume_points(profile):
        blob = checkpoints.load(path)
        name = kept_name(path.parent.name, blob["epoch"])
        if name in kept:
            continue
        data = path.read_bytes()
        atomic_write(dest / name, data)
        for old in [n for n, e in kept.items() if e["run"] == path.parent.name]:
            del kept[old]                      # an older resume point of the same run
            (dest / old).unlink(missing_ok=True)
        where = blob.get("trained_on") or {}
        kept[name] = {"sha256": hashlib.sha256(data).hexdigest(), "blob": gitstore.blob_id(data),
                      "bytes": len(data), "run": path.parent.name, "file": path.name,
                      "epoch": blob["epoch"], "epochs": targets[path.parent.name][1],
                      **{k: where.get(k, "unknown") for k in ("device", "torch", "commit")}}
        out.append(name)
    return out


def _bytes(name: str, e: dict, *, dest: Path) -> bytes:
    """A kept resume point's bytes: the file beside the manifest, else written back from git
    history first (``checkpoints.materialize_kept``, which checks its sha256)."""
    path = dest / name
    if not (path.exists() and file_digest(path) == e["sha256"]):
        if checkpoints.materialize_kept(path) is None:
            raise checkpoints.CheckpointError(f"{name} is kept in git history, but there is no "
                                              f"repository here to read it from: restore it "
                                              "in a clone of the project")
    return path.read_bytes()


def restore(profile: runtime.Profile, manifest: dict, *, dest: Path) -> list[str]:
    """Write each kept resume point back into its run folder, unless the run is finished here
    or has a resume point as far along. Returns the run folders written."""
    out = []
    for name, e in manifest.get("resume", {}).items():
        folder = checkpoints.root() / profile.name / e["run"]
        if _finished(folder, e["epochs"], {}):
            continue
        here = checkpoints.latest_start(folder, e["epochs"]) if folder.exists() else None
        if here is not None and checkpoints.load(here)["epoch"] >= e["epoch"]:
            continue
        atomic_write(folder / e["file"], _bytes(name, e, dest=dest))
        out.append(e["run"])
    return out


def problems(profile: runtime.Profile, manifest: dict) -> list[str]:
    """A resume point here that is not kept: the session's end would lose it (the kept ones'
    bytes are checked with the weights', ``diffnb.weights.check``)."""
    kept, out = manifest.get("resume", {}), []
    for path in transport.resume_points(profile):
        name = kept_name(path.parent.name, checkpoints.load(path)["epoch"])
        if name not in kept:
            out.append(f"the resume point of {path.parent.name} ({path.name}) is not kept: run "
                       f"`python -m diffnb.weights keep {profile.name}`")
    return out
