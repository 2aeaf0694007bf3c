"""How far a re-made course is from the committed one.

    python -m diffnb.run.compare cpu     # after `make reproduce`: figures/cpu and results/cpu vs git

Each figure (``figures/<profile>/*.png``) and table (``results/<profile>/*.csv``) of the working
tree is compared with its committed version (``git show HEAD:<path>``): equal bytes, or for a
figure the largest difference of a pixel channel (0-255) and the share of pixels that differ, for
a table the largest difference of its numbers and the column it is in. On the kind of CPU that
made the committed run the re-made files are equal; on another kind (another instruction set,
bf16 or fp32) the samples, and so the grids, differ in some pixels (docs/reproducibility.md).
"""
from __future__ import annotations

import argparse
import csv
import io
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffnb import runtime


@dataclass(frozen=True)
class Difference:
    path: str          # relative to the repository
    state: str         # equal | differs | new (not committed) | missing (committed, not here)
    largest: float = 0.0   # figure: largest channel difference (0-255); table: of its numbers
    where: str = ""        # figure: share of pixels that differ; table: the column


def committed(root: Path, rel: str) -> bytes | None:
    """The file as committed at HEAD; None when HEAD does not hold it."""
    r = subprocess.run(["git", "-C", str(root), "show", f"HEAD:{rel}"], capture_output=True)
    return r.stdout if r.returncode == 0 else None


def committed_files(root: Path, folder: str) -> list[str]:
    try:
        r = subprocess.run(["git", "-C", str(root), "ls-tree", "-r", "--name-only", "HEAD",
                            folder], capture_output=True, text=True)
        why = (r.stderr.strip() or f"git exited with {r.returncode}") if r.returncode else None
    except OSError as err:     # no git program
        why = str(err)
    if why is not None:
        raise RuntimeError(f"{root} is not a git checkout ({why}): comparing with the "
                           "committed outputs needs the repository cloned with git.")
    return r.stdout.split()


def pixel_difference(a: bytes, b: bytes) -> tuple[float, float]:
    """(largest channel difference, share of pixels that differ) of two PNG files."""
    from PIL import Image

    x, y = (np.asarray(Image.open(io.BytesIO(v)).convert("RGBA"), dtype=np.int16) for v in (a, b))
    if x.shape != y.shape:
        return 255.0, 1.0
    d = np.abs(x - y).max(axis=-1)
    return float(d.max()), float((d > 0).mean())


def number_difference(a: bytes, b: bytes) -> tuple[float, str]:
    """(largest difference of two tables' numbers, its column); inf when the tables' shapes or
    words differ."""
    ra, rb = (list(csv.reader(io.StringIO(v.decode()))) for v in (a, b))
    if len(ra) != len(rb) or ra[:1] != rb[:1] or any(len(p) != len(q) for p, q in zip(ra, rb)):
        return float("inf"), "the table's shape"
    largest, where = 0.0, ""
    for p, q in zip(ra[1:], rb[1:]):
        for column, u, v in zip(ra[0], p, q):
            if u == v:
                continue
            try:
                d = abs(float(u) - float(v))
            except ValueError:
                return float("inf"), column
            if d > largest:
                largest, where = d, column
    return largest, where


def compare(profile: str, *, root: Path | None = None) -> list[Difference]:
    """Every figure and table of ``profile``, here against HEAD."""
    root = root or runtime.project_root()
    out = []
    for folder, ext in ((f"figures/{profile}", ".png"), (f"results/{profile}", ".csv")):
        kept = {p for p in committed_files(root, folder) if p.endswith(ext)}
        here = {p.relative_to(root).as_posix() for p in (root / folder).rglob(f"*{ext}")}
        for rel in sorted(kept | here):
            if rel not in here:
                out.append(Difference(rel, "missing"))
                continue
            a, b = committed(root, rel), (root / rel).read_bytes()
            if a is None:
                out.append(Difference(rel, "new"))
            elif a == b:
                out.append(Difference(rel, "equal"))
            elif ext == ".png":
                largest, share = pixel_difference(a, b)
                out.append(Difference(rel, "differs", largest, f"{share:.1%} of pixels"))
            else:
                out.append(Difference(rel, "differs", *number_difference(a, b)))
    return out


def summary(diffs: list[Difference]) -> str:
    equal = sum(d.state == "equal" for d in diffs)
    lines = [f"compare: {equal} of {len(diffs)} figures and tables equal to the committed ones"]
    for d in diffs:
        if d.state == "differs" and d.path.endswith(".png"):
            lines.append(f"  {d.path}: largest pixel difference {d.largest:.0f}/255, {d.where}")
        elif d.state == "differs":
            lines.append(f"  {d.path}: largest difference {d.largest:.4g} (column {d.where})")
        elif d.state != "equal":
            lines.append(f"  {d.path}: {d.state}")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m diffnb.run.compare",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("profile", nargs="?", default=None,
                   help="default: the run's profile ($DIFFNB_PROFILE, else cpu once kept)")
    args = p.parse_args(argv)
    name = args.profile or runtime.profile().name
    if name not in runtime.PROFILES:
        p.error(f"unknown profile {name!r}; known: {', '.join(sorted(runtime.PROFILES))}")
    try:
        print(summary(compare(name)))
    except RuntimeError as err:
        p.error(str(err))


if __name__ == "__main__":
    main()
