"""The run queue's stages: what they are, in which order, what each needs and what it costs.

A stage trains a group of presets (a longer constant-LR run continues a shorter one: class_2 ->
class_4), scores one model, runs one study or executes the notebooks. Its cost is counted in
FLOPs (``diffnb.run.flops``), turned into seconds at an assumed rate, and calibrated by the seconds
measured on the same device for the stages already finished (``diffnb.run.records``). The queue
(``diffnb.run.pipeline``) runs the stages and stops before one that would not finish before its
``--deadline``.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from diffnb import config, models, runtime, training
from diffnb.run import flops, records
from diffnb.training import checkpoints, datasets

TRAIN_GROUPS = (("class_2", "class_4"), ("class_1", "class_3"), ("condbn_2",), ("condbn_1",),
                ("base_2",), ("base_1",))
# Effective throughput assumed before anything was measured (TFLOP/s): bf16 convolutions and
# fp32 Inception (TF32 off) on an H100/H200-class card; a 2-core AVX2 CPU (training in fp32).
ASSUMED_TFLOPS = {"cuda": {"bf16": 250.0, "fp32": 40.0}, "cpu": {"bf16": 0.12, "fp32": 0.09}}
# A notebook's kernel start, imports, sample grids and plots (an assumption, not a measurement).
NOTEBOOK_SECONDS = {"cuda": 30.0, "cpu": 120.0}
NO_MODEL_STUDIES = ("study:zero_init", "study:floor_curve")  # fresh nets / real images only


@dataclass(frozen=True)
class Stage:
    name: str
    kind: str                      # train | fid | study | bench | notebooks
    presets: tuple[str, ...] = ()


CELEBA_STAGE = Stage("train:celeba_unet", "train", ("celeba_unet",))
# standard_for="best": the standard protocol for the report model of lowest Average FID
BEST_STANDARD = Stage("fid:best_standard", "fid", tuple(p.name for p in config.REPORT_PRESETS))
# benchmarks/train_speed.py on the report's largest model: the naive loop vs diffnb's trainer
BENCH_STAGE = Stage("bench:train_speed", "bench", ("class_2",))


def plan(profile: runtime.Profile) -> list[Stage]:
    """Every stage of a profile, in the order they run."""
    improvements = tuple(p.name for p in config.IMPROVEMENT_PRESETS)
    return [*(Stage("train:" + "+".join(g), "train", g) for g in TRAIN_GROUPS),
            *(Stage(f"fid:{p.name}", "fid", (p.name,)) for p in config.REPORT_PRESETS),
            *([BEST_STANDARD] if profile.standard_for == "best" else []),
            Stage("study:class0_bug", "study", ("class_2",)),
            *(Stage(f"train:{name}", "train", (name,)) for name in improvements),
            Stage("study:ablation", "study", ("class_2", *improvements)),
            Stage("study:best_per_class", "study", ("unet_attn_cfg",)),
            Stage("study:fid_vs_nfe", "study", ("unet_attn",)),
            Stage("study:zero_init", "study", ("condbn_1",)),
            Stage("study:floor_curve", "study"),
            BENCH_STAGE,
            *([CELEBA_STAGE] if celeba_lacks() is None else []),
            Stage("notebooks", "notebooks")]


# Scorings that keep their samples as they draw them (evaluation.partial: a kept profile, on a
# CPU): cut at the deadline they lose at most one sampler batch, so the queue starts them
# whatever time is left, where it would stop before another stage that does not fit.
KEEPS_SAMPLES = ("fid:*", "study:ablation", "study:best_per_class", "study:fid_vs_nfe")


def keeps_samples(stage: Stage, profile: runtime.Profile, *, device: torch.device) -> bool:
    import fnmatch

    return profile.name in runtime.KEPT_PROFILES and torch.device(device).type == "cpu" and \
        any(fnmatch.fnmatch(stage.name, pattern) for pattern in KEEPS_SAMPLES)


def celeba_lacks() -> str | None:
    """Why notebook 07's training is not planned here (CelebA is not found), or None."""
    return datasets.missing(config.get_preset(CELEBA_STAGE.presets[0]))


def stage_key(stage: Stage, profile: runtime.Profile) -> str:
    """What a finished stage's record in ``pipeline.json`` stands for: the profile's loop sizes,
    the run keys of the presets it reads and, for the notebooks, their cells' sources. A record
    with another key (the profile or a preset changed since; a notebook was edited) is run
    again; its models and scores are reused where their own keys still match. Loop sizes at
    their field's default are left out, so that a field added later with a default that keeps
    what was done leaves the records (a whole GPU run's) as they are."""
    import dataclasses
    import hashlib

    from diffnb.run import execute

    names = trained_presets(profile) if stage.kind == "notebooks" else stage.presets
    sizes = {f.name: getattr(profile, f.name) for f in dataclasses.fields(profile)
             if not _is_default(f, getattr(profile, f.name))}
    what = {"profile": sizes,
            "run_keys": [config.run_key(config.scaled(config.get_preset(n), profile))
                         for n in names]}
    if stage.kind == "notebooks":
        what["sources"] = [execute.cell_sources(path) for path in execute.notebooks()]
    blob = json.dumps(what, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _is_default(f, value) -> bool:
    import dataclasses

    if f.default is not dataclasses.MISSING:
        return value == f.default
    if f.default_factory is not dataclasses.MISSING:
        return value == f.default_factory()
    return False


def trained_presets(profile: runtime.Profile) -> list[str]:
    """Every preset the queue trains, in its order."""
    return [name for s in plan(profile) if s.kind == "train" for name in s.presets]


def trained_here(stage: Stage, profile: runtime.Profile) -> bool:
    """A training stage whose every model is finished here or kept (checkpoints.is_finished):
    run again, it would only load them, so ``pipeline --again`` keeps its record."""
    return stage.kind == "train" and all(checkpoints.is_finished(
        config.scaled(config.get_preset(n), profile), profile) for n in stage.presets)


def reads_models(stage: Stage, profile: runtime.Profile) -> tuple[str, ...]:
    """The trained presets a stage samples from (they must be finished before it starts); the
    notebooks read every one (a notebook would otherwise train a missing model itself)."""
    if stage.kind == "notebooks":
        return tuple(trained_presets(profile))
    if stage.kind in ("train", "bench") or stage.name in NO_MODEL_STUDIES:
        return ()
    return stage.presets


def needs_fid(stage: Stage) -> bool:
    """Whether a stage runs Inception (pytorch-fid and the converted weights)."""
    return stage.kind in ("fid", "notebooks") or (stage.kind == "study"
                                                   and stage.name != "study:zero_init")


def run_targets(profile: runtime.Profile) -> dict[Path, int]:
    """{run folder: the most epochs a planned preset trains in it} (class_1 and class_3 share
    one run: its target is class_3's 100 epochs)."""
    out: dict[Path, int] = {}
    for name in trained_presets(profile):
        p = config.scaled(config.get_preset(name), profile)
        folder = checkpoints.run_dir(p, profile)
        out[folder] = max(out.get(folder, 0), p.train.epochs)
    return out


@lru_cache(maxsize=None)
def _forward(model: config.ModelConfig) -> float:
    """Forward FLOPs of one image (with its label where the network takes one)."""
    return flops.forward_flops(models.build(model), labels=model.class_conditional)


def stage_flops(stage: Stage, profile: runtime.Profile) -> dict[str, float]:
    """FLOPs of a stage by precision: training and sampling in bf16, Inception in fp32."""
    from diffnb.evaluation import studies

    out = {"bf16": 0.0, "fp32": 0.0}
    for name in stage.presets if stage.kind == "train" else ():
        p = config.scaled(config.get_preset(name), profile)
        before = max([0] + [config.scaled(config.get_preset(g), profile).train.epochs
                            for g in stage.presets[:stage.presets.index(name)]])
        images = (p.train.epochs - before) * training.steps_per_epoch(p) * p.train.batch_size
        out["bf16"] += 3.0 * _forward(p.model) * images       # flops.train_flops
    if stage.kind == "bench":   # train_speed.py: the same images through diffnb's loop (bf16)
        images = profile.bench_steps * profile.bench_batch   # and the naive one (fp32)
        f = 3.0 * _forward(config.get_preset(stage.presets[0]).model) * images
        out["bf16"] += f
        out["fp32"] += f
    for samples, nfe, name in studies.sampling_work(stage, profile):
        out["bf16"] += _forward(config.get_preset(name).model) * samples * nfe
    out["fp32"] += flops.inception_flops(studies.inception_images(stage, profile))
    return out


def prior_seconds(stage: Stage, profile: runtime.Profile, *, device: torch.device) -> float:
    """Seconds at the assumed rates; the notebooks, which count no FLOPs of their own (they
    reuse the queue's results), at an assumed ``NOTEBOOK_SECONDS`` each."""
    if stage.kind == "notebooks":
        from diffnb.run import execute

        return NOTEBOOK_SECONDS.get(device.type, NOTEBOOK_SECONDS["cpu"]) * len(
            execute.notebooks())
    rate = ASSUMED_TFLOPS.get(device.type, ASSUMED_TFLOPS["cpu"])
    f = stage_flops(stage, profile)
    return sum(f[k] / (rate[k] * 1e12) for k in f)


def calibration(state: dict, device_name: str) -> float:
    """Median of measured / FLOP-estimated seconds of the finished stages on ``device_name``
    other than trainings (a training is cut by its epochs' measured time instead) and scorings
    that went on from a cut call's samples (their seconds are part of the cost)."""
    ratios = []
    for s in state["stages"].values():
        if s.get("device") != device_name or s.get("kind") == "train" \
                or s.get("prior_seconds", 0) <= 0.5 or s.get("resumed_samples"):
            continue
        if s["seconds"]:
            ratios.append(s["seconds"] / s["prior_seconds"])
    return statistics.median(ratios) if ratios else 1.0


def stage_keys(profile: runtime.Profile) -> dict[str, str]:
    """Every planned stage's key (:func:`stage_key`), by name."""
    return {s.name: stage_key(s, profile) for s in plan(profile)}


def describe(profile: runtime.Profile, device: torch.device) -> str:
    """The plan as a Markdown table: FLOPs and the expected minutes of each stage."""
    state = records.load_state(profile, keys=stage_keys(profile))
    rows = ["| stage | PFLOP bf16 | PFLOP fp32 | expected min | done |", "|---|---|---|---|---|"]
    total = 0.0
    for stage in plan(profile):
        f, s = stage_flops(stage, profile), prior_seconds(stage, profile, device=device)
        total += s
        done = state["stages"].get(stage.name, {}).get("seconds")
        rows.append(f"| {stage.name} | {f['bf16'] / 1e15:.2f} | {f['fp32'] / 1e15:.3f} | "
                    f"{s / 60:.2f} | {'' if done is None else f'{done:.0f} s'} |")
    rows.append(f"| **total** | | | **{total / 60:.1f}** | |")
    return "\n".join(rows)
