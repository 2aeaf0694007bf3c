"""The network F of a model configuration: the report's ResNets (diffnb.nets) or the UNet
(diffnb.unet), both conditioned through diffnb.conditioning."""
from __future__ import annotations

from torch import nn

from diffnb.config import ModelConfig
from diffnb.nets import ResNet
from diffnb.unet import UNet


def build(cfg: ModelConfig) -> nn.Module:
    """The network F for a model configuration."""
    return UNet(cfg) if cfg.arch == "unet" else ResNet(cfg)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
