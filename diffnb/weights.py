"""Kept weights: every finished model of a GPU run, in fp16, for readers without a GPU.

    python -m diffnb.weights keep full      # after unpacking: checkpoints/full -> weights/full
    python -m diffnb.weights check full     # before committing: sizes, manifest, history
    python -m diffnb.weights commit full    # the weights into git history, out of the tree
    python -m diffnb.weights restore full   # a fresh checkout: weights, stamps, resume points
    python -m diffnb.weights sizes full     # bytes per model (kept file, resume point)

``weights/<profile>/<arch>-<run key>-eNNNN.half.pt`` (``checkpoints.committed_path``) is a
compact checkpoint (``checkpoints.compact``) with the parts a reader samples: the raw weights of
presets without EMA; the EMA alone for EMA presets, except where a study samples the raw weights
too (``class_2_sched_ema``: its raw weights are the ablation's '+ LR schedule' row; derived from
``studies.ablation_changes``). ``MANIFEST.json`` beside them lists per file its sha256, git
blob id, bytes, preset, run key, epochs, parts, final validation loss (notebook 04's picker picks
by it without writing the others back) and where it was trained (device, torch, commit).
The files themselves are git-ignored: ``commit`` keeps their bytes in git history
(``diffnb.gitstore``), so that they never travel with the tree to the borrowed GPU, and
``checkpoints.find_final`` writes one back from history the first time it is asked for
(``checkpoints.materialize_kept``). The score stamps of the GPU run (``scores/``, a few kB,
tracked) let a CPU reader's notebooks reuse the GPU's FID numbers for these exact weights
(``restore``). The resume point of a run that a session could not finish is kept the same way,
until the run finishes (``diffnb.resume``).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import torch

from diffnb import carry, checkpoints, config, gitstore, resume, runtime, stages
from diffnb.results import atomic_write, file_digest

MANIFEST = checkpoints.KEPT_MANIFEST  # read back by checkpoints.materialize_kept
BIG_FILE = 5 * (1 << 20)             # the repository's pre-stop check flags tracked files above


def folder(profile: runtime.Profile) -> Path:
    return runtime.project_root() / "weights" / profile.name


def raw_sampled(profile: runtime.Profile) -> set[str]:
    """Presets whose raw (not EMA) weights a study samples."""
    from diffnb import studies

    return {c.preset for c in studies.ablation_changes(profile=profile)
            if c.spec.weights == "raw"}


def parts(preset: config.Preset, profile: runtime.Profile) -> tuple[str, ...]:
    """The parts of a finished checkpoint that are kept (see the module docstring)."""
    if not preset.train.ema_decay:
        return ("model",)
    return ("model", "ema") if preset.name in raw_sampled(profile) else ("ema",)


def kept_blob(blob: dict, keep: tuple[str, ...]) -> dict:
    """A compact checkpoint with only the ``keep`` parts (the others set to None)."""
    out = checkpoints.compact(blob) if not checkpoints.is_compact(blob) else dict(blob)
    for part in ("model", "ema"):
        if part not in keep:
            out[part] = None
    return {**out, "kept": list(keep)}


def read_manifest(profile: runtime.Profile) -> dict:
    path = folder(profile) / MANIFEST
    if not path.exists():
        return {"profile": profile.name, "files": {}}
    return json.loads(path.read_text())


def _manifest_text(manifest: dict) -> str:
    return json.dumps(manifest, indent=1, sort_keys=True) + "\n"


def keep(profile: runtime.Profile) -> list[str]:
    """Copy every finished model of ``profile`` from ``checkpoints/`` into ``weights/``, with
    only the kept parts, and list it in the manifest. Models already kept are left alone."""
    manifest, out = read_manifest(profile), []
    for name in stages.trained_presets(profile):
        preset = config.scaled(config.get_preset(name), profile)
        dest = checkpoints.committed_path(preset, profile, epochs=preset.train.epochs)
        if dest.name in manifest["files"]:
            continue
        found = checkpoints.find_final(preset, profile, materialize=False)
        if found is None or found == dest:
            continue
        blob = kept_blob(checkpoints.load(found), parts(preset, profile))
        buf = io.BytesIO()
        torch.save(blob, buf)
        data = buf.getvalue()
        atomic_write(dest, data)
        where = blob.get("trained_on") or {}
        manifest["files"][dest.name] = {
            "sha256": hashlib.sha256(data).hexdigest(), "blob": gitstore.blob_id(data),
            "bytes": len(data), "preset": name, "run_key": config.run_key(preset),
            "epochs": preset.train.epochs, "parts": list(blob["kept"]),
            "valid_loss": float(blob["history"]["valid_loss"][-1]),   # training.best_final
            **{k: where.get(k, "unknown") for k in ("device", "torch", "commit")}}
        out.append(dest.name)
    out += resume.keep(profile, manifest, dest=folder(profile))   # unfinished runs
    scores = folder(profile) / "scores"
    for stamp in sorted(runtime.stamps_dir().glob(f"{profile.name}_*")):
        atomic_write(scores / stamp.name, stamp.read_bytes())
    atomic_write(folder(profile) / MANIFEST, _manifest_text(manifest))
    return out


def restore(profile: runtime.Profile) -> dict:
    """Every kept file written back, and the GPU run's score stamps put where evaluation looks
    (a stamp already there is left as it is)."""
    placed = []
    for name in read_manifest(profile)["files"]:
        path = folder(profile) / name
        if not path.exists():
            placed.append(checkpoints.materialize_kept(path).name)
    stamps = [s for s in sorted((folder(profile) / "scores").glob(f"{profile.name}_*"))
              if not (runtime.stamps_dir() / s.name).exists()]   # a newer one here stays
    for stamp in stamps:
        atomic_write(runtime.stamps_dir() / stamp.name, stamp.read_bytes())
    runs = resume.restore(profile, read_manifest(profile), dest=folder(profile))
    return {"written": placed, "stamps": len(stamps), "resume": runs}


def commit(profile: runtime.Profile) -> tuple[str, str] | None:
    """Keep the files of the manifest not yet in git history: commit A adds them, commit B takes
    them out of the tree again with the manifest naming A. None when nothing is new."""
    root, manifest = runtime.project_root(), read_manifest(profile)
    new = {name: e for name, e in checkpoints.kept_entries(manifest).items() if "kept_in" not in e}
    if not new:
        return None
    rel = folder(profile).relative_to(root).as_posix()
    files = {f"{rel}/{name}": (folder(profile) / name).read_bytes() for name in new}

    def text(a: str) -> str:
        for e in new.values():
            e["kept_in"] = a
        return _manifest_text(manifest)

    total = sum(len(d) for d in files.values()) / (1 << 20)
    runs = sum(name.endswith(resume.SUFFIX) for name in new)
    what = " and ".join(f"{n} {noun}{'s' * (n != 1)}" for n, noun in (
        (len(files) - runs, "model"), (runs, "resume point")) if n)
    return gitstore.commit_out_of_tree(root, files, manifest=f"{rel}/{MANIFEST}",
                                       manifest_text=text, messages=(
        f"{rel}: {what}, {total:.1f} MiB (kept in history; the next commit takes them out of "
        "the tree)",
        f"{rel}: the weights out of the tree again; MANIFEST.json lists them (git blob ids)"))


def check(profile: runtime.Profile) -> list[str]:
    """What is wrong before a commit: a kept file (weights or resume point) that differs from its
    manifest, a manifest entry whose bytes git cannot read, a trained stage without its kept
    weights, a resume point not kept, big files."""
    root, manifest, problems = runtime.project_root(), read_manifest(profile), []
    for name, e in checkpoints.kept_entries(manifest).items():
        path = folder(profile) / name
        if path.exists() and file_digest(path) != e["sha256"]:
            problems.append(f"{name} differs from its manifest entry: delete it and keep again")
        if "kept_in" in e and not gitstore.reachable(root, e["blob"]):
            problems.append(f"{name}: git blob {e['blob']} is not in this clone's history")
    problems += resume.problems(profile, manifest)
    state = stages.load_state(profile)
    kept = {e["preset"] for e in manifest["files"].values()}
    for stage, info in state["stages"].items():
        for name in info.get("info", {}).get("epochs", {}):
            if name not in kept:
                problems.append(f"{stage} is done but {name} is not kept: run "
                                f"`python -m diffnb.weights keep {profile.name}`")
    tree = carry.tree_bytes(root)
    if tree > carry.CARRY_LIMIT // 2:                     # + 29.5 MiB of data in call 1
        problems.append(f"the tree is {tree / (1 << 20):.1f} MiB: a GPU command carries 64 MiB "
                        "with the tree, and the first one needs room for the 31 MB of data")
    for rel in _git_files(root):
        if (root / rel).is_file() and (root / rel).stat().st_size > BIG_FILE:
            problems.append(f"{rel} is {(root / rel).stat().st_size / (1 << 20):.1f} MiB, "
                            "tracked or about to be: weights go through `weights commit`")
    return problems


def _git_files(root: Path) -> list[str]:
    import subprocess

    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=root, capture_output=True, text=True, check=True).stdout
    return [line for line in out.split("\n") if line]


def sizes(profile: runtime.Profile, *, names: list[str] | None = None) -> list[dict]:
    """Bytes per trained preset (or ``names``): the kept file and a full resume point
    (``last.pt``), each saved from a freshly built model of the same shapes (the history of a
    real run adds a few kB)."""
    from diffnb import training

    rows = []
    for name in names or stages.trained_presets(profile):
        preset = config.scaled(config.get_preset(name), profile)
        st = training.make_state(preset, torch.device("cpu"))
        for p in st.denoiser.parameters():           # Adam's moments exist after one step
            p.grad = torch.zeros_like(p)
        st.opt.step()
        full = checkpoints.state_blob(st, preset, profile=profile)
        kept = kept_blob(full, parts(preset, profile))
        row = {"preset": name, "parameters": sum(p.numel() for p in st.denoiser.parameters()),
               "parts": "+".join(kept["kept"])}
        for key, blob in (("kept_bytes", kept), ("resume_bytes", full)):
            buf = io.BytesIO()
            torch.save(blob, buf)
            row[key] = len(buf.getvalue())
        rows.append(row)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m diffnb.weights",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=("keep", "check", "commit", "restore", "sizes"))
    p.add_argument("profile", nargs="?", default="full", choices=sorted(runtime.PROFILES))
    args = p.parse_args(argv)
    profile = runtime.PROFILES[args.profile]
    if args.action == "keep":
        print(f"weights: kept {keep(profile) or 'nothing new'} in {folder(profile)}")
    elif args.action == "check":
        problems = check(profile)
        print("\n".join(f"weights: {m}" for m in problems) or "weights: all good")
        if problems:
            sys.exit(1)
    elif args.action == "commit":
        ab = commit(profile)
        print("weights: nothing new to commit" if ab is None else
              f"weights: kept in {ab[0][:12]}, out of the tree in {ab[1][:12]}")
    elif args.action == "restore":
        print(f"weights: {restore(profile)}")
    else:
        rows = sizes(profile)
        print("| preset | parameters | kept | kept MB | resume point (last.pt) MB |\n|---|---|---|"
              "---|---|")
        for r in rows:
            print(f"| {r['preset']} | {r['parameters']:,} | {r['parts']} | "
                  f"{r['kept_bytes'] / 1e6:.2f} | {r['resume_bytes'] / 1e6:.1f} |")
        print(f"| **total** | | | **{sum(r['kept_bytes'] for r in rows) / 1e6:.1f}** | |")


if __name__ == "__main__":
    main()
