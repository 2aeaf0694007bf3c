"""The report's residual networks F (slides 6-7) and the conditioning pieces shared with the UNet.

One family, three members, chosen by ``ModelConfig.arch``:
  base    BatchNorm2d, the noise level is not fed to the network ("no noise conditioning");
  condbn  BatchNorm2d(affine=False) modulated by (gamma, beta) from the noise embedding, with the
          improved initialisation (zero-init of each block's second conv and of conv_out);
  class   condbn + a class embedding added to the noise embedding (one extra "null" class for
          classifier-free guidance).
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from diffnb.config import ModelConfig

NUM_CLASSES = 10
NULL_CLASS = NUM_CLASSES  # index of "no class", used by classifier-free guidance


class FourierEmbedding(nn.Module):
    """Fixed random Fourier features of c_noise: [cos(2 pi c_noise w), sin(2 pi c_noise w)], w ~ N(0, 1)."""

    def __init__(self, cond_channels: int, *, seed: int = 0):
        super().__init__()
        w = torch.randn(cond_channels // 2, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("w", w)

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        angle = 2 * math.pi * c_noise.float()[:, None] * self.w[None, :]
        return torch.cat([angle.cos(), angle.sin()], dim=1)


def check_labels(labels: torch.Tensor | None, batch: int, device) -> torch.Tensor:
    """Labels in 0..9, or NULL_CLASS for "no class"; None means all null. Class 0 is a class."""
    if labels is None:
        return torch.full((batch,), NULL_CLASS, dtype=torch.long, device=device)
    labels = torch.as_tensor(labels, device=device).long().reshape(-1)
    if labels.numel() == 1 and batch > 1:
        labels = labels.expand(batch)
    if labels.shape[0] != batch:
        raise ValueError(f"got {labels.shape[0]} labels for a batch of {batch} images")
    bad = (labels < 0) | (labels > NULL_CLASS)
    if bad.any():
        raise ValueError(f"class label {labels[bad][0].item()} is out of range: use 0..9 "
                         f"(0 = T-shirt/top) or {NULL_CLASS} / None for 'no class'")
    return labels


class ClassEmbedding(nn.Module):
    """One-hot label (10 classes + null) -> Linear -> cond_channels (the report's, slide 7)."""

    def __init__(self, cond_channels: int):
        super().__init__()
        self.linear = nn.Linear(NUM_CLASSES + 1, cond_channels)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.linear(F.one_hot(labels, NUM_CLASSES + 1).float())


class CondBatchNorm2d(nn.Module):
    """BatchNorm2d(affine=False), then per-channel (gamma, beta) predicted from the embedding.

    gamma starts at 1 and beta at 0, so at initialisation it is a plain BatchNorm.
    """

    def __init__(self, channels: int, cond_channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gamma = nn.Linear(cond_channels, channels)
        self.beta = nn.Linear(cond_channels, channels)
        for layer, bias in ((self.gamma, 1.0), (self.beta, 0.0)):
            nn.init.zeros_(layer.weight)
            nn.init.constant_(layer.bias, bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.gamma(emb), self.beta(emb)
        return self.norm(x) * gamma[:, :, None, None] + beta[:, :, None, None]


class PlainBatchNorm2d(nn.BatchNorm2d):
    """The base model's norm: ignores the embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


class ResBlock(nn.Module):
    """Pre-activation residual block: (norm -> ReLU -> conv3x3) twice, identity skip."""

    def __init__(self, channels: int, cond_channels: int, *, conditional: bool, zero_init: bool):
        super().__init__()
        make_norm = ((lambda: CondBatchNorm2d(channels, cond_channels)) if conditional
                     else (lambda: PlainBatchNorm2d(channels)))
        self.norm1, self.norm2 = make_norm(), make_norm()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        if conditional and zero_init:  # improved initialisation: each block starts as the identity
            nn.init.zeros_(self.conv2.weight)
            nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(F.relu(self.norm1(x, emb)))
        h = self.conv2(F.relu(self.norm2(h, emb)))
        return x + h


class ResNet(nn.Module):
    """conv_in 3x3 -> num_blocks residual blocks -> conv_out 3x3 (the course's starter model)."""

    def __init__(self, cfg: ModelConfig, *, image_channels: int = 1):
        super().__init__()
        if cfg.arch not in ("base", "condbn", "class"):
            raise ValueError(f"ResNet builds base/condbn/class, not {cfg.arch!r}")
        self.cfg = cfg
        self.conditional = cfg.arch != "base"
        self.class_conditional = cfg.arch == "class"
        self.noise_emb = FourierEmbedding(cfg.cond_channels) if self.conditional else None
        self.class_emb = ClassEmbedding(cfg.cond_channels) if self.class_conditional else None
        self.conv_in = nn.Conv2d(image_channels, cfg.nb_channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            ResBlock(cfg.nb_channels, cfg.cond_channels, conditional=self.conditional,
                     zero_init=cfg.zero_init)
            for _ in range(cfg.num_blocks))
        self.conv_out = nn.Conv2d(cfg.nb_channels, image_channels, 3, padding=1)
        if self.conditional and cfg.zero_init:
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)

    def embed(self, c_noise: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        if labels is not None and not self.class_conditional:
            raise ValueError(f"the {self.cfg.arch!r} model is not class-conditional: pass labels=None")
        if not self.conditional:
            return None
        emb = self.noise_emb(c_noise)
        if self.class_conditional:
            emb = emb + self.class_emb(check_labels(labels, c_noise.shape[0], c_noise.device))
        return emb

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(c_noise, labels)
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.conv_out(h)


def build(cfg: ModelConfig) -> nn.Module:
    """The network F for a model configuration."""
    if cfg.arch == "unet":
        from diffnb.unet import UNet

        return UNet(cfg)
    return ResNet(cfg)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
