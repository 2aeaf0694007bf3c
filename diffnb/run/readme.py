"""The README's first screen, written from a kept run: its slide-10 grid, its slide-8 table and
one line saying what was trained on which CPU for how long.

    python -m diffnb.run.readme cpu      # rewrites README.md between the two face markers

Every number comes from the run's own files: ``figures/<profile>/s10_per_class_grids.json`` (which
model, which sampler), ``results/<profile>/s08_fid_models.csv`` (the table) and
``weights/<profile>/MANIFEST.json`` (epochs, images, seconds, CPUs). Only a profile whose weights
the repository keeps, all of them (``runtime.kept_complete``), writes the face: a quick run never
touches the README. The notebooks stage of the run queue calls it last.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from diffnb import config, runtime
from diffnb.results import atomic_write

START = "<!-- face: written by `python -m diffnb.run.readme`; edit that, not this -->"
END = "<!-- /face -->"
GRID = "s10_per_class_grids"
TABLE = "s08_fid_models"
EPOCH_IMAGES = 50_000        # the report's training split: an epoch of the report
CSV_COLUMNS = {"model": "model", "preset": "preset", "report FID (slide 8)": "the report's FID",
               "ours, report protocol": "ours", "floor (report)": "real vs real"}


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing ({what}): run the course in this profile "
                                "first (make reproduce)")
    return path


def subfolder(profile: str) -> str:
    """A profile's part of its output paths, as ``runtime.output_dir`` names them."""
    return "" if profile == "full" else f"{profile}/"


def training_seconds(manifest: dict) -> float:
    """The kept models' training seconds in all, each run once: a continued run (class_3 after
    class_1) records its run's seconds so far, so a run counts at its longest model's."""
    runs: dict[str, float] = {}
    for f in manifest["files"].values():
        if f.get("preset"):
            runs[f["run_key"]] = max(runs.get(f["run_key"], 0.0), f["train_seconds"])
    return sum(runs.values())


def training_line(manifest: dict) -> str:
    """One sentence: how many models, how many hours of training, on which CPUs, how many images."""
    files = [f for f in manifest["files"].values() if f.get("preset")]
    cpus = sorted({f["cpu"] for f in files} | {c for f in files for c in f.get("epochs_on") or {}
                                               if c != "not recorded"})
    seen = [f["images_seen"] / EPOCH_IMAGES for f in files]
    return (f"The {len(files)} models trained for {training_seconds(manifest) / 3600:.1f} hours in all "
            f"(the sum of their runs), on {' and '.join(cpus)}. Each saw {min(seen):.0f} to "
            f"{max(seen):.0f} epochs' worth of the 50,000 training images; the report trained "
            "for 50 or 100.")


def slide8_markdown(rows: list[dict], manifest: dict) -> str:
    """The slide-8 table, shortened to what a first screen needs (all columns: results/), with
    the epochs each model saw beside the report's."""
    seen = {f["preset"]: f["images_seen"] / EPOCH_IMAGES for f in manifest["files"].values()
            if f.get("preset")}
    head = [*CSV_COLUMNS.values(), "epochs: ours / the report's"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r[k] if k in ("model", "preset") else _number(r[k]) for k in CSV_COLUMNS]
        ours = f"{seen[r['preset']]:.0f}" if r["preset"] in seen else "-"
        cells.append(f"{ours} / {config.get_preset(r['preset']).train.epochs}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _number(x: float) -> str:
    return f"{x:.1f}" if math.isfinite(x) else "-"


def face(root: Path, profile: str) -> str:
    """The block between the markers, made from the run's files under ``root``."""
    import pandas as pd

    from diffnb.course import readings

    sub = subfolder(profile)
    meta = json.loads(_need(root / "figures" / sub / f"{GRID}.json", "the slide-10 grid")
                      .read_text())
    table = pd.read_csv(_need(root / "results" / sub / f"{TABLE}.csv", "the slide-8 table"))
    manifest = json.loads(_need(root / "weights" / profile / "MANIFEST.json", "the kept weights")
                          .read_text())
    _need(root / "figures" / sub / f"{TABLE}.png", "the slide-8 figure")
    rows = table.to_dict("records")
    n = int(rows[0]["n report"]) if rows else "?"
    headline = readings.headline(table)
    return "\n".join([
        START,
        f"![Slide 10: {meta['samples_per_class']} samples of each class]"
        f"(figures/{sub}{GRID}.png)",
        "",
        f"*Slide 10, from notebook 04: one row per class, drawn by the `{profile}` run's "
        f"`{meta['preset']}` model ({meta['solver']}, {meta['steps']} steps, seed {meta['seed']}) "
        f"on {meta['device']}.*",
        "",
        f"![Slide 8: FID of each model against the report's](figures/{sub}{TABLE}.png)",
        "",
        f"**Slide 8, from notebook 05: FID per model.** Ours: {headline}. The report protocol: "
        f"{n} generated "
        f"vs {n} real images per class, averaged; lower is better; real vs real is the lowest "
        f"that protocol can give. All columns: [`results/{sub}{TABLE}.md`]"
        f"(results/{sub}{TABLE}.md).",
        "",
        slide8_markdown(rows, manifest),
        "",
        training_line(manifest) + f" The weights: [`weights/{profile}/`](weights/{profile}/).",
        END])


def rewrite(readme: str, block: str) -> str:
    """``readme`` with the text between the markers (markers included) replaced by ``block``."""
    if readme.count(START) != 1 or readme.count(END) != 1 or readme.index(START) > readme.index(END):
        raise ValueError(f"README.md needs the line {START!r} and, below it, {END!r} once each: "
                         "put them where the face goes")
    head, rest = readme.split(START)
    return head + block + rest.split(END, 1)[1]


def write(profile: runtime.Profile, root: Path | None = None) -> bool:
    """Rewrite the README's face from ``profile``'s run; False (untouched) where the profile's
    weights are not kept or not complete."""
    root = root or runtime.project_root()
    manifest = root / "weights" / profile.name / "MANIFEST.json"
    if profile.name not in runtime.KEPT_PROFILES or not manifest.exists() or \
            not json.loads(manifest.read_text()).get("complete"):
        return False
    path = root / "README.md"
    text = path.read_text()
    new = rewrite(text, face(root, profile.name))
    if new != text:
        atomic_write(path, new)
    return True


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("profile", nargs="?", default=None, choices=sorted(runtime.PROFILES))
    args = ap.parse_args(argv)
    profile = runtime.PROFILES[args.profile] if args.profile else runtime.profile()
    if write(profile):
        print(f"README.md: face written from the {profile.name} run")
    else:
        print(f"README.md left as it is: only a run of the {' or '.join(runtime.KEPT_PROFILES)} "
              "profile, with all its weights kept (weights/<profile>/MANIFEST.json), writes it")


if __name__ == "__main__":
    main()
