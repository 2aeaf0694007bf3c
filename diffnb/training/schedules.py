"""The optimiser's schedules: the learning rate (constant, or warm-up then cosine) and the
exponential moving average of the weights (EDM's EMA, Karras et al. 2022, sec. 5 / Table 1).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from diffnb.config import Preset
from diffnb.training.datasets import steps_per_epoch


def lr_factor(preset: Preset):
    """Multiplier of ``preset.train.lr`` at optimizer step k (0-based): constant, or a linear
    warm-up over ``warmup_fraction`` of all steps then a cosine decay to 0."""
    t = preset.train
    total = t.epochs * steps_per_epoch(preset)
    warmup = round(t.warmup_fraction * total)

    def factor(step: int) -> float:
        if t.lr_schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def ema_decay(step: int, decay: float) -> float:
    """Ramped EMA decay: a short run's average is not stuck at the initial weights."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, *, decay: float) -> None:
    """ema <- ema + (1 - decay) (model - ema); buffers (BatchNorm statistics) are copied."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
