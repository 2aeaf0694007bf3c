"""Where images and labels come from.

  fashion_mnist   the course's data set: files, splits, model space, sigma_data (re-exported
                  here: ``data.load``, ``data.train_valid_split``, ``data.CLASS_NAMES`` ...)
  labels          class indices and attribute rows as the networks and the sampler take them:
                  NULL_CLASS, NULL_ATTRIBUTE, check_labels, null_like (re-exported here)
  celeba          CelebA at 64x64 (notebook 07); celeba_files reads its list files
  __main__        ``python -m diffnb.data``: check that Fashion-MNIST is found
"""
from diffnb.data.fashion_mnist import (
    CLASS_NAMES,
    COUNTS,
    DATA_ENV,
    DEBIAN_DIR,
    FILES,
    NUM_CLASSES,
    SPLIT_SEED,
    VALID_SIZE,
    DataFileError,
    DataNotFoundError,
    Images,
    check_label,
    load,
    per_class,
    sample_batch,
    sigma_data,
    test_set,
    to_model_space,
    to_unit,
    train_valid_split,
)
from diffnb.data.labels import NULL_ATTRIBUTE, NULL_CLASS, check_labels, null_like

__all__ = ["CLASS_NAMES", "COUNTS", "DATA_ENV", "DEBIAN_DIR", "FILES", "NUM_CLASSES", "SPLIT_SEED",
           "VALID_SIZE", "DataFileError", "DataNotFoundError", "Images", "check_label", "load",
           "per_class", "sample_batch", "sigma_data", "test_set", "to_model_space", "to_unit",
           "train_valid_split", "NULL_ATTRIBUTE", "NULL_CLASS", "check_labels", "null_like"]
