"""FLOP counts of the networks and of the run queue's stages (benchmarks, pipeline estimates).

Convolutions and linear layers are counted analytically with forward hooks on one image
(2 x multiply-adds); a training step costs 3x the forward pass (forward + backward: the usual
rule, Kaplan et al. 2020). Norms, activations and attention's softmax are not counted.
"""
from __future__ import annotations

import torch
from torch import nn

INCEPTION_GFLOP = 11.5  # InceptionV3 at 299x299, forward: 5.7 G multiply-adds (Szegedy et al. 2016)


def forward_flops(net: nn.Module, *, shape=None, labels: bool = False) -> float:
    """Forward FLOPs (2 x multiply-adds) of every Conv2d and Linear for one image of ``shape``
    (default: the network's ``image_shape``, else 1x32x32); ``labels``: with a class, or a row of
    attributes for a network with ``num_attributes``."""
    shape = shape or tuple(getattr(net, "image_shape", (1, 32, 32)))
    num_attributes = getattr(net, "num_attributes", 0)
    label = (torch.zeros(1, num_attributes, dtype=torch.long) if num_attributes else
             torch.zeros(1, dtype=torch.long)) if labels else None
    total = 0.0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += 2 * module.in_channels // module.groups * k * output[0].numel()
        elif isinstance(module, nn.Linear):
            total += 2 * module.in_features * module.out_features * (output.numel()
                                                                     // output.shape[-1])
    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, *shape), torch.zeros(1), label)
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    return total


def train_flops(net: nn.Module, images: int, *, labels: bool = False) -> float:
    """FLOPs of training on ``images`` images (3x forward)."""
    return 3.0 * forward_flops(net, labels=labels) * images


def preset_train_flops(preset, profile) -> float:
    """FLOPs of training a preset (a name or a Preset) to its epochs in ``profile``."""
    from diffnb import config, models
    from diffnb.training import datasets

    p = config.scaled(config.get_preset(preset), profile)
    images = p.train.epochs * datasets.steps_per_epoch(p) * p.train.batch_size
    return train_flops(models.build(p.model), images, labels=p.model.class_conditional)


def inception_flops(images: int) -> float:
    return INCEPTION_GFLOP * 1e9 * images
