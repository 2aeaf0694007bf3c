"""Checkpoints of a training run: full ones to resume from, compact fp16 ones to sample from.

A run lives in ``checkpoints/<profile>/<arch>-<run key>/`` (git-ignored):
  ``last.pt``          written atomically after every epoch (weights, EMA, optimizer, scheduler,
                       history): an interrupted run resumes from it;
  ``eNNNN.pt``         the same, kept when the run reaches its NNNN epochs;
  ``eNNNN.half.pt``    the finished weights only (model and EMA in fp16, history, sigma_data).
Results are always computed from the fp16-rounded weights (:func:`round_half`), so a full and a
compact checkpoint give the same samples and the same FID.

The repository keeps finished models as plain files (``diffnb.run.weights`` writes them):
``weights/<profile>/<preset>.safetensors`` with a ``MANIFEST.json`` of sha256s, and the resume
point of a training cut by a deadline, ``weights/<profile>/<run>.resume.pt``. Both are found
here: a reader samples the kept models without training, and a cut training goes on from its
kept resume point. ``DIFFNB_TRAIN_ANEW=1`` leaves them unused (:func:`train_anew`).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from diffnb import config, runtime
from diffnb.config import Preset
from diffnb.results import atomic_path

FORMAT = 1
KEPT_MANIFEST = "MANIFEST.json"   # beside the kept weights: sha256, provenance, losses per file
KEPT_SUFFIX = ".safetensors"      # weights/<profile>/<preset>.safetensors: fp16 weights
RESUME_SUFFIX = ".resume.pt"      # weights/<profile>/<run>.resume.pt: a cut training's last.pt
RESTORE_HINT = "restore the committed files with `git checkout -- weights/`"
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


def kept_dir(profile: runtime.Profile) -> Path:
    """Where the repository keeps a profile's finished models (``diffnb.run.weights``)."""
    return runtime.project_root() / "weights" / profile.name


def kept_path(preset: Preset, profile: runtime.Profile) -> Path:
    return kept_dir(profile) / f"{preset.name}{KEPT_SUFFIX}"


def kept_resume_path(folder: Path) -> Path:
    """The kept resume point of the run in ``folder`` (``checkpoints/<profile>/<run>``)."""
    return runtime.project_root() / "weights" / folder.parent.name / f"{folder.name}{RESUME_SUFFIX}"


def read_kept_manifest(profile: runtime.Profile) -> dict:
    path = kept_dir(profile) / KEPT_MANIFEST
    if not path.exists():
        return {"profile": profile.name, "files": {}, "resume": {}}
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); {RESTORE_HINT}") from err


def save(blob: dict, path: Path) -> None:
    """Write atomically: a crash (or a second kernel) mid-write never leaves a truncated file."""
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def load(path: Path) -> dict:
    """A checkpoint: full or compact (``.pt``), or kept weights (``.safetensors``, checked)."""
    if Path(path).suffix == KEPT_SUFFIX:
        return load_kept(Path(path))
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


def _kept_entry(preset: Preset, profile: runtime.Profile) -> dict | None:
    """The manifest entry of the preset's kept weights, if they are this configuration's;
    None when :func:`train_anew`, or when none are kept (or only another configuration's of
    the same name, e.g. a preset changed with ``--set``)."""
    if train_anew():
        return None
    entry = read_kept_manifest(profile)["files"].get(kept_path(preset, profile).name)
    return entry if entry is not None and entry.get("run_key") == config.run_key(preset) \
        else None


def finished_here(preset: Preset, profile: runtime.Profile) -> Path | None:
    """The run folder's finished checkpoint of exactly ``preset.train.epochs`` epochs, full or
    compact; None when this machine has not finished it."""
    folder, epochs = run_dir(preset, profile), preset.train.epochs
    return next((path for path in (folder / final_name(epochs),
                                   folder / final_name(epochs, half=True)) if path.exists()), None)


def find_final(preset: Preset, profile: runtime.Profile) -> Path | None:
    """A finished checkpoint of exactly ``preset.train.epochs`` epochs: full or compact in the
    run's folder (:func:`finished_here`), else the kept weights
    (``weights/<profile>/<preset>.safetensors``) unless :func:`train_anew`. A kept file that its
    manifest lists but that is missing is an error."""
    here = finished_here(preset, profile)
    if here is not None:
        return here
    if _kept_entry(preset, profile) is None:
        return None
    path = kept_path(preset, profile)
    if not path.exists():
        raise CheckpointError(f"{path} is listed in {KEPT_MANIFEST} but missing; {RESTORE_HINT}")
    return path


def is_finished(preset: Preset, profile: runtime.Profile) -> bool:
    """Whether the preset's run finished here or is kept (unless :func:`train_anew`)."""
    return find_final(preset, profile) is not None


def final_valid_loss(preset: Preset, profile: runtime.Profile) -> float | None:
    """The last validation loss of the preset's finished run, from its checkpoint here, else from
    its kept weights' manifest entry. None when the run has not finished."""
    here = finished_here(preset, profile)
    if here is not None:
        return float(load(here)["history"]["valid_loss"][-1])
    entry = _kept_entry(preset, profile)
    return None if entry is None else float(entry["valid_loss"])


def load_kept(path: Path) -> dict:
    """A kept safetensors file as a compact checkpoint, after checking its sha256 against the
    manifest beside it: a corrupt or changed file is refused, naming it and how to restore it."""
    from safetensors.torch import load as load_tensors

    manifest = path.parent / KEPT_MANIFEST
    entries = json.loads(manifest.read_text())["files"] if manifest.exists() else {}
    entry = entries.get(path.name)
    if entry is None:
        raise CheckpointError(f"{path} is not listed in {manifest}: it is not a kept file of this "
                              f"repository; delete it, or {RESTORE_HINT}")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise CheckpointError(f"{path} does not match the sha256 in {manifest}: the file is "
                              f"corrupt or was changed; {RESTORE_HINT}")
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    meta = {k: json.loads(v) for k, v in header.get("__metadata__", {}).items()}
    tensors = load_tensors(data)
    parts = {part: {k[len(part) + 1:]: v for k, v in tensors.items()
                    if k.startswith(part + ".")} or None for part in ("model", "ema")}
    if meta.get("run_key") != entry.get("run_key"):
        raise CheckpointError(f"{path} holds run {meta.get('run_key')} but {manifest} lists "
                              f"{entry.get('run_key')}; {RESTORE_HINT}")
    return {"format": FORMAT, "kind": "half", **meta, **parts}


def latest_start(folder: Path, epochs: int) -> Path | None:
    """The full checkpoint to resume from: the latest of ``last.pt``, the finished snapshots
    (a longer constant-LR run continues a shorter one) and the kept resume point (a training cut
    on another machine), that is not past ``epochs``."""
    candidates = [folder / "last.pt"] if (folder / "last.pt").exists() else []
    kept = kept_resume_path(folder)
    if kept.exists() and not train_anew():
        candidates.append(kept)
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
    # kept weights may hold the EMA alone (diffnb.run.weights.parts): it then stands for both
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
            "trained_on": {"device": runtime.device_name(), "cpu": runtime.cpu_model(),
                           "torch": str(torch.__version__),
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
