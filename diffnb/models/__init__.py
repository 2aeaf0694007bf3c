"""The network F of a model configuration: the report's ResNets (``resnet``) or the UNet
(``unet``), both conditioned on the noise level and the label through ``conditioning``.

  build             the network F of a ``config.ModelConfig``
  count_parameters  its trainable weights
"""
from __future__ import annotations

from torch import nn

from diffnb.config import ModelConfig
from diffnb.models.resnet import ResNet
from diffnb.models.unet import UNet


def build(cfg: ModelConfig) -> nn.Module:
    """The network F for a model configuration."""
    return UNet(cfg) if cfg.arch == "unet" else ResNet(cfg)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
