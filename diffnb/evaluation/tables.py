"""The report's FID tables (slides 8-9), rebuilt from the results files that
:mod:`diffnb.evaluation.scoring` writes: ``results[/<profile>]/fid/<preset>.json``. Nothing here
computes a score; every number is read back from a file.
"""
from __future__ import annotations

import json

import pandas as pd

from diffnb import config, data, runtime


def result_path(preset_name: str, tag: str):
    folder = runtime.output_dir("results") / "fid"
    folder.mkdir(exist_ok=True)
    return folder / f"{preset_name}{tag}.json"


def read_result(path) -> dict:
    """A results JSON file, or a ValueError naming it when it does not parse (a cut-short write)."""
    try:
        return json.loads(path.read_text())
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path} is corrupt ({err})") from None


def load_scores(names, *, tag: str = "") -> dict[str, dict]:
    scores = {}
    for name in names:
        path = result_path(name, tag)
        if not path.exists():
            raise FileNotFoundError(f"no FID result for {name!r} at {path}: run score() first")
        try:
            scores[name] = read_result(path)
        except ValueError as err:
            raise ValueError(f"{err}: run score() for {name!r} again to rewrite it") from None
    return scores


def fid_weights(scores: dict[str, dict]) -> str:
    """Which Inception weights made ``scores``: "fp32" (pytorch-fid's, exact: every score
    written without a ``fid_weights`` field) unless a score's field names another kind."""
    kinds = sorted({s.get("fid_weights", "fp32") for s in scores.values()})
    return kinds[0] if len(kinds) == 1 else "mixed: " + ", ".join(kinds)


def slide8_table(scores: dict[str, dict]) -> pd.DataFrame:
    """Slide 8: the report's "Average FID" beside ours under both protocols, with floors."""
    rows = []
    for name, s in scores.items():
        preset = config.get_preset(name)
        rep, std = s["report"], s.get("standard") or {}   # standard: maybe the best's alone
        rows.append({"preset": name, "model": s["title"], "parameters": s["params"],
                     "report FID (slide 8)": preset.report_fid,
                     "ours, report protocol": rep["average"],
                     "floor (report)": rep["floor_average"],
                     "ours, standard (pooled)": std.get("pooled", float("nan")),
                     "floor (standard)": std.get("floor_pooled", float("nan")),
                     "KID x1e3": 1e3 * std.get("kid_mean", float("nan")),
                     "n report": rep["n"], "n standard": std.get("n", float("nan"))})
    return pd.DataFrame(rows)


def slide9_table(scores: dict[str, dict], *, protocol: str = "report") -> pd.DataFrame:
    """Slide 9: per-class FID, one row per class-conditional preset, plus the floor row."""
    rows = {config.get_preset(n).title: s[protocol]["per_class"] for n, s in scores.items()}
    first = next(iter(scores.values()))[protocol]
    rows[f"real vs real (n={first['n_per_class'] or first['n']})"] = first["floor_per_class"]
    return pd.DataFrame(rows).T[list(data.CLASS_NAMES)]


def report_slide9_table() -> pd.DataFrame:
    """The report's own slide-9 numbers (config.REPORT_PER_CLASS_FID)."""
    return pd.DataFrame({config.get_preset(n).title: dict(zip(data.CLASS_NAMES, v))
                         for n, v in config.REPORT_PER_CLASS_FID.items()}).T


def excess_over_floor(per_class: pd.DataFrame) -> pd.DataFrame:
    """Per-class FID minus the real-vs-real floor: how much of a number the model is to blame for."""
    floor = per_class.iloc[-1]
    return per_class.iloc[:-1] - floor


def rank_classes(per_class: pd.DataFrame) -> pd.Series:
    """Mean rank of each class across the models (1 = best), worst last."""
    return per_class.rank(axis=1).mean().sort_values()
