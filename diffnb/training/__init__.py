"""Training a preset: the one training loop and what it stands on.

  loop          load_or_train, train, load_final, best_final: the loop, resume, deadline
  __main__      ``python -m diffnb.training PRESET`` (also under torchrun)
  datasets      the data set a preset trains on (Fashion-MNIST or CelebA), steps per epoch
  epochs        each epoch's batches, noise levels and dropped labels, seeded by (seed, epoch)
  schedules     learning-rate warm-up and the EMA of the weights
  checkpoints   atomic checkpoints, the kept weights, resume points
  distributed   torchrun: process group, shards, DistributedDataParallel

The loop's public names are re-exported here: ``from diffnb import training`` then
``training.load_or_train("class_2")``.
"""
from diffnb.training.checkpoints import CheckpointError
from diffnb.training.datasets import steps_per_epoch
from diffnb.training.epochs import batches, drop_labels, epoch_generator, validation_loss
from diffnb.training.loop import (
    CHECK_EVERY,
    DeadlineReached,
    NonFiniteLossError,
    Trained,
    TrainState,
    TrainStep,
    best_final,
    checkpoint_dir,
    load_final,
    load_or_train,
    make_denoiser,
    make_state,
    train,
    train_epoch,
)
from diffnb.training.schedules import ema_decay, ema_update, lr_factor

__all__ = ["CHECK_EVERY", "CheckpointError", "DeadlineReached", "NonFiniteLossError", "Trained",
           "TrainState", "TrainStep", "batches", "best_final", "checkpoint_dir", "drop_labels",
           "ema_decay", "ema_update", "epoch_generator", "load_final", "load_or_train",
           "lr_factor", "make_denoiser", "make_state", "steps_per_epoch", "train", "train_epoch",
           "validation_loss"]
