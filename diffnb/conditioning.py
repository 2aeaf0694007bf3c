"""Conditioning of the networks F on the noise level and on a label (slides 6-7).

  FourierEmbedding  c_noise -> [cos(2 pi c_noise w), sin(2 pi c_noise w)] (slide 6; the noise
                    embedding of EDM's NCSN++ network, Karras et al. 2022);
  ClassEmbedding    a class (one-hot of NUM_CLASSES + 1, the last one NULL_CLASS = "no class")
                    through a Linear, added to the noise embedding (slide 7);
  CondNorm2d        a given normalisation without affine parameters (BatchNorm2d in the report's
                    ResNets, GroupNorm in the UNet), then per-channel (gamma, beta) predicted from
                    the embedding (slide 6's conditional BatchNorm2d).

Labels are class indices (N,) in 0..NUM_CLASSES; None is "no class" for the whole batch
(classifier-free guidance's unconditional branch).
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from diffnb.data import NUM_CLASSES

NULL_CLASS = NUM_CLASSES  # index of "no class", used by classifier-free guidance


class FourierEmbedding(nn.Module):
    """Fixed random Fourier features of c_noise: [cos(2 pi c_noise w), sin(2 pi c_noise w)],
    w ~ N(0, 1) (slide 6)."""

    def __init__(self, cond_channels: int, *, seed: int = 0):
        super().__init__()
        w = torch.randn(cond_channels // 2, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("w", w)

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        angle = 2 * math.pi * c_noise.float()[:, None] * self.w[None, :]
        return torch.cat([angle.cos(), angle.sin()], dim=1)


def check_labels(labels, batch: int, device) -> torch.Tensor:
    """Class labels (N,) of a batch on ``device``: 0..9, or NULL_CLASS for "no class" (class 0 is
    a class); None means all null; one label is repeated for the batch.

    Values are checked only while the labels are on the CPU, before they move to ``device``:
    on CUDA, ``bad.any()`` would make every training step wait for the GPU. Device tensors come
    from the training loop, whose labels were checked when the data was loaded; sampling passes
    the user's labels (lists or CPU tensors) here, so they are checked.
    """
    if labels is None:
        return torch.full((batch,), NULL_CLASS, dtype=torch.long, device=device)
    labels = torch.as_tensor(labels)
    if labels.device.type == "cpu" and labels.is_floating_point() and (labels % 1 != 0).any():
        raise ValueError(f"labels must be whole numbers, got {labels.flatten()[:4].tolist()}")
    labels = labels.long().reshape(-1)
    if labels.shape[0] == 1 and batch > 1:
        labels = labels.expand(batch)
    if labels.shape[0] != batch:
        raise ValueError(f"got {labels.shape[0]} labels for a batch of {batch} images")
    if labels.device.type == "cpu":
        bad = (labels < 0) | (labels > NULL_CLASS)
        if bad.any():
            raise ValueError(f"class label {labels[bad][0].item()} is out of range: use 0..9 "
                             f"(0 = T-shirt/top) or {NULL_CLASS} / None for 'no class'")
    return labels.to(device)


class ClassEmbedding(nn.Module):
    """The report's class embedding (slide 7): one-hot label (10 classes + null) -> Linear."""

    def __init__(self, cond_channels: int):
        super().__init__()
        self.linear = nn.Linear(NUM_CLASSES + 1, cond_channels)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.linear(F.one_hot(labels, NUM_CLASSES + 1).float())


class CondNorm2d(nn.Module):
    """``norm`` (BatchNorm2d or GroupNorm, affine=False), then x * gamma(emb) + beta(emb) per
    channel (slide 6). gamma starts at 1 and beta at 0: at initialisation it is plain ``norm``."""

    def __init__(self, norm: nn.Module, cond_channels: int):
        super().__init__()
        if getattr(norm, "affine", True):
            raise ValueError(f"CondNorm2d needs a norm without affine parameters, got {norm}")
        channels = norm.num_channels if isinstance(norm, nn.GroupNorm) else norm.num_features
        self.norm = norm
        self.gamma = nn.Linear(cond_channels, channels)
        self.beta = nn.Linear(cond_channels, channels)
        for layer, bias in ((self.gamma, 1.0), (self.beta, 0.0)):
            nn.init.zeros_(layer.weight)
            nn.init.constant_(layer.bias, bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.gamma(emb), self.beta(emb)  # slide 6: gamma(emb) norm(x) + beta(emb)
        return self.norm(x) * gamma[:, :, None, None] + beta[:, :, None, None]
