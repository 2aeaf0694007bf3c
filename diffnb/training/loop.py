"""Training (slide 4): the one training loop. The whole data set on the device, Adam, optional
EMA and LR schedule, train and validation loss per epoch, atomic checkpoints every epoch,
automatic resume, and a deadline (``pipeline --deadline``: a cut run resumes where it stopped).

Every epoch draws its batches, noise levels and noise from a generator seeded by
(seed, epoch), so a run resumed after an interruption is identical to one that never stopped.
Under torchrun (diffnb.training.distributed, ``python -m diffnb.training``) every process draws the same
global batches and trains on its shard; rank 0 writes the checkpoints, which do not depend on the
number of processes. No step waits for the GPU: the loss is read back every ``CHECK_EVERY``
steps (NaN check, deadline projection, progress); the labels come from the validated data set.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from diffnb import config, data, models, runtime
from diffnb.config import Preset
from diffnb.diffusion.precond import Denoiser
from diffnb.training import checkpoints, datasets, distributed
from diffnb.training.datasets import steps_per_epoch
from diffnb.training.epochs import batches, epoch_generator, validation_loss
from diffnb.training.schedules import ema_decay, ema_update, lr_factor

CHECK_EVERY = 100  # steps between read-backs of the loss (one host sync each)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the last finished epoch's checkpoint is kept."""


@dataclass
class Trained:
    """A trained preset: ``denoiser`` is what to sample with (the EMA weights when enabled),
    both rounded through fp16 (see ``checkpoints.round_half``). ``finished`` is False when a
    deadline stopped the run first; then ``denoiser`` and ``raw`` are None."""

    preset: Preset
    denoiser: Denoiser | None
    raw: Denoiser | None
    history: dict
    path: Path | None = None
    resumed_from: int = 0
    train_seconds: float = 0.0
    finished: bool = True
    profile: str | None = None   # the profile it was trained in


@dataclass
class TrainState:
    denoiser: Denoiser
    ema: Denoiser | None
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    epoch: int = 0
    history: dict = field(default_factory=lambda: {"train_loss": [], "valid_loss": [],
                                                   "epoch_seconds": [], "images_per_second": [],
                                                   "device": []})


def make_denoiser(preset: Preset, *, device=None, sigma_data: float | None = None) -> Denoiser:
    runtime.seed_everything(preset.train.seed)  # weight init
    net = models.build(preset.model)
    if sigma_data is None:
        sigma_data = datasets.sigma_data(preset)
    return Denoiser(net, sigma_data=sigma_data).to(runtime.device(device))


def make_state(preset: Preset, device) -> TrainState:
    den = make_denoiser(preset, device=device)
    den.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(den).requires_grad_(False) if preset.train.ema_decay else None
    opt = torch.optim.Adam(den.parameters(), lr=preset.train.lr, fused=device.type == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(preset))
    return TrainState(den, ema, opt, sched)


class TrainStep:
    """One optimizer step: loss (bf16 autocast), backward, Adam, LR schedule, EMA.

    The noise level and the noise are drawn outside the network call, so ``compile`` can hand
    the network's forward and backward to ``torch.compile`` (``"reduce-overhead"`` adds CUDA
    graphs; the learning rate stays a Python float set by the scheduler between calls). Under
    torchrun they are drawn for the whole global batch, then each process keeps its shard and
    DistributedDataParallel averages the gradients: the step of one process on the whole batch."""

    def __init__(self, st: TrainState, preset: Preset, *, amp: bool, compile: bool | str = False):
        self.st, self.t, self.amp, self.world = st, preset.train, amp, distributed.world()
        distributed.check_batch(preset.train.batch_size, self.world.size)
        self.loss_from = distributed.wrap(st.denoiser, "loss_from",
                                          device=next(st.denoiser.parameters()).device)
        if compile:
            mode = compile if isinstance(compile, str) else None
            self.loss_from = torch.compile(self.loss_from, mode=mode)

    def __call__(self, y: torch.Tensor, labels, *, generator: torch.Generator) -> torch.Tensor:
        st, t = self.st, self.t
        sigma, eps = st.denoiser.draw_noise(y, P_mean=t.P_mean, P_std=t.P_std,
                                            generator=generator)
        y, sigma, eps, labels = distributed.shard(self.world, y, sigma, eps, labels)
        with runtime.autocast(y.device, self.amp):
            loss = self.loss_from(y, sigma, eps=eps, labels=labels)
        st.opt.zero_grad(set_to_none=True)
        loss.backward()
        st.opt.step()
        st.sched.step()
        if st.ema is not None:
            ema_update(st.ema, st.denoiser, decay=ema_decay(st.sched.last_epoch, t.ema_decay))
        return loss.detach()


class DeadlineReached(Exception):
    """An epoch was projected to end after the deadline; it is dropped, nothing is saved."""


def train_epoch(st: TrainState, preset: Preset, train: data.Images, *, step_fn,
                bar=None, deadline: float | None = None, max_steps: int | None = None,
                on_step=None) -> float:
    """One epoch (the only training loop): ``step_fn`` per batch, the mean loss returned;
    ``max_steps`` stops early, ``on_step`` gets each loss as a float (how a run starts)."""
    dev = train.images.device
    gen = epoch_generator(preset, st.epoch, device=dev)
    st.denoiser.train()
    running, seen, start = torch.zeros((), device=dev), 0, time.monotonic()
    steps = steps_per_epoch(preset)
    for y, labels in batches(train, preset, generator=gen,
                             class_conditional=st.denoiser.class_conditional):
        loss = step_fn(y, labels, generator=gen)
        running += loss
        seen += 1
        if on_step is not None:
            on_step(loss.item())
        if seen == max_steps:
            return running.item() / seen
        if seen % CHECK_EVERY == 0 or seen == steps:
            mean = distributed.mean(running).item() / seen   # all processes' images
            if not math.isfinite(mean):
                raise NonFiniteLossError(
                    f"{preset.name}: the training loss became {mean} in epoch {st.epoch + 1}, "
                    f"step {seen}. Lower the learning rate (now {preset.train.lr}) or check the "
                    "data; the last finished epoch's checkpoint is kept.")
            now = time.monotonic()
            if deadline is not None and distributed.any_rank(
                    now + (now - start) * (steps - seen) / seen > deadline):
                raise DeadlineReached
            if bar is not None:
                bar.set_postfix(epoch=st.epoch + 1, loss=f"{mean:.4f}", refresh=False)
    return mean


def checkpoint_dir(preset: Preset, profile: runtime.Profile | None = None) -> Path:
    return checkpoints.run_dir(preset, profile or runtime.profile())


def train(preset: Preset | str, *, profile: runtime.Profile | None = None, device=None,
          amp: bool | None = None, compile: bool | str = False, progress: bool = True,
          stop_after: int | None = None, deadline: float | None = None,
          on_epoch=None) -> Trained:
    """Train ``preset`` (already scaled to ``profile``) to its epochs, resuming when possible.

    ``deadline``: a ``time.monotonic()`` value; no epoch is started (or finished) that is
    projected to end after it: the run stops with its last checkpoint and ``finished=False``.
    ``stop_after``: stop after that many epochs of this call (to test resuming).
    ``on_epoch``: called with the epochs done and the history after each saved epoch.
    """
    profile = profile or runtime.profile()
    preset = config.get_preset(preset)
    dev = runtime.device(device)
    amp = runtime.default_amp(dev) if amp is None else amp
    runtime.autotune(dev)
    folder = checkpoints.run_dir(preset, profile)
    st = make_state(preset, dev)
    start = checkpoints.latest_start(folder, preset.train.epochs)
    if start is not None:
        checkpoints.restore(st, checkpoints.load(start), preset=preset, path=start,
                            profile=profile)
    resumed_from, t0 = st.epoch, time.perf_counter()
    train_split, valid_split = (s.to(dev) for s in datasets.splits(preset)[:2])
    step = TrainStep(st, preset, amp=amp, compile=compile)
    main = distributed.world().main      # rank 0 writes the checkpoints, the others wait for it
    bar = _bar(preset, st.epoch, progress and main)
    last_epoch = None
    try:
        while st.epoch < preset.train.epochs:
            if stop_after is not None and st.epoch - resumed_from >= stop_after:
                break
            if deadline is not None and distributed.any_rank(
                    time.monotonic() + (last_epoch or 0.0) > deadline):
                break  # the previous epoch's time says this one would end too late
            e0 = time.perf_counter()
            try:
                train_loss = train_epoch(st, preset, train_split, step_fn=step, bar=bar,
                                          deadline=deadline)
            except DeadlineReached:
                break
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            seconds = time.perf_counter() - e0
            distributed.broadcast_buffers(st.denoiser, st.ema)   # BatchNorm statistics (CPU)
            st.epoch += 1
            h = st.history   # "device": the machine of each epoch (None: not recorded)
            h.setdefault("device", [None] * len(h["train_loss"])).append(runtime.device_name())
            h["train_loss"].append(train_loss)
            h["valid_loss"].append(validation_loss(st.denoiser, valid_split, preset=preset,
                                                     amp=amp))
            h["epoch_seconds"].append(seconds)
            h["images_per_second"].append(steps_per_epoch(preset) * preset.train.batch_size
                                          / seconds)
            blob = checkpoints.state_blob(st, preset, profile=profile)  # references, no copies
            if main:
                checkpoints.save(blob, folder / "last.pt")
            distributed.barrier()
            last_epoch = time.perf_counter() - e0
            if on_epoch is not None and main:
                on_epoch(st.epoch, h)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if st.epoch < preset.train.epochs:
        return Trained(preset, None, None, st.history, folder, resumed_from,
                       time.perf_counter() - t0, finished=False, profile=profile.name)
    blob = checkpoints.state_blob(st, preset, profile=profile)
    final = folder / checkpoints.final_name(st.epoch)
    half = folder / checkpoints.final_name(st.epoch, half=True)
    if main and not final.exists():
        checkpoints.save(blob, final)
    if main and not half.exists():
        checkpoints.save(checkpoints.compact(blob), half)
    distributed.barrier()
    return _trained(st, preset, folder, resumed_from, time.perf_counter() - t0,
                    profile=profile)


def _bar(preset: Preset, epoch: int, progress: bool):
    """One progress bar per run, counting epochs, on a terminal only: in a notebook (where a
    saved bar freezes at its first state) the cell prints the run's summary from its history."""
    import sys

    if not progress or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=preset.train.epochs, initial=epoch, desc=f"training {preset.name}",
                unit="epoch", mininterval=1.0)


def _trained(st: TrainState, preset: Preset, folder: Path, resumed_from: int,
             seconds: float, *, profile: runtime.Profile) -> Trained:
    """Sample with the fp16-rounded weights, the same whichever checkpoint they came from."""
    raw = copy.deepcopy(st.denoiser).eval()
    raw.load_state_dict(checkpoints.round_half(raw.state_dict()))
    sample_with = raw
    if st.ema is not None:
        sample_with = copy.deepcopy(st.ema).eval()
        sample_with.load_state_dict(checkpoints.round_half(sample_with.state_dict()))
    return Trained(preset=preset, denoiser=sample_with, raw=raw, history=st.history,
                   path=folder, resumed_from=resumed_from, train_seconds=seconds,
                   profile=profile.name)


def load_final(preset: Preset | str, *, profile: runtime.Profile | None = None,
               device=None) -> Trained | None:
    """The preset's finished model in ``profile`` (default: the run's) from any checkpoint
    ``checkpoints.find_final`` knows, kept weights written back from git history included; None
    when there is none. Never trains."""
    profile = profile or runtime.profile()
    preset = config.scaled(config.get_preset(preset), profile)
    final = checkpoints.find_final(preset, profile)
    if final is None:
        return None
    st = make_state(preset, runtime.device(device))
    checkpoints.restore(st, checkpoints.load(final), preset=preset, path=final, rng=False,
                        profile=profile)
    return _trained(st, preset, final.parent, st.epoch, 0.0, profile=profile)


def best_final(names, *, profile: runtime.Profile, device=None) -> Trained | None:
    """Of the presets ``names``, the finished model of ``profile`` with the lowest final
    validation loss (notebook 04's pick); None unless all of them are there. Only the pick is
    loaded: the others' losses are read."""
    losses = {name: checkpoints.final_valid_loss(config.scaled(config.get_preset(name), profile),
                                                 profile) for name in names}
    if not losses or None in losses.values():
        return None
    return load_final(min(losses, key=losses.get), profile=profile, device=device)


def load_or_train(preset: Preset | str, *, profile: runtime.Profile | None = None, device=None,
                  retrain: bool = False, progress: bool = True, **kwargs) -> Trained:
    """The preset trained in ``profile`` (default: the run's): a finished checkpoint of the
    identical configuration (full, compact fp16, or committed under ``weights/``) is reused
    (:func:`load_final`); otherwise training starts or resumes. Names and presets alike are
    scaled to the profile."""
    profile = profile or runtime.profile()
    preset = config.scaled(config.get_preset(preset), profile)
    found = None if retrain else load_final(preset, profile=profile, device=device)
    if found is not None:
        return found
    folder = checkpoints.run_dir(preset, profile)
    if retrain and folder.exists() and distributed.world().main:
        for path in folder.glob("*.pt"):
            path.unlink()
    distributed.barrier()
    return train(preset, profile=profile, device=runtime.device(device), progress=progress,
                 **kwargs)
