"""A class-conditional UNet F (Ronneberger et al. 2015; the DDPM layout of Ho et al. 2020, with
the conditioning of Karras et al. 2022, EDM).

One level per entry of ``channel_mult``, widths nb_channels * mult, e.g. 32x32 -> 16x16 -> 8x8
for Fashion-MNIST (three entries) or 64x64 -> 32x32 -> 16x16 -> 8x8 for CelebA (four):
  down  conv_in, then per level num_blocks residual blocks and an average-pool downsample;
        every output is kept as a skip; with ``attention``, each block at the lowest
        resolution ends in multi-head self-attention (down, mid and up);
  mid   block with self-attention -> block, at the lowest resolution;
  up    per level num_blocks + 1 blocks, each on concat(h, skip), then nearest upsample + conv
        to the finer level's width;
  out   GroupNorm -> SiLU -> conv_out 3x3 (zero-init with ``zero_init``: F = 0, D(x) = c_skip x).
Conditioning as in the ResNets (diffnb.models.conditioning): FourierEmbedding(c_noise) +
ClassEmbedding(label or attributes) (None or null: "no condition", for classifier-free guidance),
then an MLP (EDM), giving per-channel (gamma, beta) of the second GroupNorm of every block.
Built for bf16 autocast + channels_last on the CPU: no op here leaves channels_last or is slow
in bf16 (GroupNorm's group size and the written-out attention were chosen by measurement).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffnb.config import ModelConfig
from diffnb.data.labels import check_labels
from diffnb.models.conditioning import ClassEmbedding, CondNorm2d, FourierEmbedding

HEADS = 4                # self-attention heads
MIN_GROUP_CHANNELS = 16  # EDM has 4; CPU bf16 channels_last GroupNorm is 2-10x slower below 16


def num_groups(channels: int) -> int:
    """At most 32 groups of at least MIN_GROUP_CHANNELS channels (EDM), dividing ``channels``."""
    g = max(1, min(32, channels // MIN_GROUP_CHANNELS))
    while channels % g:
        g -= 1
    return g


def _zero(layer: nn.Module) -> nn.Module:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def cond_group_norm(channels: int, cond_channels: int) -> CondNorm2d:
    """GroupNorm(affine=False), then per-channel (gamma, beta) from the embedding.

    Chosen over conditional BatchNorm because it normalises each image on its own: a sample's
    output does not depend on the rest of its batch (samples identical at any batch size, no
    train/eval gap, no running statistics, batches of 1 train fine); with >= 16 channels per
    group it is as fast as BatchNorm in bf16 + channels_last on the CPU.
    """
    return CondNorm2d(nn.GroupNorm(num_groups(channels), channels, affine=False), cond_channels)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions, residual, zero-init output projection."""

    def __init__(self, channels: int, *, heads: int = HEADS):
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention needs channels divisible by {heads} heads, got {channels}: "
                             f"choose nb_channels (times channel_mult) divisible by {heads}")
        self.heads = heads
        self.norm = nn.GroupNorm(num_groups(channels), channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = _zero(nn.Linear(channels, channels))  # starts as the identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, H, W = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(N, H * W, C)  # a view in channels_last
        qkv = self.qkv(tokens).reshape(N, H * W, 3, self.heads, C // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)                            # each (N, heads, HW, d)
        out = attention(q, k, v).transpose(1, 2).reshape(N, H * W, C)
        return x + self.proj(out).reshape(N, H, W, C).permute(0, 3, 1, 2)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v, written out: on the CPU its backward is ~5x faster in bf16 than
    F.scaled_dot_product_attention's, and 8x8 = 64 positions make the weights small."""
    w = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    return w.softmax(-1, dtype=torch.float32).to(v.dtype) @ v


class UNetBlock(nn.Module):
    """DDPM UNet block: (norm -> SiLU -> conv3x3) twice, 1x1 conv skip when the width changes,
    then optional self-attention (inside the block, as in EDM).

    As in EDM, the embedding modulates the second norm only: the first one is a plain GroupNorm, on
    the block's widest input (the skip concatenation), which is 16% faster on the CPU.
    """

    def __init__(self, in_ch: int, out_ch: int, *, cond_channels: int, zero_init: bool,
                 attention: bool = False):
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = cond_group_norm(out_ch, cond_channels)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.attn = SelfAttention(out_ch) if attention else None
        if zero_init:  # improved initialisation: the residual branch starts at 0
            _zero(self.conv2)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.skip(x) + self.conv2(F.silu(self.norm2(h, emb)))
        return self.attn(h) if self.attn is not None else h


class Upsample(nn.Module):
    """Nearest-neighbour x2, then conv3x3 (DDPM UNet), here straight to the finer level's width."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """The network F(c_in x, c_noise, labels) of ``ModelConfig(arch="unet")``; always conditional
    on a class, or on attributes with ``num_attributes`` (None or null: "no condition")."""

    class_conditional = True
    conditional = True

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        _check_config(cfg)
        self.cfg = cfg
        self.num_attributes = cfg.num_attributes
        self.image_shape = (cfg.image_channels, cfg.image_size, cfg.image_size)
        E, widths = cfg.cond_channels, [cfg.nb_channels * m for m in cfg.channel_mult]
        self.noise_emb = FourierEmbedding(E)
        self.class_emb = ClassEmbedding(E, num_attributes=cfg.num_attributes)
        self.emb_mlp = nn.Sequential(nn.Linear(E, E), nn.SiLU(), nn.Linear(E, E), nn.SiLU())  # EDM
        block = lambda i, o, attn=False: UNetBlock(i, o, cond_channels=E, zero_init=cfg.zero_init,
                                                   attention=attn and cfg.attention)
        self.conv_in = nn.Conv2d(cfg.image_channels, widths[0], 3, padding=1)
        self.down, skip_ch, ch = nn.ModuleList(), [widths[0]], widths[0]
        for level, width in enumerate(widths):
            lowest = level == len(widths) - 1
            for _ in range(cfg.num_blocks):
                self.down.append(block(ch, width, lowest))
                ch = width
                skip_ch.append(ch)
            if not lowest:
                self.down.append(nn.AvgPool2d(2))  # EDM's [1, 1] resampling filter
                skip_ch.append(ch)
        self.mid = nn.ModuleList([block(ch, ch, True), block(ch, ch)])  # EDM: attention in 1st
        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            for _ in range(cfg.num_blocks + 1):
                self.up.append(block(ch + skip_ch.pop(), width, level == len(widths) - 1))
                ch = width
            if level > 0:
                self.up.append(Upsample(ch, widths[level - 1]))
                ch = widths[level - 1]
        self.norm_out = nn.GroupNorm(num_groups(ch), ch)
        self.conv_out = nn.Conv2d(ch, cfg.image_channels, 3, padding=1)
        if cfg.zero_init:  # improved initialisation: F = 0, so D(x) = c_skip x at the start
            _zero(self.conv_out)

    @property
    def factor(self) -> int:
        """Image sides must be multiples of this (one halving per level)."""
        return 2 ** (len(self.cfg.channel_mult) - 1)

    def embed(self, c_noise: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        labels = check_labels(labels, c_noise.shape[0], device=c_noise.device,
                              num_attributes=self.num_attributes)
        return self.emb_mlp(self.noise_emb(c_noise) + self.class_emb(labels))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ValueError(f"UNet expects (N, C, H, W) with H, W multiples of {self.factor}, "
                             f"got {tuple(x.shape)}")
        emb = self.embed(_per_sample(c_noise, x), labels)
        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = _apply(layer, h, emb)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            if isinstance(layer, UNetBlock):
                h = torch.cat([h, skips.pop()], dim=1)  # DDPM UNet: skips by concatenation
            h = _apply(layer, h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))


def _per_sample(c_noise, x: torch.Tensor) -> torch.Tensor:
    c_noise = torch.as_tensor(c_noise, device=x.device).reshape(-1)
    if c_noise.numel() not in (1, x.shape[0]):
        raise ValueError(f"got {c_noise.numel()} noise levels for a batch of {x.shape[0]} images: "
                         "pass one per image, or one for all")
    return c_noise.expand(x.shape[0])


def _apply(layer: nn.Module, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    return layer(h, emb) if isinstance(layer, UNetBlock) else layer(h)


def _check_config(cfg: ModelConfig) -> None:
    if cfg.arch != "unet":
        raise ValueError(f"UNet builds arch 'unet', not {cfg.arch!r}")
    if not cfg.channel_mult or min(cfg.channel_mult) < 1:
        raise ValueError(f"channel_mult must be positive integers, got {cfg.channel_mult}")
    if cfg.num_blocks < 1 or cfg.nb_channels < 1:
        raise ValueError(f"UNet needs num_blocks >= 1 and nb_channels >= 1, got "
                         f"{cfg.num_blocks} and {cfg.nb_channels}")
    factor = 2 ** (len(cfg.channel_mult) - 1)
    if cfg.image_size % factor:
        raise ValueError(f"image_size {cfg.image_size} is not a multiple of {factor}, needed by "
                         f"{len(cfg.channel_mult)} levels (channel_mult={cfg.channel_mult})")
