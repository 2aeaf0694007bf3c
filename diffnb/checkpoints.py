"""Checkpoints of a training run: full ones to resume from, compact fp16 ones to sample from.

A run lives in ``checkpoints/<profile>/<arch>-<run key>/``:
  ``last.pt``          written atomically after every epoch (weights, EMA, optimizer, scheduler,
                       history): an interrupted run resumes from it;
  ``eNNNN.pt``         the same, kept when the run reaches its NNNN epochs;
  ``eNNNN.half.pt``    the finished weights only (model and EMA in fp16, history, sigma_data):
                       what travels back from a GPU machine (``diffnb.transport``) and what a CPU
                       reader needs to sample. Results are always computed from the fp16-rounded
                       weights (:func:`round_half`), so a full and a compact checkpoint give the
                       same samples and the same FID.
Kept compact weights (``weights/<profile>/<arch>-<run key>-eNNNN.half.pt``, issue "a CPU
reader gets real samples") are found too, so a reader without a GPU samples the full run's models:
their bytes are kept in git history and written there from it on first use (:func:`materialize_kept`;
``diffnb.weights`` keeps and commits them). ``DIFFNB_TRAIN_ANEW=1`` leaves them unused: a reader
with a GPU trains every model on it (:func:`train_anew`).
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import torch

from diffnb import config, gitstore, runtime
from diffnb.config import Preset
from diffnb.results import atomic_path, atomic_write

FORMAT = 1
KEPT_MANIFEST = "MANIFEST.json"   # beside the kept weights: sha256 and git blob id per file
TRAIN_ANEW_ENV = "DIFFNB_TRAIN_ANEW"


class CheckpointError(RuntimeError):
    pass


def root() -> Path:
    return Path(os.environ.get("DIFFNB_CHECKPOINTS", runtime.project_root() / "checkpoints"))


def train_anew() -> bool:
    """``DIFFNB_TRAIN_ANEW=1``: kept weights are not used, so every model is trained (or resumed)
    in this machine's ``checkpoints/``. Read in each process, the notebooks' kernels too."""
    value = os.environ.get(TRAIN_ANEW_ENV, "").strip().lower()
    if value not in ("", "0", "1"):
        raise ValueError(f"{TRAIN_ANEW_ENV}={value!r}: use 1 (train every model here, leaving the "
                         "kept weights under weights/ unused) or 0 (the default)")
    return value == "1"


def run_dir(preset: Preset, profile: runtime.Profile) -> Path:
    return root() / profile.name / f"{preset.model.arch}-{config.run_key(preset)}"


def final_name(epochs: int, *, half: bool = False) -> str:
    return f"e{epochs:04d}.half.pt" if half else f"e{epochs:04d}.pt"


def committed_path(preset: Preset, profile: runtime.Profile, *, epochs: int) -> Path:
    name = f"{preset.model.arch}-{config.run_key(preset)}-{final_name(epochs, half=True)}"
    return runtime.project_root() / "weights" / profile.name / name


def save(blob: dict, path: Path) -> None:
    """Write atomically: a crash (or a second kernel) mid-write never leaves a truncated file."""
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def load(path: Path) -> dict:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"checkpoint {path.name} in {path.parent} is corrupt or truncated "
                              f"({type(err).__name__}). Delete it (rm '{path}') and rerun to "
                              "train again.") from err
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or "model" not in blob:
        raise CheckpointError(f"{path} is not a diffnb checkpoint (format {FORMAT}). Delete it "
                              "and rerun.")
    return blob


def check(blob: dict, preset: Preset, *, path: Path, profile: runtime.Profile | None = None) -> None:
    """The checkpoint belongs to this configuration (and profile, when it says which)."""
    if blob.get("run_key") != config.run_key(preset):
        raise CheckpointError(
            f"{path} belongs to another configuration (run key {blob.get('run_key')}, expected "
            f"{config.run_key(preset)} for {preset.name}). Move it away or delete it; diffnb "
            "names run folders by run key, so it was copied or renamed by hand.")
    saved = blob.get("profile")
    if profile is not None and saved is not None and saved != profile.name:
        raise CheckpointError(
            f"{path} was trained in the {saved!r} profile but this run is {profile.name!r}. "
            f"Run with DIFFNB_PROFILE={saved} to use it, or delete it to train again.")


def round_half(state: dict) -> dict:
    """Floating-point tensors rounded through fp16 (kept in their dtype); others unchanged."""
    return {k: v.half().to(v.dtype) if v.is_floating_point() else v for k, v in state.items()}


def compact(blob: dict) -> dict:
    """The finished weights of a full checkpoint: model and EMA in fp16, no optimizer."""
    half = {k: v.half() if v.is_floating_point() else v for k, v in blob["model"].items()}
    ema = blob.get("ema")
    if ema is not None:
        ema = {k: v.half() if v.is_floating_point() else v for k, v in ema.items()}
    keep = ("run_key", "preset", "profile", "epoch", "sigma_data", "history", "trained_on")
    return {"format": FORMAT, "kind": "half", **{k: blob.get(k) for k in keep},
            "model": half, "ema": ema}


def is_compact(blob: dict) -> bool:
    return blob.get("kind") == "half"


def _kept_path(preset: Preset, profile: runtime.Profile) -> Path | None:
    """Where the preset's finished weights are kept (listed or not); None when :func:`train_anew`."""
    return None if train_anew() else committed_path(preset, profile, epochs=preset.train.epochs)


def find_final(preset: Preset, profile: runtime.Profile, *,
               materialize: bool = True) -> Path | None:
    """A finished checkpoint of exactly ``preset.train.epochs`` epochs: full, compact, kept
    (``weights/``; written from git history first when ``materialize`` and its manifest lists
    it, see :func:`materialize_kept`), unless :func:`train_anew`."""
    epochs = preset.train.epochs
    folder = run_dir(preset, profile)
    kept = _kept_path(preset, profile)
    for path in (folder / final_name(epochs), folder / final_name(epochs, half=True), kept):
        if path is not None and path.exists():
            return path
    return materialize_kept(kept) if materialize and kept is not None else None


def is_finished(preset: Preset, profile: runtime.Profile) -> bool:
    """Whether the preset's run finished here or is kept (its manifest lists the weights, unless
    :func:`train_anew`), writing nothing back."""
    kept = _kept_path(preset, profile)
    return find_final(preset, profile, materialize=False) is not None or \
        (kept is not None and _kept_entry(kept) is not None)


def final_valid_loss(preset: Preset, profile: runtime.Profile) -> float | None:
    """The last validation loss of the preset's finished run, writing nothing back: from its
    checkpoint here, else from its kept weights' manifest entry (``weights keep`` records it),
    else from the kept file written back. None when the run has not finished."""
    found, kept = find_final(preset, profile, materialize=False), _kept_path(preset, profile)
    if found is None and kept is not None:
        entry = _kept_entry(kept)
        if entry is not None and "valid_loss" in entry:
            return float(entry["valid_loss"])
        found = materialize_kept(kept)
    return None if found is None else float(load(found)["history"]["valid_loss"][-1])


def kept_entries(manifest: dict) -> dict[str, dict]:
    """Every file a kept-weights manifest lists, by name: the weights (``files``) and the resume
    points (``resume``, ``diffnb.resume``); the entries themselves, not copies."""
    return {**manifest.get("files", {}), **manifest.get("resume", {})}


def _kept_entry(path: Path) -> dict | None:
    mpath = path.parent / KEPT_MANIFEST
    return kept_entries(json.loads(mpath.read_text()) if mpath.exists() else {}).get(path.name)


def materialize_kept(path: Path) -> Path | None:
    """Write a kept file (weights, or a resume point: ``diffnb.resume``) back from git history
    when its folder's manifest lists it; None when
    it does not, or when there is no repository here (a tree copied to a borrowed GPU, which
    gets the weights it needs carried). Raises :class:`CheckpointError` with what to do when
    the repository lacks the bytes (a shallow clone)."""
    mpath = path.parent / KEPT_MANIFEST
    entry = _kept_entry(path)
    if entry is None:
        return None
    root = runtime.project_root()
    if not gitstore.available(root):
        warnings.warn(f"{path.name} is kept in git history, but {root} is not a git checkout: "
                      "not used here", stacklevel=2)
        return None
    try:
        data = gitstore.read_blob(root, entry["blob"])
    except gitstore.GitStoreError as err:
        raise CheckpointError(f"{path.name} is listed in {mpath} but cannot be read back: "
                              f"{err}") from err
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise CheckpointError(f"{path.name} read back from git does not match the sha256 in "
                              f"{mpath}: the manifest is out of date; see `python -m "
                              f"diffnb.weights check {path.parent.name}`")
    return atomic_write(path, data)


def latest_start(folder: Path, epochs: int) -> Path | None:
    """The full checkpoint to resume from: ``last.pt`` if not past ``epochs``, else the longest
    finished snapshot shorter than ``epochs`` (a longer constant-LR run continues a shorter one)."""
    candidates = [folder / "last.pt"] if (folder / "last.pt").exists() else []
    candidates += sorted(p for p in folder.glob("e*.pt") if not p.name.endswith(".half.pt"))
    best, best_epoch = None, -1
    for path in candidates:
        epoch = load(path)["epoch"]
        if best_epoch < epoch <= epochs:
            best, best_epoch = path, epoch
    return best


def restore(st, blob: dict, *, preset: Preset, path: Path, rng: bool = True,
            profile: runtime.Profile | None = None) -> None:
    """Load a checkpoint into a ``training.TrainState``: weights (fp16 ones back to fp32), and
    for a full checkpoint the optimizer, scheduler and RNG too."""
    check(blob, preset, path=path, profile=profile)
    # kept weights may hold the EMA alone (diffnb.weights.parts): it then stands for both
    models_ = [(st.denoiser, blob["model"] if blob["model"] is not None else blob["ema"])]
    if st.ema is not None and blob["ema"] is not None:
        models_.append((st.ema, blob["ema"]))
    for den, state in models_:
        den.load_state_dict({k: v.float() if v.is_floating_point() else v
                             for k, v in state.items()})
        den.sigma_data = blob["sigma_data"]
    st.epoch, st.history = blob["epoch"], blob["history"]
    if is_compact(blob):
        return
    st.opt.load_state_dict(blob["optimizer"])
    cuda = next(st.denoiser.parameters()).device.type == "cuda"
    for group in st.opt.param_groups:   # fused Adam where it runs now, not where it was saved
        group["fused"] = cuda
    st.sched.load_state_dict(blob["scheduler"])
    if rng:
        torch.set_rng_state(blob["rng"]["torch"])


def state_blob(st, preset: Preset, *, profile: runtime.Profile) -> dict:
    """A full checkpoint of a ``training.TrainState``: everything needed to resume exactly."""
    return {"format": FORMAT, "run_key": config.run_key(preset),
            "preset": json.dumps(config.as_dict(preset), default=str), "profile": profile.name,
            "epoch": st.epoch, "sigma_data": st.denoiser.sigma_data,
            "model": st.denoiser.state_dict(),
            "ema": st.ema.state_dict() if st.ema is not None else None,
            "optimizer": st.opt.state_dict(), "scheduler": st.sched.state_dict(),
            "history": st.history, "rng": {"torch": torch.get_rng_state()},
            "trained_on": {"device": runtime.device_name(), "torch": str(torch.__version__),
                           "commit": runtime.code_commit()}}


def fingerprint(module: torch.nn.Module) -> str:
    """sha256 of a module's parameters and buffers (CPU bytes): the same weights give the same
    fingerprint on any device, so a result computed on a GPU is recognised on a CPU."""
    import hashlib

    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
