"""What one epoch draws: its generator, its permutation into batches, label dropout, and the
fixed noise of the validation loss it ends with (slide 4).

Every draw of an epoch comes from one generator seeded by (seed, epoch), so a run resumed after an
interruption, or run by any number of processes (diffnb.training.distributed), draws the same batches,
the same dropped labels and (in ``training.TrainStep``) the same noise as one that never stopped.
"""
from __future__ import annotations

import torch

from diffnb import data, runtime
from diffnb.config import Preset
from diffnb.data.labels import null_like
from diffnb.diffusion.precond import Denoiser
from diffnb.training.datasets import steps_per_epoch

VALID_BATCH = 256


def drop_labels(labels: torch.Tensor, *, p: float, generator: torch.Generator) -> torch.Tensor:
    """Classifier-free guidance training: each label becomes the null class with probability p."""
    if p <= 0:
        return labels
    drop = torch.rand(labels.shape[:1], generator=generator, device=generator.device) < p
    drop = drop.to(labels.device).reshape(drop.shape + (1,) * (labels.ndim - drop.ndim))
    return torch.where(drop, null_like(labels), labels)


def epoch_generator(preset: Preset, epoch: int, *, device) -> torch.Generator:
    return torch.Generator(device).manual_seed(preset.train.seed * 100_003 + epoch)


def batches(split: data.Images, preset: Preset, *, generator: torch.Generator,
            class_conditional: bool):
    """One epoch: ``steps_per_epoch`` batches (y in model space, channels_last; labels with
    label dropout applied, or None for a model without classes), drawn with ``generator``."""
    bs = preset.train.batch_size
    perm = torch.randperm(len(split), generator=generator, device=split.images.device)
    for i in range(steps_per_epoch(preset)):
        y, labels = data.sample_batch(split, perm[i * bs:(i + 1) * bs])
        labels = (drop_labels(labels, p=preset.train.label_dropout, generator=generator)
                  if class_conditional else None)
        yield y.contiguous(memory_format=torch.channels_last), labels


@torch.no_grad()
def validation_loss(den: Denoiser, valid: data.Images, *, preset: Preset, amp: bool) -> float:
    """Mean loss on the first ``valid_images`` validation images, with fixed noise (comparable
    from epoch to epoch)."""
    dev = valid.images.device
    n = min(len(valid), preset.train.valid_images or len(valid))
    gen = torch.Generator(dev).manual_seed(10_007)
    was_training = den.training
    den.eval()
    total = torch.zeros((), device=dev)
    for start in range(0, n, VALID_BATCH):
        idx = torch.arange(start, min(n, start + VALID_BATCH), device=dev)
        y, labels = data.sample_batch(valid, idx)
        with runtime.autocast(dev, amp):
            loss = den.loss(y.contiguous(memory_format=torch.channels_last),
                            labels if den.class_conditional else None,
                            P_mean=preset.train.P_mean, P_std=preset.train.P_std, generator=gen)
        total += loss.float() * len(idx)
    den.train(was_training)
    return total.item() / n
