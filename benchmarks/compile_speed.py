"""Training images/s with and without ``torch.compile``: the trainer's ``TrainStep``, same
process, same device, same preset and batches.

The two steps train two copies of the same freshly initialised model on the same batches. Their
timed blocks alternate (eager, compiled, eager, ...), so that a load that comes and goes on a
shared machine slows both alike; the ratio is what the benchmark reports. The compile time (the
first compiled steps) is measured apart.

    python benchmarks/compile_speed.py --preset class_2           # the report's largest ResNet
    python benchmarks/compile_speed.py --preset unet_attn --rounds 2
    python benchmarks/compile_speed.py --smoke                    # a few steps, for CI
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from diffnb import config, data, runtime, training
from diffnb.results import atomic_write


def timed_steps(step, batches, *, dev) -> tuple[float, torch.Tensor]:
    """Seconds for ``step`` over ``batches`` ((y, labels, the draw generator's state after y)),
    and the first batch's loss."""
    gen = torch.Generator(device=dev)
    t0 = time.perf_counter()
    losses = [step(y, labels, generator=gen.set_state(state)) for y, labels, state in batches]
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter() - t0, losses[0]


def compare(preset, dev, *, steps: int, rounds: int, warmup: int) -> dict:
    """Images/s of the eager and the compiled step, alternating ``rounds`` blocks of ``steps``."""
    amp = runtime.default_amp(dev)
    train = data.train_valid_split()[0].to(dev)
    eager_st, compiled_st = training.make_state(preset, dev), training.make_state(preset, dev)
    eager = training.TrainStep(eager_st, preset, amp=amp)
    compiled = training.TrainStep(compiled_st, preset, amp=amp, compile=True)
    cc = eager_st.denoiser.class_conditional

    def block(epoch: int, n: int) -> list:
        """n batches of the trainer's own draw, each with its own generator state for both."""
        gen = training.epoch_generator(preset, epoch, device=dev)
        out = []
        for y, labels in training.batches(train, preset, generator=gen, class_conditional=cc):
            out.append((y, labels, gen.get_state()))
            if len(out) == n:
                return out
        return out

    first = block(0, warmup)
    _, eager_loss = timed_steps(eager, first, dev=dev)
    compile_seconds, compiled_loss = timed_steps(compiled, first, dev=dev)  # compiles first
    seconds = {"eager": 0.0, "compiled": 0.0}
    for r in range(rounds):
        batches = block(1 + r, steps)
        for name, step in (("eager", eager), ("compiled", compiled)):
            seconds[name] += timed_steps(step, batches, dev=dev)[0]
    images = rounds * steps * preset.train.batch_size
    eager_rate, compiled_rate = images / seconds["eager"], images / seconds["compiled"]
    return {"device": runtime.device_name(), "torch": torch.__version__,
            "commit": runtime.code_commit(), "preset": preset.name, "model": preset.short,
            "batch": preset.train.batch_size, "precision": "bf16" if amp else "fp32",
            "threads": torch.get_num_threads(), "steps_per_round": steps, "rounds": rounds,
            "eager_img_s": round(eager_rate, 2), "compiled_img_s": round(compiled_rate, 2),
            "ratio": round(compiled_rate / eager_rate, 3),
            "compile_seconds_incl_warmup": round(compile_seconds, 1),
            # the same weights, batch and noise: the two first losses differ by rounding only
            "first_loss": {"eager": float(eager_loss), "compiled": float(compiled_loss)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="class_2")
    ap.add_argument("--steps", type=int, default=None, help="steps per timed block")
    ap.add_argument("--rounds", type=int, default=3, help="timed blocks of each, alternating")
    ap.add_argument("--smoke", action="store_true", help="a few steps only (CI)")
    ap.add_argument("--json", default=None, help="also write the result to this file")
    args = ap.parse_args()
    dev = runtime.device()
    preset = config.get_preset(args.preset)
    steps = args.steps or (1 if args.smoke else (100 if dev.type == "cuda" else 20))
    warmup = 1 if args.smoke else 3
    result = compare(preset, dev, steps=steps, rounds=1 if args.smoke else args.rounds,
                     warmup=warmup)
    print(f"device {result['device']}; preset {preset.name} ({preset.short}), batch "
          f"{result['batch']}, {result['precision']}, {result['threads']} thread(s)")
    print(f"eager    {result['eager_img_s']:9.2f} img/s")
    print(f"compiled {result['compiled_img_s']:9.2f} img/s  (compiling and {warmup} "
          f"warm-up steps: {result['compile_seconds_incl_warmup']} s)")
    print(f"ratio compiled / eager: {result['ratio']:.2f}x")
    if args.json:
        atomic_write(Path(args.json), json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
