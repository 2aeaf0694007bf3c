"""Kept weights: the finished models of a profile as plain files in the repository, so that a
reader samples them without training, and a training cut by a deadline goes on elsewhere.

    python -m diffnb.run.weights keep cpu     # checkpoints/cpu -> weights/cpu (after a training)
    python -m diffnb.run.weights check cpu    # each kept file: sha256, load, loss on a fixed batch

``weights/<profile>/<preset>.safetensors`` holds fp16 tensors named ``model.*`` (the raw
weights) and/or ``ema.*`` (see :func:`parts`), and the run's history and provenance as metadata.
``MANIFEST.json`` lists per file its sha256, preset, run key, epochs, images seen, training
seconds, CPU, torch, commit, the final validation loss (notebook 04's picker reads it) and
``check_loss``: the loss on a fixed batch of 256 validation images with fixed noise, in fp32,
which ``check`` recomputes (``make test`` runs it). ``<run>.resume.pt`` is the full checkpoint
of a training that has not reached its epochs yet (replaced at each ``keep``, removed when the
training finishes): ``checkpoints.latest_start`` resumes from it on any machine.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import torch

from diffnb import config, runtime, training
from diffnb.results import atomic_path, atomic_write, file_digest
from diffnb.training import checkpoints, datasets, epochs

KEPT_PROFILES = runtime.KEPT_PROFILES   # profiles whose models the repository keeps
CHECK_IMAGES = 256                # the fixed batch of check_loss
CHECK_TOLERANCE = 1e-3            # |check_loss - manifest| allowed across CPUs and BLAS


def folder(profile: runtime.Profile) -> Path:
    return checkpoints.kept_dir(profile)


def presets(profile: runtime.Profile) -> list[config.Preset]:
    """Every preset a profile can train, scaled to it (CelebA's only where its data is)."""
    return [config.scaled(p, profile) for p in config.PRESETS.values()
            if p.train.dataset == "fashion_mnist" or p.name == "celeba_unet"]


def raw_sampled(profile: runtime.Profile) -> set[str]:
    """Presets whose raw (not EMA) weights a study samples."""
    from diffnb.evaluation import studies

    return {c.preset for c in studies.ablation_changes(profile=profile)
            if c.spec.weights == "raw"}


def parts(preset: config.Preset, profile: runtime.Profile) -> tuple[str, ...]:
    """What is kept: the raw weights without EMA, the EMA alone with it, both where a study
    samples the raw weights too (``class_2_sched_ema``: the ablation's '+ LR schedule' row)."""
    if not preset.train.ema_decay:
        return ("model",)
    return ("model", "ema") if preset.name in raw_sampled(profile) else ("ema",)


def check_loss(trained: training.Trained) -> float:
    """The loss of the weights that are sampled on a fixed batch: the first 256 validation
    images, fixed noise, fp32 (``epochs.validation_loss``)."""
    preset = trained.preset
    fixed = replace(preset, train=replace(preset.train, valid_images=CHECK_IMAGES))
    valid = datasets.splits(fixed)[1]
    return epochs.validation_loss(trained.denoiser.cpu(), valid, preset=fixed, amp=False)


def _safetensors_bytes(blob: dict, keep: tuple[str, ...]) -> bytes:
    from safetensors.torch import save

    tensors = {f"{part}.{k}": (v.half() if v.is_floating_point() else v).contiguous()
               for part in keep for k, v in blob[part].items()}
    meta = {k: json.dumps(blob.get(k)) for k in ("run_key", "preset", "profile", "epoch",
                                                 "sigma_data", "history", "trained_on")}
    meta["kept"] = json.dumps(list(keep))
    return save(tensors, metadata=meta)


def epochs_on(history: dict, epochs: int) -> dict[str, int]:
    """How many of a run's first ``epochs`` epochs each machine trained (a cut training may go
    on elsewhere); epochs saved before the history recorded it count as "not recorded"."""
    names = (history.get("device") or [None] * epochs)[:epochs]
    return dict(Counter(name or "not recorded" for name in names))


def _keep_final(preset: config.Preset, profile: runtime.Profile, found: Path) -> dict:
    blob = checkpoints.load(found)
    keep = parts(preset, profile)
    data = _safetensors_bytes(blob, keep)
    dest = checkpoints.kept_path(preset, profile)
    atomic_write(dest, data)
    h, on = blob["history"], blob.get("trained_on") or {}
    entry = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
             "preset": preset.name, "run_key": config.run_key(preset),
             "epochs": preset.train.epochs, "parts": list(keep),
             "images_seen": preset.train.epochs * datasets.steps_per_epoch(preset)
             * preset.train.batch_size,
             "train_seconds": round(sum(h["epoch_seconds"][:preset.train.epochs]), 1),
             "valid_loss": float(h["valid_loss"][preset.train.epochs - 1]),
             "cpu": on.get("cpu") or runtime.cpu_model(),
             "epochs_on": epochs_on(h, preset.train.epochs),
             **{k: on.get(k, "unknown") for k in ("device", "torch", "commit")}}
    return entry


def keep(profile: runtime.Profile) -> list[str]:
    """Write every finished model of ``profile`` in ``checkpoints/`` to ``weights/`` (those
    kept already are left alone), then the resume point of every run whose longest preset is
    not kept yet; drop the resume points of finished runs. Returns the files written."""
    root = checkpoints.kept_dir(profile)
    manifest, written = checkpoints.read_kept_manifest(profile), []
    manifest.setdefault("resume", {})
    runs: dict[str, list[config.Preset]] = {}
    for preset in presets(profile):
        runs.setdefault(checkpoints.run_dir(preset, profile).name, []).append(preset)
        name = checkpoints.kept_path(preset, profile).name
        if manifest["files"].get(name, {}).get("run_key") == config.run_key(preset):
            continue
        found = checkpoints.finished_here(preset, profile)
        if found is None:
            continue
        entry = _keep_final(preset, profile, found)
        trained = training.load_final(preset, profile=profile, device="cpu")
        entry["check_loss"] = check_loss(trained)
        manifest["files"][name] = entry
        written.append(name)
    for run, members in runs.items():
        name = f"{run}{checkpoints.RESUME_SUFFIX}"
        todo = [p for p in members
                if checkpoints.kept_path(p, profile).name not in manifest["files"]]
        start = checkpoints.latest_start(checkpoints.root() / profile.name / run,
                                         max((p.train.epochs for p in todo), default=0))
        if not todo or start is None:
            if manifest["resume"].pop(name, None) is not None:
                (root / name).unlink(missing_ok=True)
            continue
        epoch = checkpoints.load(start)["epoch"]
        if start == root / name or manifest["resume"].get(name, {}).get("epoch") == epoch:
            continue
        with atomic_path(root / name) as tmp:
            shutil.copyfile(start, tmp)
        manifest["resume"][name] = {"sha256": file_digest(root / name), "epoch": epoch,
                                    "for": sorted(p.name for p in todo)}
        written.append(name)
    from diffnb.run import stages

    planned = {n for s in stages.plan(profile) if s.kind == "train" for n in s.presets}
    manifest["complete"] = planned <= {e["preset"] for e in manifest["files"].values()}
    atomic_write(root / checkpoints.KEPT_MANIFEST,
                 json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    atomic_write(root / "README.md", model_card(profile, manifest))
    return written


def model_card(profile: runtime.Profile, manifest: dict) -> str:
    """``weights/<profile>/README.md``, written from the manifest at each keep."""
    rows = []
    for name, e in sorted(manifest["files"].items()):
        preset = config.get_preset(e["preset"])
        t = config.scaled(preset, profile).train
        rows.append(f"| `{name}` | {preset.title} ({preset.short.split(',')[0]}) | {e['epochs']} "
                    f"of {preset.train.epochs} | {e['images_seen']:,} | {t.batch_size}, lr "
                    f"{t.lr:g}{', EMA ' + format(t.ema_decay, 'g') if t.ema_decay else ''} | "
                    f"{e['train_seconds'] / 3600:.1f} h | {e['valid_loss']:.4f} | "
                    f"{'+'.join(e['parts'])} |")
    going = [f"- `{name}`: epoch {e['epoch']}, for {', '.join(e['for'])}"
             for name, e in sorted(manifest.get("resume", {}).items())]
    cpus = sorted({e["cpu"] for e in manifest["files"].values()})
    return f"""# Model card: the `{profile.name}` profile's models

Denoisers of the course *diffnb* (EDM preconditioning, Karras et al. 2022), trained on
Fashion-MNIST's 50k training split (Xiao et al. 2017), padded to 32x32 and mapped to [-1, 1].
They draw 32x32 grey-scale garments, of a chosen class for the class-conditional ones. This file
is written from [`MANIFEST.json`](MANIFEST.json) by `python -m diffnb.run.weights keep
{profile.name}`; the scores are in [`results/{profile.name}/`](../../results/{profile.name}/).

| file | model | epochs (of the report's) | images seen | batch, lr | training | final validation loss | kept |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows) or "| (none finished yet) | | | | | | | |"}

{"Trainings not finished yet, kept as resume points:" + chr(10) + chr(10).join(going) if going
 else "No resume point is kept: no training here is waiting to go on."}

- **Trained on:** {"; ".join(cpus) or "(none yet)"} (the machine of each model's last epoch),
  torch as the manifest says, one thread per training. A training cut by a deadline may go on
  on another machine: the manifest's `epochs_on` counts each model's epochs per machine,
  where recorded.
- **Validation loss:** EDM's weighted denoising loss on the 10k validation split, fixed noise.
  `check_loss` in the manifest is the same loss on 256 of those images in fp32, which
  `python -m diffnb.run.weights check {profile.name}` recomputes.
- **Intended use:** teaching and reproducing the course's figures and scores; a starting point
  for exercises. Not a model of real garments beyond Fashion-MNIST's style and resolution.
- **Files:** fp16 safetensors; `model.*` the raw weights, `ema.*` the EMA weights.
- **Licence:** MIT, as the code; Fashion-MNIST is MIT-licensed too.
"""


def check(profile: runtime.Profile) -> list[str]:
    """What is wrong with the kept files: a checksum, a load, or a loss on the fixed batch that
    differs from the manifest by more than ``CHECK_TOLERANCE``."""
    manifest, problems = checkpoints.read_kept_manifest(profile), []
    by_name = {checkpoints.kept_path(p, profile).name: p for p in presets(profile)}
    for name, entry in manifest["files"].items():
        preset = by_name.get(name)
        if preset is None or config.run_key(preset) != entry["run_key"]:
            problems.append(f"{name}: no preset of the {profile.name!r} profile has run key "
                            f"{entry['run_key']}: the code's preset changed since it was kept")
            continue
        try:
            trained = training.load_final(preset, profile=profile, device="cpu")
        except checkpoints.CheckpointError as err:
            problems.append(str(err))
            continue
        loss = check_loss(trained)
        if abs(loss - entry["check_loss"]) > CHECK_TOLERANCE:
            problems.append(f"{name}: loss {loss:.5f} on the fixed batch, the manifest says "
                            f"{entry['check_loss']:.5f}")
    for name, entry in manifest.get("resume", {}).items():
        path = folder(profile) / name
        if not path.exists() or file_digest(path) != entry["sha256"]:
            problems.append(f"{path} is missing or differs from its sha256 in "
                            f"{checkpoints.KEPT_MANIFEST}; {checkpoints.RESTORE_HINT}")
    return problems


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m diffnb.run.weights",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=("keep", "check"))
    p.add_argument("profile", choices=KEPT_PROFILES)
    args = p.parse_args(argv)
    profile = runtime.PROFILES[args.profile]
    torch.set_grad_enabled(False)
    if args.action == "keep":
        print(f"weights: wrote {keep(profile) or 'nothing new'} in {folder(profile)}")
        return
    problems = check(profile)
    print("\n".join(f"weights: {m}" for m in problems) or
          f"weights: all {len(checkpoints.read_kept_manifest(profile)['files'])} kept models of "
          f"{args.profile} check out")
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
