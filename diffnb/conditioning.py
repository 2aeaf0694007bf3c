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
0/1 attribute rows (N, num_attributes) where a row of NULL_ATTRIBUTE (-1) means "no condition".
"None" is "no condition" for the whole batch (classifier-free guidance's unconditional branch).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from diffnb.data import NUM_CLASSES

NULL_CLASS = NUM_CLASSES  # index of "no class", used by classifier-free guidance
NULL_ATTRIBUTE = -1       # an attribute row of this value: "no condition"


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


def check_labels(labels, batch: int, *, device, num_attributes: int = 0,
                 allow_null: bool = True) -> torch.Tensor:
    """Labels of a batch on ``device``: class indices (N,) in 0..9, NULL_CLASS for "no class"
    (class 0 is a class), or with ``num_attributes`` 0/1 rows (N, num_attributes), a row of
    NULL_ATTRIBUTE for "no condition"; None means "no condition" for all; one label is repeated.

    Values are checked only while the labels are on the CPU, before they move to ``device``:
    on CUDA, ``bad.any()`` would make every training step wait for the GPU. Device tensors come
    from the training loop, whose labels were checked when the data was loaded; sampling passes
    the user's labels here on the CPU, so its labels are always checked.
    """
    if labels is None:
        shape = (batch, num_attributes) if num_attributes else (batch,)
        fill = NULL_ATTRIBUTE if num_attributes else NULL_CLASS
        return torch.full(shape, fill, dtype=torch.long, device=device)
    labels = torch.as_tensor(labels)
    if labels.device.type == "cpu" and labels.is_floating_point() and (labels % 1 != 0).any():
        raise ValueError(f"labels must be whole numbers, got {labels.flatten()[:4].tolist()}: "
                         "pass class indices or 0/1 attributes as integers")
    if num_attributes and (labels.ndim not in (1, 2) or labels.shape[-1] != num_attributes):
        raise ValueError(f"expected 0/1 attribute rows (N, {num_attributes}), got a tensor of "
                         f"shape {tuple(labels.shape)}: pass one row of {num_attributes} 0/1 values "
                         "per image, or one for all")
    labels = labels.long()
    labels = labels.reshape(-1, num_attributes) if num_attributes else labels.reshape(-1)
    if labels.shape[0] == 1 and batch > 1:
        labels = labels.expand(batch, *labels.shape[1:])
    if labels.shape[0] != batch:
        raise ValueError(f"got {labels.shape[0]} labels for a batch of {batch} images: pass one "
                         "label per image, or one for all")
    if labels.device.type == "cpu":
        _check_values(labels, num_attributes=num_attributes, allow_null=allow_null)
    return labels.to(device)


def _check_values(labels: torch.Tensor, *, num_attributes: int, allow_null: bool) -> None:
    if num_attributes:
        null = (labels == NULL_ATTRIBUTE).all(dim=1)
        bad = ~null & ((labels < 0) | (labels > 1)).any(dim=1)
        if bad.any():
            raise ValueError(f"attribute row {labels[bad][0].tolist()} is out of range: use 0/1 "
                             f"per attribute, or rows of {NULL_ATTRIBUTE} / None: 'no condition'")
        if not allow_null and null.any():
            raise ValueError(f"a row of {NULL_ATTRIBUTE} is not a condition: use 0/1 attributes, "
                             "or labels=None for unconditional samples")
        return
    bad = (labels < 0) | (labels > NULL_CLASS)
    if bad.any():
        raise ValueError(f"class label {labels[bad][0].item()} is out of range: use 0..9 "
                         f"(0 = T-shirt/top) or {NULL_CLASS} / None for 'no class'")
    if not allow_null and (labels == NULL_CLASS).any():
        raise ValueError(f"class label {NULL_CLASS} is not a class: use 0..9 "
                         "(0 = T-shirt/top), or labels=None for unconditional samples")


def null_like(labels: torch.Tensor) -> torch.Tensor:
    """"No condition" for every sample of ``labels`` (classes (N,) or attributes (N, A))."""
    return torch.full_like(labels, NULL_ATTRIBUTE if labels.ndim == 2 else NULL_CLASS)


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
