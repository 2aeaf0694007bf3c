"""Prepare a run of PROFILE on the borrowed GPU machine, and print the commands to give it.

    .venv/bin/python scripts/gpu/prepare.py [full] [--deadline 500]

Here, once: downloads the wheels of scripts/gpu/wheels.txt (cp312, manylinux x86_64) into
.gpu/wheels, converts the FID Inception weights, then deals what the machine lacks (the data,
the FID weights, the wheels, the compact checkpoints of the stages already finished, their
score stamps) into carry folders .gpu/carry1, .gpu/carry2, ... that each fit one command next to
the tree (64 MiB in all). Prints the runbook: the exact device-tool calls, in order.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from diffnb import checkpoints, data, fid, runtime, transport

ROOT = runtime.project_root()
GPU = ROOT / ".gpu"
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]
# One GPU command, <= 2,000 characters: reassemble what was carried, install the wheels once per
# machine, run the queue until the deadline, pack what finished into $OUT.
COMMAND = ("set -e; export PYTHONUNBUFFERED=1 DIFFNB_DATA_DIR=$PWD/.gpu/data "
           "PYTHONPATH=$PWD/.gpu/site:$PWD; nvidia-smi -L; "
           "python3 -m diffnb.transport receive --wheels .gpu/site; "
           "python3 -m diffnb.pipeline {profile} --deadline {deadline}{extra} || true; "
           "python3 -m diffnb.transport pack $OUT {profile}")


def wheels() -> list[Path]:
    folder = GPU / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    req = ROOT / "scripts/gpu/wheels.txt"
    names = [line.split("==")[0].lower().replace("-", "_") for line in req.read_text().split("\n")
             if line and not line.startswith("#")]
    have = {p.name.split("-")[0].lower() for p in folder.glob("*.whl")}
    if not all(n in have for n in names):
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.12", "--implementation", "cp", "-d", str(folder),
               "-r", str(req)] + [a for p in PLATFORMS for a in ("--platform", p)]
        subprocess.run(cmd, check=True)
    return sorted(folder.glob("*.whl"))


def data_files() -> dict[str, Path]:
    """The four Fashion-MNIST IDX files, wherever diffnb finds them here."""
    out = {}
    for split, stems in data.FILES.items():
        source = data.load(split).source
        folder = runtime.cache_dir("data") if source == "torchvision" else Path(source)
        for stem in stems:
            found = data._find(folder, stem)
            if found is None:
                sys.exit(f"prepare: cannot find {stem} in {folder}")
            out[f".gpu/data/{found.name}"] = found
    return out


def carried(profile: runtime.Profile) -> dict[str, Path]:
    files = data_files()  # first: training starts in the first command
    files.update({f".gpu/wheels/{w.name}": w for w in wheels()})
    files[f".cache/fid/{fid.WEIGHTS_FILE}"] = fid.weights_path()
    root = checkpoints.root()
    for half in sorted((root / profile.name).rglob("*.half.pt")):
        files[f"checkpoints/{half.relative_to(root).as_posix()}"] = half
    for stamp in sorted(runtime.stamps_dir().glob(f"{profile.name}_*")):
        files[f".cache/scores/{stamp.name}"] = stamp
    return files


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("profile", nargs="?", default="full", choices=sorted(runtime.PROFILES))
    p.add_argument("--deadline", type=float, default=500.0,
                   help="seconds of queue work per command (the tool allows 600 in all)")
    p.add_argument("--compile", default="", help="passed to the pipeline (e.g. reduce-overhead)")
    args = p.parse_args()
    profile = runtime.PROFILES[args.profile]
    files = carried(profile)
    tree = transport.tree_bytes(ROOT)
    budget = transport.CARRY_LIMIT - tree - 2 * transport.MIB
    if budget < 4 * transport.MIB:
        sys.exit(f"prepare: the tree is {tree / transport.MIB:.1f} MiB: too little room left "
                 "to carry anything (64 MiB per command); ignore or remove large files")
    folders = transport.deal(files, GPU, budget=budget)
    total = sum(f.stat().st_size for f in files.values())
    extra = f" --compile {args.compile}" if args.compile else ""
    command = COMMAND.format(profile=profile.name, deadline=int(args.deadline), extra=extra)
    print(f"prepare: {len(files)} files, {total / transport.MIB:.1f} MiB, in {len(folders)} carry "
          f"folders of <= {budget / transport.MIB:.1f} MiB (tree {tree / transport.MIB:.1f} MiB)")
    print("\nRunbook: give the device tool these calls back to back (it stays warm 30 s):")
    for k, folder in enumerate(folders, 1):
        size = sum(f.stat().st_size for f in folder.iterdir()) / transport.MIB
        print(f"  {k}. run(carry=[\"{folder.relative_to(ROOT)}\"], timeout_s=600, command=COMMAND)"
              f"   # carries {size:.1f} MiB")
    print(f"  {len(folders) + 1}... run(timeout_s=600, command=COMMAND) until the pipeline says "
          "'all done'")
    print("After each call: .venv/bin/python -m diffnb.transport unpack <files_at>\n"
          "If a reply says the machine was cold (a fresh start), prepare again and start over at "
          "call 1: finished stages are kept, only the unfinished one is redone.")
    print(f"\nCOMMAND ({len(command)} characters):\n{command}")
    (GPU / "runbook.json").write_text(json.dumps(
        {"command": command, "carry": [str(f.relative_to(ROOT)) for f in folders]}, indent=1))


if __name__ == "__main__":
    main()
