"""The data set of a training run, chosen by ``TrainConfig.dataset``: Fashion-MNIST (the report;
diffnb.data) or CelebA at 64x64 (slide 11's "face generation using CelebA"; diffnb.data.celeba).

:func:`splits` gives the training loop what it needs of either: the training and validation
splits (uint8 images with labels, ``len``, ``to`` and ``subset``; ``data.sample_batch`` maps a
batch of either to model space) and the data set's own ``sigma_data`` (EDM's preconditioning).
A preset whose network does not fit its data set (image shape, classes vs attributes) is refused
here, before any training, with what to change.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from diffnb import data
from diffnb.config import Preset
from diffnb.data import celeba

# Images of one epoch when ``TrainConfig.epoch_images`` is None: Fashion-MNIST's 50k training
# split; CelebA's 162,770 training images less the 1% that may be missing (celeba.MAX_MISSING),
# rounded down, so that no batch of an epoch comes out empty.
EPOCH_IMAGES = {"fashion_mnist": data.COUNTS["train"] - data.VALID_SIZE, "celeba": 160_000}
IMAGE_SHAPES = {"fashion_mnist": (1, 32, 32), "celeba": (3, celeba.IMAGE_SIZE, celeba.IMAGE_SIZE)}


class Splits(NamedTuple):
    train: data.Images | celeba.Faces
    valid: data.Images | celeba.Faces
    sigma_data: float


def epoch_images(dataset: str) -> int:
    return EPOCH_IMAGES[dataset]


def steps_per_epoch(preset: Preset) -> int:
    """Optimizer steps of one epoch: ``epoch_images`` (default: the data set's) per batch."""
    n = preset.train.epoch_images or epoch_images(preset.train.dataset)
    return max(1, n // preset.train.batch_size)


def attributes(preset: Preset) -> tuple[str, ...]:
    """The CelebA attributes a preset's network is conditioned on, in the order of its input."""
    m = preset.model
    return celeba.DEFAULT_ATTRIBUTES if preset.train.dataset == "celeba" and m.num_attributes \
        else ()


def check(preset: Preset) -> None:
    """The preset's network fits its data set: image shape, and classes or attributes."""
    m, dataset = preset.model, preset.train.dataset
    shape = (m.image_channels, m.image_size, m.image_size)
    if shape != IMAGE_SHAPES[dataset]:
        c, s, _ = IMAGE_SHAPES[dataset]
        raise ValueError(f"{preset.name}: {dataset} images are {IMAGE_SHAPES[dataset]} but the "
                         f"network takes {shape}: set ModelConfig(image_channels={c}, "
                         f"image_size={s})")
    if not m.class_conditional:
        return
    if dataset == "fashion_mnist" and m.num_attributes:
        raise ValueError(f"{preset.name}: Fashion-MNIST has classes, not attributes: set "
                         "ModelConfig(num_attributes=0)")
    if dataset == "celeba" and m.num_attributes != len(celeba.DEFAULT_ATTRIBUTES):
        raise ValueError(f"{preset.name}: CelebA is conditioned on the attributes "
                         f"{celeba.DEFAULT_ATTRIBUTES}, not on classes: set ModelConfig("
                         f"num_attributes={len(celeba.DEFAULT_ATTRIBUTES)})")


def missing(preset: Preset) -> str | None:
    """What a preset's data set lacks on this machine (CelebA needs internet access to download), or None."""
    if preset.train.dataset == "celeba" and not celeba.available():
        return "CelebA (" + celeba.EXPECTED + ")"
    return None


@lru_cache(maxsize=2)
def _faces(split: str, root: str) -> celeba.Faces:
    return celeba.load(split, folder=root)


def sigma_data(preset: Preset) -> float:
    """EDM's sigma_data of the preset's data set (its training split's pixel standard deviation)."""
    if preset.train.dataset == "celeba":
        return celeba.sigma_data()
    return data.sigma_data()


def splits(preset: Preset) -> Splits:
    """The training and validation splits of the preset's data set, on the CPU, and its
    ``sigma_data``. An epoch must not run out of images: a split too small for the preset's
    ``epoch_images`` is an error that says so (a batch may be short, never empty)."""
    check(preset)
    if preset.train.dataset == "celeba":
        root = str(celeba.find_root())
        train, valid = _faces("train", root), _faces("valid", root)
    else:
        train, valid = data.train_valid_split()
    steps, bs = steps_per_epoch(preset), preset.train.batch_size
    if len(train) <= (steps - 1) * bs:
        raise ValueError(f"{preset.name}: an epoch of {steps} batches of {bs} needs more than "
                         f"{(steps - 1) * bs} training images, but the {preset.train.dataset} "
                         f"training split holds {len(train)}: lower TrainConfig.epoch_images")
    return Splits(train, valid, sigma_data(preset))
