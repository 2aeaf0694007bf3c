"""The report's residual networks F (slides 6-7); the conditioning is diffnb.models.conditioning's.

One family, three members, chosen by ``ModelConfig.arch``:
  base    BatchNorm2d, the noise level is not fed to the network ("no noise conditioning");
  condbn  BatchNorm2d(affine=False) modulated by (gamma, beta) from the noise embedding, with the
          improved initialisation (zero-init of each block's second conv and of conv_out);
  class   condbn + a class embedding added to the noise embedding (one extra "null" class for
          classifier-free guidance), or with ``num_attributes`` an attribute embedding.
Fully convolutional: ``image_channels`` sets the input and output channels, any image size works.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffnb.config import ModelConfig
from diffnb.data.labels import check_labels
from diffnb.models.conditioning import ClassEmbedding, CondNorm2d, FourierEmbedding


class PlainBatchNorm2d(nn.BatchNorm2d):
    """The base model's norm: ignores the embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


class PlainSyncBatchNorm2d(nn.SyncBatchNorm):
    """PlainBatchNorm2d over several processes (CUDA): statistics of the whole global batch."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm2d of ``module`` replaced in place by a SyncBatchNorm holding the same
    parameters and buffers (as torch's ``SyncBatchNorm.convert_sync_batchnorm``, which would turn
    PlainBatchNorm2d into a layer that no longer takes the embedding); state_dict keys unchanged."""
    for name, child in module.named_children():
        if not isinstance(child, nn.BatchNorm2d):
            sync_batchnorm(child)
            continue
        kind = PlainSyncBatchNorm2d if isinstance(child, PlainBatchNorm2d) else nn.SyncBatchNorm
        sync = kind(child.num_features, child.eps, child.momentum, child.affine,
                    child.track_running_stats)
        for key, value in [*child.named_parameters(recurse=False), *child.named_buffers(recurse=False)]:
            setattr(sync, key, value)
        setattr(module, name, sync.train(child.training))
    return module


class ResBlock(nn.Module):
    """Pre-activation residual block: (norm -> ReLU -> conv3x3) twice, identity skip."""

    def __init__(self, channels: int, cond_channels: int, *, conditional: bool, zero_init: bool):
        super().__init__()
        make_norm = ((lambda: CondNorm2d(nn.BatchNorm2d(channels, affine=False), cond_channels))
                     if conditional else (lambda: PlainBatchNorm2d(channels)))
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

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.arch not in ("base", "condbn", "class"):
            raise ValueError(f"ResNet builds base/condbn/class, not {cfg.arch!r}")
        if cfg.num_attributes and cfg.arch != "class":
            raise ValueError(f"num_attributes needs arch 'class' or 'unet', not {cfg.arch!r}")
        self.cfg = cfg
        self.conditional = cfg.arch != "base"
        self.class_conditional = cfg.arch == "class"
        self.num_attributes = cfg.num_attributes
        self.image_shape = (cfg.image_channels, cfg.image_size, cfg.image_size)
        self.noise_emb = FourierEmbedding(cfg.cond_channels) if self.conditional else None
        self.class_emb = (ClassEmbedding(cfg.cond_channels, num_attributes=cfg.num_attributes)
                          if self.class_conditional else None)
        self.conv_in = nn.Conv2d(cfg.image_channels, cfg.nb_channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            ResBlock(cfg.nb_channels, cfg.cond_channels, conditional=self.conditional,
                     zero_init=cfg.zero_init)
            for _ in range(cfg.num_blocks))
        self.conv_out = nn.Conv2d(cfg.nb_channels, cfg.image_channels, 3, padding=1)
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
            labels = check_labels(labels, c_noise.shape[0], device=c_noise.device,
                                  num_attributes=self.num_attributes)
            emb = emb + self.class_emb(labels)  # slide 7: class embedding + noise embedding
        return emb

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(c_noise, labels)
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.conv_out(h)
