"""Going there: files cut into chunks, dealt into carry folders, reassembled on the GPU machine.

  ``deal``     here: the files the machine lacks (the data, a training run's resume point, the
               compact weights later stages read, wheels, the FID weights), in order of need, cut
               into chunks and dealt into ``.gpu/carry1``, ``.gpu/carry2``, ... of at most a
               command's room each, every folder with a sha256 manifest of every chunk;
  ``receive``  there: reassembles every file whose chunks have all arrived (a warm machine keeps
               the earlier commands' folders), checks its sha256 and puts it in place; what still
               waits is written to ``.gpu/waiting.json`` (:func:`in_transit`), so the run queue
               starts no training whose resume point is still on its way.
A checkpoint the machine already has is never replaced by a carried one: a warm machine's own
``last.pt`` is at least as far as any copy of it that went through here.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

from diffnb.results import atomic_write, file_digest

MIB = 1 << 20
CARRY_LIMIT = 64 * MIB                   # tree + carried paths, per command
MANIFEST = "manifest.json"
WAITING = "waiting.json"


class TransportError(RuntimeError):
    pass


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_checked(path: Path, digest: str, *, what: str, fix: str) -> bytes:
    """The bytes of ``path`` (a chunk, a part of a pack), whose sha256 must be ``digest``; else a
    :class:`TransportError` saying that ``what`` is missing or corrupt, then ``fix``."""
    if not path.exists():
        raise TransportError(f"{what} is missing ({path}): {fix}")
    data = path.read_bytes()
    if sha256(data) != digest:
        raise TransportError(f"{what} is corrupt (sha256 mismatch): {fix}")
    return data


def tree_bytes(root: Path) -> int:
    """Bytes of what travels anyway: tracked and untracked-not-ignored files."""
    import subprocess

    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=root, capture_output=True, check=True).stdout
    return sum((root / f).stat().st_size for f in out.decode().split("\0")
               if f and (root / f).is_file())


def layout(sizes: dict[str, int], *, budget: int, chunk: int = 8 * MIB) -> dict[str, list]:
    """{destination: [(carry number 1, 2, ..., bytes), ...] of its chunks}: files cut into
    chunks dealt in order into carries of at most ``budget`` bytes (what :func:`deal` writes)."""
    if budget < chunk:
        chunk = max(MIB, budget // 2)
    out, carries, size = {}, 0, budget
    for dest, n in sizes.items():
        out[dest] = []
        for start in range(0, max(1, n), chunk):
            piece = min(chunk, n - start)
            if size + piece > budget:
                carries, size = carries + 1, 0
            size += piece
            out[dest].append((carries, piece))
    return out


def deal(files: dict[str, Path], out: Path, *, budget: int, chunk: int = 8 * MIB) -> list[Path]:
    """Cut ``files`` ({destination relative to the repo: source}) into chunks and deal them,
    in order, into ``out/carry1``, ``out/carry2``, ... of at most ``budget`` bytes each
    (:func:`layout`), each folder with the manifest of every file and chunk."""
    for old in out.glob("carry*"):  # earlier carries only: the sources may live beside them
        shutil.rmtree(old)
    plan = layout({d: Path(s).stat().st_size for d, s in files.items()}, budget=budget,
                  chunk=chunk)
    entries = []
    for dest, src in files.items():
        data = Path(src).read_bytes()
        entry = {"dest": dest, "sha256": sha256(data), "bytes": len(data), "chunks": []}
        start = 0
        for k, (number, n) in enumerate(plan[dest]):
            folder = out / f"carry{number}"
            name, piece = f"{len(entries):03d}-{k:03d}.bin", data[start:start + n]
            atomic_write(folder / name, piece)
            start += n
            entry["chunks"].append({"name": name, "folder": folder.name, "sha256": sha256(piece)})
        entries.append(entry)
    folders = sorted(out.glob("carry*"), key=lambda f: int(f.name.removeprefix("carry")))
    for folder in folders:
        atomic_write(folder / MANIFEST, json.dumps({"files": entries}, indent=1) + "\n")
    return folders


def receive(root: Path, *, carry_root: Path | None = None) -> dict[str, list[str]]:
    """Reassemble every file whose chunks are all in the carry folders; report the rest."""
    carry_root = carry_root or root / ".gpu"
    entries = {}
    for folder in sorted(carry_root.glob("carry*")):
        for e in json.loads((folder / MANIFEST).read_text())["files"]:
            entries[e["dest"]] = e
    done, waiting, kept = [], [], []
    for dest, e in entries.items():
        target = root / dest
        if target.exists():
            if target.stat().st_size == e["bytes"] and file_digest(target) == e["sha256"]:
                done.append(dest)
                continue
            if dest.startswith("checkpoints/"):   # the machine's own: at least as far
                kept.append(dest)
                continue
        missing = [c for c in e["chunks"] if not (carry_root / c["folder"] / c["name"]).exists()]
        if missing:
            waiting.append(f"{dest}: waits for {missing[0]['folder']}")
            continue
        data = b"".join(read_checked(carry_root / c["folder"] / c["name"], c["sha256"],
                                     what=f"chunk {c['folder']}/{c['name']} of {dest}",
                                     fix="carry that folder again") for c in e["chunks"])
        if sha256(data) != e["sha256"]:
            raise TransportError(f"{dest} reassembled with a wrong sha256: deal it again "
                                 "(scripts/gpu/prepare.py) and carry its folders again")
        atomic_write(target, data)
        done.append(dest)
    if entries:
        atomic_write(carry_root / WAITING, json.dumps([w.split(": waits")[0] for w in waiting]))
    return {"placed": done, "waiting": waiting, "kept": kept}


def in_transit(root: Path) -> set[str]:
    """Destinations (relative to ``root``) the last :func:`receive` found still on their way."""
    path = root / ".gpu" / WAITING
    return set(json.loads(path.read_text())) if path.exists() else set()


def install_wheels(root: Path, target: Path, *, waiting: list[str]) -> str:
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


# ---- what the machine's Python gets: its image plus the carried wheels --------------------------

# markers are evaluated for the GPU image's Python (scripts/gpu/image.txt)
DEVICE_MARKERS = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
                  "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
                  "implementation_name": "cpython", "platform_python_implementation": "CPython",
                  "extra": ""}


def read_pins(path: Path) -> dict[str, str | None]:
    """``name==version`` or a bare name per line, ``#`` comments skipped: name -> version."""
    from packaging.utils import canonicalize_name

    out = {}
    for line in path.read_text().splitlines():
        name, _, version = line.split("#")[0].strip().partition("==")
        if name:
            out[canonicalize_name(name)] = version or None
    return out


def wheel_requires(wheel: Path) -> list[str]:
    """The ``Requires-Dist`` lines of a wheel's METADATA."""
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().split("\n\n")[0].splitlines()
    return [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Requires-Dist:")]


def unmet(carried: dict, image: dict, *, requires: dict[str, list[str]]) -> list[str]:
    """Each requirement of a carried package (for the machine's platform) that neither the wheels
    nor the image hold, or that the version there (where known) does not meet."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    have = image | carried               # a carried wheel comes first on the machine's path
    out = []
    for name, reqs in requires.items():
        for text in reqs:
            req = Requirement(text)
            dep = canonicalize_name(req.name)
            if req.marker is not None and not req.marker.evaluate(DEVICE_MARKERS):
                continue
            if dep not in have:
                out.append(f"{name} {carried[name]} needs {req}: neither carried nor in the image")
            elif have[dep] and not req.specifier.contains(have[dep], prereleases=True):
                out.append(f"{name} {carried[name]} needs {req}: the machine gets {have[dep]}")
    return out
