"""Moving a run to a borrowed GPU machine and its outputs back, inside the device tool's limits.

Going there (each command carries the tree plus at most 64 MiB; see scripts/gpu/README.md):
  ``carry``    here: the files the machine lacks (the data, the FID weights, wheels of missing
               packages, finished compact checkpoints) cut into chunks and dealt into carry
               folders ``.gpu/carry1``, ``.gpu/carry2``, ..., each with a sha256 manifest;
  ``receive``  there: reassembles every file whose chunks have all arrived (the machine keeps
               earlier commands' carry folders while warm), checks its sha256 and puts it in
               place; names the carry folder a missing chunk travels in.
Coming back (at most 8 files of 16 MiB from ``$OUT``):
  ``pack``     there: a tar of what the finished stages made (compact fp16 checkpoints,
               results, figures, executed notebooks, score stamps), cut into parts with a
               manifest of sha256s;
  ``unpack``   here: refuses a corrupt or missing part by name, then restores the files, never
               overwriting a newer local file without saying so (``--force`` to overwrite).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

from diffnb import runtime
from diffnb.results import atomic_path, atomic_write

MIB = 1 << 20
PART_LIMIT = 16 * MIB - 64 * 1024       # a file that comes back: 16 MiB, with room to spare
MAX_PARTS = 7                            # + the manifest: 8 files back
CARRY_LIMIT = 64 * MIB                   # tree + carried paths, per command
MANIFEST = "manifest.json"


class TransportError(RuntimeError):
    pass


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


def tree_bytes(root: Path) -> int:
    """Bytes of what travels anyway: tracked and untracked-not-ignored files."""
    import subprocess

    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=root, capture_output=True, check=True).stdout
    return sum((root / f).stat().st_size for f in out.decode().split("\0")
               if f and (root / f).is_file())


# ---- going there ---------------------------------------------------------------------------

def deal(files: dict[str, Path], out: Path, *, budget: int, chunk: int = 8 * MIB) -> list[Path]:
    """Cut ``files`` ({destination relative to the repo: source}) into chunks and deal them,
    in order, into ``out/carry1``, ``out/carry2``, ... of at most ``budget`` bytes each."""
    if budget < chunk:
        chunk = max(MIB, budget // 2)
    for old in out.glob("carry*"):  # earlier carries only: the sources may live beside them
        shutil.rmtree(old)
    folders, size = [], budget
    entries = []
    for dest, src in files.items():
        data = Path(src).read_bytes()
        pieces = [data[i:i + chunk] for i in range(0, max(1, len(data)), chunk)]
        entry = {"dest": dest, "sha256": sha256(data), "bytes": len(data), "chunks": []}
        for k, piece in enumerate(pieces):
            if size + len(piece) > budget:
                folders.append(out / f"carry{len(folders) + 1}")
                folders[-1].mkdir(parents=True)
                size = 0
            name = f"{len(entries):03d}-{k:03d}.bin"
            (folders[-1] / name).write_bytes(piece)
            size += len(piece)
            entry["chunks"].append({"name": name, "folder": folders[-1].name,
                                    "sha256": sha256(piece)})
        entries.append(entry)
    for folder in folders:
        atomic_write(folder / MANIFEST, json.dumps({"files": entries}, indent=1) + "\n")
    return folders


def receive(root: Path, *, carry_root: Path | None = None) -> dict[str, list[str]]:
    """Reassemble every file whose chunks are all in the carry folders; report the rest."""
    carry_root = carry_root or root / ".gpu"
    folders = sorted(carry_root.glob("carry*"))
    entries = {}
    for folder in folders:
        for e in json.loads((folder / MANIFEST).read_text())["files"]:
            entries[e["dest"]] = e
    done, waiting = [], []
    for dest, e in entries.items():
        target = root / dest
        if target.exists() and target.stat().st_size == e["bytes"] and \
                file_sha256(target) == e["sha256"]:
            done.append(dest)
            continue
        missing = [c for c in e["chunks"] if not (carry_root / c["folder"] / c["name"]).exists()]
        if missing:
            waiting.append(f"{dest}: waits for {missing[0]['folder']}")
            continue
        parts = []
        for c in e["chunks"]:
            piece = (carry_root / c["folder"] / c["name"]).read_bytes()
            if sha256(piece) != c["sha256"]:
                raise TransportError(f"chunk {c['folder']}/{c['name']} of {dest} is corrupt "
                                     "(sha256 mismatch): carry that folder again")
            parts.append(piece)
        data = b"".join(parts)
        if sha256(data) != e["sha256"]:
            raise TransportError(f"{dest} reassembled with a wrong sha256: carry again")
        atomic_write(target, data)
        done.append(dest)
    return {"placed": done, "waiting": waiting}


def install_wheels(root: Path, target: Path, waiting: list[str]) -> str:
    """``pip install`` the carried wheels into ``target`` once all of them have arrived."""
    import subprocess

    if any(w.startswith(".gpu/wheels/") for w in waiting):
        return "wheels: waiting for the rest of them"
    wheels = sorted((root / ".gpu" / "wheels").glob("*.whl"))
    stamp = target / ".installed"
    names = "\n".join(w.name for w in wheels)
    if not wheels or (stamp.exists() and stamp.read_text() == names):
        return f"wheels: {len(wheels)} in place"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--no-compile", "--upgrade", "--target", str(target), *map(str, wheels)],
                   check=True)
    atomic_write(stamp, names)
    return f"wheels: {len(wheels)} installed into {target.name}"


# ---- coming back ---------------------------------------------------------------------------

def outputs(root: Path, profile: runtime.Profile) -> list[Path]:
    """What the finished stages of ``profile`` made, relative to ``root``."""
    sub = "" if profile.name == "full" else f"/{profile.name}"
    ckpt = Path(os.environ.get("DIFFNB_CHECKPOINTS", root / "checkpoints"))
    found = [p for p in (root / f"results{sub}").rglob("*") if p.is_file()]
    found += [p for p in (root / f"figures{sub}").glob("*") if p.is_file()]
    found += [p for p in (ckpt / profile.name).rglob("*.half.pt")]
    found += list(runtime.stamps_dir().glob(f"{profile.name}_*"))
    nb_dir = root / "notebooks" if profile.name == "full" else root / "build/notebooks" / \
        profile.name
    found += sorted(nb_dir.glob("*.ipynb"))
    return sorted(p for p in found if not p.name.endswith(".tmp"))


def _arcname(path: Path, root: Path) -> str:
    ckpt = Path(os.environ.get("DIFFNB_CHECKPOINTS", root / "checkpoints"))
    for base, label in ((runtime.stamps_dir(), ".cache/scores"), (ckpt, "checkpoints"),
                        (root, "")):
        try:
            rel = path.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            continue
        return f"{label}/{rel}" if label else rel
    raise TransportError(f"{path} is outside the checkout")


def pack(root: Path, out: Path, *, profile: runtime.Profile) -> list[Path]:
    """Tar the outputs, cut into at most MAX_PARTS parts, plus ``pack.json`` (sha256s)."""
    buf = io.BytesIO()
    files = {}
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for path in outputs(root, profile):
            name = _arcname(path, root)
            tar.add(path, arcname=name)
            files[name] = {"sha256": file_sha256(path), "mtime": path.stat().st_mtime}
    data = buf.getvalue()
    parts = [data[i:i + PART_LIMIT] for i in range(0, len(data), PART_LIMIT)] or [b""]
    if len(parts) > MAX_PARTS:
        raise TransportError(f"the pack is {len(data) / MIB:.1f} MiB, more than {MAX_PARTS} "
                             "parts of 16 MiB: pack fewer stages per command")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k, part in enumerate(parts):
        written.append(atomic_write(out / f"pack.part{k}", part))
    manifest = {"profile": profile.name, "device": runtime.device_name(), "sha256": sha256(data),
                "parts": [{"name": p.name, "sha256": sha256(b)} for p, b in zip(written, parts)],
                "files": files}
    written.append(atomic_write(out / "pack.json", json.dumps(manifest, indent=1) + "\n"))
    return written


def unpack(folder: Path, root: Path, *, force: bool = False) -> dict[str, list[str]]:
    """Check every part, then restore the files into ``root``; newer local files are kept."""
    mpath = folder / "pack.json"
    if not mpath.exists():
        raise TransportError(f"{folder} has no pack.json: not a pack, or the manifest is missing")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as err:
        raise TransportError(f"{mpath} is corrupt ({err}); fetch the command's files again") \
            from err
    blobs = []
    for part in manifest["parts"]:
        path = folder / part["name"]
        if not path.exists():
            raise TransportError(f"part {part['name']} is missing from {folder}: nothing was "
                                 "unpacked; fetch the command's files again")
        blob = path.read_bytes()
        if sha256(blob) != part["sha256"]:
            raise TransportError(f"part {part['name']} is corrupt (sha256 mismatch): nothing "
                                 "was unpacked; fetch the command's files again")
        blobs.append(blob)
    data = b"".join(blobs)
    if sha256(data) != manifest["sha256"]:
        raise TransportError("the parts do not add up to the pack (sha256 mismatch)")
    restored, kept = [], []
    ckpt = Path(os.environ.get("DIFFNB_CHECKPOINTS", root / "checkpoints"))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            name, info = member.name, manifest["files"].get(member.name, {})
            if not member.isfile() or name.startswith("/") or ".." in Path(name).parts:
                raise TransportError(f"refusing the pack member {name!r}")
            if name.startswith("checkpoints/"):
                target = ckpt / name.split("/", 1)[1]
            elif name.startswith(".cache/scores/"):
                target = runtime.stamps_dir() / name.split("/", 2)[2]
            else:
                target = root / name
            if target.exists() and not force and file_sha256(target) != info.get("sha256") \
                    and target.stat().st_mtime > info.get("mtime", 0):
                kept.append(name)
                continue
            with atomic_path(target) as tmp:
                tmp.write_bytes(tar.extractfile(member).read())
            os.utime(target, (info.get("mtime", 0),) * 2)
            restored.append(name)
    for name in kept:
        print(f"unpack: kept the newer local {name} (use --force to overwrite it)",
              file=sys.stderr)
    return {"restored": restored, "kept": kept}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m diffnb.transport", description=__doc__.split(
        "\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    rc = sub.add_parser("receive", help="there: reassemble the carried files")
    rc.add_argument("--wheels", default=None, help="install the carried wheels into this folder")
    pk = sub.add_parser("pack", help="there: pack the outputs into OUT")
    pk.add_argument("out")
    pk.add_argument("profile", choices=sorted(runtime.PROFILES))
    up = sub.add_parser("unpack", help="here: restore a pack")
    up.add_argument("folder")
    up.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    root = runtime.outputs_root()
    try:
        if args.cmd == "receive":
            r = receive(root)
            print(f"receive: {len(r['placed'])} files in place"
                  + "".join(f"\n  {w}" for w in r["waiting"]))
            if args.wheels:
                print("receive:", install_wheels(root, Path(args.wheels), r["waiting"]))
        elif args.cmd == "pack":
            for path in pack(root, Path(args.out), profile=runtime.PROFILES[args.profile]):
                print(f"pack: {path.name} {path.stat().st_size / MIB:.2f} MiB")
        else:
            r = unpack(Path(args.folder), root, force=args.force)
            print(f"unpack: {len(r['restored'])} files restored, {len(r['kept'])} kept")
    except TransportError as err:
        sys.exit(f"transport: {err}")


if __name__ == "__main__":
    main()
