"""Training (slide 4): the whole data set on the device, Adam, optional EMA and LR schedule,
train and validation loss per epoch, atomic checkpoints every epoch, automatic resume.

Every epoch draws its batches, noise levels and noise from a generator seeded by
(seed, epoch), so a run resumed after an interruption is identical to one that never stopped.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from diffnb import config, data, models, runtime
from diffnb.config import Preset
from diffnb.conditioning import NULL_CLASS
from diffnb.precond import Denoiser

VALID_BATCH = 256


class CheckpointError(RuntimeError):
    pass


class NonFiniteLossError(FloatingPointError):
    pass


@dataclass
class Trained:
    """A trained preset: ``denoiser`` is what to sample with (the EMA weights when enabled)."""

    preset: Preset
    denoiser: Denoiser
    raw: Denoiser
    history: dict
    path: Path | None = None
    resumed_from: int = 0
    train_seconds: float = 0.0


@dataclass
class _State:
    denoiser: Denoiser
    ema: Denoiser | None
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    epoch: int = 0
    history: dict = field(default_factory=lambda: {"train_loss": [], "valid_loss": [],
                                                   "epoch_seconds": [], "images_per_second": []})


def make_denoiser(preset: Preset, *, device=None, sigma_data: float | None = None) -> Denoiser:
    torch.manual_seed(preset.train.seed)  # weight init
    net = models.build(preset.model)
    sd = data.sigma_data() if sigma_data is None else sigma_data
    return Denoiser(net, sigma_data=sd).to(device or runtime.device())


def steps_per_epoch(preset: Preset) -> int:
    n = preset.train.epoch_images or (data.COUNTS["train"] - data.VALID_SIZE)
    return max(1, n // preset.train.batch_size)


def _lr_lambda(preset: Preset):
    t = preset.train
    total = t.epochs * steps_per_epoch(preset)
    warmup = round(t.warmup_fraction * total)

    def factor(step: int) -> float:
        if t.lr_schedule == "constant":
            return 1.0
        if step < warmup:  # linear warm-up, then cosine to 0
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def _new_state(preset: Preset, device) -> _State:
    den = make_denoiser(preset, device=device)
    den.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(den).requires_grad_(False) if preset.train.ema_decay else None
    fused = device.type == "cuda"
    opt = torch.optim.Adam(den.parameters(), lr=preset.train.lr, fused=fused)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(preset))
    return _State(den, ema, opt, sched)


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    ema_params, params = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def _autocast(device, amp: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()


def _epoch_generator(preset: Preset, epoch: int, device) -> torch.Generator:
    return torch.Generator(device).manual_seed(preset.train.seed * 100_003 + epoch)


def _labels_for(den: Denoiser, labels: torch.Tensor, preset: Preset, gen) -> torch.Tensor | None:
    if not den.class_conditional:
        return None
    p = preset.train.label_dropout
    if p > 0:  # classifier-free guidance training: drop the label with probability p
        drop = torch.rand(labels.shape, generator=gen, device=gen.device) < p
        labels = torch.where(drop.to(labels.device), torch.full_like(labels, NULL_CLASS), labels)
    return labels


@torch.no_grad()
def validation_loss(den: Denoiser, valid: data.Images, preset: Preset, *, amp: bool) -> float:
    """Mean loss on the first ``valid_images`` validation images, with fixed noise (comparable
    from epoch to epoch)."""
    dev = valid.images.device
    n = min(len(valid), preset.train.valid_images or len(valid))
    gen = torch.Generator(dev).manual_seed(10_007)
    was_training = den.training
    den.eval()
    total = 0.0
    for start in range(0, n, VALID_BATCH):
        idx = torch.arange(start, min(n, start + VALID_BATCH), device=dev)
        y, labels = data.sample_batch(valid, idx)
        with _autocast(dev, amp):
            loss = den.loss(y.contiguous(memory_format=torch.channels_last),
                            labels if den.class_conditional else None,
                            P_mean=preset.train.P_mean, P_std=preset.train.P_std, generator=gen)
        total += loss.item() * len(idx)
    den.train(was_training)
    return total / n


def _train_epoch(st: _State, preset: Preset, train: data.Images, *, amp: bool, step_fn,
                 progress: bool) -> float:
    from tqdm.auto import tqdm

    dev = train.images.device
    gen = _epoch_generator(preset, st.epoch, dev)
    steps, bs = steps_per_epoch(preset), preset.train.batch_size
    perm = torch.randperm(len(train), generator=gen, device=dev)
    st.denoiser.train()
    running, seen = torch.zeros((), device=dev), 0
    bar = tqdm(range(steps), desc=f"{preset.name} epoch {st.epoch + 1}/{preset.train.epochs}",
               disable=not progress, leave=False, mininterval=1.0)
    for i in bar:
        y, labels = data.sample_batch(train, perm[i * bs:(i + 1) * bs])
        labels = _labels_for(st.denoiser, labels, preset, gen)
        loss = step_fn(y.contiguous(memory_format=torch.channels_last), labels, gen)
        running += loss.detach()
        seen += 1
        if st.ema is not None:  # ramped decay: a short run's EMA is not stuck at the init
            step = st.sched.last_epoch
            _ema_update(st.ema, st.denoiser, min(preset.train.ema_decay, (1 + step) / (10 + step)))
        if i % 25 == 24 or i == steps - 1:
            mean = running.item() / seen
            if not math.isfinite(mean):
                raise NonFiniteLossError(
                    f"{preset.name}: the training loss became {mean} in epoch {st.epoch + 1}, "
                    f"step {i + 1}. Lower the learning rate (now {preset.train.lr}) or check the "
                    "data; the last finished epoch's checkpoint is kept.")
            bar.set_postfix(loss=f"{mean:.4f}")
    return running.item() / seen


def first_losses(preset: Preset, *, steps: int, device=None, amp: bool | None = None) -> list[float]:
    """Per-step training losses of a fresh model (no checkpoint): how a run starts."""
    dev = torch.device(device) if device is not None else runtime.device()
    amp = runtime.default_amp(dev) if amp is None else amp
    st = _new_state(preset, dev)
    step = _make_step(st, preset, amp=amp, compile=False)
    train_split = data.train_valid_split()[0].to(dev)
    gen = _epoch_generator(preset, 0, dev)
    bs = preset.train.batch_size
    perm = torch.randperm(len(train_split), generator=gen, device=dev)
    losses = []
    for i in range(steps):
        y, labels = data.sample_batch(train_split, perm[i * bs:(i + 1) * bs])
        labels = _labels_for(st.denoiser, labels, preset, gen)
        losses.append(step(y.contiguous(memory_format=torch.channels_last), labels, gen).item())
    return losses


def _make_step(st: _State, preset: Preset, *, amp: bool, compile: bool):
    den, opt, sched, t = st.denoiser, st.opt, st.sched, preset.train
    loss_fn = den.loss
    if compile:
        loss_fn = torch.compile(den.loss)

    def step(y, labels, gen):
        with _autocast(y.device, amp):
            loss = loss_fn(y, labels, P_mean=t.P_mean, P_std=t.P_std, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return loss
    return step


# ---- checkpoints -------------------------------------------------------------------------

def checkpoint_dir(preset: Preset) -> Path:
    root = Path(os.environ.get("DIFFNB_CHECKPOINTS", runtime.project_root() / "checkpoints"))
    return root / runtime.profile().name / f"{preset.model.arch}-{config.run_key(preset)}"


def save_checkpoint(st: _State, preset: Preset, path: Path) -> None:
    """Write atomically: a crash mid-write never leaves a truncated checkpoint behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "format": 1,
        "run_key": config.run_key(preset),
        "preset": json.dumps(config.as_dict(preset), default=str),
        "epoch": st.epoch,
        "sigma_data": st.denoiser.sigma_data,
        "model": st.denoiser.state_dict(),
        "ema": st.ema.state_dict() if st.ema is not None else None,
        "optimizer": st.opt.state_dict(),
        "scheduler": st.sched.state_dict(),
        "history": st.history,
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(err).__name__}: "
                              f"{err}). Delete it (rm '{path}') and rerun to train again.") from err
    if not isinstance(blob, dict) or blob.get("format") != 1 or "model" not in blob:
        raise CheckpointError(f"{path} is not a diffnb checkpoint. Delete it and rerun.")
    return blob


def _restore(st: _State, blob: dict, preset: Preset, path: Path, *, rng: bool = True) -> None:
    if blob["run_key"] != config.run_key(preset):
        raise CheckpointError(f"{path} belongs to another configuration "
                              f"(run key {blob['run_key']}, expected {config.run_key(preset)}).")
    st.denoiser.load_state_dict(blob["model"])
    st.denoiser.sigma_data = blob["sigma_data"]
    if st.ema is not None and blob["ema"] is not None:
        st.ema.load_state_dict(blob["ema"])
        st.ema.sigma_data = blob["sigma_data"]
    st.opt.load_state_dict(blob["optimizer"])
    st.sched.load_state_dict(blob["scheduler"])
    st.epoch, st.history = blob["epoch"], blob["history"]
    if rng:
        torch.set_rng_state(blob["rng"]["torch"])


def _latest_start(folder: Path, epochs: int) -> Path | None:
    """The checkpoint to resume from: ``last.pt`` if not past ``epochs``, else the longest
    finished snapshot shorter than ``epochs``."""
    candidates = []
    if (folder / "last.pt").exists():
        candidates.append(folder / "last.pt")
    candidates += sorted(folder.glob("e*.pt"))
    best, best_epoch = None, -1
    for path in candidates:
        epoch = load_checkpoint(path)["epoch"]
        if best_epoch < epoch <= epochs:
            best, best_epoch = path, epoch
    return best


# ---- entry points ------------------------------------------------------------------------

def train(preset: Preset | str, *, device=None, amp: bool | None = None, compile: bool = False,
          progress: bool = True, stop_after: int | None = None) -> Trained:
    """Train ``preset`` (already scaled to a profile) to its epochs, resuming when possible.

    ``stop_after``: stop after that many epochs of this call (to test resuming).
    """
    preset = config.get_preset(preset)
    dev = torch.device(device) if device is not None else runtime.device()
    amp = runtime.default_amp(dev) if amp is None else amp
    folder = checkpoint_dir(preset)
    st = _new_state(preset, dev)
    start = _latest_start(folder, preset.train.epochs) if folder.exists() else None
    if start is not None:
        _restore(st, load_checkpoint(start), preset, start)
    resumed_from = st.epoch
    train_split, valid_split = (s.to(dev) for s in data.train_valid_split())
    step = _make_step(st, preset, amp=amp, compile=compile)
    t0 = time.perf_counter()
    while st.epoch < preset.train.epochs:
        if stop_after is not None and st.epoch - resumed_from >= stop_after:
            break
        e0 = time.perf_counter()
        train_loss = _train_epoch(st, preset, train_split, amp=amp, step_fn=step,
                                  progress=progress)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - e0
        st.epoch += 1
        st.history["train_loss"].append(train_loss)
        st.history["valid_loss"].append(validation_loss(st.denoiser, valid_split, preset, amp=amp))
        st.history["epoch_seconds"].append(seconds)
        st.history["images_per_second"].append(
            steps_per_epoch(preset) * preset.train.batch_size / seconds)
        save_checkpoint(st, preset, folder / "last.pt")
    if st.epoch == preset.train.epochs:
        final = folder / f"e{st.epoch:04d}.pt"
        if not final.exists():
            save_checkpoint(st, preset, final)
    return _trained(st, preset, folder, resumed_from, time.perf_counter() - t0)


def _trained(st: _State, preset: Preset, folder: Path, resumed_from: int,
             seconds: float) -> Trained:
    sample_with = st.ema if st.ema is not None else st.denoiser
    sample_with.eval()
    return Trained(preset=preset, denoiser=sample_with, raw=st.denoiser, history=st.history,
                   path=folder, resumed_from=resumed_from, train_seconds=seconds)


def load_or_train(preset: Preset | str, *, device=None, retrain: bool = False,
                  progress: bool = True, **kwargs) -> Trained:
    """The preset trained in the current profile: a finished checkpoint of the identical
    configuration is reused; otherwise training starts or resumes. Names are looked up in
    ``config.PRESETS`` and scaled to the profile's loop sizes."""
    if isinstance(preset, str):
        preset = config.scaled(config.get_preset(preset))
    dev = torch.device(device) if device is not None else runtime.device()
    final = checkpoint_dir(preset) / f"e{preset.train.epochs:04d}.pt"
    if final.exists() and not retrain:
        st = _new_state(preset, dev)
        _restore(st, load_checkpoint(final), preset, final, rng=False)
        return _trained(st, preset, final.parent, st.epoch, 0.0)
    if retrain and final.parent.exists():
        for path in final.parent.glob("*.pt"):
            path.unlink()
    return train(preset, device=dev, progress=progress, **kwargs)
