"""Training images/s with N processes (torchrun, DistributedDataParallel) against 1 process: the
same preset, global batch, draws and number of steps, each run started by this script.

baseline  ``torchrun --nproc_per_node=1``: one process, torch's default threads (all cores), or
          ``--baseline-threads``: on a CPU shared with other work, two threads can be several
          times slower than one (each waits for the other to be scheduled), so measure both;
ddp       ``torchrun --nproc_per_node=N``: gloo on the CPU, one thread per process (torchrun's
          default); nccl on CUDA, one GPU per process.

Each run times ``--steps`` optimizer steps of the trainer's own pieces (``training.make_state``,
``training.TrainStep``, ``epochs.batches``) after ``--warmup`` steps, between barriers; images/s
counts the global batch. Both runs train the same model on the same data, so their final weights
agree to float tolerance: the script prints the largest difference (tests/test_benchmarks.py).

    python benchmarks/ddp_speed.py                 # CPU: unet at 32 px, batch 32, 2 processes
    python benchmarks/ddp_speed.py --nproc 8       # CUDA: one process per GPU, batch 256
    python benchmarks/ddp_speed.py --smoke         # a tiny UNet, 2 steps (CI)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from diffnb import data, runtime, training
from diffnb.results import atomic_path, atomic_write
from diffnb.training import __main__ as cli
from diffnb.training import distributed

SMOKE = ["model.nb_channels=16", "model.num_blocks=1", "model.cond_channels=16",
         "model.channel_mult=(1, 2)"]


def worker(args) -> None:
    """One process of a run (under torchrun): train, then rank 0 writes its speed and weights."""
    dev = runtime.device()
    w = distributed.init(dev)
    preset = cli.preset_from(args.preset, profile=runtime.PROFILES["full"],
                             sets=[f"train.batch_size={args.batch}", *args.set])
    st = training.make_state(preset, dev)
    step = training.TrainStep(st, preset, amp=runtime.default_amp(dev))
    train = data.train_valid_split()[0].to(dev)
    gen = training.epoch_generator(preset, 0, device=dev)
    it = training.batches(train, preset, generator=gen, class_conditional=st.denoiser.class_conditional)

    def run(n):
        for _ in range(n):
            loss = step(*next(it), generator=gen)
        loss.item()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        distributed.barrier()
    run(args.warmup)
    t0 = time.perf_counter()
    run(args.steps)
    seconds = time.perf_counter() - t0
    if w.main:
        images = args.steps * preset.train.batch_size
        with atomic_path(args.out + ".pt") as tmp:
            torch.save({k: v.cpu() for k, v in st.denoiser.state_dict().items()}, tmp)
        atomic_write(args.out, json.dumps({
            "processes": w.size, "threads": torch.get_num_threads(), "device": str(dev),
            "images_per_second": images / seconds, "images": images, "seconds": seconds,
            "params": sum(p.numel() for p in st.denoiser.parameters()),
            "model": repr(st.denoiser.net), "data": len(train)}))
    distributed.destroy()


def launch(args, nproc: int, *, out: str, threads: int | None = None) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           __file__, "--worker", "--out", out, "--preset", args.preset, "--batch", str(args.batch),
           "--steps", str(args.steps), "--warmup", str(args.warmup)]
    for s in args.set:
        cmd += ["--set", s]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if run.returncode:
        sys.exit(f"the {nproc}-process run failed:\n{run.stderr[-4000:]}")
    return json.loads(Path(out).read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="unet")
    ap.add_argument("--set", action="append", default=[], help="as python -m diffnb.training --set")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--baseline-threads", type=int, default=None,
                    help="threads of the 1-process run (default: torch's, all cores)")
    ap.add_argument("--batch", type=int, default=None, help="global batch (default 256 CUDA, 32 CPU)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--smoke", action="store_true", help="a tiny UNet, 2 steps (CI)")
    ap.add_argument("--json", default=None, help="also write the result to this file")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    cuda = runtime.device().type == "cuda"
    args.batch = args.batch or (16 if args.smoke else 256 if cuda else 32)
    args.steps = args.steps or (2 if args.smoke else 50 if cuda else 8)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 10 if cuda else 2)
    args.set = (SMOKE if args.smoke else []) + args.set
    if args.worker:
        return worker(args)
    distributed.check_batch(args.batch, args.nproc)
    with tempfile.TemporaryDirectory() as tmp:
        base = launch(args, 1, out=f"{tmp}/run1.json", threads=args.baseline_threads)
        ddp = launch(args, args.nproc, out=f"{tmp}/run{args.nproc}.json")
        a, b = (torch.load(f"{tmp}/run{n}.json.pt", weights_only=True) for n in (1, args.nproc))
    difference = max(float((a[k].float() - v.float()).abs().max()) for k, v in b.items())
    ratio = ddp["images_per_second"] / base["images_per_second"]
    result = {"device": runtime.device_name(), "preset": args.preset, "set": args.set,
              "global_batch": args.batch, "steps": args.steps, "warmup": args.warmup,
              "baseline": base, "ddp": ddp, "ratio": round(ratio, 3),
              "max_weight_difference": difference, "load_average": os.getloadavg()}
    print(f"device {result['device']}; preset {args.preset} {' '.join(args.set)}; global batch "
          f"{args.batch}, {args.steps} timed steps")
    for name, r in (("1 process ", base), (f"{args.nproc} processes", ddp)):
        print(f"{name}: {r['images_per_second']:8.1f} img/s  ({r['threads']} thread(s) each)")
    print(f"speed-up {args.nproc} processes / 1: {ratio:.2f}x; largest weight difference "
          f"{difference:.2e}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        atomic_write(args.json, json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
