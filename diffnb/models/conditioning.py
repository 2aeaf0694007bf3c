"""Conditioning of the networks F on the noise level and on a label (slides 6-7).

  FourierEmbedding  c_noise -> [cos(2 pi c_noise w), sin(2 pi c_noise w)] (slide 6; the noise
                    embedding of EDM's NCSN++ network, Karras et al. 2022);
  ClassEmbedding    a class (one-hot of NUM_CLASSES + 1, the last one NULL_CLASS = "no class")
                    or a multi-hot attribute vector plus a "no condition" flag, through a Linear,
                    added to the noise embedding (slide 7);
  CondNorm2d        a given normalisation without affine parameters (BatchNorm2d in the report's
                    ResNets, GroupNorm in the UNet), then per-channel (gamma, beta) predicted from
                    the embedding (slide 6's conditional BatchNorm2d).

Labels are class indices (N,) in 0..NUM_CLASSES, or, for a model with ``num_attributes`` > 0,
0/1 attribute rows (N, num_attributes) where a row of NULL_ATTRIBUTE (-1) means "no condition";
they are checked by diffnb.data.labels (check_labels, null_like), which the sampler uses too.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from diffnb.data import NULL_ATTRIBUTE, NUM_CLASSES


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


class ClassEmbedding(nn.Module):
    """The report's class embedding (slide 7): one-hot label (10 classes + null) -> Linear.

    With ``num_attributes`` > 0, the same Linear takes [attributes, null flag] instead: a
    multi-hot vector of 0/1 attributes, all 0 with the flag 1 for "no condition".
    """

    def __init__(self, cond_channels: int, *, num_attributes: int = 0):
        super().__init__()
        self.num_attributes = num_attributes
        inputs = num_attributes + 1 if num_attributes else NUM_CLASSES + 1
        self.linear = nn.Linear(inputs, cond_channels)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        if not self.num_attributes:
            return self.linear(F.one_hot(labels, NUM_CLASSES + 1).float())
        null = labels[:, :1] == NULL_ATTRIBUTE  # checked: a null row is null everywhere
        return self.linear(torch.cat([labels.clamp(min=0), null], dim=1).float())


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
