"""The notebooks' heavier computations, shared with the run queue and memoised in ``results/``.

The queue (``diffnb.run.pipeline``) runs them where the GPU is; a notebook calls the same function
with the same arguments and reads the result back instead of recomputing it on a CPU:
  ``ablation_changes``   notebook 06's ablation, one change at a time (slide 11);
  ``nfe_steps``          notebook 06's FID vs network evaluations;
  ``class0_bug``         notebook 05: the report's ``if target:`` sampled class 0 without its
                         class; per-class FID of T-shirt/top both ways;
  ``zero_init_losses``   notebook 03: the first epoch with and without the zero initialisation;
  ``floor_curve``        notebook 05: real-vs-real FID against n (slide 8).
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from diffnb import config, runtime
from diffnb.diffusion import sampling
from diffnb.results import atomic_write, provenance

SEED = 0
GUIDANCE = 1.5


def ablation_changes(guidance: float = GUIDANCE, *, profile: runtime.Profile) -> list:
    """Slide 11 from the report's best (class_2) to our best, one change at a time; Heun with the
    profile's ``heun_steps`` (EDM's 18 in the full profile)."""
    from diffnb.evaluation.scoring import Change, SamplerSpec

    heun = dict(solver="heun", steps=profile.heun_steps)
    return [
        Change("report's best (class_2), report's Euler sampler", "class_2", SamplerSpec()),
        Change("+ warm-up/cosine LR", "class_2_sched_ema", SamplerSpec(weights="raw")),
        Change("+ EMA", "class_2_sched_ema", SamplerSpec()),
        Change(f"+ Heun, {profile.heun_steps} steps", "class_2_sched_ema", SamplerSpec(**heun)),
        Change("UNet", "unet", SamplerSpec(**heun)),
        Change("+ attention", "unet_attn", SamplerSpec(**heun)),
        Change("+ CFG training, guidance 1", "unet_attn_cfg", SamplerSpec(**heun)),
        Change(f"+ guidance {guidance:g}", "unet_attn_cfg", SamplerSpec(**heun, guidance=guidance)),
    ]


def _memo_path(name: str, profile: runtime.Profile, *, folder: str = "memo") -> Path:
    """Where :func:`_memo` stores ``name``: ``results[/<profile>]/<folder>/<name>.json``."""
    return runtime.output_dir("results", profile) / folder / f"{name}.json"


def _memo(name: str, key: dict, compute, profile: runtime.Profile, *, folder: str = "memo"):
    """``compute()`` once per key, stored in ``results[/<profile>]/<folder>/<name>.json``. Like
    a score (``scoring.score``), a stored value is reused only where this checkout's stamp says
    it was computed here (or the profile's results are kept): a fresh clone computes it again."""
    path = _memo_path(name, profile, folder=folder)
    stamp = runtime.stamps_dir() / f"{profile.name}_{folder.replace('/', '_')}_{name}.json"
    if path.exists() and not runtime.rescore() and \
            (stamp.exists() or runtime.reuse_committed(profile)):
        try:
            stored = json.loads(path.read_text())
            stamped = json.loads(stamp.read_text()) if stamp.exists() else key
            if stored.get("key") == key and (stamped == key or runtime.reuse_committed(profile)):
                return stored["value"]
        except json.JSONDecodeError:
            pass  # truncated by an interrupted run: compute again
    value = compute()
    blob = {**provenance(), "key": key, "value": value, "profile": profile.name}
    atomic_write(path, json.dumps(blob, indent=2, sort_keys=True, default=float) + "\n")
    atomic_write(stamp, json.dumps(key, sort_keys=True, default=float))
    return value


def first_losses(preset: config.Preset, *, steps: int, device=None, amp: bool | None = None) -> list[float]:
    """Per-step training losses of a fresh model (no checkpoint): how a run starts."""
    from diffnb import data, training

    dev = runtime.device(device)
    amp = runtime.default_amp(dev) if amp is None else amp
    st = training.make_state(preset, dev)
    losses = []
    training.train_epoch(st, preset, data.train_valid_split()[0].to(dev), max_steps=steps,
                         step_fn=training.TrainStep(st, preset, amp=amp), on_step=losses.append)
    return losses


def zero_init_losses(preset_name: str = "condbn_1", *, profile: runtime.Profile,
                     device=None) -> dict[bool, list[float]]:
    """Per-step losses of the first epoch of ``preset_name``, zero-init on and off (slide 6)."""
    from diffnb import training

    preset = config.scaled(config.get_preset(preset_name), profile)
    steps = training.steps_per_epoch(preset)

    key = {"preset": config.run_key(preset), "steps": steps}
    # each arm is an epoch on a CPU: kept in partial/ until both are done, so a run cut after
    # the first arm (or another machine) goes on with the second
    arms = "partial/s06_zero_init_first_epoch"

    def arm(zero: bool) -> list[float]:
        run = replace(preset, model=replace(preset.model, zero_init=zero))
        return _memo(f"zero_init={zero}", {**key, "zero_init": zero},
                     lambda: first_losses(run, steps=steps, device=device), profile, folder=arms)
    stored = _memo("s06_zero_init_first_epoch", key,
                   lambda: {str(zero): arm(zero) for zero in (True, False)}, profile)
    kept = [_memo_path(f"zero_init={zero}", profile, folder=arms) for zero in (True, False)]
    for path in kept:
        path.unlink(missing_ok=True)
    if kept[0].parent.exists() and not any(kept[0].parent.iterdir()):
        kept[0].parent.rmdir()
    return {k == "True": values for k, values in stored.items()}


def floor_curve(*, ns=None, profile: runtime.Profile, seed: int = SEED):
    """Real-vs-real FID of n vs n training images for each n of ``ns`` (default: the profile's
    ``floor_ns``), as a DataFrame; memoised per ``ns`` and seed."""
    import pandas as pd

    from diffnb.evaluation import scoring

    ns = [int(n) for n in (profile.floor_ns if ns is None else ns)]
    rows = _memo("s08_floor_vs_n", {"ns": ns, "seed": seed},
                 lambda: scoring.floor_curve(ns, seed=seed).to_dict("records"), profile)
    return pd.DataFrame(rows)


def class0_bug(trained, *, profile: runtime.Profile, seed: int = SEED) -> dict:
    """FID of T-shirt/top samples vs real T-shirts (report protocol's n): sampled as class 0,
    and sampled the report's way (``if target:`` is false for 0: no class)."""
    from diffnb import fid
    from diffnb.evaluation.sources import SamplerSpec, SampleSource

    n = profile.fid_report_per_class

    def compute():
        # the report protocol's sampler (scoring.score's default): "as class 0" is the very
        # stream it draws for class 0 (seed + 0), so its features come from the feature cache
        src = SampleSource(trained.denoiser, SamplerSpec().resolved(profile))
        hows = (("as class 0", 0), ("report's if target: (no class)", None))
        src.plan([(label, n, seed) for _, label in hows])
        real = fid.real_features("train", n=n, label=0, seed=seed)
        out = {how: fid.fid_from_features(src.features(label, n, seed), real)
               for how, label in hows}
        return {"n": n, "fid": out, "preset": trained.preset.name}
    key = {"preset": trained.preset.name, "run_key": config.run_key(trained.preset), "n": n,
           "seed": seed, "steps": profile.sampler_steps}
    return _memo("s09_class0_bug", key, compute, profile)


def run(name: str, ctx) -> dict:
    """The run queue's study stages (``ctx``: a ``pipeline.Context``)."""
    from diffnb.evaluation import scoring

    p = ctx.profile
    if name == "ablation":
        changes = ablation_changes(profile=p)
        trained = {c.preset: ctx.trained(c.preset) for c in changes}
        return {"FID": scoring.ablation(changes, trained, seed=ctx.seed)["FID"].tolist()}
    if name == "best_per_class":
        best = ablation_changes(profile=p)[-1]
        s = scoring.best_change(ctx.trained(best.preset), best, seed=ctx.seed, profile=p)
        return {"average": s["report"]["average"], "standard": s["standard"]["pooled"]}
    if name == "fid_vs_nfe":
        table = scoring.nfe_study(ctx.trained("unet_attn"), p.nfe_steps, seed=ctx.seed)
        return {"FID": table["FID"].tolist()}
    if name == "class0_bug":
        return class0_bug(ctx.trained("class_2"), profile=p, seed=ctx.seed)["fid"]
    if name == "zero_init":
        losses = zero_init_losses(profile=p, device=ctx.device)
        return {f"zero_init={k}": sum(v) / len(v) for k, v in losses.items()}
    if name == "floor_curve":
        return {"fid": floor_curve(profile=p, seed=ctx.seed)["real_vs_real_fid"].tolist()}
    raise ValueError(f"unknown study {name!r}")


# ---- work counts for the queue's FLOP estimates ---------------------------------------------

def _scoring_samples(preset_name: str, profile: runtime.Profile, protocols) -> int:
    cc = config.get_preset(preset_name).model.class_conditional
    n_report = 10 * profile.fid_report_per_class
    n_standard = max(profile.fid_standard_n, 10 * profile.fid_standard_per_class) if cc \
        else profile.fid_standard_n
    return (n_report if "report" in protocols else 0) + (n_standard if "standard" in protocols
                                                         else 0)


def sampling_work(stage, profile: runtime.Profile) -> list[tuple[int, int, str]]:
    """(samples, network evaluations each, preset) of a stage; training-like work as NFE 3."""
    steps, name = profile.sampler_steps, stage.name
    from diffnb.evaluation.scoring import report_protocols, study_profile

    if stage.kind == "fid" and len(stage.presets) > 1:   # the best's standard protocol: which
        return [(_scoring_samples(stage.presets[-1], profile, ("standard",)), steps,  # one is
                 stage.presets[-1])]                    # not known yet; the last is the largest
    if stage.kind == "fid":
        return [(_scoring_samples(stage.presets[0], profile, report_protocols(profile)), steps,
                 stage.presets[0])]
    study = study_profile(profile)
    if name == "study:ablation":
        return [(_scoring_samples(c.preset, study, ("standard",)),
                 sampling.nfe(c.spec.steps or steps, c.spec.solver) * (2 if c.spec.guidance != 1
                                                                       else 1), c.preset)
                for c in ablation_changes(profile=profile)]
    if name == "study:best_per_class":   # scoring.best_change
        full = study_profile(profile) is not profile
        return [(_scoring_samples("unet_attn_cfg", profile, ("report", "standard") if full
                                  else ("report",)), 2 * sampling.nfe(profile.heun_steps, "heun"),
                 "unet_attn_cfg")]
    if name == "study:fid_vs_nfe":
        return [(_scoring_samples("unet_attn", study, ("standard",)), sampling.nfe(k, solver),
                 "unet_attn") for solver, ks in profile.nfe_steps.items() for k in ks]
    if name == "study:class0_bug":
        return [(2 * profile.fid_report_per_class, steps, "class_2")]
    if name == "study:zero_init":
        from diffnb import training

        p = config.scaled(config.get_preset("condbn_1"), profile)
        return [(2 * training.steps_per_epoch(p) * p.train.batch_size, 3, "condbn_1")]
    return []


def inception_images(stage, profile: runtime.Profile) -> int:
    """Images through Inception in a stage (real reference images are cached after the first)."""
    if stage.name == "study:floor_curve":
        return 2 * max(profile.floor_ns)
    if stage.kind == "fid" or stage.name in ("study:ablation", "study:fid_vs_nfe",
                                              "study:best_per_class", "study:class0_bug"):
        return sum(s for s, _, _ in sampling_work(stage, profile))
    return 0


def train_speed(preset: str, ctx) -> dict:
    """``benchmarks/train_speed.py`` on the queue's device, sized by the profile (the run queue's
    bench stage); its JSON goes to ``results[/<profile>]/benchmarks/`` (benchmarks/README.md)."""
    import os
    import subprocess
    import sys

    out = runtime.output_dir("results", ctx.profile) / "benchmarks" / "train_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(runtime.project_root() / "benchmarks" / "train_speed.py"),
           "--preset", preset, "--steps", str(ctx.profile.bench_steps),
           "--batch", str(ctx.profile.bench_batch), "--json", str(out)]
    path = os.pathsep.join(filter(None, [str(runtime.project_root()),       # diffnb, installed
                                         os.environ.get("PYTHONPATH")]))   # or not
    subprocess.run(cmd, check=True, env=dict(os.environ, DIFFNB_DEVICE=str(ctx.device),
                                             PYTHONPATH=path))
    r = json.loads(out.read_text())
    return {k: r.get(k) for k in ("device", "naive_img_s", "diffnb_img_s", "ratio", "diffnb_tflops",
                                  "mfu", "diffnb_img_s_without_autotune")}
