"""Sampling images/s (``sampling.sample``) of the network in NCHW, the baseline, against
channels_last (how trained models sample: ``training.load_final`` builds them as the trainer does)
and channels_last at twice the batch. Same process, same network weights, same seeds; the timed
blocks alternate, so that a load that comes and goes slows all alike. Beside each rate: its ratio
to the baseline, and the largest difference of its samples from the baseline's (a variant that
changes the samples changes the scores made with them).

    python benchmarks/sample_speed.py --preset class_2          # the report's largest ResNet
    python benchmarks/sample_speed.py --preset unet_attn_cfg --solver heun
    python benchmarks/sample_speed.py --smoke                   # a few images, for CI
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from diffnb import config, runtime, training
from diffnb.diffusion import sampling
from diffnb.results import atomic_write


def variants(batch: int) -> dict[str, dict]:
    """name -> (memory format of the network, sampler batch size); the first is the baseline."""
    return {"NCHW": dict(channels_last=False, batch_size=batch),
            "channels_last (as trained models run)": dict(channels_last=True, batch_size=batch),
            f"channels_last, batch {2 * batch}": dict(channels_last=True, batch_size=2 * batch)}


def compare(preset, dev, *, images: int, steps: int, rounds: int, solver: str = "euler",
            batch: int | None = None) -> dict:
    """Images/s of each variant over ``rounds`` alternating blocks of ``images`` samples."""
    batch = batch or sampling.default_batch_size(dev)
    runtime.seed_everything(0)
    den = training.make_denoiser(preset, device=dev)
    seeds = list(range(images))
    labels = [s % 10 for s in seeds] if den.class_conditional else None
    kinds = variants(batch)
    seconds, samples = dict.fromkeys(kinds, 0.0), {}

    def run(name: str) -> float:
        v = kinds[name]
        den.to(memory_format=torch.channels_last if v["channels_last"] else
               torch.contiguous_format)
        t0 = time.perf_counter()
        x = sampling.sample(den, seeds=seeds, labels=labels, steps=steps, solver=solver,
                            batch_size=v["batch_size"])
        samples.setdefault(name, x)
        return time.perf_counter() - t0

    for name in kinds:        # warm-up: oneDNN picks and caches its kernels per shape
        run(name)
    for _ in range(rounds):
        for name in kinds:
            seconds[name] += run(name)
    base = next(iter(kinds))
    rate = {k: rounds * images / s for k, s in seconds.items()}
    amp = runtime.default_amp(dev)
    return {"device": runtime.device_name(), "torch": torch.__version__,
            "commit": runtime.code_commit(), "preset": preset.name, "model": preset.short,
            "precision": "bf16" if amp else "fp32", "threads": torch.get_num_threads(),
            "solver": solver, "steps": steps, "images_per_round": images, "rounds": rounds,
            "variants": {k: {**kinds[k], "img_s": round(rate[k], 3),
                             "ratio": round(rate[k] / rate[base], 3),
                             "largest_difference": float((samples[k] - samples[base]).abs().max())}
                         for k in kinds}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="class_2")
    ap.add_argument("--solver", default="euler", choices=sampling.SOLVERS)
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default 5)")
    ap.add_argument("--images", type=int, default=None, help="images per timed block")
    ap.add_argument("--rounds", type=int, default=3, help="timed blocks of each, alternating")
    ap.add_argument("--smoke", action="store_true", help="a few images only (CI)")
    ap.add_argument("--json", default=None, help="also write the result to this file")
    args = ap.parse_args()
    dev = runtime.device()
    preset = config.get_preset(args.preset)
    images = args.images or (16 if args.smoke else 128)
    r = compare(preset, dev, images=images, steps=args.steps or (2 if args.smoke else 5),
                rounds=1 if args.smoke else args.rounds, solver=args.solver,
                batch=8 if args.smoke else None)
    print(f"device {r['device']}; preset {preset.name} ({preset.short}), {r['precision']}, "
          f"{r['threads']} thread(s), {r['solver']} {r['steps']} steps, {images} images a block")
    for name, v in r["variants"].items():
        print(f"{name:40s} {v['img_s']:8.2f} img/s  {v['ratio']:.2f}x  "
              f"largest difference of the samples {v['largest_difference']:.2e}")
    if args.json:
        atomic_write(Path(args.json), json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
