"""Training images/s: a naive loop vs diffnb's trainer, same process, same device, same model.

naive   the report's way: torchvision transforms per image through a DataLoader, fp32,
        contiguous NCHW, Adam, batch 32, ``loss.item()`` every step.
diffnb  the whole data set on the device as uint8, bf16 autocast, channels_last, fused Adam and
        cuDNN's autotuner on CUDA (there also measured without the autotuner: before/after),
        optional ``torch.compile`` (compile time measured separately), a larger batch.

Prints images/s of each, their ratio, the achieved TFLOP/s (convolutions and linears counted
analytically, training = 3x forward) and the fraction of the card's bf16 dense peak.

    python benchmarks/train_speed.py                 # GPU: class_2 (128/8/64); CPU: smaller
    python benchmarks/train_speed.py --smoke         # a few steps, for CI
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from diffnb import config, data, models, runtime, training
from diffnb.diffusion.precond import Denoiser
from diffnb.results import atomic_write
from diffnb.run import flops as count

# bf16 dense matrix rate: H100/H200 measured (8192^3 matmul, ~790 TFLOP/s; spec 989), others spec
PEAK_BF16_TFLOPS = {"H100": 790.0, "H200": 790.0, "A100": 312.0, "L4": 121.0}


@dataclass
class Loop:
    """One timed loop: its speed and what it trained, so that the two loops can be checked to
    train the same model on the same data (tests/test_benchmarks.py)."""

    images_per_second: float
    images: int          # images trained on in the timed steps
    params: int          # parameters of the model it trained
    model: str           # repr of that model's network (the architecture)
    data: int            # size of the split it drew its batches from


def _loop(den: torch.nn.Module, images_per_second: float, images: int,
          split: data.Images) -> Loop:
    return Loop(images_per_second, images, sum(p.numel() for p in den.parameters()),
                repr(den.net), len(split))


class TransformDataset(torch.utils.data.Dataset):
    """Per-item PIL + torchvision transforms, as the report's starter code did."""

    def __init__(self, images: data.Images):
        from torchvision import transforms

        self.images, self.labels = images.images.numpy(), images.labels
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Pad(2),
                                             transforms.Normalize((0.5,), (0.5,))])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def naive_precision(dev) -> str:
    """What the naive loop's fp32 is on ``dev``: on CUDA, PyTorch's default lets cuDNN run fp32
    convolutions in TF32 (the report's loop, run as is, gets that too)."""
    if dev.type != "cuda":
        return "fp32"
    conv = getattr(torch.backends.cudnn, "conv", None)
    tf32 = conv.fp32_precision == "tf32" if hasattr(conv, "fp32_precision") \
        else torch.backends.cudnn.allow_tf32
    return "fp32 (TF32 convolutions: PyTorch's default on CUDA)" if tf32 else "fp32"


def naive_images_per_second(preset, dev, *, steps: int, warmup: int) -> Loop:
    gen = runtime.seed_everything(0)  # weight init and the loader's shuffle; gen: label dropout
    den = Denoiser(models.build(preset.model), sigma_data=data.sigma_data()).to(dev)
    opt = torch.optim.Adam(den.parameters(), lr=preset.train.lr)
    split = data.train_valid_split()[0]
    loader = torch.utils.data.DataLoader(TransformDataset(split),
                                         batch_size=32, shuffle=True, num_workers=0)
    it = iter(loader)
    t0 = None
    for i in range(warmup + steps):
        if i == warmup:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        y, labels = next(it)
        labels = training.drop_labels(labels, p=preset.train.label_dropout, generator=gen)
        y, labels = y.to(dev), labels.to(dev)
        loss = den.loss(y, labels if den.class_conditional else None)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()
    return _loop(den, steps * 32 / (time.perf_counter() - t0), steps * 32, split)


def diffnb_images_per_second(preset, dev, *, steps: int, warmup: int,
                             compile: bool) -> tuple[Loop, float]:
    """The trainer's own pieces: ``training.batches`` (label dropout included) and ``TrainStep``."""
    st = training.make_state(preset, dev)
    step = training.TrainStep(st, preset, amp=runtime.default_amp(dev), compile=compile)
    train = data.train_valid_split()[0].to(dev)
    cc = st.denoiser.class_conditional

    def run(n, epoch):
        gen = training.epoch_generator(preset, epoch, device=dev)
        done = 0
        while done < n:
            for y, labels in training.batches(train, preset, generator=gen, class_conditional=cc):
                step(y, labels, generator=gen)
                done += 1
                if done == n:
                    break
        if dev.type == "cuda":
            torch.cuda.synchronize()
    t0 = time.perf_counter()
    run(warmup, 0)
    warm_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    run(steps, 1)
    images = steps * preset.train.batch_size
    return _loop(st.denoiser, images / (time.perf_counter() - t0), images, train), warm_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=None, help="default: class_2 on CUDA, base_1 elsewhere")
    ap.add_argument("--batch", type=int, default=None, help="diffnb's batch (default 512 CUDA, 128 CPU)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--compile", action="store_true", help="torch.compile the diffnb step")
    ap.add_argument("--smoke", action="store_true", help="a few steps only (CI)")
    ap.add_argument("--json", default=None, help="also write the result to this file")
    args = ap.parse_args()

    dev = runtime.device()
    cuda = dev.type == "cuda"
    name = args.preset or ("class_2" if cuda else "base_1")
    preset = config.get_preset(name)
    steps = args.steps or (2 if args.smoke else (200 if cuda else 12))
    warmup = 1 if args.smoke else (20 if cuda else 3)
    batch = args.batch or (32 if args.smoke else (512 if cuda else 128))
    if batch % 32:
        ap.error(f"--batch {batch}: use a multiple of 32 (the naive loop's batch), so that both "
                 "loops train on the same number of images")
    fast = replace(preset, train=replace(preset.train, batch_size=batch))

    flops = 3 * count.forward_flops(models.build(preset.model),
                                    labels=preset.model.class_conditional)
    # The same number of images through both loops: the naive one in batches of 32, without
    # cuDNN's autotuner (PyTorch's default); on CUDA the diffnb loop without it, then with it.
    runtime.autotune(dev, on=False)
    naive_loop = naive_images_per_second(preset, dev, steps=steps * batch // 32, warmup=warmup)
    untuned = None
    if cuda:
        untuned, _ = diffnb_images_per_second(fast, dev, steps=steps, warmup=warmup,
                                              compile=args.compile)
        runtime.autotune(dev)
    ours_loop, warm_seconds = diffnb_images_per_second(fast, dev, steps=steps, warmup=warmup,
                                                       compile=args.compile)
    naive, ours = naive_loop.images_per_second, ours_loop.images_per_second
    card, precision = runtime.device_name(), "bf16" if runtime.default_amp(dev) else "fp32"
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in card), None)
    tflops = ours * flops / 1e12
    result = {"device": card, "torch": torch.__version__, "commit": runtime.code_commit(),
              "preset": name, "model": preset.short, "steps": steps,
              "naive_batch": 32, "diffnb_batch": batch, "compile": args.compile,
              "naive_img_s": round(naive, 1), "diffnb_img_s": round(ours, 1),
              "ratio": round(ours / naive, 2), "train_gflop_per_image": round(flops / 1e9, 3),
              "diffnb_precision": precision, "naive_precision": naive_precision(dev),
              "diffnb_tflops": round(tflops, 3), "naive_tflops": round(naive * flops / 1e12, 3),
              "mfu": round(tflops / peak, 4) if peak else None,
              "warmup_seconds_incl_compile": round(warm_seconds, 1),
              "diffnb_img_s_without_autotune":
                  None if untuned is None else round(untuned.images_per_second, 1),
              "loops": {"naive": asdict(naive_loop), "diffnb": asdict(ours_loop)}}
    print(f"device {card}; preset {name} ({preset.short}); {flops / 1e9:.2f} GFLOP per training image")
    print(f"naive  (DataLoader, {result['naive_precision']}, batch 32): {naive:9.1f} img/s")
    print(f"diffnb (on-device, {precision}, CL, batch {batch}{', compiled' if args.compile else ''}): "
          f"{ours:9.1f} img/s  ({tflops:.3f} TFLOP/s"
          + (f", MFU {tflops / peak:.1%} of {peak:.0f} bf16 peak)" if peak else ", no peak known for this device)"))
    print(f"ratio diffnb / naive: {ours / naive:.2f}x")
    if untuned is not None:
        print(f"diffnb without cuDNN's autotuner: {untuned.images_per_second:9.1f} img/s "
              f"(with it: {ours / untuned.images_per_second:.2f}x)")
    if args.json:
        atomic_write(Path(args.json), json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "loops"}))


if __name__ == "__main__":
    main()
