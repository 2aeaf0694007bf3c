"""Moving a run to a borrowed GPU machine and its outputs back, inside the device tool's limits.

Going there (each command carries the tree plus at most 64 MiB; see scripts/gpu/README.md):
  ``carry``    here: ``diffnb.carry.deal`` (``scripts/gpu/prepare.py`` picks the files);
  ``receive``  there: ``diffnb.carry.receive`` reassembles what has arrived, checks its sha256.
Coming back (at most 8 files of 16 MiB from ``$OUT``):
  ``pack``     there: a tar of what the finished stages made (compact fp16 checkpoints,
               results, figures, executed notebooks, score stamps) and of what an unfinished one
               needs to go on (the resume point of each planned run that is not finished: its
               ``last.pt``, or the ``eNNNN.pt`` a continuation starts from), cut into parts with a
               manifest of sha256s;
  ``unpack``   here: refuses a corrupt or missing part by name, then restores the files, never
               overwriting a newer local file without saying so (``--force`` to overwrite).
A machine that goes cold between two commands thus loses nothing finished, not even an epoch.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
from pathlib import Path

from diffnb import carry, checkpoints, runtime
from diffnb.carry import MIB, TransportError, sha256
from diffnb.results import atomic_path, atomic_write, file_digest

PART_LIMIT = 16 * MIB - 64 * 1024       # a file that comes back: 16 MiB, with room to spare
MAX_PARTS = 7                            # + the manifest: 8 files back
RECEIVED = ".gpu/received"               # written by receive: what a command made is newer


# ---- coming back ---------------------------------------------------------------------------

def outputs(root: Path, profile: runtime.Profile) -> list[Path]:
    """What the finished stages of ``profile`` made, relative to ``root``."""
    sub = "" if profile.name == "full" else f"/{profile.name}"
    found = [p for p in (root / f"results{sub}").rglob("*") if p.is_file()]
    found += [p for p in (root / f"figures{sub}").glob("*") if p.is_file()]
    found += [p for p in (checkpoints.root() / profile.name).rglob("*.half.pt")]
    found += resume_points(profile)
    found += list(runtime.stamps_dir().glob(f"{profile.name}_*"))
    # executed notebooks: in place (the full profile's, or any profile's over notebooks that
    # do not hold a full run: diffnb.execute.destination), else under build/notebooks/<profile>/
    from diffnb.execute import saved_profile

    found += [p for p in sorted((root / "notebooks").glob("*.ipynb"))
              if saved_profile(p) == profile.name]
    found += sorted((root / "build/notebooks" / profile.name).glob("*.ipynb"))
    return sorted(p for p in found if not p.name.endswith(".tmp"))


def resume_points(profile: runtime.Profile) -> list[Path]:
    """The full checkpoint each planned run that is not finished would resume from."""
    from diffnb import stages

    out = []
    for folder, epochs in stages.run_targets(profile).items():
        if folder.exists() and not (folder / checkpoints.final_name(epochs, half=True)).exists():
            start = checkpoints.latest_start(folder, epochs)
            out += [start] if start is not None else []
    return out


def _arcname(path: Path, root: Path) -> str:
    for base, label in ((runtime.stamps_dir(), ".cache/scores"), (checkpoints.root(), "checkpoints"),
                        (root, "")):
        try:
            rel = path.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            continue
        return f"{label}/{rel}" if label else rel
    raise TransportError(f"{path} is outside the checkout {root}, the checkpoints "
                         f"{checkpoints.root()} and the score stamps {runtime.stamps_dir()}: "
                         "only files under them can be packed; move it under one of them")


def _tar(root: Path, paths: list[Path]) -> tuple[bytes, dict]:
    buf, files = io.BytesIO(), {}
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:  # fp32: ~7% anyway
        for path in paths:
            name = _arcname(path, root)
            tar.add(path, arcname=name)
            files[name] = {"sha256": file_digest(path), "mtime": path.stat().st_mtime}
    return buf.getvalue(), files


def pack(root: Path, out: Path, *, profile: runtime.Profile,
         since: float | None = None) -> list[Path]:
    """Tar the outputs (those written after ``since``, a time stamp, when given: what this
    command made), cut into at most MAX_PARTS parts, plus ``pack.json`` (sha256s). Resume
    points that do not fit are left out, largest first, with a warning: what is finished always
    comes back."""
    paths = [p for p in outputs(root, profile) if since is None or p.stat().st_mtime > since]
    resume = sorted(set(paths) & set(resume_points(profile)), key=lambda p: p.stat().st_size)
    data, files = _tar(root, paths)
    while len(data) > MAX_PARTS * PART_LIMIT and resume:
        left_out = resume.pop()
        print(f"pack: warning: left out {_arcname(left_out, root)} "
              f"({left_out.stat().st_size / MIB:.0f} MiB) to fit {MAX_PARTS} parts of 16 MiB: if "
              "the machine goes cold before the next command, that run starts again from its "
              "last checkpoint that came back", file=sys.stderr)
        paths.remove(left_out)
        data, files = _tar(root, paths)
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
        raise TransportError(f"{folder} has no pack.json: not a pack, or the manifest is "
                             "missing; fetch the command's files again (pack.json with them)")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as err:
        raise TransportError(f"{mpath} is corrupt ({err}); fetch the command's files again") \
            from err
    again = "nothing was unpacked; fetch the command's files again"
    data = b"".join(carry.read_checked(folder / part["name"], part["sha256"],
                                       what=f"part {part['name']}", fix=again)
                    for part in manifest["parts"])
    if sha256(data) != manifest["sha256"]:
        raise TransportError(f"the parts do not add up to the pack (sha256 mismatch): {again}")
    restored, kept = [], []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            name, info = member.name, manifest["files"].get(member.name, {})
            if not member.isfile() or name.startswith("/") or ".." in Path(name).parts:
                raise TransportError(f"refusing the pack member {name!r} (not a file inside "
                                     "the checkout): make the pack with `python -m "
                                     "diffnb.transport pack`, not by hand")
            if name.startswith("checkpoints/"):
                target = checkpoints.root() / name.split("/", 1)[1]
            elif name.startswith(".cache/scores/"):
                target = runtime.stamps_dir() / name.split("/", 2)[2]
            else:
                target = root / name
            if target.exists() and not force and file_digest(target) != info.get("sha256") \
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
    pk.add_argument("--since", default=None, help="a file: only what was written after it "
                    "(receive writes .gpu/received)")
    up = sub.add_parser("unpack", help="here: restore a pack")
    up.add_argument("folder")
    up.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    root = runtime.outputs_root()
    try:
        if args.cmd == "receive":
            r = carry.receive(root)
            print(f"receive: {len(r['placed'])} files in place"
                  + "".join(f"\n  {w}" for w in r["waiting"])
                  + "".join(f"\n  {k}: the machine's own kept" for k in r["kept"]))
            if args.wheels:
                print("receive:", carry.install_wheels(root, Path(args.wheels),
                                                          waiting=r["waiting"]))
            atomic_write(root / RECEIVED, "")   # pack --since: what the command itself wrote
        elif args.cmd == "pack":
            since = Path(args.since).stat().st_mtime if args.since and \
                Path(args.since).exists() else None
            for path in pack(root, Path(args.out), profile=runtime.PROFILES[args.profile],
                             since=since):
                print(f"pack: {path.name} {path.stat().st_size / MIB:.2f} MiB")
        else:
            r = unpack(Path(args.folder), root, force=args.force)
            print(f"unpack: {len(r['restored'])} files restored, {len(r['kept'])} kept")
    except TransportError as err:
        sys.exit(f"transport: {err}")


if __name__ == "__main__":
    main()
