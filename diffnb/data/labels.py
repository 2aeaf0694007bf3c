"""The labels of a batch, as the networks, the training loop and the sampler take them.

Labels are class indices (N,) in 0..NUM_CLASSES, or, for a model with ``num_attributes`` > 0,
0/1 attribute rows (N, num_attributes) where a row of NULL_ATTRIBUTE (-1) means "no condition".
"None" is "no condition" for the whole batch (classifier-free guidance's unconditional branch).
NULL_CLASS (= NUM_CLASSES) is "no class": the last input of the class embedding
(diffnb.models.conditioning).
"""
from __future__ import annotations

import torch

from diffnb.data.fashion_mnist import NUM_CLASSES

NULL_CLASS = NUM_CLASSES  # index of "no class", used by classifier-free guidance
NULL_ATTRIBUTE = -1       # an attribute row of this value: "no condition"

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
